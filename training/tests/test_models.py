import socket

import numpy as np
import pytest

from fvt_segmentation.core.contract import CATEGORIES
from fvt_training.models.factories import (
    BACKBONES,
    EncoderWeightsUnavailableError,
    ModelConfigError,
    build_model,
    check_input_size,
    input_normalization,
    sm_model,
    unet_like,
)


def _config(**model):
    spec = {'architecture': 'unet_like', 'backbone': 'mobilenetv2', 'encoder_weights': 'none',
            'encoder_freeze': False, 'filters': [8, 16, 32], 'input_size': [64, 96]}
    spec.update(model)
    return {'model': spec}


def _scores(model, height, width):
    x = np.random.default_rng(0).uniform(0, 1, (2, height, width, 3)).astype('float32')
    return model.predict(x, verbose=0)


def test_unet_like_outputs_a_softmax_per_pixel():
    model = build_model(_config())
    assert model.output_shape == (None, 64, 96, len(CATEGORIES))
    scores = _scores(model, 64, 96)
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-4)
    assert (scores >= 0).all()


def test_unet_like_default_filters_follow_the_keras_io_example():
    model = unet_like((32, 32))
    separable = [layer.filters for layer in model.layers
                 if layer.__class__.__name__ == 'SeparableConv2D']
    assert separable == [64, 64, 128, 128, 256, 256]


def test_segmentation_models_linknet_builds_with_softmax_and_no_download():
    model = build_model(_config(architecture='linknet', input_size=[64, 64]))
    assert model.output_shape == (None, 64, 64, len(CATEGORIES))
    np.testing.assert_allclose(_scores(model, 64, 64).sum(-1), 1.0, rtol=1e-4)


@pytest.mark.parametrize(('architecture', 'size', 'multiple'), [
    ('unet_like', (64, 60), 8), ('fpn', (64, 48), 32), ('pspnet', (64, 64), 48),
    ('light_fpn', (64, 80), 32)])
def test_input_sizes_must_be_multiples(architecture, size, multiple):
    with pytest.raises(ModelConfigError, match=f'multiples of {multiple}; got '
                                               f'{size[1]}x{size[0]}'):
        check_input_size(architecture, size, [8, 16, 32])
    backbone = 'efficientnet_lite0' if architecture == 'light_fpn' else 'mobilenetv2'
    with pytest.raises(ModelConfigError, match=f'multiples of {multiple}'):
        build_model(_config(architecture=architecture, backbone=backbone,
                            input_size=list(size)))


