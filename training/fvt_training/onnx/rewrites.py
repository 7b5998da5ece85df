"""Exact ONNX graph rewrites that make an exported model cheaper for ONNX Runtime on a CPU.

tf2onnx writes Keras layers one to one, and :func:`simplify_for_cpu` applies four exact
rewrites to what it writes. The first two replace layers that cost far more in ONNX Runtime
than their equivalent form (measured with its profiler on the keras-io U-Net-like default
model, 2-core CPU): a stride-1 ``Conv2DTranspose`` becomes ``ConvTranspose`` (a GEMM plus
col2im, 33 % of the float32 time, and left in float by int8 quantization: 49 % of the int8
time), and ``UpSampling2D`` becomes ``Resize`` with the deprecated ``tf_half_pixel_for_nn``
coordinate mode, which misses ONNX Runtime's fast nearest-neighbour path. The other two move
work done after an upsampling to before it, onto fewer pixels or channels:

- a ``ConvTranspose`` with stride 1, dilation 1 and one group is the ``Conv`` whose kernel is
  the transposed one with in/out channels swapped and both spatial axes flipped, padded by
  ``kernel - 1 - pad`` on each side (ONNX Runtime then fuses it with the following
  BatchNormalization and ReLU, and int8 quantization covers it);
- a nearest ``Resize`` with integer scales picks the same source pixel with the
  ``asymmetric`` mode (``floor(x / s)``) as with ``tf_half_pixel_for_nn``
  (``floor((x + 0.5) / s)``): for ``x = q * s + r`` with ``0 <= r < s`` both are ``q``;
- nearest upsampling commutes with work done pixel by pixel, so the decoder's
  ``Add(Up(a), Conv1x1(Up(b)))`` is ``Up(Add(a, Conv1x1(b)))``: half the Resize nodes, and the
  1x1 convolution and the Add on a quarter of the pixels;
- a 1x1 classifier on a sum of upsampled feature maps (the ``light_fpn`` head,
  ``Conv1x1(Up(h3) + Up(h2) + Up(h1) + h0)``) equals the sum of the upsampled class scores
  ``Up(Conv1x1(h3)) + ... + Conv1x1(h0)`` with the bias added once: linear (and nearest)
  interpolation mixes pixels with weights that sum to 1, which commutes with a per-pixel
  linear map and keeps a constant. The Resize and Add nodes then carry the 8 class channels
  instead of the decoder's 96 (ONNX Runtime's uint8 Resize of wide maps is slow).

Nodes that do not meet those conditions are left untouched; the export's parity check against
Keras still guards the result.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

CONV_TRANSPOSE_ATTRS = {'strides', 'dilations', 'kernel_shape', 'pads', 'auto_pad', 'group'}
LAYOUT_OPS = ('Transpose', 'Identity')


def _initializers(graph: Any) -> dict[str, Any]:
    return {init.name: init for init in graph.initializer}


def consumers(graph: Any) -> dict[str, list[Any]]:
    """Return, for each tensor name, the nodes that read it (in graph order)."""
    found: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _uses(graph: Any, name: str) -> int:
    """Return how many node inputs and graph outputs read the tensor ``name``."""
    return (sum(list(node.input).count(name) for node in graph.node)
            + sum(output.name == name for output in graph.output))


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


def _same_resize(a: Any, b: Any, inits: dict[str, Any]) -> bool:
    from onnx import numpy_helper

    if _attrs(a) != _attrs(b) or len(a.input) < 3 or len(b.input) < 3:
        return False
    if a.input[2] == b.input[2]:
        return True
    return (a.input[2] in inits and b.input[2] in inits and np.array_equal(
        numpy_helper.to_array(inits[a.input[2]]), numpy_helper.to_array(inits[b.input[2]])))


def _is_pointwise_conv(node: Any, inits: dict[str, Any]) -> bool:
    attrs = _attrs(node)
    weight = inits.get(node.input[1]) if len(node.input) > 1 else None
    return (node.op_type == 'Conv' and weight is not None and list(weight.dims[2:]) == [1, 1]
            and attrs.get('group', 1) == 1 and not any(attrs.get('pads', [0]))
            and set(attrs.get('strides', [1])) == {1} and set(attrs.get('dilations', [1])) == {1}
            and attrs.get('auto_pad', b'NOTSET') in (b'NOTSET', 'NOTSET'))


def _upsample_after_add(graph: Any, inits: dict[str, Any]) -> int:
    """Rewrite ``Add(Up(a), Conv1x1(Up(b)))`` as ``Up(Add(a, Conv1x1(b)))``; return the count.

    Nearest upsampling commutes with anything computed pixel by pixel, so this is exact; the
    U-Net-like decoder has the pattern once per block (main path and residual), which halves
    its Resize nodes and runs the 1x1 convolutions and the Add on a quarter of the pixels.
    """
    dropped: set[str] = set()
    for add in graph.node:
        if add.op_type != 'Add' or len(add.input) != 2:
            continue
        producers = {out: node for node in graph.node if node.output[0] not in dropped
                     for out in node.output}
        for first, second in ((0, 1), (1, 0)):
            up_a, conv = producers.get(add.input[first]), producers.get(add.input[second])
            up_b = producers.get(conv.input[0]) if conv is not None else None
            if (up_a is None or up_b is None or up_a.op_type != 'Resize'
                    or up_b.op_type != 'Resize' or up_a.output[0] == up_b.output[0]
                    or not _is_pointwise_conv(conv, inits)
                    or not _same_resize(up_a, up_b, inits)
                    or not _has_integer_scales(up_a, inits)
                    or any(_uses(graph, n.output[0]) != 1 for n in (up_a, up_b, conv))):
                continue
            summed = add.output[0] + '_before_upsampling'
            conv.input[0] = up_b.input[0]
            add.input[first] = up_a.input[0]
            up_a.input[0] = summed
            up_a.output[0], add.output[0] = add.output[0], summed
            dropped.add(up_b.output[0])
            break
    if dropped:
        _sort_topologically(graph, [n for n in graph.node if n.output[0] not in dropped])
    return len(dropped)


def _sum_leaves(graph: Any, name: str, producers: dict[str, Any],
                chain: list[Any]) -> list[str]:
    """Return the tensors an ``Add`` tree producing ``name`` sums (collecting its Adds)."""
    node = producers.get(name)
    if node is None or node.op_type != 'Add' or _uses(graph, name) != 1:
        return [name]
    chain.append(node)
    leaves: list[str] = []
    for tensor in node.input:
        leaves += _sum_leaves(graph, tensor, producers, chain)
    return leaves


def _classify_before_upsampling(graph: Any, inits: dict[str, Any]) -> int:
    """Move a 1x1 classifier before the upsampling of the maps it sums; return the count."""
    import onnx

    moved = 0
    for scores in [n.output[0] for n in graph.node if _is_pointwise_conv(n, inits)]:
        # Each rewrite replaces the graph's nodes by copies: look the classifier up anew.
        producers = {out: node for node in graph.node for out in node.output}
        conv = producers[scores]
        if not _is_pointwise_conv(conv, inits):
            continue
        chain: list[Any] = []
        leaves = _sum_leaves(graph, conv.input[0], producers, chain)
        if not chain:
            continue
        resizes = {t: producers[t] for t in leaves if t in producers
                   and producers[t].op_type == 'Resize' and _uses(graph, t) == 1
                   and _attrs(producers[t]).get('mode') in (b'linear', b'nearest')
                   and _has_integer_scales(producers[t], inits)}
        if not resizes:
            continue
        new_nodes, terms = [], []
        bias = list(conv.input[2:3])
        for index, leaf in enumerate(leaves):
            scored = f'{conv.output[0]}_term{index}'
            source = resizes[leaf].input[0] if leaf in resizes else leaf
            # The bias goes on one term only: upsampling keeps a constant, so once is exact.
            inputs = [source, conv.input[1], *(bias if index == 0 else [])]
            new_nodes.append(onnx.helper.make_node('Conv', inputs, [scored + '_small'],
                                                   name=f'{scored}_conv', kernel_shape=[1, 1]))
            if leaf in resizes:
                up = resizes[leaf]
                new_nodes.append(onnx.helper.make_node(
                    'Resize', [scored + '_small', *up.input[1:]], [scored],
                    name=f'{scored}_up', **_attrs(up)))
            else:
                new_nodes[-1].output[0] = scored
            terms.append(scored)
        total = terms[0]
        for index, term in enumerate(terms[1:], start=1):
            out = conv.output[0] if index == len(terms) - 1 else f'{conv.output[0]}_sum{index}'
            new_nodes.append(onnx.helper.make_node('Add', [total, term], [out],
                                                   name=f'{conv.output[0]}_sum{index}_add'))
            total = out
        gone = {id(n) for n in (conv, *chain, *resizes.values())}
        _sort_topologically(graph, [n for n in graph.node if id(n) not in gone] + new_nodes)
        moved += 1
    return moved


def _sort_topologically(graph: Any, nodes: list[Any]) -> None:
    """Replace the graph's nodes by ``nodes`` in an order where inputs come first."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {''}
    pending, ordered = list(nodes), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError('graph has a cycle or a missing input after rewriting')
        ordered += ready
        for node in ready:
            available.update(node.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def simplify_for_cpu(proto: Any) -> dict[str, int]:
    """Apply the rewrites of this module to ``proto`` in place; return how many of each."""
    graph = proto.graph
    inits = _initializers(graph)
    counts = {'conv_transpose_to_conv': 0, 'nearest_resize_asymmetric': 0,
              'upsample_after_add': 0, 'classify_before_upsampling': 0}
    for index, node in enumerate(graph.node):
        if node.op_type == 'ConvTranspose':
            conv = _conv_from_transpose(node, graph, inits)
            if conv is not None:
                graph.node[index].CopyFrom(conv)
                counts['conv_transpose_to_conv'] += 1
        elif node.op_type == 'Resize' and _fix_nearest_resize(node, inits):
            counts['nearest_resize_asymmetric'] += 1
    counts['upsample_after_add'] = _upsample_after_add(graph, inits)
    counts['classify_before_upsampling'] = _classify_before_upsampling(graph, inits)
    return counts


# The opset from which a reduction takes its ``axes`` as an input instead of an attribute.
AXES_AS_INPUT = {'ReduceSum': 13, 'ReduceMax': 18}


def axes_as_input(op: str, opset: int) -> bool:
    """Return whether reduction ``op`` (in ``AXES_AS_INPUT``) takes ``axes`` as an input."""
    return opset >= AXES_AS_INPUT[op]


def default_opset(proto: Any) -> int:
    """Return the version of the default (``ai.onnx``) operator set ``proto`` imports, or 0."""
    return next((o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')), 0)


def output_source(graph: Any, through: Collection[str] = LAYOUT_OPS
                  ) -> tuple[Any | None, list[Any]]:
    """Return the node whose result is the single graph output, behind pass-through nodes.

    Walks back from the output through nodes whose op type is in ``through`` (default: the
    layout-only ``Transpose`` and ``Identity``), each to its first input; those nodes are
    returned too, in that order. The source is None for a graph with several outputs or none
    produced by a node.
    """
    if len(graph.output) != 1:
        return None, []
    producers = {out: node for node in graph.node for out in node.output}
    node, passed = producers.get(graph.output[0].name), []
    while node is not None and node.op_type in through:
        passed.append(node)
        node = producers.get(node.input[0])
    return node, passed


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
    node, layout = output_source(graph)
    if any(_uses(graph, n.input[0]) != 1 for n in layout):
        return False
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
