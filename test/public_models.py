"""Tiny stand-ins for public segmentation models (no model contract), built with onnx.helper.

Each mimics a way public models are exported: NCHW logits at 1/8 resolution expecting
ImageNet-normalised BGR pixels, NHWC probabilities, an argmax-only int64 output. The weights
are fixed random numbers, so tests can run a source file with ONNX Runtime and compute what an
adopted file must output with numpy (:func:`category_reference`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IMAGENET_BGR_MEAN = (103.53, 116.28, 123.675)
IMAGENET_BGR_STD = (57.375, 57.12, 58.395)


def _save(path: Path, nodes: list, inits: list, inputs: list, outputs: list,
          opset: int = 17) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)],
                              producer_name='public-model-stand-in')
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def conv_logits_nchw(path: Path, classes: int = 19, stride: int = 8, dynamic: bool = True,
                     input_size: tuple[int, int] = (64, 128), opset: int = 17) -> Path:
    """NCHW logits ``[N, classes, H/stride, W/stride]`` from one strided convolution.

    With ``dynamic`` the input is ``[N, 3, height, width]`` (named dynamic axes), as
    mmsegmentation and torch.onnx exports with dynamic axes are.
    """
    rng = np.random.default_rng(19)
    kernel = rng.normal(scale=0.08, size=(classes, 3, stride, stride)).astype(np.float32)
    bias = rng.normal(scale=0.5, size=classes).astype(np.float32)
    h, w = ('height', 'width') if dynamic else input_size
    out_h, out_w = ('out_h', 'out_w') if dynamic else (h // stride, w // stride)
    return _save(
        path,
        [helper.make_node('Conv', ['input', 'K', 'B'], ['logits'], strides=[stride, stride],
                          kernel_shape=[stride, stride])],
        [numpy_helper.from_array(kernel, 'K'), numpy_helper.from_array(bias, 'B')],
        [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['batch', 3, h, w])],
        [helper.make_tensor_value_info('logits', TensorProto.FLOAT,
                                       ['batch', classes, out_h, out_w])],
        opset)


def matmul_probabilities_nhwc(path: Path, classes: int = 34,
                              input_size: tuple[int, int] = (48, 64)) -> Path:
    """NHWC probabilities ``[1, H, W, classes]`` (per-pixel affine map, then softmax)."""
    rng = np.random.default_rng(34)
    weights = rng.normal(scale=2.0, size=(3, classes)).astype(np.float32)
    bias = rng.normal(scale=0.5, size=classes).astype(np.float32)
    h, w = input_size
    return _save(
        path,
        [helper.make_node('MatMul', ['image', 'W'], ['affine']),
         helper.make_node('Add', ['affine', 'B'], ['scores']),
         helper.make_node('Softmax', ['scores'], ['probs'], axis=-1)],
        [numpy_helper.from_array(weights, 'W'), numpy_helper.from_array(bias, 'B')],
        [helper.make_tensor_value_info('image', TensorProto.FLOAT, [1, h, w, 3])],
        [helper.make_tensor_value_info('probs', TensorProto.FLOAT, [1, h, w, classes])])


def argmax_ids_nchw(path: Path, classes: int = 11, stride: int = 4,
                    input_size: tuple[int, int] = (64, 64), keepdims: bool = True) -> Path:
    """Argmax-only NCHW model: int64 class ids ``[1, 1, H/4, W/4]`` (``[1, h, w]`` without
    ``keepdims``) of a strided convolution's scores."""
    rng = np.random.default_rng(11)
    kernel = rng.normal(scale=0.05, size=(classes, 3, stride, stride)).astype(np.float32)
    h, w = input_size
    oh, ow = h // stride, w // stride
    out_shape = [1, 1, oh, ow] if keepdims else [1, oh, ow]
    return _save(
        path,
        [helper.make_node('Conv', ['pixels', 'K'], ['scores'], strides=[stride, stride],
                          kernel_shape=[stride, stride]),
         helper.make_node('ArgMax', ['scores'], ['ids'], axis=1, keepdims=int(keepdims))],
        [numpy_helper.from_array(kernel, 'K')],
        [helper.make_tensor_value_info('pixels', TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info('ids', TensorProto.INT64, out_shape)])


def floor_ids_nchw(path: Path, input_size: tuple[int, int] = (16, 16),
                   opset: int = 17) -> Path:
    """Class ids ``[1, 1, H, W]`` (int64) = the floor of the first input channel.

    Fed ``(pixel - 0) / 25.5`` the ids are 0..10 (CamVid's 11 classes); fed other floats,
    any id, negative or too large, as a model that writes 255 for "ignore" would.
    """
    h, w = input_size
    first = np.array([1, 0, 0], np.float32).reshape(1, 3, 1, 1)
    return _save(
        path,
        [helper.make_node('Conv', ['pixels', 'first'], ['channel']),
         helper.make_node('Floor', ['channel'], ['floored']),
         helper.make_node('Cast', ['floored'], ['ids'], to=TensorProto.INT64)],
        [numpy_helper.from_array(first, 'first')],
        [helper.make_tensor_value_info('pixels', TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info('ids', TensorProto.INT64, [1, 1, h, w])], opset)


def channel_max_nchw(path: Path, input_size: tuple[int, int] = (32, 32)) -> Path:
    """A float output without a class dimension: ``[1, H, W]``, the max over colours."""
    h, w = input_size
    return _save(
        path, [helper.make_node('ReduceMax', ['input'], ['heat'], axes=[1], keepdims=0)], [],
        [helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info('heat', TensorProto.FLOAT, [1, h, w])], opset=13)


def run_source(path: Path, pixels: np.ndarray, layout: str, mean: Any, std: Any) -> np.ndarray:
    """Run a source file on an HxWx3 uint8 frame already in the model's colour order.

    The normalisation ``(pixel - mean) / std`` and the layout are done here, in numpy, as
    the model's documentation would tell a user to.
    """
    import onnxruntime as ort

    x = (pixels.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    x = x.transpose(2, 0, 1)[None] if layout == 'NCHW' else x[None]
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x)})[0]


