"""``fvt-train adopt``: a public ONNX segmentation model -> one file under our model contract.

The source file is inspected first (input and output shapes, class count against the label
set, see :func:`inspect_source`), and anything it cannot tell (layout, colour order,
normalisation, size) must come from a flag: an ambiguity is refused with a message naming
the flag to add. Then a small head is appended to the source graph, so the file outputs the
probabilities of the 8 categories of :mod:`fvt_segmentation.contract` and the node, the
review app, ``evaluate`` and ``replay`` run it unchanged:

* scores (logits or probabilities, ``[N, K, h, w]`` or ``[N, h, w, K]``): a softmax over the
  K classes (logits only), then one 0/1 ``[K, 8]`` class -> category matrix applied per pixel
  (a 1x1 ``Conv`` for NCHW, a ``MatMul`` for NHWC), so each category scores the sum of the
  probabilities of its classes and ``~/confidence`` is a category probability;
* class ids (an argmax-only model): a ``Gather`` from class id to category id, then a one-hot
  (``Equal`` against 0..7, ``Cast``): probability 1 for the category of the predicted class.
  Such a model states no uncertainty, so its ``~/confidence`` is 255 everywhere.

Classes without a category map to void. An output at a fraction of the input size (1/4, 1/8)
stays so: the contract allows a fixed fraction and the node resizes the class map. A dynamic
input height and width become the ``--size`` chosen (the node needs a fixed size). The source's
``(pixel - mean) / std`` is the contract's normalisation with scale 1, so the network's input
is not touched. The provenance holds the source's name and SHA-256, the licence and the
mapping. Before the file takes its name it is loaded through the node's own loader and
compared, on two frames, with the source's output mapped in numpy.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
import hashlib
import os
from pathlib import Path
import sys
from typing import Any

import numpy as np

from fvt_segmentation.contract import CATEGORIES, VOID, ModelContract, Normalization
from fvt_training.cli import non_negative_int, positive_int
from fvt_training.label_sets import LabelSet, load_label_set, sets_with

LAYOUTS = ('NCHW', 'NHWC')
COLOR_ORDERS = ('RGB', 'BGR')
SOURCE_OUTPUTS = ('logits', 'probabilities', 'class-ids')
OUTPUT_NAME = 'category_probabilities'
PREFIX = 'fvt_adopt/'
MAX_ABS_DIFF = 1e-4
SUM_TOLERANCE = 1e-3
# Ops an argmax's result may pass through before it becomes the graph output.
ID_PASS_THROUGH = frozenset({'Cast', 'Squeeze', 'Unsqueeze', 'Reshape', 'Identity', 'Flatten'})
IMAGENET_HINT = ('ImageNet statistics in RGB order: --mean 123.675,116.28,103.53 '
                 '--std 58.395,57.12,57.375; raw 0..255 pixels: --mean 0,0,0 --std 1,1,1')


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


def parse_triple(text: str) -> tuple[float, float, float]:
    """Parse ``A,B,C`` into three floats (argparse ``type`` of --mean and --std)."""
    try:
        values = tuple(float(v) for v in text.split(','))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f'expected three numbers A,B,C; got {text!r}')
    return values  # type: ignore[return-value]


def sha256_of(path: Path) -> str:
    """Return the SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open('rb') as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _dims(value_info: Any) -> tuple[Any, ...] | None:
    tensor = value_info.type.tensor_type
    if not tensor.HasField('shape'):
        return None
    return tuple(d.dim_value if d.HasField('dim_value') else (d.dim_param or None)
                 for d in tensor.shape.dim)


def _shape_text(shape: Sequence[Any] | None) -> str:
    if shape is None:
        return 'unknown'
    return '[' + ', '.join('?' if d is None else str(d) for d in shape) + ']'


def _opset(proto: Any) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')), 0)


def _graph_inputs(graph: Any) -> list[Any]:
    initializers = {i.name for i in graph.initializer}
    return [i for i in graph.input if i.name not in initializers]


