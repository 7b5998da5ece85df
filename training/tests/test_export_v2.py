"""``fvt-train export`` of an ONNX file to contract version 2 and to TensorRT's int8 form.

A tiny two-convolution float32 file stands in for a trained model, so no Keras run is needed.
"""

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from prepared_fixture import make_prepared
import pytest

from fvt_segmentation.core.contract import ModelContract, Normalization
from fvt_segmentation.core.files import file_sha256
from fvt_segmentation.core.frame_processing import scores_to_confidence
from fvt_segmentation.core.inference import load_segmenter
from fvt_segmentation.core.parity import argmax_agreement
from fvt_training import export
from fvt_training.cli import main
from fvt_training.contract_v2 import write_v2_copy
from fvt_training.evaluate import pick_samples
from fvt_training.prepared import read_manifest

SIZE = (32, 32)


def tiny_float_file(path):
    """NHWC image -> 3x3 conv (8) -> ReLU -> 1x1 conv (8 classes) -> softmax, float32."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), 'K1'),
             numpy_helper.from_array(rng.normal(size=8).astype(np.float32) * 0.1, 'B1'),
             numpy_helper.from_array(rng.normal(size=(8, 8, 1, 1)).astype(np.float32), 'K2'),
             numpy_helper.from_array(rng.normal(size=8).astype(np.float32) * 0.1, 'B2')]
    nodes = [helper.make_node('Transpose', ['image'], ['x'], perm=[0, 3, 1, 2]),
             helper.make_node('Conv', ['x', 'K1', 'B1'], ['c1'], pads=[1, 1, 1, 1]),
             helper.make_node('Relu', ['c1'], ['r1']),
             helper.make_node('Conv', ['r1', 'K2', 'B2'], ['c2']),
             helper.make_node('Transpose', ['c2'], ['s'], perm=[0, 2, 3, 1]),
             helper.make_node('Softmax', ['s'], ['probabilities'], axis=-1)]
    graph = helper.make_graph(
        nodes, 'tiny', [helper.make_tensor_value_info('image', TensorProto.FLOAT,
                                                      ['N', *SIZE, 3])],
        [helper.make_tensor_value_info('probabilities', TensorProto.FLOAT, ['N', *SIZE, 8])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', export.OPSET)])
    model.ir_version = 9
    contract = ModelContract(normalization=Normalization(1 / 255, (0.5,) * 3, (0.25,) * 3),
                             provenance={'architecture': 'tiny', 'precision': 'float32'})
    onnx.helper.set_model_props(model, contract.to_metadata())
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope='module')
def exported_v2(tmp_path_factory):
    root = tmp_path_factory.mktemp('export_v2')
    data = make_prepared(root / 'data', SIZE, {'train': 4, 'val': 2})
    source = tiny_float_file(root / 'float.onnx')
    out = root / 'models' / 'v2.onnx'
    code = main(['export', str(source), '--out', str(out), '--data', str(data),
                 '--contract', '2', '--uint8-input', '--int8-trt', '--parity-frames', '2',
                 '--calibration-frames', '4', '--timing-runs', '0'])
    assert code == 0
    return source, out, data


def frames():
    rng = np.random.default_rng(11)
    return [rng.integers(0, 256, (*SIZE, 3), np.uint8) for _ in range(3)]


def test_reexport_writes_contract_v2_that_matches_the_float_file(exported_v2):
    source, out, _ = exported_v2
    v1, v2 = load_segmenter(source, providers=['cpu']), load_segmenter(out, providers=['cpu'])
    contract = v2.contract
    assert contract.version == '2' and contract.input_type == 'uint8'
    assert contract.outputs == {'scores': 'logits', 'classes': 'class_ids',
                                'confidence': 'confidence'}
    assert v2.session.get_inputs()[0].type == 'tensor(uint8)'
    for frame in frames():
        old, new = v1.segment(frame, want_confidence=True), v2.segment(frame,
                                                                       want_confidence=True)
        np.testing.assert_array_equal(new.classes, old.classes)
        assert np.abs(new.confidence.astype(int) - old.confidence).max() <= 1


def test_int8_trt_file_is_symmetric_int8_qdq_and_runs_on_the_cpu(exported_v2):
    source, out, _ = exported_v2
    path = out.with_name('v2.int8trt.onnx')
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quant = [n for n in model.graph.node if n.op_type in ('QuantizeLinear', 'DequantizeLinear')]
    assert quant, 'no QDQ nodes'
    for node in quant:
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == 'Conv'}
    weight_dq = [n for n in quant if n.op_type == 'DequantizeLinear'
                 and n.output[0] in conv_weights]
    assert len(weight_dq) == 2
    for node in weight_dq:  # per output channel
        assert inits[node.input[1]].shape == (8,)
    segmenter = load_segmenter(path, providers=['cpu'])
    assert segmenter.contract.quantization == 'int8_symmetric_qdq'
    assert segmenter.contract.version == '2'  # converted like every file of the export
    agreement = argmax_agreement(segmenter, load_segmenter(source, providers=['cpu']),
                                 frames())
    assert agreement > 0.9, agreement


def test_uint8_input_needs_contract_2(tmp_path):
    with pytest.raises(export.ExportError, match='--uint8-input needs --contract 2'):
        export.export_run(tmp_path / 'x.onnx', tmp_path / 'y.onnx', uint8_input=True)


def test_to_contract_v1_gives_back_the_version_1_graph(tmp_path):
    source = tiny_float_file(tmp_path / 'float.onnx')
    write_v2_copy(source, tmp_path / 'v2.onnx', uint8_input=True)
    v2 = load_segmenter(tmp_path / 'v2.onnx', providers=['cpu']).contract
    proto = onnx.load(str(tmp_path / 'v2.onnx'))
    v1 = export.to_contract_v1(proto, v2, tmp_path / 'v2.onnx')
    assert v1 == load_segmenter(source, providers=['cpu']).contract
    assert proto.graph == onnx.load(str(source)).graph


def test_to_contract_v1_names_an_unexpected_uint8_prologue(tmp_path):
    source = tiny_float_file(tmp_path / 'float.onnx')
    write_v2_copy(source, tmp_path / 'v2.onnx', uint8_input=True)
    v2 = load_segmenter(tmp_path / 'v2.onnx', providers=['cpu']).contract
    proto = onnx.load(str(tmp_path / 'v2.onnx'))
    next(n for n in proto.graph.node if n.op_type == 'Mul').op_type = 'Div'
    with pytest.raises(export.ExportError, match='through Cast -> Mul -> Add .* found '
                                                 'Cast -> Div'):
        export.to_contract_v1(proto, v2, tmp_path / 'v2.onnx')


def test_reexport_of_a_version_2_file_writes_int8_naming_its_source_and_frames(exported_v2,
                                                                               tmp_path):
    _, source, data = exported_v2
    out = tmp_path / 'again.onnx'
    assert main(['export', str(source), '--out', str(out), '--data', str(data), '--int8',
                 '--contract', '2', '--parity-frames', '2', '--calibration-frames', '3',
                 '--timing-runs', '0']) == 0
    again = load_segmenter(out, providers=['cpu'])
    assert again.contract.version == '2' and again.contract.input_type == 'float32'
    original = load_segmenter(source, providers=['cpu'])
    for frame in frames():
        np.testing.assert_array_equal(again.segment(frame).classes,
                                      original.segment(frame).classes)
    int8 = load_segmenter(out.with_name('again.int8.onnx'), providers=['cpu']).contract
    assert int8.version == '2' and int8.outputs == again.contract.outputs
    provenance = int8.provenance
    assert provenance['reexported_from']['file'] == 'v2.onnx'
    assert provenance['reexported_from']['sha256'] == file_sha256(source)
    train = read_manifest(data).ids('train')
    assert provenance['quantization']['calibration_split'] == 'train'
    assert provenance['quantization']['calibration_frames'] == 3
    assert provenance['quantization']['calibration_ids'] == pick_samples(train, 3)
    report = json.loads(out.with_name('again.export.json').read_text())
    assert report['variants']['int8']['settings'] == provenance['quantization']


def test_reexport_refuses_an_int8_file(exported_v2, tmp_path, capsys):
    _, out, data = exported_v2
    assert main(['export', str(out.with_name('v2.int8trt.onnx')),
                 '--out', str(tmp_path / 'again.onnx'), '--data', str(data)]) == 2
    assert 're-export needs a float32 file; this one is int8' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def quantized_tiny_file(tmp_path, normalization):
    """The tiny file with ``normalization``, quantized by the export's own quantize_int8."""
    import dataclasses

    source = tiny_float_file(tmp_path / 'float.onnx')
    model = onnx.load(str(source))
    contract = dataclasses.replace(ModelContract(normalization=normalization),
                                   provenance={'precision': 'int8'})
    onnx.helper.set_model_props(model, contract.to_metadata())
    onnx.save(model, str(source))
    calibration = frames()
    calibration[0][0, 0], calibration[0][0, 1] = 0, 255  # the full pixel range
    reader = export.FrameCalibrationReader(iter(calibration), contract, SIZE)
    out = tmp_path / 'int8.onnx'
    export.quantize_int8(source, out, reader, contract, export.int8_settings())
    return out


