"""Model contract version 2: post-processing (and optionally normalisation) inside the graph.

A version 2 file keeps its float scores output (for evaluation and parity tools) and adds
uint8 outputs the node fetches instead, so a GPU copies 1 byte per pixel back to the host
(2 with confidence) instead of 4 per class, and the argmax and softmax run on the device:

- ``class_ids``: ``Cast<uint8>(ArgMax(scores, class axis))`` (first index on ties, like
  ``numpy.argmax``: ``select_last_index`` left at its default, the attribute exists only from
  opset 12);
- ``confidence``: ``Cast<uint8>(top * 255 + 0.5)``, the node's version 1 rounding, where
  ``top`` is the top class probability: ``ReduceMax(scores)`` for a probabilities output, and
  for logits ``1 / ReduceSum(Exp(scores - ReduceMax(scores)))`` over the class axis, as
  :func:`fvt_segmentation.core.frame_processing.scores_to_confidence` computes it. No ``Softmax``:
  before opset 13 it normalises over all axes from its own on (C*H*W on NCHW), and ONNX
  Runtime transposes for one over an NCHW tensor's axis 1;
- optionally a uint8 ``image`` input: ``Cast<float>`` then ``* gain + offset`` per channel,
  the same float32 operations, in the same order, as the node's version 1 preprocessing.

See ``docs/model-contract.md``.
"""

from __future__ import annotations

from dataclasses import replace
import os
from typing import Any

import numpy as np

from fvt_segmentation.core.contract import CONTRACT_V2, ModelContract, parse_contract
from fvt_training.onnx_rewrites import axes_as_input, consumers, default_opset

CLASSES_NAME = 'class_ids'
CONFIDENCE_NAME = 'confidence'


