"""Exact ONNX graph rewrites that make an exported model cheaper for ONNX Runtime on a CPU.

tf2onnx writes Keras layers one to one. Two of them cost far more in ONNX Runtime than the
equivalent form (measured with its profiler on the keras-io U-Net-like default model, 2-core
CPU): a stride-1 ``Conv2DTranspose`` becomes ``ConvTranspose`` (a GEMM plus col2im, 33 % of
the float32 time, and left in float by int8 quantization: 49 % of the int8 time), and
``UpSampling2D`` becomes ``Resize`` with the deprecated ``tf_half_pixel_for_nn`` coordinate
mode, which misses ONNX Runtime's fast nearest-neighbour path. Both have an exact equivalent:

- a ``ConvTranspose`` with stride 1, dilation 1 and one group is the ``Conv`` whose kernel is
  the transposed one with in/out channels swapped and both spatial axes flipped, padded by
  ``kernel - 1 - pad`` on each side (ONNX Runtime then fuses it with the following
  BatchNormalization and ReLU, and int8 quantization covers it);
- a nearest ``Resize`` with integer scales picks the same source pixel with the
  ``asymmetric`` mode (``floor(x / s)``) as with ``tf_half_pixel_for_nn``
  (``floor((x + 0.5) / s)``): for ``x = q * s + r`` with ``0 <= r < s`` both are ``q``.

Nodes that do not meet those conditions are left untouched; the export's parity check against
Keras still guards the result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CONV_TRANSPOSE_ATTRS = {'strides', 'dilations', 'kernel_shape', 'pads', 'auto_pad', 'group'}


def _initializers(graph: Any) -> dict[str, Any]:
    return {init.name: init for init in graph.initializer}


def _uses(graph: Any, name: str) -> int:
    return sum(list(node.input).count(name) for node in graph.node)


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv_from_transpose(node: Any, graph: Any, inits: dict[str, Any]) -> Any | None:
    """Return the ``Conv`` node equivalent to a stride-1 ``ConvTranspose``, or None."""
    import onnx
    from onnx import numpy_helper

    attrs = _attrs(node)
    if set(attrs) - CONV_TRANSPOSE_ATTRS or len(node.input) < 2:
        return None  # output_padding / output_shape and the like: not handled
    weight = inits.get(node.input[1])
    if weight is None or _uses(graph, node.input[1]) != 1:
        return None
    kernel = numpy_helper.to_array(weight)
    if kernel.ndim != 4:
        return None
    spatial = kernel.shape[2:]
    pads = list(attrs.get('pads', [0] * 4))
    auto_pad = attrs.get('auto_pad', b'NOTSET')
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if (list(attrs.get('strides', [1, 1])) != [1, 1]
            or list(attrs.get('dilations', [1, 1])) != [1, 1]
            or attrs.get('group', 1) != 1 or auto_pad != 'NOTSET' or len(pads) != 4):
        return None
    conv_pads = [spatial[0] - 1 - pads[0], spatial[1] - 1 - pads[1],
                 spatial[0] - 1 - pads[2], spatial[1] - 1 - pads[3]]
    if min(conv_pads) < 0:
        return None
    flipped = np.ascontiguousarray(kernel.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    weight.CopyFrom(numpy_helper.from_array(flipped, weight.name))
    return onnx.helper.make_node('Conv', list(node.input), list(node.output), name=node.name,
                                 kernel_shape=list(spatial), pads=conv_pads,
                                 strides=[1, 1], dilations=[1, 1], group=1)


def _has_integer_scales(node: Any, inits: dict[str, Any]) -> bool:
    from onnx import numpy_helper

    if len(node.input) < 3 or node.input[2] not in inits:
        return False
    scales = numpy_helper.to_array(inits[node.input[2]])
    return scales.size > 0 and bool(np.all(scales >= 1) and np.all(scales == np.round(scales)))


def _fix_nearest_resize(node: Any, inits: dict[str, Any]) -> bool:
    """Switch an integer-scale nearest ``Resize`` to the asymmetric mode; True if changed."""
    attrs = _attrs(node)
    mode = attrs.get('coordinate_transformation_mode', b'')
    if (attrs.get('mode') != b'nearest' or mode != b'tf_half_pixel_for_nn'
            or attrs.get('nearest_mode', b'round_prefer_floor') != b'floor'
            or not _has_integer_scales(node, inits)):
        return False
    for attr in node.attribute:
        if attr.name == 'coordinate_transformation_mode':
            attr.s = b'asymmetric'
    return True


def simplify_for_cpu(proto: Any) -> dict[str, int]:
    """Apply the rewrites of this module to ``proto`` in place; return how many of each."""
    graph = proto.graph
    inits = _initializers(graph)
    counts = {'conv_transpose_to_conv': 0, 'nearest_resize_asymmetric': 0}
    for index, node in enumerate(graph.node):
        if node.op_type == 'ConvTranspose':
            conv = _conv_from_transpose(node, graph, inits)
            if conv is not None:
                graph.node[index].CopyFrom(conv)
                counts['conv_transpose_to_conv'] += 1
        elif node.op_type == 'Resize' and _fix_nearest_resize(node, inits):
            counts['nearest_resize_asymmetric'] += 1
    return counts


def strip_output_softmax(proto: Any) -> bool:
    """Drop a final ``Softmax`` so that the model outputs logits; True if one was dropped.

    The argmax, all the node needs for the mask, is the same on logits, and ONNX Runtime's
    softmax over the 8-class channel axis of an NCHW tensor cost about 15 % of the U-Net-like
    model's time on this CPU. The contract then says ``output: logits`` and the node computes
    the softmax itself, on the small model-size map, only when ``~/confidence`` is wanted.
    Only a softmax followed by nothing but layout ops (``Transpose``, ``Identity``) up to the
    single graph output qualifies.
    """
    graph = proto.graph
    if len(graph.output) != 1:
        return False
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get(graph.output[0].name)
    while node is not None and node.op_type in ('Transpose', 'Identity'):
        if _uses(graph, node.input[0]) != 1:
            return False
        node = producers.get(node.input[0])
    if node is None or node.op_type != 'Softmax' or _uses(graph, node.output[0]) > 1:
        return False
    source, result = node.input[0], node.output[0]
    graph.node.remove(node)
    if result == graph.output[0].name:  # the softmax itself was the output: rename its input
        for other in graph.node:
            other.output[:] = [result if o == source else o for o in other.output]
            other.input[:] = [result if i == source else i for i in other.input]
    else:
        for other in graph.node:
            other.input[:] = [source if i == result else i for i in other.input]
    return True