def test_uint8_input_of_an_int8_file_feeds_the_pixels_to_its_first_dequantize(tmp_path):
    # (pixel - 127) / 128: the calibrated input quantization is scale 1/128, zero point 127,
    # i.e. the pixel itself, so the float image and its QuantizeLinear go.
    int8 = quantized_tiny_file(tmp_path, Normalization(1 / 128, (127 / 128,) * 3, (1.0,) * 3))
    float_input, pixels_input = tmp_path / 'float_input.onnx', tmp_path / 'pixels_input.onnx'
    write_v2_copy(int8, float_input)
    write_v2_copy(int8, pixels_input, uint8_input=True)
    graph = onnx.load(str(pixels_input)).graph
    first = [n for n in graph.node if n.input and n.input[0] == 'image']
    assert [n.op_type for n in first] == ['Transpose']
    [after] = [n for n in graph.node if first[0].output[0] in n.input]
    assert after.op_type == 'DequantizeLinear'
    assert not [n for n in graph.node if n.op_type == 'Cast' and 'image' in n.input]
    reference = load_segmenter(float_input, providers=['cpu'])
    candidate = load_segmenter(pixels_input, providers=['cpu'])
    assert candidate.session.get_inputs()[0].type == 'tensor(uint8)'
    for frame in frames():
        want = reference.segment(frame, want_confidence=True)
        got = candidate.segment(frame, want_confidence=True)
        np.testing.assert_array_equal(got.classes, want.classes)
        np.testing.assert_array_equal(got.confidence, want.confidence)