def to_contract_v2(proto: Any, contract: ModelContract, uint8_input: bool = False,
                   confidence: bool = True) -> ModelContract:
    """Append the version 2 outputs (and uint8 input) to ``proto`` in place.

    ``proto`` must follow ``contract`` (version 1: one float input, one float scores
    output). Returns the version 2 contract; write it with ``export.attach_contract``.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError(f'expected a version 1 graph (one input, one output); got '
                         f'{len(graph.input)} inputs and {len(graph.output)} outputs')
    scores = graph.output[0].name
    axis = 3 if contract.layout == 'NHWC' else 1  # positive: opsets before 11 need it so
    dims = [d for d in graph.output[0].type.tensor_type.shape.dim]
    spatial = [dims[0]] + ([dims[1], dims[2]] if contract.layout == 'NHWC' else dims[2:4])
    opset = default_opset(proto)

    def value_info(name: str) -> Any:
        info = helper.make_tensor_value_info(name, TensorProto.UINT8, None)
        for dim in spatial:
            info.type.tensor_type.shape.dim.add().CopyFrom(dim)
        return info

    def reduce(op: str, data: str, out: str, keepdims: int) -> Any:
        if not axes_as_input(op, opset):
            return helper.make_node(op, [data], [out], axes=[axis], keepdims=keepdims)
        if 'v2_axes' not in {i.name for i in graph.initializer}:
            graph.initializer.append(numpy_helper.from_array(np.array([axis], np.int64),
                                                             'v2_axes'))
        return helper.make_node(op, [data, 'v2_axes'], [out], keepdims=keepdims)

    nodes = [
        helper.make_node('ArgMax', [scores], ['v2_argmax'], axis=axis, keepdims=0),
        helper.make_node('Cast', ['v2_argmax'], [CLASSES_NAME], to=TensorProto.UINT8),
    ]
    outputs = {'scores': scores, 'classes': CLASSES_NAME}
    graph.output.append(value_info(CLASSES_NAME))
    if confidence:
        graph.initializer.extend([
            numpy_helper.from_array(np.array(255.0, np.float32), 'v2_255'),
            numpy_helper.from_array(np.array(0.5, np.float32), 'v2_half')])
        if contract.output == 'logits':
            nodes += [
                reduce('ReduceMax', scores, 'v2_max', keepdims=1),
                helper.make_node('Sub', [scores, 'v2_max'], ['v2_shifted']),
                helper.make_node('Exp', ['v2_shifted'], ['v2_exp']),
                reduce('ReduceSum', 'v2_exp', 'v2_sum', keepdims=0),
                helper.make_node('Reciprocal', ['v2_sum'], ['v2_top']),
            ]
        else:
            nodes.append(reduce('ReduceMax', scores, 'v2_top', keepdims=0))
        nodes += [
            helper.make_node('Mul', ['v2_top', 'v2_255'], ['v2_scaled']),
            helper.make_node('Add', ['v2_scaled', 'v2_half'], ['v2_rounded']),
            helper.make_node('Cast', ['v2_rounded'], [CONFIDENCE_NAME], to=TensorProto.UINT8),
        ]
        outputs['confidence'] = CONFIDENCE_NAME
        graph.output.append(value_info(CONFIDENCE_NAME))
    graph.node.extend(nodes)
    if uint8_input:
        _uint8_input(proto, contract)
    return replace(contract, version=CONTRACT_V2, outputs=outputs,
                   input_type='uint8' if uint8_input else 'float32')


def write_v2_copy(source: str | os.PathLike, out: str | os.PathLike, uint8_input: bool = False,
                  confidence: bool = True) -> ModelContract:
    """Write a version 2 copy of the version 1 file ``source`` to ``out``; return its contract.

    The copy's metadata is its new contract only; ``fvt-train export`` writes its own files
    with ``export.write_contract_v2``, which also checks the classes and confidence against
    version 1.
    """
    import onnx

    proto = onnx.load(os.fspath(source))
    meta = {p.key: p.value for p in proto.metadata_props}
    contract = to_contract_v2(proto, parse_contract(meta, os.fspath(source)), uint8_input,
                              confidence)
    onnx.helper.set_model_props(proto, contract.to_metadata())
    onnx.save(proto, os.fspath(out))
    return contract


def _uint8_input(proto: Any, contract: ModelContract) -> None:
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    image = graph.input[0]
    image.type.tensor_type.elem_type = TensorProto.UINT8
    if _pixels_are_quantized_input(graph, contract):
        return
    inner = f'{image.name}_normalized'
    for node in graph.node:
        node.input[:] = [inner if i == image.name else i for i in node.input]
    gain, offset = contract.normalization.as_affine()
    shape = (3,) if contract.layout == 'NHWC' else (3, 1, 1)
    graph.initializer.extend([
        numpy_helper.from_array(gain.reshape(shape), 'v2_gain'),
        numpy_helper.from_array(offset.reshape(shape), 'v2_offset')])
    prologue = [
        helper.make_node('Cast', [image.name], ['v2_pixels'], to=TensorProto.FLOAT),
        helper.make_node('Mul', ['v2_pixels', 'v2_gain'], ['v2_scaled_pixels']),
        helper.make_node('Add', ['v2_scaled_pixels', 'v2_offset'], [inner]),
    ]
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(prologue + existing)


def _pixels_are_quantized_input(graph: Any, contract: ModelContract) -> bool:
    """Let a quantized graph take the uint8 pixels as its first quantized tensor, if exact.

    An int8 file quantizes the normalised image first: ``QuantizeLinear(pixel * gain +
    offset, scale, zero_point)``. When ``scale == gain`` and ``zero_point == -offset / gain``
    (the same for all channels: MinMax calibration gives exactly that whenever the frames
    hold the pixel values 0 and 255), that is the pixel itself, so the QuantizeLinear is
    removed and the pixels go straight to its DequantizeLinear: no float image at all,
    identical results. Layout-only nodes (Transpose) between input and QuantizeLinear stay,
    now on uint8. Returns False, changing nothing, when the graph is not of that form.
    """
    from onnx import numpy_helper

    readers = consumers(graph)
    initializers = {i.name: i for i in graph.initializer}
    tensor, layout_nodes = graph.input[0].name, []
    while len(readers.get(tensor, [])) == 1 and readers[tensor][0].op_type == 'Transpose':
        layout_nodes.append(readers[tensor][0])
        tensor = layout_nodes[-1].output[0]
    found = readers.get(tensor, [])
    if (len(found) != 1 or found[0].op_type != 'QuantizeLinear' or len(found[0].input) != 3
            or not all(name in initializers for name in found[0].input[1:])):
        return False
    quantize = found[0]
    scale = numpy_helper.to_array(initializers[quantize.input[1]])
    zero_point = numpy_helper.to_array(initializers[quantize.input[2]])
    gain, offset = contract.normalization.as_affine()
    if (zero_point.dtype != np.uint8 or scale.size != 1 or zero_point.size != 1
            or not np.all(gain == scale) or not np.all(-offset / gain == zero_point)):
        return False
    for node in graph.node:
        node.input[:] = [tensor if i == quantize.output[0] else i for i in node.input]
    graph.node.remove(quantize)
    # The layout nodes now carry uint8: drop their float type declarations.
    layout_outputs = {node.output[0] for node in layout_nodes}
    for info in [v for v in graph.value_info if v.name in layout_outputs]:
        graph.value_info.remove(info)
    return True