def category_reference(output: np.ndarray, kind: str, class_axis: int,
                       class_to_category: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The expected category probabilities ``[h, w, 8]`` of one image, in numpy.

    ``kind`` is logits, probabilities or class-ids; ``class_to_category`` maps every class
    index to its category id (from the official table, built by the test). A class id it
    does not hold (negative, too large) is void.
    """
    from fvt_segmentation.core.contract import VOID

    if kind == 'class-ids':
        ids = output[0]
        if ids.ndim == 3:  # the size-1 class axis of keepdims
            ids = ids[0] if class_axis == 1 else ids[..., 0]
        categories = np.vectorize(lambda i: class_to_category.get(int(i), VOID))(ids)
        return np.eye(8, dtype=np.float64)[categories], categories
    scores = np.moveaxis(output[0].astype(np.float64), class_axis - 1, -1)
    if kind == 'logits':
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
    probabilities = np.zeros((*scores.shape[:2], 8))
    for index, category in class_to_category.items():
        probabilities[..., category] += scores[..., index]
    return probabilities, probabilities.argmax(axis=-1)


def patchwork(height_width: tuple[int, int], seed: int = 0, patch: int = 8) -> np.ndarray:
    """An RGB uint8 frame of flat random-colour patches plus mild noise (varied classes)."""
    rng = np.random.default_rng(seed)
    h, w = height_width
    colours = rng.integers(0, 256, ((h + patch - 1) // patch, (w + patch - 1) // patch, 3))
    frame = np.repeat(np.repeat(colours, patch, axis=0), patch, axis=1)[:h, :w]
    return np.clip(frame + rng.integers(-12, 12, frame.shape), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PublicSource:
    """A stand-in source and what a user would tell ``fvt-train adopt`` about it."""

    build: Callable[[Path], Path]
    labels: str
    input_size: tuple[int, int]  # (height, width) the adopted file runs at
    layout: str
    color_order: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    kind: str  # what the source outputs: logits, probabilities or class-ids
    needs_size: bool  # dynamic input height and width

    @property
    def class_axis(self) -> int:
        return 1 if self.layout == 'NCHW' else 3

    def adopt_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``fvt_training.adopt.inspection.AdoptOptions`` (licence aside)."""
        size = (self.input_size[1], self.input_size[0]) if self.needs_size else None
        return {'labels': self.labels, 'color_order': self.color_order, 'mean': self.mean,
                'std': self.std, 'size': size}

    def expected(self, path: Path, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Category probabilities ``[h, w, 8]`` and mask for an RGB frame at ``input_size``."""
        pixels = frame[:, :, ::-1] if self.color_order == 'BGR' else frame
        output = run_source(path, pixels, self.layout, self.mean, self.std)
        return category_reference(output, self.kind, self.class_axis,
                                  official_mapping(self.labels))


SOURCES = {
    'nchw_logits_eighth': PublicSource(
        conv_logits_nchw, 'cityscapes-trainids', (64, 128), 'NCHW', 'BGR', IMAGENET_BGR_MEAN,
        IMAGENET_BGR_STD, 'logits', True),
    'nhwc_probabilities': PublicSource(
        matmul_probabilities_nhwc, 'cityscapes-labelids', (48, 64), 'NHWC', 'RGB',
        (127.5,) * 3, (127.5,) * 3, 'probabilities', False),
    'argmax_ids': PublicSource(
        argmax_ids_nchw, 'camvid11', (64, 64), 'NCHW', 'RGB', (0.0,) * 3, (255.0,) * 3,
        'class-ids', False),
}
"""The three kinds of public model the adopt tests cover, by name."""


def official_mapping(labels: str) -> dict[int, int]:
    """Class index -> category id, built straight from the official tables."""
    if labels == 'camvid11':
        from fvt_segmentation.core.contract import CATEGORIES
        from fvt_training.data.label_sets import CAMVID_CLASSES

        return {i: CATEGORIES.index(c) for i, (_, c) in enumerate(CAMVID_CLASSES[:11])}
    from cityscapesscripts.helpers.labels import labels as table

    if labels == 'cityscapes-trainids':
        return {lab.trainId: lab.categoryId for lab in table if 0 <= lab.trainId < 255}
    return {lab.id: lab.categoryId for lab in table if 0 <= lab.id < 34}