def test_uint8_input_of_an_int8_file_keeps_the_prologue_when_not_exact(tmp_path):
    # (pixel / 255 - 0.5) / 0.25: the zero point would be 127.5, not a pixel value.
    int8 = quantized_tiny_file(tmp_path, Normalization(1 / 255, (0.5,) * 3, (0.25,) * 3))
    pixels_input = tmp_path / 'pixels_input.onnx'
    write_v2_copy(int8, pixels_input, uint8_input=True)
    graph = onnx.load(str(pixels_input)).graph
    assert [n.op_type for n in graph.node[:3]] == ['Cast', 'Mul', 'Add']
    assert [n for n in graph.node if n.op_type == 'QuantizeLinear'
            and n.input[0] in {m.output[0] for m in graph.node if m.op_type == 'Transpose'}]


def scores_file(path, opset, layout, output):
    """A version 1 file at ``opset``: a 3x3 conv to 8 classes, as logits or probabilities."""
    rng = np.random.default_rng(opset)
    inits = [numpy_helper.from_array(rng.normal(scale=0.5, size=(8, 3, 3, 3)).astype(
        np.float32), 'K')]
    nodes, pixels = [], 'image'
    if layout == 'NHWC':
        nodes.append(helper.make_node('Transpose', ['image'], ['pixels'], perm=[0, 3, 1, 2]))
        pixels = 'pixels'
    nodes.append(helper.make_node('Conv', [pixels, 'K'], ['c'], pads=[1, 1, 1, 1]))
    scores = 'c'
    if output == 'probabilities' or layout == 'NHWC':
        nodes.append(helper.make_node('Transpose', ['c'], ['c_nhwc'], perm=[0, 2, 3, 1]))
        scores = 'c_nhwc'
    if output == 'probabilities':  # over the last axis: per pixel in every opset
        nodes.append(helper.make_node('Softmax', [scores], ['p_nhwc'], axis=-1))
        scores = 'p_nhwc'
        if layout == 'NCHW':
            nodes.append(helper.make_node('Transpose', [scores], ['p'], perm=[0, 3, 1, 2]))
            scores = 'p'
    shape, out = (['N', 3, *SIZE], ['N', 8, *SIZE]) if layout == 'NCHW' else (
        ['N', *SIZE, 3], ['N', *SIZE, 8])
    graph = helper.make_graph(
        nodes, 'scores', [helper.make_tensor_value_info('image', TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(scores, TensorProto.FLOAT, out)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)])
    model.ir_version = 7
    contract = ModelContract(layout=layout, output=output,
                             normalization=Normalization(1 / 255, (0.5,) * 3, (0.25,) * 3))
    onnx.helper.set_model_props(model, contract.to_metadata())
    onnx.save(model, str(path))
    return path, contract


