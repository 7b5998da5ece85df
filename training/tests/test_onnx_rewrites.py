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
    assert counts == {'conv_transpose_to_conv': 1, 'nearest_resize_asymmetric': 1,
                      'upsample_after_add': 0, 'classify_before_upsampling': 0}
    ops = [n.op_type for n in model.graph.node]
    assert ops == ['Conv', 'Resize', 'Softmax', 'Transpose']
    after = _run(model, x)
    # Rows 6 - 1 + 3 - (1 + 2) = 5, then x2; columns 5 - 1 + 4 - (0 + 1) = 7, then x3.
    assert after.shape == before.shape == (1, 10, 21, 4)
    np.testing.assert_allclose(after, before, atol=1e-5)


@pytest.mark.parametrize(('kwargs', 'expected'), [
    ({'strides': (2, 2), 'pads': (1, 1, 1, 1)}, (0, 1)),
    ({'pads': (3, 1, 1, 1)}, (0, 1)),
    ({'scales': (1, 1, 1.5, 2)}, (1, 0)),
    ({'mode': 'half_pixel'}, (1, 0)),
])
def test_nodes_without_an_exact_equivalent_are_left_alone(kwargs, expected):
    model = _decoder(**kwargs)
    x = RNG.normal(size=(1, 3, 6, 5)).astype(np.float32)
    before = _run(model, x)
    assert simplify_for_cpu(model) == {'conv_transpose_to_conv': expected[0],
                                       'nearest_resize_asymmetric': expected[1],
                                       'upsample_after_add': 0,
                                       'classify_before_upsampling': 0}
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


def _residual_block(kernel=(1, 1), scales=(1, 1, 2, 2), residual_scales=(1, 1, 2, 2)):
    """The U-Net-like decoder's tail: Add(Up(Relu(x)), Conv(Up(x))), then a consumer."""
    nodes = [
        helper.make_node('Relu', ['x'], ['a']),
        helper.make_node('Resize', ['a', '', 'scales'], ['up_a'], mode='nearest',
                         coordinate_transformation_mode='asymmetric', nearest_mode='floor'),
        helper.make_node('Resize', ['x', '', 'scales_b'], ['up_b'], mode='nearest',
                         coordinate_transformation_mode='asymmetric', nearest_mode='floor'),
        helper.make_node('Conv', ['up_b', 'w', 'b'], ['c'], kernel_shape=list(kernel),
                         pads=[0, 0, 0, 0] if kernel == (1, 1) else [1, 1, 1, 1]),
        helper.make_node('Add', ['c', 'up_a'], ['sum']),
        helper.make_node('Relu', ['sum'], ['y']),
    ]
    inits = {'w': RNG.normal(size=(3, 3, *kernel)), 'b': RNG.normal(size=3),
             'scales': np.array(scales), 'scales_b': np.array(residual_scales)}
    return _model(nodes, inits, None)


def test_upsampling_moves_after_the_residual_add():
    model = _residual_block()
    x = RNG.normal(size=(1, 3, 6, 5)).astype(np.float32)
    before = _run(model, x)
    assert simplify_for_cpu(model)['upsample_after_add'] == 1
    assert [n.op_type for n in model.graph.node] == ['Relu', 'Conv', 'Add', 'Resize', 'Relu']
    after = _run(model, x)
    assert after.shape == before.shape == (1, 3, 12, 10)
    np.testing.assert_allclose(after, before, atol=1e-6)


@pytest.mark.parametrize('kwargs', [{'kernel': (3, 3)}, {'residual_scales': (1, 1, 2, 1)}])
def test_upsampling_stays_where_moving_it_would_change_the_result(kwargs):
    model = _residual_block(**kwargs)
    x = RNG.normal(size=(1, 3, 6, 5)).astype(np.float32)
    before = _run(model, x) if 'residual_scales' not in kwargs else None
    assert simplify_for_cpu(model)['upsample_after_add'] == 0
    assert [n.op_type for n in model.graph.node].count('Resize') == 2
    if before is not None:
        np.testing.assert_allclose(_run(model, x), before, atol=1e-6)


def _fpn_head(shared_sum=False, classifier_kernel=(1, 1)):
    """light_fpn's tail: Conv1x1(Up4(h2) + Up2(h1) + h0) with bias, Up4 of the scores.

    h0 is a 4x4 max-pooled x (3 channels), h1 and h2 are coarser maps of it.
    """
    linear = dict(mode='linear', coordinate_transformation_mode='half_pixel')
    nodes = [
        helper.make_node('MaxPool', ['x'], ['h0'], kernel_shape=[3, 2], strides=[1, 1]),
        helper.make_node('MaxPool', ['h0'], ['h1'], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node('AveragePool', ['h1'], ['h2'], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node('Resize', ['h2', '', 'four'], ['up2'], **linear),
        helper.make_node('Resize', ['h1', '', 'two'], ['up1'], **linear),
        helper.make_node('Add', ['up1', 'h0'], ['s1']),
        helper.make_node('Add', ['up2', 's1'], ['s2']),
        helper.make_node('Conv', ['s2', 'w', 'b'], ['scores'],
                         kernel_shape=list(classifier_kernel),
                         pads=[0] * 4 if classifier_kernel == (1, 1) else [1] * 4),
        helper.make_node('Resize', ['scores', '', 'four'], ['y'], **linear),
    ]
    if shared_sum:
        nodes.append(helper.make_node('Relu', ['s2'], ['also']))
    inits = {'w': RNG.normal(size=(8, 3, *classifier_kernel)), 'b': RNG.normal(size=8),
             'four': np.array([1, 1, 4, 4]), 'two': np.array([1, 1, 2, 2])}
    return _model(nodes, inits, None)


def test_the_classifier_moves_before_the_upsampling_of_the_maps_it_sums():
    model = _fpn_head()
    x = RNG.normal(size=(1, 3, 6, 5)).astype(np.float32)
    before = _run(model, x)
    assert simplify_for_cpu(model)['classify_before_upsampling'] == 1
    convs = [n for n in model.graph.node if n.op_type == 'Conv']
    assert len(convs) == 3 and sum(len(n.input) == 3 for n in convs) == 1  # bias once
    resize_inputs = {n.input[0] for n in model.graph.node if n.op_type == 'Resize'}
    assert not resize_inputs & {'h1', 'h2'}  # their scores are upsampled, not their channels
    after = _run(model, x)
    assert after.shape == before.shape == (1, 8, 16, 16)
    np.testing.assert_allclose(after, before, atol=1e-5)


@pytest.mark.parametrize('kwargs', [{'shared_sum': True}, {'classifier_kernel': (3, 3)}])
def test_the_classifier_stays_where_moving_it_would_change_the_result(kwargs):
    model = _fpn_head(**kwargs)
    assert simplify_for_cpu(model)['classify_before_upsampling'] == 0
    assert [n.op_type for n in model.graph.node].count('Conv') == 1
    x = RNG.normal(size=(1, 3, 6, 5)).astype(np.float32)
    assert _run(model, x).shape == (1, 8, 16, 16)
