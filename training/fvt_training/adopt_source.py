"""Inspect a public ONNX segmentation model before ``fvt-train adopt`` extends it.

:func:`inspect_source` reads the one image input (rank 4, float32, layout and size), runs the
file once per probe frame on the CPU and reads its output: scores over the classes (logits or
probabilities, told apart by whether they sum to 1) or class ids (integers, or a float output
declared ``class-ids``). What the file cannot tell must come from an option; an ambiguity or
a mismatch with the label set is an :class:`AdoptError` that names the option to add, or
what was expected and what the file has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
import sys
from typing import Any

import numpy as np

from fvt_segmentation.core.contract import ModelContract, ModelLoadError
from fvt_training.label_sets import LabelSet, sets_with
from fvt_training.onnx_rewrites import default_opset, output_source

SUM_TOLERANCE = 1e-3
# Ops an argmax's result may pass through before it becomes the graph output.
ID_PASS_THROUGH = frozenset({'Cast', 'Squeeze', 'Unsqueeze', 'Reshape', 'Identity', 'Flatten'})


class AdoptError(RuntimeError):
    """A source file or option that cannot be adopted; the message says expected vs found."""


@dataclass(frozen=True)
class AdoptOptions:
    """What the source file cannot tell, from the command line."""

    labels: str
    licence: str
    input_layout: str | None = None
    color_order: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    size: tuple[int, int] | None = None  # (width, height), as --size WxH
    output: str | None = None


@dataclass(frozen=True)
class Inspection:
    """What :func:`inspect_source` found in the source file."""

    input_name: str
    input_shape: tuple[Any, ...]  # as declared: ints, names of dynamic axes or None
    layout: str
    size: tuple[int, int]  # (height, width) the adopted file runs at
    size_from: str  # 'file' or '--size'
    output_name: str
    output_shape: tuple[int, ...]  # measured on a probe frame at ``size``, batch 1
    output_dtype: str
    output: str  # one of SOURCE_OUTPUTS
    class_axis: int  # where the classes are (ids: where the one-hot goes)
    num_classes: int | None  # None: class ids whose count the graph does not show
    opset: int

    @property
    def output_size(self) -> tuple[int, int]:
        """The (height, width) of the source's output."""
        shape = self.output_shape
        if len(shape) == 3 or self.layout == 'NHWC':  # [N, h, w] ids, or [N, h, w, C]
            return shape[1], shape[2]
        return shape[2], shape[3]

    def stride(self) -> int | list[float]:
        """Return the input/output size ratio: an integer if both sides agree, else both."""
        (h, w), (oh, ow) = self.size, self.output_size
        if h % oh == 0 and w % ow == 0 and h // oh == w // ow:
            return h // oh
        return [h / oh, w / ow]


def _dims(value_info: Any) -> tuple[Any, ...] | None:
    tensor = value_info.type.tensor_type
    if not tensor.HasField('shape'):
        return None
    return tuple(d.dim_value if d.HasField('dim_value') else (d.dim_param or None)
                 for d in tensor.shape.dim)


def shape_text(shape: Sequence[Any] | None) -> str:
    """Format a shape for messages: ``[batch, 3, 1024, 2048]``, ``?`` for unnamed axes."""
    if shape is None:
        return 'unknown'
    return '[' + ', '.join('?' if d is None else str(d) for d in shape) + ']'


def graph_inputs(graph: Any) -> list[Any]:
    """Return the real inputs of an ONNX graph (older exports list weights as inputs too)."""
    initializers = {i.name for i in graph.initializer}
    return [i for i in graph.input if i.name not in initializers]


def _pick_layout(shape: tuple[Any, ...], requested: str | None, source: str) -> str:
    channels_first, channels_last = shape[1] == 3, shape[3] == 3
    if requested is not None:
        axis = 1 if requested == 'NCHW' else 3
        if isinstance(shape[axis], int) and shape[axis] != 3:
            raise AdoptError(f'{source}: --input-layout {requested} puts the colour channels on '
                             f'axis {axis}, but the input shape {shape_text(shape)} has '
                             f'{shape[axis]} there; expected 3')
        return requested
    if channels_first != channels_last:
        return 'NCHW' if channels_first else 'NHWC'
    raise AdoptError(f'{source}: cannot tell the input layout from its shape '
                     f'{shape_text(shape)}; add --input-layout NCHW or --input-layout NHWC')


