import json

import cv2
from helpers_models import make_class_coded_model, make_coded_prepared, make_run
import numpy as np
from prepared_fixture import make_prepared
import pytest

from fvt_segmentation.core.contract import PALETTE
from fvt_training.cli import main
from fvt_training.evaluation.evaluate import evaluate, sample_panel
from fvt_training.evaluation.scoring import pick_samples

VOID, FLAT, SKY, HUMAN, VEHICLE = 0, 1, 5, 6, 7
H, W = 8, 16


def _hand_made_pairs():
    """Two (prediction, truth) pairs whose scores are worked out by hand below."""
    pred1 = np.full((H, W), FLAT, np.uint8)
    pred1[:, 8:] = SKY
    truth1 = np.full((H, W), FLAT, np.uint8)
    truth1[:4, 8:] = SKY
    truth1[6:, 8:] = VOID
    pred2 = np.full((H, W), VEHICLE, np.uint8)
    truth2 = np.full((H, W), VEHICLE, np.uint8)
    truth2[4:] = HUMAN
    return [(pred1, truth1), (pred2, truth2)]


@pytest.fixture(scope='module')
def coded(tmp_path_factory):
    root = tmp_path_factory.mktemp('coded')
    data = make_coded_prepared(root / 'data', {'test': _hand_made_pairs()})
    model = make_class_coded_model(root / 'coded.onnx', (H, W))
    return model, data


def test_onnx_evaluation_gives_the_hand_computed_scores(coded):
    model, data = coded
    report = evaluate(model, data, 'test', samples=2, timing_runs=3, timing_warmup=1,
                      timing_batch=2)

    # Rows = truth. Image 1: 64 flat->flat, 16 flat->sky, 32 sky->sky, 16 void->sky;
    # image 2: 64 vehicle->vehicle, 64 human->vehicle.
    expected = np.zeros((8, 8), np.int64)
    expected[FLAT, FLAT], expected[FLAT, SKY], expected[SKY, SKY] = 64, 16, 32
    expected[VOID, SKY], expected[VEHICLE, VEHICLE], expected[HUMAN, VEHICLE] = 16, 64, 64
    np.testing.assert_array_equal(report['confusion_matrix'], expected)

    m = report['metrics']
    # Void truth ignored: flat 64/80, sky 32/48 (the 16 void->sky pixels are not false
    # positives), human 0/64, vehicle 64/128; absent categories are left out of the mean.
    assert m['iou']['flat'] == pytest.approx(0.8)
    assert m['iou']['sky'] == pytest.approx(2 / 3)
    assert m['iou']['human'] == 0.0
    assert m['iou']['vehicle'] == pytest.approx(0.5)
    assert m['iou']['object'] is None
    assert m['miou'] == pytest.approx((0.8 + 2 / 3 + 0.0 + 0.5) / 4)
    # With void as a class: void 0/16, flat 0.8, sky 32/64, human 0, vehicle 0.5.
    assert m['miou_all'] == pytest.approx((0.0 + 0.8 + 0.5 + 0.0 + 0.5) / 5)
    assert m['dice'] == pytest.approx((128 / 144 + 64 / 80 + 0.0 + 128 / 192) / 4)
    assert m['pixel_accuracy'] == pytest.approx(160 / 240)

    json_path = model.with_name('coded.eval_test.json')
    assert report['report_path'] == str(json_path)
    saved = json.loads(json_path.read_text())
    assert saved['confusion_matrix'] == expected.tolist()
    assert saved['images'] == 2 and saved['kind'] == 'onnx' and saved['split'] == 'test'
    assert saved['provider'] == 'CPUExecutionProvider'
    assert saved['params'] == 0 and saved['gflops'] == 0.0  # read from the provenance
    for key in ('batch_1', 'batch_2'):
        stats = saved['inference_ms'][key]
        assert stats['runs'] == 3 and stats['warmup'] == 1
        assert 0 < stats['median_ms'] <= stats['p90_ms']


def test_figures_are_the_confusion_matrix_and_image_truth_prediction_panels(coded):
    model, data = coded
    out = model.parent / 'figures'
    report = evaluate(model, data, 'test', samples=2, timing_runs=0, out_dir=out)
    assert report['inference_ms'] == {}
    assert (out / 'coded.eval_test.json').is_file()
    confusion = cv2.imread(str(out / 'confusion.png'))
    assert confusion is not None and confusion.shape[0] > 200
    palette = np.asarray(PALETTE, np.uint8)
    for sample_id, (prediction, truth) in zip(('test_00', 'test_01'), _hand_made_pairs(),
                                              strict=True):
        panel = cv2.cvtColor(cv2.imread(str(out / f'sample_{sample_id}.png')),
                             cv2.COLOR_BGR2RGB)
        assert panel.shape == (H, 3 * W + 8, 3)
        np.testing.assert_array_equal(panel[:, W + 4:2 * W + 4], palette[truth])
        np.testing.assert_array_equal(panel[:, 2 * W + 8:], palette[prediction])


