import json

import pytest

from fvt_training.cli import main
from fvt_training.evaluation.compare import CompareError, compare
from fvt_training.runs.config import load_config, write_config

NON_VOID = ('flat', 'construction', 'object', 'nature', 'sky', 'human', 'vehicle')


def _scores(miou):
    iou = {n: miou + 0.01 * i for i, n in enumerate(NON_VOID)}
    return {'miou': miou, 'miou_all': miou - 0.05, 'dice': miou + 0.1, 'pixel_accuracy': 0.9,
            'iou': iou}


def _run(root, name, *, arch, backbone='efficientnetb0', loss='cce', augment='none',
         miou=None, training_time=None, params=None, test_miou=None, export=None,
         extra=(), last_miou=None, holdout=None):
    folder = root / name
    folder.mkdir()
    config = load_config(None, [f'name={name}', f'data.prepared_dir={root}/none/256x192',
                                f'model.architecture={arch}', f'model.backbone={backbone}',
                                f'loss.name={loss}', f'data.augment={augment}', *extra])
    write_config(config, folder / 'config.yaml')
    if miou is not None:
        # The layout runs/train.py writes; runs from before the last-epoch scores lack those.
        metrics = {'split': 'val', 'training_time_s': training_time, 'params': params,
                   'metrics': _scores(miou)}
        if last_miou is not None:
            metrics.update(holdout_sequence=holdout,
                           last_epoch={'epoch': 20, 'metrics': _scores(last_miou)})
        (folder / 'metrics.json').write_text(json.dumps(metrics))
    if test_miou is not None:
        (folder / 'eval_test.json').write_text(json.dumps({
            'split': 'test', 'params': params, 'gflops': 1.5,
            'metrics': {'miou': test_miou, 'dice': test_miou + 0.1},
            'inference_ms': {'batch_1': {'median_ms': 41.25, 'p90_ms': 50.0}}}))
    if export is not None:
        (folder / 'export.json').write_text(json.dumps(export))
    return folder


@pytest.fixture
def runs(tmp_path):
    export = {'gflops': 8.2, 'variants': {
        'float32': {'miou': 0.6, 'latency_ms': {'median_ms': 120.0}},
        'int8': {'miou': 0.595, 'miou_change_points': -0.5, 'latency_ms': {'median_ms': 55.0}}}}
    _run(tmp_path, 'fpn_b0', arch='fpn', loss='cce_dice', augment='flip_rotate', miou=0.62,
         training_time=5400.0, params=5_800_000, test_miou=0.58, export=export)
    _run(tmp_path, 'baseline', arch='unet_like', miou=0.41, training_time=600.0,
         params=2_000_000, extra=['model.input_size=[240, 320]', 'train.init_weights=runs/b0',
                                  'loss.class_weights=[1, 1, 1, 2, 1, 1, 2, 1]'])
    _run(tmp_path, 'linknet', arch='linknet', backbone='mobilenetv2', miou=0.55,
         training_time=1800.0, params=4_100_000)
    _run(tmp_path, 'unfinished', arch='unet', backbone='resnet18')
    (tmp_path / 'notes').mkdir()
    return tmp_path


def _rows(table):
    lines = table.strip().splitlines()
    header = [c.strip() for c in lines[0].strip('|').split('|')]
    return header, [dict(zip(header, (c.strip() for c in line.strip('|').split('|')),
                             strict=True)) for line in lines[2:]]


