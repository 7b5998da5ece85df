import numpy as np
from onnx import TensorProto, helper, numpy_helper
import pytest

from fvt_training.evaluation import flops


def _weights(name, shape):
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def _model(nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, 'g', inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])


def conv_chain():
    """Conv 3->8 (3x3), depthwise 3x3 over 8 channels, ConvTranspose 8->4 (2x2, stride 2)."""
    nodes = [
        helper.make_node('Conv', ['x', 'w1', 'b1'], ['a'], pads=[1, 1, 1, 1]),
        helper.make_node('Conv', ['a', 'w2'], ['b'], pads=[1, 1, 1, 1], group=8),
        helper.make_node('ConvTranspose', ['b', 'w3'], ['y'], strides=[2, 2]),
        helper.make_node('Reshape', ['y', 'shape'], ['flat']),
    ]
    inits = [_weights('w1', (8, 3, 3, 3)), _weights('b1', (8,)), _weights('w2', (8, 1, 3, 3)),
             _weights('w3', (8, 4, 2, 2)),
             numpy_helper.from_array(np.array([0, -1], np.int64), 'shape')]
    return _model(nodes, [helper.make_tensor_value_info('x', TensorProto.FLOAT,
                                                        ['N', 3, 16, 16])],
                  [helper.make_tensor_value_info('flat', TensorProto.FLOAT, None)], inits)


def test_convolutions_are_counted_from_their_shapes():
    model = conv_chain()
    conv = 16 * 16 * 8 * (3 * 3 * 3)        # every output element reads a 3x3x3 window
    depthwise = 16 * 16 * 8 * (1 * 3 * 3)   # one input channel per group
    transposed = 16 * 16 * 8 * (4 * 2 * 2)  # every input element feeds a 4x2x2 window
    assert flops.count_macs(model) == conv + depthwise + transposed
    assert flops.count_macs(model, batch=2) == 2 * (conv + depthwise + transposed)
    assert flops.gflops(model) == pytest.approx(2 * (conv + depthwise + transposed) / 1e9)


def test_parameters_are_the_float_weights_only():
    # The int64 reshape target is not a weight.
    assert flops.count_parameters(conv_chain()) == 8 * 27 + 8 + 8 * 9 + 8 * 4 * 4
    assert flops.describe(conv_chain())['params'] == 8 * 27 + 8 + 8 * 9 + 8 * 4 * 4


def test_matmul_and_gemm_are_counted():
    nodes = [helper.make_node('MatMul', ['x', 'w1'], ['h']),
             helper.make_node('Reshape', ['h', 'shape'], ['h2']),
             helper.make_node('Gemm', ['h2', 'w2'], ['y'])]
    inits = [_weights('w1', (16, 10)), _weights('w2', (50, 3)),
             numpy_helper.from_array(np.array([-1, 50], np.int64), 'shape')]
    model = _model(nodes, [helper.make_tensor_value_info('x', TensorProto.FLOAT,
                                                         ['N', 5, 16])],
                   [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)], inits)
    assert flops.count_macs(model) == 5 * 10 * 16 + 3 * 50


def test_an_uninferable_shape_is_named():
    nodes = [helper.make_node('Conv', ['x', 'w'], ['y'])]
    model = _model(nodes, [helper.make_tensor_value_info('x', TensorProto.FLOAT,
                                                         ['N', 3, 'H', 'W'])],
                   [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)],
                   [_weights('w', (4, 3, 1, 1))])
    with pytest.raises(ValueError, match='Conv node .*no static shape for'):
        flops.count_macs(model)
