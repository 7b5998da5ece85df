"""A Keras model -> an ONNX graph with tf2onnx, in memory (export and evaluate both need it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

OPSET = 17
INPUT_NAME = 'image'
OUTPUT_NAME = 'probabilities'


def keras_to_onnx(model: Any, input_size: Sequence[int], opset: int = OPSET) -> Any:
    """Convert a Keras model to an ONNX ``ModelProto`` (float32 NHWC input, dynamic batch).

    The input is named ``image`` and the output ``probabilities`` (renamed ``logits`` when
    :func:`fvt_training.onnx.export.export_run` drops the final softmax).
    """
    import logging

    import tensorflow as tf
    import tf2onnx

    tf2onnx.logging.set_level(logging.ERROR)
    height, width = (int(v) for v in input_size)
    signature = (tf.TensorSpec((None, height, width, 3), tf.float32, name=INPUT_NAME),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    rename_output(proto, OUTPUT_NAME)
    return proto


def rename_output(proto: Any, name: str) -> None:
    """Rename the first graph output of ``proto`` to ``name``, in every node that uses it."""
    old = proto.graph.output[0].name
    if old == name:
        return
    for node in proto.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    proto.graph.output[0].name = name
