"""Model size and compute from an ONNX graph: parameter count and GFLOPs at the input size.

Counting works on the ONNX graph, so it serves exported files and Keras models alike (a Keras
model is converted in memory first, see :func:`fvt_training.models.keras_onnx.keras_to_onnx`).
Only the multiply-accumulate layers of a float graph are counted (Conv, ConvTranspose, MatMul,
Gemm); activations, additions, resizes and the softmax are a rounding error next to them. One
multiply-accumulate counts as two FLOPs. A quantized file does the same work as the float file
it was made from: report the float file's figures for it.
"""

from __future__ import annotations

import math

import onnx

_CONV_OPS = frozenset({'Conv', 'ConvTranspose'})
_MATMUL_OPS = frozenset({'MatMul', 'Gemm'})
_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                          onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE})


def _fixed_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in list(fixed.graph.input) + list(fixed.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField('dim_value'):
            dims[0].Clear()
            dims[0].dim_value = batch
    # Stale intermediate shapes (with a symbolic batch) would be kept by inference.
    del fixed.graph.value_info[:]
    return fixed


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, tuple[int, ...]] = {}
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField('dim_value') for d in dims):
            shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    for tensor in graph.initializer:
        shapes[tensor.name] = tuple(int(d) for d in tensor.dims)
    return shapes


def count_macs(model: onnx.ModelProto, batch: int = 1) -> int:
    """Return the multiply-accumulates of one forward pass with ``batch`` images.

    Raises ``ValueError`` naming the node when a counted layer's shapes cannot be inferred.
    """
    fixed = _fixed_batch(model, batch)
    shapes = _shapes(fixed)
    total = 0
    for node in fixed.graph.node:
        if node.op_type not in _CONV_OPS | _MATMUL_OPS:
            continue
        needed = [node.input[0], node.input[1], node.output[0]]
        missing = [name for name in needed if name not in shapes]
        if missing:
            raise ValueError(f'cannot count the operations of {node.op_type} node '
                             f'{node.name!r}: no static shape for {missing}')
        x, w, y = (shapes[name] for name in needed)
        if node.op_type == 'ConvTranspose':
            # Every input element is scattered through a (C_out / group) x kernel window.
            # (weight is [C_in, C_out / group, k...]).
            total += math.prod(x) * math.prod(w[1:])
        elif node.op_type == 'Conv':
            # weight is [C_out, C_in / group, k...]: each output element reads one window.
            total += math.prod(y) * math.prod(w[1:])
        elif node.op_type == 'Gemm':
            trans_a = next((a.i for a in node.attribute if a.name == 'transA'), 0)
            inner = x[0] if trans_a else x[1]
            total += math.prod(y) * inner
        else:
            total += math.prod(y) * x[-1]
    return int(total)


def gflops(model: onnx.ModelProto, batch: int = 1) -> float:
    """Return GFLOPs of one forward pass (2 FLOPs per multiply-accumulate)."""
    return 2.0 * count_macs(model, batch) / 1e9


def count_parameters(model: onnx.ModelProto) -> int:
    """Return the number of float weight values stored in a float graph.

    Integer shape constants do not count. Batch normalisation is folded into the
    convolutions by the export, so this is slightly below Keras' ``count_params()`` (which
    also counts the moving statistics).
    """
    return int(sum(math.prod(t.dims) for t in model.graph.initializer
                   if t.data_type in _FLOAT_TYPES))


def describe(model: onnx.ModelProto) -> dict[str, float | int]:
    """Return ``{'params': ..., 'gflops': ...}`` of a graph at its own input size, batch 1."""
    return {'params': count_parameters(model), 'gflops': gflops(model)}