def test_table_has_every_column_and_dashes_for_missing_values(runs):
    names = ['fpn_b0', 'baseline', 'linknet', 'unfinished', 'notes']
    header, rows = _rows(compare([runs / n for n in names]))
    assert header[:11] == ['run', 'model', 'input', 'loss', 'augmentation', 'encoder init',
                           'warm start from', 'epochs', 'val mIoU', 'val 8-class mean',
                           'val Dice']
    assert [f'IoU {n}' for n in NON_VOID] == header[11:18]
    assert {'test mIoU', 'params', 'GFLOPs', 'training time', 'inference ms (eval)',
            'ONNX fp32 CPU ms', 'ONNX int8 CPU ms', 'int8 ΔmIoU (points)'} <= set(header)
    by_run = {r['run']: r for r in rows}
    assert set(by_run) == {'fpn_b0', 'baseline', 'linknet', 'unfinished'}  # notes skipped
    fpn = by_run['fpn_b0']
    assert (fpn['model'], fpn['loss'], fpn['augmentation']) == (
        'fpn/efficientnetb0', 'cce_dice', 'flip_rotate')
    assert (fpn['val mIoU'], fpn['val 8-class mean'], fpn['IoU vehicle']) == (
        '0.6200', '0.5700', '0.680')
    assert (fpn['test mIoU'], fpn['params'], fpn['GFLOPs']) == ('0.5800', '5.80M', '8.20')
    assert (fpn['training time'], fpn['inference ms (eval)']) == ('1h30m', '41.2')
    assert (fpn['ONNX fp32 CPU ms'], fpn['ONNX int8 CPU ms'],
            fpn['int8 ΔmIoU (points)']) == ('120.0', '55.0', '-0.50')
    assert by_run['baseline']['model'] == 'unet_like'
    assert (fpn['input'], fpn['warm start from']) == ('—', '—')  # no such prepared folder
    assert (by_run['baseline']['input'], by_run['baseline']['loss'],
            by_run['baseline']['warm start from']) == ('320x240', 'cce (class-weighted)', 'b0')
    assert by_run['baseline']['training time'] == '10.0m'
    assert by_run['baseline']['test mIoU'] == '—' and by_run['baseline']['GFLOPs'] == '—'
    unfinished = by_run['unfinished']
    assert unfinished['model'] == 'unet/resnet18'
    assert unfinished['loss'] == 'cce' and unfinished['augmentation'] == 'none'
    assert unfinished['encoder init'] == 'ImageNet' and by_run['baseline']['encoder init'] == '—'
    assert all(unfinished[h] == '—' for h in header[6:])


def test_sorting_by_any_column_keeps_missing_values_last(runs):
    folders = sorted(runs.iterdir())
    _, rows = _rows(compare(folders, sort='val_miou'))
    assert [r['run'] for r in rows] == ['baseline', 'linknet', 'fpn_b0', 'unfinished']
    _, rows = _rows(compare(folders, sort='val_miou', desc=True))
    assert [r['run'] for r in rows] == ['fpn_b0', 'linknet', 'baseline', 'unfinished']
    _, rows = _rows(compare(folders, sort='training time', desc=True))  # header works too
    assert [r['run'] for r in rows] == ['fpn_b0', 'linknet', 'baseline', 'unfinished']
    _, rows = _rows(compare(folders, sort='run'))
    assert [r['run'] for r in rows] == ['baseline', 'fpn_b0', 'linknet', 'unfinished']


def test_unknown_column_and_no_runs_are_errors(runs):
    with pytest.raises(CompareError, match="unknown sort column 'speed'.*val_miou"):
        compare([runs / 'fpn_b0'], sort='speed')
    with pytest.raises(CompareError, match='no run folders'):
        compare([runs / 'notes'])


