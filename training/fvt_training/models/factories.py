"""Model factories: every one returns a plain ``keras.Model`` with a softmax over the categories.

``unet_like`` is the keras-io "Image segmentation with a U-Net-like architecture" network
(Xception-style separable convolutions with residual adds), written here. ``light_fpn`` is a
light FPN decoder on an EfficientNet-Lite encoder (:mod:`fvt_training.models.efficientnet_lite`,
with ImageNet weights from a registry package), written here for the node's real-time budget.
``unet``, ``fpn``, ``linknet`` and ``pspnet`` come from segmentation-models with any of its
backbones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from fvt_segmentation.core.contract import CATEGORIES, Normalization
from fvt_segmentation.core.sizes import format_size
from fvt_training.models import efficientnet_lite

keras = tf.keras
layers = tf.keras.layers

SM_ARCHITECTURES = {'unet': 'Unet', 'fpn': 'FPN', 'linknet': 'Linknet', 'pspnet': 'PSPNet'}
PSPNET_DOWNSAMPLE = 8
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# Preprocessing mode of every segmentation-models backbone, read from its source:
# classification_models' resnet/resnext return x unchanged (the network normalises itself),
# senet uses 'torch', keras_applications' vgg uses 'caffe' (BGR, mean subtraction),
# densenet 'torch', inception/mobilenet 'tf' ([-1, 1]), efficientnet (qubvel) 'torch'.
_BACKBONE_MODES = {
    **{f'resnet{d}': 'identity' for d in (18, 34, 50, 101, 152)},
    'seresnet18': 'identity', 'seresnet34': 'identity',
    'resnext50': 'identity', 'resnext101': 'identity',
    **{n: 'torch' for n in ('seresnet50', 'seresnet101', 'seresnet152', 'seresnext50',
                            'seresnext101', 'senet154')},
    'vgg16': 'caffe', 'vgg19': 'caffe',
    'densenet121': 'torch', 'densenet169': 'torch', 'densenet201': 'torch',
    'inceptionv3': 'tf', 'inceptionresnetv2': 'tf',
    'mobilenet': 'tf', 'mobilenetv2': 'tf',
    **{f'efficientnetb{i}': 'torch' for i in range(8)},
    **{name: 'lite' for name in efficientnet_lite.VARIANTS},
}
BACKBONES = tuple(_BACKBONE_MODES)
LIGHT_FPN_BACKBONES = tuple(efficientnet_lite.VARIANTS)
ENCODER_LAYER = 'encoder'


class ModelConfigError(ValueError):
    """A model configuration that cannot be built; the message shows the valid form."""


class EncoderWeightsUnavailableError(RuntimeError):
    """ImageNet encoder weights were requested but could not be had (download or package)."""


def input_multiple(architecture: str, filters: Sequence[int] = (32, 64, 128, 256)) -> int:
    """Return the number that input height and width must be multiples of."""
    if architecture == 'unet_like':
        return 2 ** len(filters)
    if architecture == 'pspnet':
        return 6 * PSPNET_DOWNSAMPLE
    return 32


def check_input_size(architecture: str, input_size: Sequence[int],
                     filters: Sequence[int] = (32, 64, 128, 256)) -> None:
    """Raise :class:`ModelConfigError` unless ``(height, width)`` suits ``architecture``."""
    multiple = input_multiple(architecture, filters)
    height, width = (int(v) for v in input_size)
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        def near(v: int) -> int:
            return max(multiple, round(v / multiple) * multiple)
        raise ModelConfigError(
            f'{architecture} needs an input height and width that are positive multiples of '
            f'{multiple}; got {format_size(width, height)} (nearest valid: '
            f'{format_size(near(width), near(height))}; prepare the data at that size)')


def _relu_conv_bn_twice(x: tf.Tensor, conv: type, filters: int) -> tf.Tensor:
    for _ in range(2):
        x = layers.Activation('relu')(x)
        x = conv(filters, 3, padding='same')(x)
        x = layers.BatchNormalization()(x)
    return x


def unet_like(input_size: Sequence[int], num_classes: int = len(CATEGORIES),
              filters: Sequence[int] = (32, 64, 128, 256)) -> keras.Model:
    """Build the keras-io U-Net-like network; ``filters[0]`` is the stem, the rest the blocks.

    The encoder downsamples ``len(filters)`` times (stem stride 2, then one max-pool per
    block), the decoder mirrors it with transposed convolutions and upsampling.
    """
    if len(filters) < 2:
        raise ModelConfigError(f'unet_like needs at least 2 filter counts (stem + blocks), e.g. '
                               f'[32, 64, 128, 256]; got {list(filters)}')
    inputs = keras.Input(shape=(int(input_size[0]), int(input_size[1]), 3), name='image')
    x = layers.Conv2D(filters[0], 3, strides=2, padding='same')(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation('relu')(x)
    previous = x
    for f in filters[1:]:
        x = _relu_conv_bn_twice(x, layers.SeparableConv2D, f)
        x = layers.MaxPooling2D(3, strides=2, padding='same')(x)
        residual = layers.Conv2D(f, 1, strides=2, padding='same')(previous)
        x = layers.add([x, residual])
        previous = x
    for f in reversed(filters):
        x = _relu_conv_bn_twice(x, layers.Conv2DTranspose, f)
        x = layers.UpSampling2D(2)(x)
        residual = layers.UpSampling2D(2)(previous)
        residual = layers.Conv2D(f, 1, padding='same')(residual)
        x = layers.add([x, residual])
        previous = x
    outputs = layers.Conv2D(num_classes, 3, activation='softmax', padding='same',
                            dtype='float32', name='scores')(x)
    return keras.Model(inputs, outputs, name='unet_like')


def _fine_stage(coarse: tf.Tensor, fine: tf.Tensor, channels: int) -> tf.Tensor:
    """Merge the stride-4 decoder output into the encoder's stride-2 features (light_fpn)."""
    # Reducing before the upsampling keeps the x2 resize on few channels: at stride 2 the
    # resize, not the convolutions, would dominate the added time.
    x = layers.Conv2D(channels, 1, name='fine_reduce')(coarse)
    x = layers.UpSampling2D(2, interpolation='bilinear', name='fine_up')(x)
    x = layers.Add(name='fine_merge')([x, layers.Conv2D(channels, 1, name='fine_lateral')(fine)])
    x = layers.SeparableConv2D(channels, 3, padding='same', use_bias=False,
                               name='fine_conv')(x)
    x = layers.BatchNormalization(name='fine_bn')(x)
    return layers.ReLU(name='fine_relu')(x)


