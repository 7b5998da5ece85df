"""The head ``fvt-train adopt`` appends to a public model: class scores -> 8 categories.

* scores (logits or probabilities, ``[N, K, h, w]`` or ``[N, h, w, K]``): a softmax over the
  K classes (logits only), then one 0/1 ``[K, 8]`` class -> category matrix applied per pixel
  (a 1x1 ``Conv`` for NCHW, a ``MatMul`` for NHWC), so each category scores the sum of the
  probabilities of its classes and ``~/confidence`` is a category probability;
* class ids (an argmax-only model): a ``Gather`` from class id to category id, then a one-hot
  (``Equal`` against 0..7, ``Cast``): probability 1 for the category of the predicted class.

:func:`map_to_categories` computes the same in numpy, for the check of the adopted file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fvt_segmentation.core.contract import CATEGORIES
from fvt_training.adopt_source import Inspection
from fvt_training.label_sets import LabelSet

OUTPUT_NAME = 'category_probabilities'
PREFIX = 'fvt_adopt/'


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
    batch = inspection.input_shape[0]
    batch_dim = 'N' if batch is None else batch
    height, width = inspection.output_size
    dims = [batch_dim, ncats, height, width] if nchw else [batch_dim, height, width, ncats]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(final, TensorProto.FLOAT, dims))
    onnx.checker.check_model(proto)
    return final