def test_light_fpn_starts_from_the_imagenet_encoder_and_outputs_a_softmax():
    from fvt_training.models.efficientnet_lite import weights_file
    from fvt_training.models.torch_checkpoint import load_state_dict

    model = build_model(_config(architecture='light_fpn', backbone='efficientnet_lite0',
                                encoder_weights='imagenet', input_size=[64, 96]))
    assert model.output_shape == (None, 64, 96, len(CATEGORIES))
    scores = _scores(model, 64, 96)
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-4)
    state = load_state_dict(weights_file('efficientnet_lite0'))
    encoder = model.get_layer('encoder')
    np.testing.assert_array_equal(encoder.get_layer('stem_conv').get_weights()[0],
                                  state['_conv_stem.weight'].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(encoder.get_layer('block15_project_bn').get_weights()[3],
                                  state['_blocks.15._bn2.running_var'])
    scratch = build_model(_config(architecture='light_fpn', backbone='efficientnet_lite0',
                                  encoder_weights='none', input_size=[64, 96]))
    assert not np.array_equal(scratch.get_layer('encoder').get_layer('stem_conv').get_weights()[0],
                              state['_conv_stem.weight'].transpose(2, 3, 1, 0))


def test_light_fpn_fine_stage_classifies_at_stride_two_from_the_stem_features():
    model = build_model(_config(architecture='light_fpn', backbone='efficientnet_lite0',
                                encoder_weights='imagenet', input_size=[64, 96],
                                fine_channels=8))
    assert model.output_shape == (None, 64, 96, len(CATEGORIES))
    encoder = model.get_layer('encoder')
    assert [tuple(o.shape[1:3]) for o in encoder.outputs] == [
        (32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    assert model.get_layer('fine_lateral').input.shape[-1] == 16  # lite0's stride-2 block
    assert model.get_layer('classifier').output.shape[1:3] == (32, 48)
    np.testing.assert_allclose(_scores(model, 64, 96).sum(-1), 1.0, rtol=1e-4)
    plain = build_model(_config(architecture='light_fpn', backbone='efficientnet_lite0',
                                encoder_weights='none', input_size=[64, 96]))
    assert plain.get_layer('classifier').output.shape[1:3] == (16, 24)
    with pytest.raises(ModelConfigError, match='fine_channels must be >= 0'):
        build_model(_config(architecture='light_fpn', backbone='efficientnet_lite0',
                            encoder_weights='none', input_size=[64, 96], fine_channels=-1))


def test_light_fpn_needs_an_efficientnet_lite_backbone():
    with pytest.raises(ModelConfigError, match="light_fpn needs an EfficientNet-Lite backbone, "
                                               r"one of \['efficientnet_lite0', .*got 'resnet18'"):
        build_model(_config(architecture='light_fpn', backbone='resnet18', input_size=[64, 64]))


def test_efficientnet_lite_inputs_are_centred_as_tensorflow_trained_them():
    normalization, order = input_normalization('efficientnet_lite2')
    gain, offset = normalization.as_affine()
    assert order == 'RGB'
    np.testing.assert_allclose(np.array([0.0, 127.0, 255.0]) * gain[0] + offset[0],
                               [-127 / 128, 0.0, 1.0])


def test_unknown_backbone_and_missing_weights_file_are_explained(tmp_path):
    with pytest.raises(ModelConfigError, match="backbone must be one of .*got 'resnet19'"):
        build_model(_config(architecture='fpn', backbone='resnet19', input_size=[64, 64]))
    with pytest.raises(ModelConfigError, match='no such file'):
        build_model(_config(architecture='fpn', input_size=[64, 64],
                            encoder_weights=str(tmp_path / 'missing.h5')))


def test_imagenet_weights_offline_give_a_clear_message(tmp_path, monkeypatch):
    # An empty keras cache and no name resolution: exactly a machine without internet.
    monkeypatch.setenv('KERAS_HOME', str(tmp_path))

    def offline(*args, **kwargs):
        raise socket.gaierror(-2, 'Name or service not known')

    monkeypatch.setattr(socket, 'getaddrinfo', offline)
    with pytest.raises(EncoderWeightsUnavailableError) as err:
        sm_model('linknet', 'mobilenetv2', (64, 64), encoder_weights='imagenet')
    message = str(err.value)
    assert "backbone 'mobilenetv2'" in message
    assert 'model.encoder_weights: none' in message and '~/.keras/models' in message


@pytest.mark.parametrize('backbone', ['resnet18', 'resnext50', 'seresnet50', 'vgg16',
                                      'densenet121', 'inceptionv3', 'mobilenetv2',
                                      'efficientnetb0'])
def test_input_normalization_equals_segmentation_models_preprocessing(backbone):
    import segmentation_models as sm

    pixels = np.random.default_rng(1).integers(0, 256, (2, 5, 7, 3)).astype('float32')
    expected = sm.get_preprocessing(backbone)(pixels.copy())
    normalization, color_order = input_normalization(backbone)
    ordered = pixels[..., ::-1] if color_order == 'BGR' else pixels
    gain, offset = normalization.as_affine()
    np.testing.assert_allclose(ordered * gain + offset, expected, rtol=1e-5, atol=1e-4)


def test_every_backbone_has_a_normalization_and_unet_like_scales_to_unit():
    assert all(input_normalization(b)[1] in ('RGB', 'BGR') for b in BACKBONES)
    normalization, order = input_normalization(None)
    assert order == 'RGB' and normalization.scale == pytest.approx(1 / 255)
    assert normalization.mean == (0.0, 0.0, 0.0) and normalization.std == (1.0, 1.0, 1.0)