def light_fpn(input_size: Sequence[int], backbone: str = 'efficientnet_lite0',
              num_classes: int = len(CATEGORIES), encoder_weights: str | None = None,
              channels: int = 96, fine_channels: int = 0) -> keras.Model:
    """Build a light FPN on an EfficientNet-Lite encoder (a nested model named ``encoder``).

    The encoder's features at strides 4, 8, 16 and 32 get a 1x1 lateral convolution to
    ``channels``, are merged top-down (nearest upsampling, sum), each pass a separable 3x3
    convolution, and are summed at stride 4 (bilinear upsampling), as in Panoptic FPN's
    semantic branch but with one convolution per level. A 1x1 classifier at stride 4 and a
    bilinear x4 upsampling give the scores at the input size. ``encoder_weights`` is
    ``'imagenet'`` (from the backbone's weights package), ``None`` or a ``.pth`` file.

    ``fine_channels`` > 0 adds a stage at stride 2 for thin objects (poles, signs): the stride-4
    sum is reduced to ``fine_channels`` (1x1), upsampled x2 and added to a 1x1 lateral of the
    encoder's stride-2 features; a separable 3x3 convolution then feeds the classifier at
    stride 2 and a bilinear x2 upsampling.
    """
    if backbone not in LIGHT_FPN_BACKBONES:
        raise ModelConfigError(f'light_fpn needs an EfficientNet-Lite backbone, one of '
                               f'{list(LIGHT_FPN_BACKBONES)}; got {backbone!r}')
    check_input_size('light_fpn', input_size)
    if encoder_weights not in (None, 'imagenet') and not Path(encoder_weights).is_file():
        raise ModelConfigError(f'encoder_weights must be imagenet, none or an existing .pth '
                               f'file; got {encoder_weights!r} (no such file)')
    height, width = (int(v) for v in input_size)
    if fine_channels < 0:
        raise ModelConfigError(f'fine_channels must be >= 0 (0: no stride-2 stage); got '
                               f'{fine_channels}')
    strides = (2, 4, 8, 16, 32) if fine_channels else (4, 8, 16, 32)
    encoder = efficientnet_lite.efficientnet_lite(backbone, (height, width, 3),
                                                  name=ENCODER_LAYER, strides=strides)
    if encoder_weights is not None:
        path = None if encoder_weights == 'imagenet' else encoder_weights
        try:
            efficientnet_lite.load_imagenet_weights(encoder, backbone, path)
        except efficientnet_lite.WeightsPackageMissingError as err:
            raise EncoderWeightsUnavailableError(str(err)) from None
    inputs = keras.Input(shape=(height, width, 3), name='image')
    features = encoder(inputs)
    if fine_channels:
        fine, *features = features
    merged = None
    pyramid = []
    for level, feature in reversed(list(enumerate(features))):
        lateral = layers.Conv2D(channels, 1, name=f'fpn_lateral{level}')(feature)
        if merged is not None:
            lateral = layers.Add(name=f'fpn_merge{level}')(
                [lateral, layers.UpSampling2D(2, name=f'fpn_up{level}')(merged)])
        merged = lateral
        pyramid.append((level, merged))
    heads = []
    for level, p in pyramid:
        x = layers.SeparableConv2D(channels, 3, padding='same', use_bias=False,
                                   name=f'head{level}_conv')(p)
        x = layers.BatchNormalization(name=f'head{level}_bn')(x)
        x = layers.ReLU(name=f'head{level}_relu')(x)
        if level:
            x = layers.UpSampling2D(2 ** level, interpolation='bilinear',
                                    name=f'head{level}_up')(x)
        heads.append(x)
    x = layers.Add(name='head_sum')(heads)
    if fine_channels:
        x = _fine_stage(x, fine, fine_channels)
    x = layers.Conv2D(num_classes, 1, name='classifier')(x)
    x = layers.UpSampling2D(2 if fine_channels else 4, interpolation='bilinear',
                            name='classifier_up')(x)
    outputs = layers.Activation('softmax', dtype='float32', name='scores')(x)
    return keras.Model(inputs, outputs, name=f'light_fpn_{backbone}')