def _pick_size(shape: tuple[Any, ...], layout: str, wanted: tuple[int, int] | None,
               source: str) -> tuple[tuple[int, int], str]:
    spatial = (shape[2], shape[3]) if layout == 'NCHW' else (shape[1], shape[2])
    fixed = all(isinstance(d, int) and d > 0 for d in spatial)
    if wanted is None:
        if not fixed:
            raise AdoptError(f'{source}: the input height and width are dynamic (shape '
                             f'{shape_text(shape)}); add --size WxH, the size to run it at '
                             '(e.g. its training crop; 2048x1024 or 1024x512 for Cityscapes)')
        return (int(spatial[0]), int(spatial[1])), 'file'
    height, width = wanted[1], wanted[0]
    for name, declared, chosen in (('height', spatial[0], height), ('width', spatial[1], width)):
        if isinstance(declared, int) and declared > 0 and declared != chosen:
            raise AdoptError(f'{source}: --size {width}x{height} does not fit the input shape '
                             f'{shape_text(shape)}: its {name} is fixed at {declared}; omit '
                             '--size or give the fixed size')
    return (height, width), '--size'


def fix_input_size(proto: Any, layout: str, size: tuple[int, int]) -> None:
    """Give the (only) image input of ``proto`` 3 channels and the chosen height and width."""
    image = graph_inputs(proto.graph)[0]
    dims = image.type.tensor_type.shape.dim
    axes = (1, 2, 3) if layout == 'NCHW' else (3, 1, 2)
    for axis, value in zip(axes, (3, *size), strict=True):
        dims[axis].Clear()
        dims[axis].dim_value = value


def _argmax_source(graph: Any) -> tuple[str, int] | None:
    """Return (scores tensor, axis) of the ArgMax the single graph output comes from, if any."""
    node, _ = output_source(graph, ID_PASS_THROUGH)
    if node is None or node.op_type != 'ArgMax':
        return None
    axis = next((a.i for a in node.attribute if a.name == 'axis'), 0)
    return node.input[0], axis