def _pick_layout(shape: tuple[Any, ...], requested: str | None, source: str) -> str:
    channels_first, channels_last = shape[1] == 3, shape[3] == 3
    if requested is not None:
        axis = 1 if requested == 'NCHW' else 3
        if isinstance(shape[axis], int) and shape[axis] != 3:
            raise AdoptError(f'{source}: --input-layout {requested} puts the colour channels on '
                             f'axis {axis}, but the input shape {_shape_text(shape)} has '
                             f'{shape[axis]} there; expected 3')
        return requested
    if channels_first != channels_last:
        return 'NCHW' if channels_first else 'NHWC'
    raise AdoptError(f'{source}: cannot tell the input layout from its shape '
                     f'{_shape_text(shape)}; add --input-layout NCHW or --input-layout NHWC')


def _pick_size(shape: tuple[Any, ...], layout: str, wanted: tuple[int, int] | None,
               source: str) -> tuple[tuple[int, int], str]:
    spatial = (shape[2], shape[3]) if layout == 'NCHW' else (shape[1], shape[2])
    fixed = all(isinstance(d, int) and d > 0 for d in spatial)
    if wanted is None:
        if not fixed:
            raise AdoptError(f'{source}: the input height and width are dynamic (shape '
                             f'{_shape_text(shape)}); add --size WxH, the size to run it at '
                             '(e.g. its training crop; 2048x1024 or 1024x512 for Cityscapes)')
        return (int(spatial[0]), int(spatial[1])), 'file'
    height, width = wanted[1], wanted[0]
    for name, declared, chosen in (('height', spatial[0], height), ('width', spatial[1], width)):
        if isinstance(declared, int) and declared > 0 and declared != chosen:
            raise AdoptError(f'{source}: --size {width}x{height} does not fit the input shape '
                             f'{_shape_text(shape)}: its {name} is fixed at {declared}; omit '
                             '--size or give the fixed size')
    return (height, width), '--size'


def _normalization(options: AdoptOptions, source: str) -> Normalization:
    if options.mean is None and options.std is None:
        raise AdoptError(f'{source}: the file cannot tell the normalisation its network '
                         'expects; add --mean A,B,C --std A,B,C (0..255 pixel units, in the '
                         f'model colour order; the model sees (pixel - mean) / std). '
                         f'{IMAGENET_HINT}')
    if options.mean is None or options.std is None:
        given, missing = ('--mean', '--std') if options.std is None else ('--std', '--mean')
        raise AdoptError(f'{given} needs {missing} too (the model sees (pixel - mean) / std)')
    if any(s == 0 for s in options.std):
        raise AdoptError(f'--std must be three nonzero numbers; got {list(options.std)}')
    return Normalization(scale=1.0, mean=tuple(float(v) for v in options.mean),
                         std=tuple(float(v) for v in options.std))


def _fixed_input(proto: Any, layout: str, size: tuple[int, int]) -> None:
    """Give the (only) image input of ``proto`` 3 channels and the chosen height and width."""
    image = _graph_inputs(proto.graph)[0]
    dims = image.type.tensor_type.shape.dim
    axes = (1, 2, 3) if layout == 'NCHW' else (3, 1, 2)
    for axis, value in zip(axes, (3, *size), strict=True):
        dims[axis].Clear()
        dims[axis].dim_value = value


def _argmax_source(graph: Any, name: str) -> tuple[str, int] | None:
    """Return (scores tensor, axis) of the ArgMax that ``name`` comes from, if it does."""
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get(name)
    while node is not None and node.op_type in ID_PASS_THROUGH:
        node = producers.get(node.input[0])
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