def set_encoder_trainable(model: keras.Model, trainable: bool) -> bool:
    """Freeze or unfreeze ``model``'s nested ``encoder``; return False if it has none.

    A frozen encoder also runs its BatchNormalization layers in inference mode.
    """
    try:
        encoder = model.get_layer(ENCODER_LAYER)
    except ValueError:
        return False
    encoder.trainable = trainable
    return True


def _is_download_failure(err: BaseException) -> bool:
    # keras' get_file raises a bare Exception('URL fetch failure on ...') when offline.
    text = str(err)
    return isinstance(err, OSError) or 'URL fetch failure' in text or 'HTTP' in text


def sm_model(architecture: str, backbone: str, input_size: Sequence[int],
             num_classes: int = len(CATEGORIES), encoder_weights: str | None = None,
             encoder_freeze: bool = False) -> keras.Model:
    """Build a segmentation-models network with a softmax head.

    ``encoder_weights`` is ``'imagenet'`` (downloaded on first use into ``~/.keras/models``),
    ``None`` (random initialisation) or the path of a local backbone weights file.
    """
    if architecture not in SM_ARCHITECTURES:
        raise ModelConfigError(f'architecture must be one of {list(SM_ARCHITECTURES)}; '
                               f'got {architecture!r}')
    if backbone not in _BACKBONE_MODES:
        raise ModelConfigError(f'backbone must be one of {list(BACKBONES)}; got {backbone!r}')
    check_input_size(architecture, input_size)
    if encoder_weights not in (None, 'imagenet') and not Path(encoder_weights).is_file():
        raise ModelConfigError(f'encoder_weights must be imagenet, none or an existing weights '
                               f'file; got {encoder_weights!r} (no such file)')
    import segmentation_models as sm

    factory = getattr(sm, SM_ARCHITECTURES[architecture])
    kwargs = {}
    if architecture == 'pspnet':
        kwargs['downsample_factor'] = PSPNET_DOWNSAMPLE
    try:
        model = factory(backbone, input_shape=(int(input_size[0]), int(input_size[1]), 3),
                        classes=num_classes, activation='softmax',
                        encoder_weights=encoder_weights, encoder_freeze=encoder_freeze,
                        **kwargs)
    except Exception as err:
        if encoder_weights == 'imagenet' and _is_download_failure(err):
            raise EncoderWeightsUnavailableError(
                f'could not download the ImageNet weights of backbone {backbone!r} ({err}). '
                'Without internet, set `model.encoder_weights: none` (random initialisation), '
                'or download the file elsewhere and either pass its path as '
                '`model.encoder_weights: /path/to/file.h5` or put it in ~/.keras/models/ '
                'under the name shown in the URL above.') from None
        raise
    return model