def probe_frames(size: tuple[int, int], count: int = 2) -> list[np.ndarray]:
    """Return ``count`` RGB uint8 frames of ``size`` (h, w): smooth colour ramps plus noise."""
    height, width = size
    rng = np.random.default_rng(13)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        base = np.stack([(xx * 255) // max(1, width - 1), (yy * 255) // max(1, height - 1),
                         ((xx + yy) * 255) // max(1, width + height - 2)], axis=2)
        noise = rng.integers(-30 - 30 * i, 30 + 30 * i, (height, width, 3))
        frames.append(np.clip(np.roll(base, i * 7, axis=2) + noise, 0, 255).astype(np.uint8))
    return frames


def cpu_session(proto: Any) -> Any:
    """Open ``proto`` in an ONNX Runtime CPU session (no spinning threads, quiet log)."""
    from fvt_segmentation.core.sessions import first_line, open_session

    try:
        return open_session(proto.SerializeToString(), spinning=False)
    except ModelLoadError as err:
        raise AdoptError(f'ONNX Runtime cannot load the source with its input fixed at the '
                         f'chosen size ({first_line(err.__cause__ or err)[:300]})') from None


def inspect_source(proto: Any, source: str, options: AdoptOptions, label_set: LabelSet,
                   contract: ModelContract
                   ) -> tuple[Inspection, list[np.ndarray], list[np.ndarray]]:
    """Read the source's input and output, run it on probe frames, check it fits the labels.

    ``contract`` (layout aside) feeds two :func:`probe_frames` as the node will. Returns the
    inspection, the frames and the source's raw outputs for them. Raises
    :class:`AdoptError` for anything ambiguous or unusable, naming the flag to add or what
    was expected and what the file has.
    """
    import copy
    from dataclasses import replace

    import onnx
    from onnx import helper

    from fvt_segmentation.core.frame_processing import preprocess_frame

    graph = proto.graph
    inputs = graph_inputs(graph)
    if len(inputs) != 1:
        raise AdoptError(f'{source}: expected one image input; the file has {len(inputs)} '
                         f'({", ".join(i.name for i in inputs)})')
    if len(graph.output) != 1:
        raise AdoptError(f'{source}: expected one output (class scores or ids); the file has '
                         f'{len(graph.output)} ({", ".join(o.name for o in graph.output)}): '
                         'export it without auxiliary heads')
    image, output = inputs[0], graph.output[0]
    shape = _dims(image)
    elem = image.type.tensor_type.elem_type
    if shape is None or len(shape) != 4:
        raise AdoptError(f'{source}: expected a rank-4 image input (NCHW or NHWC); input '
                         f'{image.name!r} has shape {shape_text(shape)}')
    if elem != onnx.TensorProto.FLOAT:
        raise AdoptError(f'{source}: expected a float32 image input; input {image.name!r} is '
                         f'{onnx.TensorProto.DataType.Name(elem).lower()}')
    if isinstance(shape[0], int) and shape[0] > 1:
        raise AdoptError(f'{source}: expected a batch dimension of 1 or dynamic; input shape '
                         f'{shape_text(shape)}')
    layout = _pick_layout(shape, options.input_layout, source)
    size, size_from = _pick_size(shape, layout, options.size, source)

    probe = copy.deepcopy(proto)
    fix_input_size(probe, layout, size)
    argmax = _argmax_source(graph)
    if argmax is not None:
        probe.graph.output.append(helper.make_empty_tensor_value_info(argmax[0]))
    print(f'probing {Path(source).name} at {size[1]}x{size[0]} on the CPU', file=sys.stderr)
    session = cpu_session(probe)
    feed = replace(contract, layout=layout)
    frames = probe_frames(size)
    runs = [session.run(None, {image.name: preprocess_frame(f, 'RGB', size, feed)})
            for f in frames]
    results = [r[0] for r in runs]
    first = results[0]
    out_shape = tuple(int(d) for d in first.shape)
    what = f'output {output.name!r} (shape {shape_text(out_shape)}, {first.dtype})'
    count = len(label_set)
    labels = f'--labels {label_set.name} names {count} classes'
    kind = options.output
    is_ids = np.issubdtype(first.dtype, np.integer) or kind == 'class-ids'
    if np.issubdtype(first.dtype, np.integer) and kind not in (None, 'class-ids'):
        raise AdoptError(f'{source}: --output {kind}, but {what} holds integers: class ids; '
                         'pass --output class-ids or omit --output')
    class_axis = 1 if layout == 'NCHW' else 3
    if is_ids:
        scores = None if argmax is None else (runs[0][1].shape, argmax[1])
        found = _check_ids(results, scores, class_axis, label_set, f'{source}: {what}')
        return (Inspection(image.name, shape, layout, size, size_from, output.name,
                           out_shape, str(first.dtype), 'class-ids', class_axis, found,
                           default_opset(proto)), frames, results)

    if len(out_shape) != 4 or out_shape[class_axis] == 1:
        raise AdoptError(f'{source}: no class dimension: {what}; expected scores '
                         f'{"[N, C, H, W]" if layout == "NCHW" else "[N, H, W, C]"} over the '
                         f'{count} classes of --labels {label_set.name} (if it holds class ids, '
                         'add --output class-ids)')
    if out_shape[class_axis] != count:
        raise AdoptError(f'{source}: class count mismatch: {what} has {out_shape[class_axis]} '
                         f'classes on axis {class_axis} ({layout}), but {labels}'
                         f'{_label_hint(out_shape[class_axis])}')
    detected = _score_kind(results, class_axis)
    if kind is not None and kind != detected:
        why = ('are all >= 0 and sum to 1 over the classes' if detected == 'probabilities'
               else 'do not sum to 1 over the classes')
        raise AdoptError(f'{source}: --output {kind}, but the scores of {what} {why} on the '
                         f'probe frames: they are {detected}; pass --output {detected} or omit '
                         '--output')
    return (Inspection(image.name, shape, layout, size, size_from, output.name, out_shape,
                       str(first.dtype), detected, class_axis, count, default_opset(proto)),
            frames, results)


def _check_ids(results: Sequence[np.ndarray], scores: tuple[tuple[int, ...], int] | None,
               class_axis: int, label_set: LabelSet, what: str) -> int | None:
    """Check class-id outputs against the label set; return the class count seen, if any.

    ``scores`` is (shape, axis) of the scores an ArgMax in the graph turned into the ids.
    """
    shape = results[0].shape
    count = len(label_set)
    labels = f'--labels {label_set.name} names {count} classes'
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[class_axis] != 1):
        raise AdoptError(f'{what}: class ids expected as [N, H, W] or with a size-1 axis '
                         f'{class_axis}')
    found = None
    if scores is not None:
        found = int(scores[0][scores[1]])
        if found != count:
            raise AdoptError(f'{what}: class count mismatch: its ids come from an ArgMax over '
                             f'{found} classes (axis {scores[1]} of {shape_text(scores[0])}) '
                             f'but {labels}{_label_hint(found)}')
    top = max(int(np.max(r)) for r in results)
    if top >= count or min(int(np.min(r)) for r in results) < 0:
        raise AdoptError(f'{what}: class ids up to {top}, but {labels} (ids 0..{count - 1})')
    return found


def _label_hint(count: int) -> str:
    matching = sets_with(count)
    if matching:
        return f'; label sets with {count} classes: {", ".join(matching)}'
    return f'; for {count} classes, write a YAML label file (see fvt-train adopt --help)'


def _score_kind(results: Sequence[np.ndarray], class_axis: int) -> str:
    for scores in results:
        scores = scores.astype(np.float64)
        sums = scores.sum(axis=class_axis)
        if scores.min() < -SUM_TOLERANCE or not np.allclose(sums, 1.0, atol=SUM_TOLERANCE):
            return 'logits'
    return 'probabilities'
