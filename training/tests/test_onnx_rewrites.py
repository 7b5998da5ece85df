"""The export's graph rewrites give the same numbers with cheaper operators."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort
import pytest

from fvt_training.onnx.rewrites import simplify_for_cpu, strip_output_softmax

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


def _residual_block(kernel=(1, 1), residual_mode='nearest', moved=False):
    """The U-Net-like decoder's tail: Add(Up(Relu(x)), Conv(Up(x))), then a consumer.

    ``moved``: the form the rewrite gives, Up(Add(Relu(x), Conv(x))), with the same weights.
    """
    rng = np.random.default_rng(3)
    nearest = dict(mode='nearest', coordinate_transformation_mode='asymmetric',
                   nearest_mode='floor')
    residual = nearest if residual_mode == 'nearest' else dict(
        mode=residual_mode, coordinate_transformation_mode='half_pixel')
    conv = dict(kernel_shape=list(kernel), pads=[0] * 4 if kernel == (1, 1) else [1] * 4)
    if moved:
        nodes = [helper.make_node('Relu', ['x'], ['a']),
                 helper.make_node('Conv', ['x', 'w', 'b'], ['c'], **conv),
                 helper.make_node('Add', ['c', 'a'], ['small_sum']),
                 helper.make_node('Resize', ['small_sum', '', 'scales'], ['sum'], **nearest)]
    else:
        nodes = [helper.make_node('Relu', ['x'], ['a']),
                 helper.make_node('Resize', ['a', '', 'scales'], ['up_a'], **nearest),
                 helper.make_node('Resize', ['x', '', 'scales'], ['up_b'], **residual),
                 helper.make_node('Conv', ['up_b', 'w', 'b'], ['c'], **conv),
                 helper.make_node('Add', ['c', 'up_a'], ['sum'])]
    nodes.append(helper.make_node('Relu', ['sum'], ['y']))
    inits = {'w': rng.normal(size=(3, 3, *kernel)), 'b': rng.normal(size=3),
             'scales': np.array([1, 1, 2, 2])}
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


@pytest.mark.parametrize('kwargs', [{'kernel': (3, 3)}, {'residual_mode': 'linear'}])
def test_upsampling_stays_where_moving_it_would_change_the_result(kwargs):
    model = _residual_block(**kwargs)
    x = RNG.normal(size=(1, 3, 6, 5)).astype(np.float32)
    before = _run(model, x)
    moved = _run(_residual_block(**kwargs, moved=True), x)
    assert moved.shape == before.shape and np.abs(moved - before).max() > 0.1
    assert simplify_for_cpu(model)['upsample_after_add'] == 0
    assert [n.op_type for n in model.graph.node].count('Resize') == 2
    np.testing.assert_allclose(_run(model, x), before, atol=1e-6)


def _fpn_head(classifier_kernel=(1, 1), heads=1, shared_sum='', moved=False):
    """light_fpn's tail: Conv1x1(Up4(h2) + Up2(h1) + h0) with bias, Up4 of the scores.

    h0 is a 4x4 max-pooled x (3 channels), h1 and h2 are coarser maps of it. ``heads``
    classifiers, each on its own sum, add their upsampled scores. ``shared_sum``: the first
    sum is also a graph output (``'output'``) or read by a ``Relu`` whose result is one
    (``'node'``). ``moved``: the form the rewrite gives,
    Up4(Conv(h2)) + Up2(Conv(h1)) + Conv(h0), with the same weights.
    """
    rng = np.random.default_rng(8)
    linear = dict(mode='linear', coordinate_transformation_mode='half_pixel')
    conv = dict(kernel_shape=list(classifier_kernel),
                pads=[0] * 4 if classifier_kernel == (1, 1) else [1] * 4)
    nodes = [
        helper.make_node('MaxPool', ['x'], ['h0'], kernel_shape=[3, 2], strides=[1, 1]),
        helper.make_node('MaxPool', ['h0'], ['h1'], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node('AveragePool', ['h1'], ['h2'], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    inits = {'four': np.array([1, 1, 4, 4]), 'two': np.array([1, 1, 2, 2])}
    for t in range(heads):
        inits |= {f'w{t}': rng.normal(size=(8, 3, *classifier_kernel)),
                  f'b{t}': rng.normal(size=8)}
        if moved:
            nodes += [
                helper.make_node('Conv', ['h2', f'w{t}', f'b{t}'], [f'c2_{t}'], **conv),
                helper.make_node('Resize', [f'c2_{t}', '', 'four'], [f'u2_{t}'], **linear),
                helper.make_node('Conv', ['h1', f'w{t}'], [f'c1_{t}'], **conv),
                helper.make_node('Resize', [f'c1_{t}', '', 'two'], [f'u1_{t}'], **linear),
                helper.make_node('Conv', ['h0', f'w{t}'], [f'c0_{t}'], **conv),
                helper.make_node('Add', [f'u1_{t}', f'c0_{t}'], [f'd1_{t}']),
                helper.make_node('Add', [f'u2_{t}', f'd1_{t}'], [f'scores{t}'])]
        else:
            nodes += [
                helper.make_node('Resize', ['h2', '', 'four'], [f'up2_{t}'], **linear),
                helper.make_node('Resize', ['h1', '', 'two'], [f'up1_{t}'], **linear),
                helper.make_node('Add', [f'up1_{t}', 'h0'], [f's1_{t}']),
                helper.make_node('Add', [f'up2_{t}', f's1_{t}'], [f's2_{t}']),
                helper.make_node('Conv', [f's2_{t}', f'w{t}', f'b{t}'], [f'scores{t}'], **conv)]
        nodes.append(helper.make_node('Resize', [f'scores{t}', '', 'four'],
                                      ['y' if heads == 1 else f'y{t}'], **linear))
    if heads == 2:
        nodes.append(helper.make_node('Add', ['y0', 'y1'], ['y']))
    model = _model(nodes, inits, None)
    if shared_sum == 'node':
        model.graph.node.append(helper.make_node('Relu', ['s2_0'], ['also']))
    if shared_sum:
        model.graph.output.append(helper.make_tensor_value_info(
            's2_0' if shared_sum == 'output' else 'also', TensorProto.FLOAT, None))
    return model


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


def test_two_classifiers_each_move_before_the_upsampling():
    model = _fpn_head(heads=2)
    x = RNG.normal(size=(1, 3, 6, 5)).astype(np.float32)
    before = _run(model, x)
    assert simplify_for_cpu(model)['classify_before_upsampling'] == 2
    assert [n.op_type for n in model.graph.node].count('Conv') == 6
    after = _run(model, x)
    assert after.shape == before.shape == (1, 8, 16, 16)
    np.testing.assert_allclose(after, before, atol=1e-5)


def test_the_classifier_stays_where_moving_it_would_change_the_result():
    model = _fpn_head(classifier_kernel=(3, 3))
    x = RNG.normal(size=(1, 3, 6, 5)).astype(np.float32)
    before = _run(model, x)
    moved = _run(_fpn_head(classifier_kernel=(3, 3), moved=True), x)
    assert moved.shape == before.shape and np.abs(moved - before).max() > 0.1
    assert simplify_for_cpu(model)['classify_before_upsampling'] == 0
    assert [n.op_type for n in model.graph.node].count('Conv') == 1
    np.testing.assert_allclose(_run(model, x), before, atol=1e-6)


@pytest.mark.parametrize('shared_sum', ['node', 'output'])
def test_the_classifier_stays_where_its_sum_is_used_elsewhere(shared_sum):
    model = _fpn_head(shared_sum=shared_sum)
    x = RNG.normal(size=(1, 3, 6, 5)).astype(np.float32)

    def outputs():
        return ort.InferenceSession(model.SerializeToString(),
                                    providers=['CPUExecutionProvider']).run(None, {'x': x})

    before = outputs()
    assert simplify_for_cpu(model)['classify_before_upsampling'] == 0
    assert [n.op_type for n in model.graph.node].count('Conv') == 1
    for got, want in zip(outputs(), before, strict=True):
        np.testing.assert_array_equal(got, want)