def test_sample_panel_resizes_the_image_to_the_masks():
    image = np.full((16, 32, 3), 200, np.uint8)
    truth = np.zeros((8, 16), np.uint8)
    panel = sample_panel(image, truth, truth + 1, np.asarray(PALETTE, np.uint8), gap=2)
    assert panel.shape == (8, 52, 3)
    assert (panel[:, :16] == 200).all() and (panel[:, 16:18] == 255).all()
    assert (panel[:, 36:] == PALETTE[1]).all()


def test_pick_samples_spreads_over_the_split():
    ids = [f'id{i}' for i in range(10)]
    assert pick_samples(ids, 3) == ['id0', 'id4', 'id9']
    assert pick_samples(ids[:2], 5) == ['id0', 'id1']
    assert pick_samples(ids, 0) == []


def test_keras_run_and_its_onnx_export_score_alike(tmp_path):
    data = make_prepared(tmp_path / 'data', (32, 32), {'train': 4, 'val': 3})
    run = make_run(tmp_path / 'runs', data)
    keras_report = evaluate(run, None, 'val', samples=1, timing_runs=2, timing_warmup=1)
    assert keras_report['kind'] == 'keras' and keras_report['provider'] == 'tensorflow'
    assert (run / 'eval_val.json').is_file() and (run / 'eval_val' / 'confusion.png').is_file()
    assert keras_report['params'] == json.loads((run / 'metrics.json').read_text())['params']
    assert keras_report['gflops'] > 0

    out = tmp_path / 'models' / 'tiny.onnx'
    assert main(['export', str(run), '--out', str(out), '--timing-runs', '1']) == 0
    onnx_report = evaluate(out, data, 'val', samples=0, timing_runs=0)
    keras_cm = np.asarray(keras_report['confusion_matrix'])
    onnx_cm = np.asarray(onnx_report['confusion_matrix'])
    assert keras_cm.sum() == onnx_cm.sum() == 3 * 32 * 32
    # Same predictions up to float noise (export checked >= 99.9 % argmax agreement).
    assert np.abs(keras_cm - onnx_cm).sum() <= 2 * 0.001 * keras_cm.sum()
    assert onnx_report['params'] == keras_report['params']
    assert onnx_report['gflops'] == pytest.approx(keras_report['gflops'])


def test_cli_evaluate_prints_the_scores(coded, capsys):
    model, data = coded
    assert main(['evaluate', str(model), '--data', str(data), '--timing-runs', '2',
                 '--samples', '0']) == 0
    out = capsys.readouterr().out
    assert 'mIoU (7 categories, void ignored): 0.4917' in out
    assert '| sky | 0.6667 | 0.8000 |' in out
    assert 'batch 1' in out and 'batch 8' in out


def test_cli_evaluate_an_onnx_file_needs_data(coded, capsys):
    model, _ = coded
    assert main(['evaluate', str(model), '--timing-runs', '0']) == 2
    assert '--data' in capsys.readouterr().err


def test_cli_evaluate_names_a_missing_split(coded, capsys):
    model, data = coded
    assert main(['evaluate', str(model), '--data', str(data), '--split', 'val']) == 2
    assert "no split 'val'" in capsys.readouterr().err


def test_evaluate_rejects_what_is_neither_run_nor_model(tmp_path, capsys):
    (tmp_path / 'notes.txt').write_text('x')
    assert main(['evaluate', str(tmp_path / 'notes.txt'), '--data', str(tmp_path)]) == 2
    assert 'expected a run folder' in capsys.readouterr().err


def test_the_default_split_is_test_else_val(coded, tmp_path, capsys):
    model, data = coded
    assert evaluate(model, data, samples=0, timing_runs=0)['split'] == 'test'
    val_only = make_coded_prepared(tmp_path / 'data', {'val': _hand_made_pairs()})
    report = evaluate(model, val_only, samples=0, timing_runs=0, out_dir=tmp_path / 'out')
    assert report['split'] == 'val'
    assert 'no test split: scoring val' in capsys.readouterr().out