@pytest.mark.parametrize('output', ['logits', 'probabilities'])
@pytest.mark.parametrize('layout', ['NCHW', 'NHWC'])
@pytest.mark.parametrize('opset', [11, 12, 13, 18])
def test_version_2_confidence_is_the_top_class_probability_at_every_opset(
        tmp_path, opset, layout, output):
    path, contract = scores_file(tmp_path / 'v1.onnx', opset, layout, output)
    export.write_contract_v2(path, contract, False, frames())
    model = onnx.load(str(path))
    assert not [a for n in model.graph.node for a in n.attribute
                if a.name == 'select_last_index']  # an attribute from opset 12 on
    segmenter = load_segmenter(path, providers=['cpu'])
    for frame in frames():
        tensor = segmenter.preprocess(frame, 'RGB')
        names = [segmenter.contract.outputs[r] for r in ('scores', 'classes', 'confidence')]
        scores, classes, confidence = segmenter.session.run(names, {'image': tensor})
        want = scores_to_confidence(scores[0], layout, output)
        assert confidence[0].shape == want.shape == SIZE
        assert np.abs(confidence[0].astype(int) - want).max() <= 1
        assert want.min() < 200  # real probabilities, not all 1
        axis = 1 if layout == 'NCHW' else 3
        np.testing.assert_array_equal(classes, scores.argmax(axis))


def test_version_2_check_refuses_a_wrong_confidence(tmp_path, monkeypatch):
    from fvt_training import contract_v2

    original = contract_v2.to_contract_v2

    def confidence_times_230(proto, contract, **kwargs):
        v2 = original(proto, contract, **kwargs)
        scale, = [i for i in proto.graph.initializer if i.name == 'v2_255']
        scale.CopyFrom(numpy_helper.from_array(np.array(230.0, np.float32), 'v2_255'))
        return v2

    path, contract = scores_file(tmp_path / 'v1.onnx', 17, 'NCHW', 'logits')
    before = path.read_bytes()
    monkeypatch.setattr(contract_v2, 'to_contract_v2', confidence_times_230)
    with pytest.raises(export.ExportError, match=r'version 2 confidence differs from version '
                                                 r'1 on frame 0 by up to \d+/255'):
        export.write_contract_v2(path, contract, False, frames())
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]