def pretrained_encoder(weights: str | None) -> str | None:
    """Read ``model.encoder_weights`` as the builders take it.

    Unset or ``'none'`` (random initialisation) gives None; ``'imagenet'`` or the path of a
    weights file is returned as is.
    """
    return None if weights in (None, 'none') else weights


def build_model(config: dict) -> keras.Model:
    """Build the network a resolved configuration describes (its ``model`` section).

    ``config['model']`` needs ``architecture``, ``input_size`` ([height, width]) and, per
    architecture, ``filters`` (unet_like) or ``backbone``/``encoder_weights``/``encoder_freeze``.
    """
    spec = config['model']
    architecture = spec['architecture']
    if spec.get('input_size') is None:
        raise ModelConfigError('model.input_size must be set as [height, width] before building '
                               '(train fills it from the prepared data)')
    weights = pretrained_encoder(spec.get('encoder_weights'))
    if architecture == 'unet_like':
        filters = spec.get('filters') or (32, 64, 128, 256)
        check_input_size(architecture, spec['input_size'], filters)
        model = unet_like(spec['input_size'], len(CATEGORIES), filters)
    elif architecture == 'light_fpn':
        model = light_fpn(spec['input_size'], spec['backbone'], len(CATEGORIES), weights,
                          int(spec.get('decoder_channels') or 96),
                          int(spec.get('fine_channels') or 0))
    else:
        model = sm_model(architecture, spec['backbone'], spec['input_size'], len(CATEGORIES),
                         weights, bool(spec.get('encoder_freeze', False)))
    if spec.get('bn_momentum') is not None:
        set_bn_momentum(model, spec['bn_momentum'])
    return model


def set_bn_momentum(model: keras.Model, momentum: float) -> int:
    """Set the momentum of every BatchNormalization layer (nested models too); return how many.

    It takes effect at the next trace of the training step, so call it before ``compile``.
    """
    count = 0
    for layer in model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            count += 1
    return count


def input_normalization(backbone: str | None) -> tuple[Normalization, str]:
    """Return ``(normalisation, color_order)`` equal to ``sm.get_preprocessing(backbone)``.

    ``None`` (the unet_like baseline) means pixels scaled by 1/255 in RGB order.
    """
    if backbone is None:
        return Normalization(scale=1.0 / 255.0), 'RGB'
    try:
        mode = _BACKBONE_MODES[backbone]
    except KeyError:
        raise ModelConfigError(f'backbone must be one of {list(BACKBONES)} (or None for '
                               f'unet_like); got {backbone!r}') from None
    if mode == 'identity':
        return Normalization(scale=1.0), 'RGB'
    if mode == 'tf':
        return Normalization(scale=1.0 / 127.5, mean=(1.0, 1.0, 1.0)), 'RGB'
    if mode == 'lite':
        return Normalization(scale=1.0, mean=(efficientnet_lite.PIXEL_MEAN,) * 3,
                             std=(efficientnet_lite.PIXEL_STD,) * 3), 'RGB'
    if mode == 'torch':
        return Normalization(scale=1.0 / 255.0, mean=IMAGENET_MEAN_RGB,
                             std=IMAGENET_STD_RGB), 'RGB'
    return Normalization(scale=1.0, mean=CAFFE_MEAN_BGR), 'BGR'


def model_normalization(config: dict) -> tuple[Normalization, str]:
    """Return the input normalisation and colour order of the model ``config`` describes."""
    spec = config['model']
    return input_normalization(None if spec['architecture'] == 'unet_like' else spec['backbone'])
