"""The head ``fvt-train adopt`` appends to a public model: class scores -> 8 categories.

* scores (logits or probabilities, ``[N, K, h, w]`` or ``[N, h, w, K]``): each category
  scores the sum of the softmax probabilities of its classes (one 0/1 ``[K, 8]`` class ->
  category matrix), so ``~/confidence`` is a category probability.

  - NHWC: ``Softmax`` over the last axis (logits only), then a ``MatMul`` by the matrix;
  - NCHW: the classes are the channels, and ONNX Runtime's ``Softmax(axis=1)`` transposes
    internally (about 25 ms for 12 classes at 480x360 on a 2-core CPU, against about 5 ms
    for this head; a ``Conv`` 1x1 pays a layout reorder as well). So, with ``[N, K, h*w]``
    views (``Reshape``, no copy): ``e = Exp(x - ReduceMax(x))`` (logits only), category sums
    ``MatMul([8, K], e)``, class total ``MatMul([1, K], e)``, one ``Div``. The same
    numbers in every opset (``Softmax`` before opset 13 would normalise over C*H*W).
* class ids (an argmax-only model): a ``Gather`` from class id to category id, then a one-hot
  (``Equal`` against 0..7, ``Cast``): probability 1 for the category of the predicted class.
  An id outside ``0..K-1`` (a 255 "ignore", a negative id) is void: ``Where`` sends it to an
  extra void entry of the table, where ``Gather`` would fail (too large) or wrap to the last
  classes (negative).

:func:`map_to_categories` computes the same in numpy, for the check of the adopted file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fvt_segmentation.core.contract import CATEGORIES, VOID
from fvt_training.adopt.inspection import Inspection
from fvt_training.data.label_sets import LabelSet
from fvt_training.onnx.parity import softmax
from fvt_training.onnx.rewrites import axes_as_input

OUTPUT_NAME = 'category_probabilities'
PREFIX = 'fvt_adopt/'


def map_to_categories(output: np.ndarray, kind: str, class_axis: int,
                      label_set: LabelSet) -> np.ndarray:
    """Return, in numpy, the category probabilities the adopted head computes from ``output``.

    ``output`` is the source's raw output for a batch (class ids with or without their
    size-1 class axis); the result has the 8 categories on ``class_axis``.
    """
    if kind == 'class-ids':
        ids = output.astype(np.int64)
        if ids.ndim == 4:
            ids = np.squeeze(ids, axis=class_axis)
        known = (ids >= 0) & (ids < len(label_set))
        categories = np.where(known, label_set.lookup()[np.where(known, ids, 0)], VOID)
        onehot = (categories[..., None] == np.arange(len(CATEGORIES))).astype(np.float32)
        return np.moveaxis(onehot, -1, class_axis)
    scores = np.moveaxis(output.astype(np.float32), class_axis, -1)
    probabilities = softmax(scores, axis=-1) if kind == 'logits' else scores
    return np.moveaxis(probabilities @ label_set.matrix(), -1, class_axis)


def _names_in_use(graph: Any) -> set[str]:
    taken = {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
    taken |= {i.name for i in graph.initializer}
    return taken | {o for node in graph.node for o in node.output}


def _unique_name(taken: set[str], wanted: str) -> str:
    """Return ``wanted`` or the first free ``wanted_1``, ``wanted_2``...; add it to ``taken``."""
    name, i = wanted, 1
    while name in taken:
        name, i = f'{wanted}_{i}', i + 1
    taken.add(name)
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
    taken = _names_in_use(graph)

    def name(tag: str) -> str:
        return _unique_name(taken, PREFIX + tag if tag != OUTPUT_NAME else tag)

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
    classes = len(label_set)
    height, width = inspection.output_size
    if inspection.output == 'class-ids':
        ids = node('Cast', [src], 'ids_int64', to=TensorProto.INT64)
        below = node('Less', [ids, const('zero', np.array(0, np.int64))], 'ids_negative')
        above = node('Greater', [ids, const('last_class', np.array(classes - 1, np.int64))],
                     'ids_too_large')
        unknown = node('Or', [below, above], 'ids_unknown')
        known = node('Where', [unknown, const('void_entry', np.array(classes, np.int64)), ids],
                     'ids_known')
        table = np.append(label_set.lookup(), np.int64(VOID))
        categories = node('Gather', [const('class_to_category', table), known],
                          'category_ids')
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
            flat = node('Reshape', [scores, const('flat_shape', np.array([0, classes, -1],
                                                                        np.int64))],
                        'scores_flat')
            if inspection.output == 'logits':
                if axes_as_input('ReduceMax', inspection.opset):
                    top = node('ReduceMax', [flat, const('class_axes', np.array([1], np.int64))],
                               'class_max', keepdims=1)
                else:
                    top = node('ReduceMax', [flat], 'class_max', axes=[1], keepdims=1)
                shifted = node('Sub', [flat, top], 'shifted_logits')
                flat = node('Exp', [shifted], 'class_weights')
            sums = node('MatMul', [const('category_rows', matrix.T.copy()), flat],
                        'category_sums_flat')
            spatial = const('category_shape', np.array([0, ncats, height, width], np.int64))
            if inspection.output == 'probabilities':
                node('Reshape', [sums, spatial], 'category_sums', final)
            else:
                sums = node('Reshape', [sums, spatial], 'category_sums')
                total = node('MatMul', [const('ones_row', np.ones((1, classes), np.float32)),
                                        flat], 'class_total_flat')
                total = node('Reshape', [total, const('total_shape', np.array(
                    [0, 1, height, width], np.int64))], 'class_total')
                node('Div', [sums, total], 'category_probabilities', final)
        else:
            if inspection.output == 'logits':
                scores = node('Softmax', [scores], 'class_probabilities', axis=-1)
            node('MatMul', [scores, const('class_to_category', matrix)], 'category_sum',
                 final)
    graph.node.extend(nodes)
    batch = inspection.input_shape[0]
    batch_dim = 'N' if batch is None else batch
    height, width = inspection.output_size
    dims = [batch_dim, ncats, height, width] if nchw else [batch_dim, height, width, ncats]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(final, TensorProto.FLOAT, dims))
    onnx.checker.check_model(proto)
    return final