def _session(proto: Any) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    try:
        return ort.InferenceSession(proto.SerializeToString(), sess_options=options,
                                    providers=['CPUExecutionProvider'])
    except Exception as err:  # onnxruntime raises several unrelated exception types
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AdoptError(f'ONNX Runtime cannot load the source with its input fixed at the '
                         f'chosen size ({text[:300]})') from None


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

    from fvt_segmentation.inference import preprocess_frame

    graph = proto.graph
    inputs = _graph_inputs(graph)
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
                         f'{image.name!r} has shape {_shape_text(shape)}')
    if elem != onnx.TensorProto.FLOAT:
        raise AdoptError(f'{source}: expected a float32 image input; input {image.name!r} is '
                         f'{onnx.TensorProto.DataType.Name(elem).lower()}')
    if isinstance(shape[0], int) and shape[0] > 1:
        raise AdoptError(f'{source}: expected a batch dimension of 1 or dynamic; input shape '
                         f'{_shape_text(shape)}')
    layout = _pick_layout(shape, options.input_layout, source)
    size, size_from = _pick_size(shape, layout, options.size, source)

    probe = copy.deepcopy(proto)
    _fixed_input(probe, layout, size)
    argmax = _argmax_source(graph, output.name)
    if argmax is not None:
        probe.graph.output.append(helper.make_empty_tensor_value_info(argmax[0]))
    print(f'probing {Path(source).name} at {size[1]}x{size[0]} on the CPU', file=sys.stderr)
    session = _session(probe)
    feed = replace(contract, layout=layout)
    frames = probe_frames(size)
    runs = [session.run(None, {image.name: preprocess_frame(f, 'RGB', size, feed)})
            for f in frames]
    results = [r[0] for r in runs]
    first = results[0]
    out_shape = tuple(int(d) for d in first.shape)
    what = f'output {output.name!r} (shape {_shape_text(out_shape)}, {first.dtype})'
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
                           _opset(proto)), frames, results)

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
                       str(first.dtype), detected, class_axis, count, _opset(proto)),
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
                             f'{found} classes (axis {scores[1]} of {_shape_text(scores[0])}) '
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


def map_to_categories(output: np.ndarray, kind: str, class_axis: int,
                      label_set: LabelSet) -> np.ndarray:
    """Return, in numpy, the category probabilities the adopted head computes from ``output``.

    ``output`` is the source's raw output for a batch (class ids with or without their
    size-1 class axis); the result has the 8 categories on ``class_axis``.
    """
    from fvt_training.export import softmax

    if kind == 'class-ids':
        ids = output.astype(np.int64)
        if ids.ndim == 4:
            ids = np.squeeze(ids, axis=class_axis)
        categories = label_set.lookup()[ids]
        onehot = (categories[..., None] == np.arange(len(CATEGORIES))).astype(np.float32)
        return np.moveaxis(onehot, -1, class_axis)
    scores = np.moveaxis(output.astype(np.float32), class_axis, -1)
    probabilities = softmax(scores, axis=-1) if kind == 'logits' else scores
    return np.moveaxis(probabilities @ label_set.matrix(), -1, class_axis)


