"""The export's graph rewrites give the same numbers with cheaper operators."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort
import pytest

from fvt_training.onnx_rewrites import simplify_for_cpu, strip_output_softmax

RNG = np.random.default_rng(0)


def _model(nodes, inits, out_shape, out_name='y'):
    graph = helper.make_graph(
        nodes, 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3, 6, 5])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], ir_version=8)


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
    return session.run(None, {'x': x})[0]


def _decoder(strides=(1, 1), pads=(1, 0, 2, 1), kernel=(3, 4), scales=(1, 1, 2, 3),
             mode='tf_half_pixel_for_nn'):
    """ConvTranspose -> nearest Resize -> Softmax over channels -> Transpose (like tf2onnx)."""
    nodes = [
        helper.make_node('ConvTranspose', ['x', 'w', 'b'], ['t'], strides=list(strides),
                         pads=list(pads), kernel_shape=list(kernel), dilations=[1, 1]),
        helper.make_node('Resize', ['t', '', 'scales'], ['r'], mode='nearest',
                         coordinate_transformation_mode=mode, nearest_mode='floor'),
        helper.make_node('Softmax', ['r'], ['p'], axis=1),
        helper.make_node('Transpose', ['p'], ['y'], perm=[0, 2, 3, 1]),
    ]
    inits = {'w': RNG.normal(size=(3, 4, *kernel)), 'b': RNG.normal(size=4),
             'scales': np.array(scales)}
    return _model(nodes, inits, None)


def test_stride_one_conv_transpose_and_integer_nearest_resize_become_exact_equivalents():
    model = _decoder()
    x = RNG.normal(size=(1, 3, 6, 5)).astype(np.float32)
    before = _run(model, x)
    counts = simplify_for_cpu(model)
    assert counts == {'conv_transpose_to_conv': 1, 'nearest_resize_asymmetric': 1}
    ops = [n.op_type for n in model.graph.node]
    assert ops == ['Conv', 'Resize', 'Softmax', 'Transpose']
    after = _run(model, x)
    # Rows 6 - 1 + 3 - (1 + 2) = 5, then x2; columns 5 - 1 + 4 - (0 + 1) = 7, then x3.
    assert after.shape == before.shape == (1, 10, 21, 4)
    np.testing.assert_allclose(after, before, atol=1e-5)


@pytest.mark.parametrize(('kwargs', 'expected'), [
    ({'strides': (2, 2), 'pads': (1, 1, 1, 1)}, {'conv_transpose_to_conv': 0,
                                                  'nearest_resize_asymmetric': 1}),
    ({'pads': (3, 1, 1, 1)}, {'conv_transpose_to_conv': 0, 'nearest_resize_asymmetric': 1}),
    ({'scales': (1, 1, 1.5, 2)}, {'conv_transpose_to_conv': 1, 'nearest_resize_asymmetric': 0}),
    ({'mode': 'half_pixel'}, {'conv_transpose_to_conv': 1, 'nearest_resize_asymmetric': 0}),
])
def test_nodes_without_an_exact_equivalent_are_left_alone(kwargs, expected):
    model = _decoder(**kwargs)
    x = RNG.normal(size=(1, 3, 6, 5)).astype(np.float32)
    before = _run(model, x)
    assert simplify_for_cpu(model) == expected
    np.testing.assert_allclose(_run(model, x), before, atol=1e-5)


def test_final_softmax_is_dropped_and_the_argmax_kept():
    model = _decoder()
    x = RNG.normal(size=(1, 3, 6, 5)).astype(np.float32)
    probabilities = _run(model, x)
    assert strip_output_softmax(model)
    assert [n.op_type for n in model.graph.node] == ['ConvTranspose', 'Resize', 'Transpose']
    logits = _run(model, x)
    np.testing.assert_array_equal(logits.argmax(-1), probabilities.argmax(-1))
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(exp / exp.sum(-1, keepdims=True), probabilities, atol=1e-6)
    assert not strip_output_softmax(model)  # nothing left to drop


def test_softmax_as_the_output_itself_or_with_other_consumers():
    nodes = [helper.make_node('Relu', ['x'], ['r']),
             helper.make_node('Softmax', ['r'], ['y'], axis=1)]
    model = _model(nodes, {}, None)
    x = RNG.normal(size=(1, 3, 6, 5)).astype(np.float32)
    assert strip_output_softmax(model)
    np.testing.assert_array_equal(_run(model, x), np.maximum(x, 0))
    shared = _model([helper.make_node('Softmax', ['x'], ['p'], axis=1),
                     helper.make_node('Transpose', ['p'], ['y'], perm=[0, 2, 3, 1]),
                     helper.make_node('Identity', ['p'], ['q'])], {}, None)
    assert not strip_output_softmax(shared)