def test_cli_prints_and_saves_the_table(runs, capsys):
    out = runs / 'table.md'
    assert main(['compare', str(runs / 'fpn_b0'), str(runs / 'linknet'), '--sort', 'params',
                 '--desc', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text()
    _, rows = _rows(printed)
    assert [r['run'] for r in rows] == ['fpn_b0', 'linknet']
    assert main(['compare', str(runs / 'fpn_b0'), '--sort', 'nope']) == 2
    assert 'unknown sort column' in capsys.readouterr().err


def test_an_exported_model_file_is_a_row_of_its_own(runs, tmp_path):
    from helpers_models import make_class_coded_model
    import onnx

    from fvt_segmentation.core.contract import ModelContract
    from fvt_training.onnx.model_file import attach_contract

    path = make_class_coded_model(tmp_path / 'shipped.onnx', (32, 32))
    proto = onnx.load(str(path))
    attach_contract(proto, ModelContract(provenance={
        'architecture': 'light_fpn', 'backbone': 'efficientnet_lite0', 'input_size': [32, 32],
        'params': 4_900_000, 'encoder_weights': {'source': 'ImageNet', 'licence': 'Apache-2.0'},
        'metrics': {'miou': 0.81, 'iou': {'human': 0.7}}}))
    onnx.save(proto, str(path))
    (tmp_path / 'shipped.export.json').write_text(json.dumps(
        {'gflops': 3.5, 'variants': {'float32': {'latency_ms': {'median_ms': 19.0}}}}))
    (tmp_path / 'shipped.eval_val.json').write_text(json.dumps(
        {'split': 'val', 'metrics': {'miou': 0.8, 'dice': 0.9}}))
    _, rows = _rows(compare([runs / 'fpn_b0', path], sort='val_miou', desc=True))
    row = rows[0]
    assert row['run'] == 'shipped.onnx' and row['model'] == 'light_fpn/efficientnet_lite0'
    assert (row['input'], row['encoder init'], row['val mIoU'], row['IoU human']) == (
        '32x32', 'ImageNet', '0.8100', '0.700')
    assert (row['params'], row['GFLOPs'], row['ONNX fp32 CPU ms']) == ('4.90M', '3.50', '19.0')
    assert row['val (evaluate) mIoU'] == '0.8000' and row['training time'] == '—'


def test_last_epoch_and_held_out_columns(runs):
    fixed = ['train.select=last', 'train.lr_schedule=cosine']
    _run(runs, 'fixed', arch='fpn', miou=0.70, last_miou=0.66, extra=fixed)
    _run(runs, 'loso_0006R0', arch='fpn', miou=0.58, last_miou=0.52, holdout='0006R0',
         extra=[*fixed, 'data.holdout_sequence=0006R0'])
    header, rows = _rows(compare([runs / n for n in ('fixed', 'loso_0006R0', 'fpn_b0')],
                                 sort='holdout_miou', desc=True))
    added = ['val mIoU (last epoch)', 'IoU object (last epoch)', 'IoU human (last epoch)',
             'held-out sequence', 'held-out sequence mIoU', 'held-out IoU object',
             'held-out IoU human']
    assert header[18:25] == added
    assert [r['run'] for r in rows] == ['loso_0006R0', 'fixed', 'fpn_b0']
    loso, fixed, old = rows
    # object and human are the 3rd and 6th non-void categories: miou + 0.02 and + 0.05.
    assert [fixed[h] for h in ('val mIoU', *added)] == [
        '0.7000', '0.6600', '0.680', '0.710', '—', '—', '—', '—']
    # A held-out run was never scored on val: its scores are the sequence's, at the last epoch.
    assert [loso[h] for h in ('val mIoU', 'IoU object', *added)] == [
        '—', '—', '—', '—', '—', '0006R0', '0.5200', '0.540', '0.570']
    assert all(old[h] == '—' for h in added) and old['val mIoU'] == '0.6200'


def test_model_and_loss_columns_name_the_fine_stage_and_the_hard_pixel_loss(tmp_path):
    _run(tmp_path, 'recipe', arch='light_fpn', backbone='efficientnet_lite0', loss='cce_dice',
         miou=0.8, extra=('model.fine_channels=32', 'loss.hard_pixel_fraction=0.3',
                          'loss.class_weights=[0, 1, 1, 1, 1, 1, 1, 1]'))
    _run(tmp_path, 'plain', arch='light_fpn', backbone='efficientnet_lite0', miou=0.7)
    _run(tmp_path, 'edges', arch='light_fpn', backbone='efficientnet_lite0', miou=0.6,
         extra=('loss.edge_weight=2', 'loss.edge_width=3'))
    _, rows = _rows(compare([tmp_path / 'recipe', tmp_path / 'plain', tmp_path / 'edges']))
    assert (rows[0]['model'], rows[0]['loss']) == (
        'light_fpn/efficientnet_lite0 + stride-2 stage (32 ch)',
        'cce_dice (class-weighted, CE on the hardest 30% of pixels)')
    assert (rows[1]['model'], rows[1]['loss']) == ('light_fpn/efficientnet_lite0', 'cce')
    assert rows[2]['loss'] == 'cce (CE x3 within 3 px of an edge)'