def _unique_name(graph: Any, wanted: str) -> str:
    taken = {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
    taken |= {i.name for i in graph.initializer}
    taken |= {o for node in graph.node for o in node.output}
    name, i = wanted, 1
    while name in taken:
        name, i = f'{wanted}_{i}', i + 1
    return name


def add_category_head(proto: Any, inspection: Inspection, label_set: LabelSet) -> str:
    """Append to ``proto``'s graph the nodes from the source output to 8 category scores.

    The source output stops being a graph output; the new output (float32, same layout as
    the input, the source's output height and width, dynamic batch kept) is returned by name.
    See the module doc for the ops.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    nodes = []
    ncats = len(CATEGORIES)
    nchw = inspection.layout == 'NCHW'

    def name(tag: str) -> str:
        return _unique_name(graph, PREFIX + tag if tag != OUTPUT_NAME else tag)

    def const(tag: str, value: np.ndarray) -> str:
        tensor = numpy_helper.from_array(value, name(tag))
        graph.initializer.append(tensor)
        return tensor.name

    def node(op: str, inputs: list[str], tag: str, out: str = '', **attrs: Any) -> str:
        out = out or name(tag)
        nodes.append(helper.make_node(op, inputs, [out], name=PREFIX + tag, **attrs))
        return out

    final = name(OUTPUT_NAME)

    src = inspection.output_name
    if inspection.output == 'class-ids':
        ids = node('Cast', [src], 'ids_int64', to=TensorProto.INT64)
        categories = node('Gather', [const('class_to_category', label_set.lookup()), ids],
                          'category_ids')
        height, width = inspection.output_size
        target = [-1, 1, height, width] if nchw else [-1, height, width, 1]
        shaped = node('Reshape', [categories, const('id_shape', np.array(target, np.int64))],
                      'category_ids_4d')
        every = np.arange(ncats, dtype=np.int64).reshape((1, ncats, 1, 1) if nchw else (ncats,))
        hits = node('Equal', [shaped, const('category_range', every)], 'onehot_bool')
        node('Cast', [hits], 'onehot', final, to=TensorProto.FLOAT)
    else:
        scores = src
        if inspection.output_dtype != 'float32':
            scores = node('Cast', [scores], 'scores_float', to=TensorProto.FLOAT)
        matrix = label_set.matrix()
        if nchw:
            if inspection.output == 'logits':
                if inspection.opset >= 13:
                    scores = node('Softmax', [scores], 'class_probabilities', axis=1)
                else:
                    # Before opset 13 Softmax flattens from its axis on: it would normalise
                    # over C*H*W. Over the last axis it is per pixel in every opset.
                    last = node('Transpose', [scores], 'scores_nhwc', perm=[0, 2, 3, 1])
                    last = node('Softmax', [last], 'class_probabilities_nhwc', axis=-1)
                    scores = node('Transpose', [last], 'class_probabilities',
                                  perm=[0, 3, 1, 2])
            kernel = matrix.T.reshape(ncats, len(label_set), 1, 1).copy()
            node('Conv', [scores, const('class_to_category_1x1', kernel)], 'category_sum',
                 final)
        else:
            if inspection.output == 'logits':
                scores = node('Softmax', [scores], 'class_probabilities', axis=-1)
            node('MatMul', [scores, const('class_to_category', matrix)], 'category_sum',
                 final)
    graph.node.extend(nodes)
    batch = _graph_inputs(graph)[0].type.tensor_type.shape.dim[0]
    batch_dim: Any = batch.dim_value if batch.HasField('dim_value') else (batch.dim_param or 'N')
    height, width = inspection.output_size
    dims = [batch_dim, ncats, height, width] if nchw else [batch_dim, height, width, ncats]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(final, TensorProto.FLOAT, dims))
    onnx.checker.check_model(proto)
    return final


def adopted_contract(inspection: Inspection, normalization: Normalization, color_order: str,
                     label_set: LabelSet, source: Path, digest: str,
                     licence: str) -> ModelContract:
    """Return the contract of the adopted file, provenance included."""
    provenance = {
        'adopted_from': {'file': source.name, 'sha256': digest},
        'licence': licence,
        'labels': label_set.name,
        'label_table': label_set.source,
        'mapping': label_set.by_category(),
        'source_output': inspection.output,
        'source_classes': len(label_set),
        'input_size': list(inspection.size),
        'output_stride': inspection.stride(),
        'created': datetime.now(timezone.utc).isoformat(timespec='seconds'),
    }
    if inspection.output == 'class-ids':
        provenance['confidence'] = 'none: the source outputs class ids only (always 255)'
    return ModelContract(layout=inspection.layout, color_order=color_order,
                         normalization=normalization, output='probabilities',
                         ignore_index=VOID, provenance=provenance)


def adopted_doc_string(contract: ModelContract, label_set: LabelSet) -> str:
    """Return the one human sentence of the adopted file (ONNX doc_string)."""
    prov = contract.provenance
    how = ('the category of its predicted class' if prov['source_output'] == 'class-ids'
           else "the sum of its classes' softmax probabilities")
    return (f'Public segmentation model {prov["adopted_from"]["file"]} (sha256 '
            f'{prov["adopted_from"]["sha256"][:16]}...) with the {len(label_set)} classes of '
            f'{label_set.name}, adopted by fvt-train adopt: each of the {contract.num_classes} '
            f'categories ({", ".join(contract.categories)}) scores {how}; classes without a '
            f'category count as void; licence: {prov["licence"]}.')


def _parity(segmenter: Any, frames: Sequence[np.ndarray], source_outputs: Sequence[np.ndarray],
            inspection: Inspection, label_set: LabelSet) -> dict[str, Any]:
    worst, agree, total = 0.0, 0, 0
    for frame, raw in zip(frames, source_outputs, strict=True):
        expected = map_to_categories(raw, inspection.output, inspection.class_axis, label_set)
        got = segmenter.infer(segmenter.preprocess(frame, 'RGB'))
        if got.shape != expected.shape:
            raise AdoptError(f'{segmenter.model_path}: the adopted output has shape {got.shape}; '
                             f'the mapped source output has {expected.shape}')
        worst = max(worst, float(np.abs(got - expected).max()))
        agree += int((got.argmax(inspection.class_axis)
                      == expected.argmax(inspection.class_axis)).sum())
        total += got.size // got.shape[inspection.class_axis]
    return {'frames': len(frames), 'max_abs_diff': worst, 'argmax_agreement': agree / total}


def adopt(source: str | os.PathLike, out: str | os.PathLike,
          options: AdoptOptions) -> dict[str, Any]:
    """Adopt ``source`` into ``out`` (see the module doc); return what was found and done.

    Raises :class:`AdoptError` (or :class:`~fvt_training.label_sets.LabelSetError`) before
    anything is written when the file or the options do not fit.
    """
    import onnx

    from fvt_segmentation.inference import load_segmenter
    from fvt_training.export import attach_contract, save_atomic

    source, out = Path(source), Path(out)
    if out.suffix != '.onnx':
        raise AdoptError(f'--out must name an .onnx file; got {out}')
    if not source.is_file():
        raise AdoptError(f'{source}: no such file')
    if out.resolve() == source.resolve():
        raise AdoptError(f'--out {out} is the source file; choose another name')
    label_set = load_label_set(options.labels)
    if options.color_order is None:
        raise AdoptError(f'{source}: the file cannot tell the colour order its network '
                         'expects; add --color-order RGB (mmsegmentation, torchvision, timm '
                         'models) or --color-order BGR (models trained on OpenCV frames as read)')
    normalization = _normalization(options, str(source))
    if not options.licence.strip():
        raise AdoptError('--licence must say under which terms the model may be used; got an '
                         'empty text')
    try:
        proto = onnx.load(str(source))
    except Exception as err:  # onnx raises DecodeError, OSError, ...
        raise AdoptError(f'{source}: not an ONNX model ({str(err)[:200]})') from None
    feed = ModelContract(color_order=options.color_order, normalization=normalization)
    inspection, frames, raw = inspect_source(proto, str(source), options, label_set, feed)
    digest = sha256_of(source)
    contract = adopted_contract(inspection, normalization, options.color_order, label_set,
                                source, digest, options.licence.strip())

    _fixed_input(proto, inspection.layout, inspection.size)
    output_name = add_category_head(proto, inspection, label_set)
    attach_contract(proto, contract, adopted_doc_string(contract, label_set))
    tmp = out.with_name(f'.tmp-{os.getpid()}-{out.name}')
    save_atomic(proto, tmp)
    try:
        segmenter = load_segmenter(tmp, providers=['cpu'], intra_op_spinning=False)
        if segmenter.contract.to_metadata() != contract.to_metadata():
            raise AdoptError(f'{out}: the contract read back differs from the one written')
        parity = _parity(segmenter, frames, raw, inspection, label_set)
        if parity['max_abs_diff'] > MAX_ABS_DIFF or parity['argmax_agreement'] < 1.0:
            raise AdoptError(
                f'{out}: the adopted file disagrees with the source mapped in numpy on '
                f'{len(frames)} frames: max abs diff {parity["max_abs_diff"]:.3g} (limit '
                f'{MAX_ABS_DIFF}), argmax agreement {parity["argmax_agreement"]:.4%} '
                '(expected 100 %)')
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return {'source': str(source), 'out': str(out), 'sha256': digest,
            'labels': label_set.name, 'inspection': inspection, 'output_name': output_name,
            'contract': contract, 'parity': parity}


def describe(result: dict[str, Any]) -> str:
    """Return a human summary of what :func:`adopt` found and wrote."""
    ins: Inspection = result['inspection']
    height, width = ins.size
    oh, ow = ins.output_size
    stride = ins.stride()
    fraction = ('the input size' if stride == 1 else f'1/{stride} of the input'
                if isinstance(stride, int) else f'{ow}x{oh} (ratios {stride})')
    classes = (f'{ins.num_classes} classes' if ins.num_classes is not None
               else 'classes not countable in the graph (no ArgMax found)')
    mapping = result['contract'].provenance['mapping']
    parity = result['parity']
    lines = [
        f'source: {Path(result["source"]).name} (sha256 {result["sha256"][:16]}...)',
        f'  input {ins.input_name!r} {_shape_text(ins.input_shape)} float32 {ins.layout}, run '
        f'at {width}x{height} (from {ins.size_from})',
        f'  output {ins.output_name!r} {_shape_text(ins.output_shape)} {ins.output_dtype}: '
        f'{ins.output}, {classes}, at {fraction}',
        f'wrote {result["out"]}: output {result["output_name"]!r} = probabilities of '
        f'{len(CATEGORIES)} categories ({result["labels"]}):',
        *(f'  {category}: {", ".join(names)}' for category, names in mapping.items()),
        f'  checked against the source mapped in numpy on {parity["frames"]} frames: max abs '
        f'diff {parity["max_abs_diff"]:.1e}, argmax agreement {parity["argmax_agreement"]:.2%}',
    ]
    if ins.output == 'class-ids':
        lines.append('  note: class ids only, so ~/confidence is 255 everywhere; for a real '
                     'confidence export the model without its final ArgMax')
    return '\n'.join(lines)


def check_adopted(adopted: str | os.PathLike, source: str | os.PathLike,
                  data: str | os.PathLike, split: str = 'val', runs: int = 20,
                  warmup: int = 3, limit: int | None = None) -> dict[str, Any]:
    """Score the adopted file on a prepared split and time it against the source.

    mIoU comes from :func:`fvt_training.evaluate.confusion_over_split` (the node's pre- and
    post-processing); both files are timed on the CPU, batch 1, in turns, on the same
    preprocessed frame (the network alone). ``runs=0`` skips the timing.
    """
    import onnx

    from fvt_segmentation.metrics import summarize
    from fvt_training.evaluate import OnnxFileModel, confusion_over_split, preprocess_batch
    from fvt_training.latency import time_interleaved
    from fvt_training.prepared import load_pair, read_manifest

    manifest = read_manifest(data)
    model = OnnxFileModel(adopted)
    cm, _ = confusion_over_split(model, manifest, split, limit=limit)
    report: dict[str, Any] = {
        'data': str(manifest.folder), 'split': split,
        'images': len(manifest.ids(split)[:limit]),
        'metrics': summarize(cm, CATEGORIES, VOID)}
    if runs > 0:
        proto = onnx.load(str(source))
        source_session = _session(proto)
        frame = load_pair(manifest, split, manifest.ids(split)[0])[0]
        batch = preprocess_batch(model, [frame])
        input_name = source_session.get_inputs()[0].name
        print(f'timing source and adopted files: {runs} runs each after {warmup} warm-up',
              file=sys.stderr)
        report['latency_ms'] = time_interleaved(
            {'source': lambda: source_session.run(None, {input_name: batch}),
             'adopted': lambda: model.predict(batch)}, runs, warmup)
    return report


def format_check(check: dict[str, Any]) -> str:
    """Return the human lines of :func:`check_adopted`'s report."""
    metrics = check['metrics']
    lines = [f'check on {check["data"]} {check["split"]} ({check["images"]} images): mIoU '
             f'{metrics["miou"]:.4f} (7 categories, void ignored), 8-class mean '
             f'{metrics["miou_all"]:.4f}',
             '  IoU: ' + ', '.join('{} {}'.format(k, '-' if v is None or v != v else f'{v:.3f}')
                                   for k, v in metrics['iou'].items())]
    latency = check.get('latency_ms')
    if latency:
        src, new = latency['source'], latency['adopted']
        lines.append(f'  speed (CPU, batch 1, median of {new["runs"]} runs): adopted '
                     f'{new["median_ms"]:.2f} ms, source {src["median_ms"]:.2f} ms '
                     f'({new["median_ms"] - src["median_ms"]:+.2f} ms for the category head)')
    return '\n'.join(lines)


def add_adopt_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fvt-train adopt``."""
    parser = subparsers.add_parser(
        'adopt', help='adopt a public ONNX segmentation model into the 8-category contract',
        description='Append a head to SOURCE.onnx that turns its class scores (or ids) into '
                    'the probabilities of the 8 categories, write the model contract with the '
                    "source's SHA-256, the licence and the mapping, and check the result "
                    "through the node's loader. A YAML label file lists one entry per output "
                    'channel, in order: "classes: [{name: road, category: flat}, {name: '
                    'background, category: void}]" (no category: void).')
    parser.add_argument('source', metavar='SOURCE.onnx', help='the public model file')
    parser.add_argument('--labels', required=True, metavar='LABELS',
                        help='cityscapes-trainids (19), cityscapes-labelids (34), camvid11, or '
                             'a YAML label file')
    parser.add_argument('--out', required=True, metavar='ADOPTED.onnx', help='output file')
    parser.add_argument('--licence', required=True, metavar='TEXT',
                        help="the model's licence terms (and its training data's), shown "
                             'wherever the model is')
    parser.add_argument('--input-layout', choices=LAYOUTS,
                        help='when the input shape cannot tell (default: from the shape)')
    parser.add_argument('--color-order', choices=COLOR_ORDERS,
                        help='colour order the network expects (required)')
    parser.add_argument('--mean', type=parse_triple, metavar='A,B,C',
                        help='per-channel mean in 0..255 units, model colour order (required)')
    parser.add_argument('--std', type=parse_triple, metavar='A,B,C',
                        help='per-channel std in 0..255 units, model colour order (required)')
    parser.add_argument('--size', metavar='WxH',
                        help='input size to run at (required when the input size is dynamic)')
    parser.add_argument('--output', choices=SOURCE_OUTPUTS,
                        help='what the output holds (default: scores are told apart by '
                             'whether they sum to 1, integers are class ids)')
    parser.add_argument('--check', metavar='DATA',
                        help='prepared folder: print the adopted mIoU and both speeds')
    parser.add_argument('--split', default='val', help='split of --check (default: val)')
    parser.add_argument('--limit', type=positive_int, help='score only the first N images')
    parser.add_argument('--timing-runs', type=non_negative_int, default=20,
                        help='timed runs per file for --check (default: 20; 0 skips timing)')
    parser.set_defaults(func=run_adopt_command)
    return parser


def run_adopt_command(args: argparse.Namespace) -> int:
    """Run ``fvt-train adopt`` from parsed arguments."""
    from fvt_training.prepare import parse_sizes

    size = None
    if args.size is not None:
        sizes = parse_sizes([args.size])
        if len(sizes) != 1:
            raise AdoptError(f'--size expects one WxH; got {args.size!r}')
        size = sizes[0]
    options = AdoptOptions(labels=args.labels, licence=args.licence,
                           input_layout=args.input_layout, color_order=args.color_order,
                           mean=args.mean, std=args.std, size=size, output=args.output)
    result = adopt(args.source, args.out, options)
    print(describe(result))
    if args.check:
        check = check_adopted(args.out, args.source, args.check, args.split,
                              runs=args.timing_runs, limit=args.limit)
        print(format_check(check))
    return 0
