import csv
import json
import shutil

import numpy as np
from prepared_fixture import make_prepared
import pytest
import yaml

from fvt_training.cli import main
from fvt_training.runs.callbacks import cosine_learning_rate
from fvt_training.runs.config import load_config
from fvt_training.runs.run_files import RunError
from fvt_training.runs.train import create_run_dir, load_run, resume, train

TINY = ['model.architecture=unet_like', 'model.filters=[8, 16, 32]', 'data.batch_size=4',
        'train.learning_rate=0.01', 'data.workers=1']


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp('prepared'), (64, 64),
                         {'train': 8, 'val': 4})


def _config(prepared, runs, *extra):
    return load_config(None, [f'data.prepared_dir={prepared}', f'runs_dir={runs}',
                              'name=tiny', *TINY, *extra])


def _history(run):
    with (run / 'history.csv').open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def finished_run(prepared, tmp_path_factory):
    runs = tmp_path_factory.mktemp('runs')
    return train(_config(prepared, runs, 'train.epochs=4'))


def test_training_lowers_the_loss_and_fills_the_run_folder(finished_run):
    run = finished_run
    assert run.name == 'tiny'
    for name in ('config.yaml', 'best.weights.h5', 'last.weights.h5', 'state.json',
                 'history.csv', 'plot.png', 'metrics.json'):
        assert (run / name).is_file(), name
    assert any((run / 'tensorboard').rglob('events.out.tfevents*'))
    rows = _history(run)
    assert [int(r['epoch']) for r in rows] == [0, 1, 2, 3]
    assert float(rows[-1]['loss']) < float(rows[0]['loss'])
    assert {'loss', 'miou', 'val_loss', 'val_miou'} <= set(rows[0])

    metrics = json.loads((run / 'metrics.json').read_text())
    assert metrics['epochs'] == 4
    assert (metrics['split'], metrics['holdout_sequence']) == ('val', None)
    assert 0.0 <= metrics['metrics']['miou'] <= 1.0
    assert metrics['last_epoch']['epoch'] == 4
    assert metrics['last_epoch']['metrics']['pixels'] == 4 * 64 * 64
    assert set(metrics['metrics']['iou']) == {'flat', 'construction', 'object', 'nature', 'sky',
                                              'human', 'vehicle'}
    assert metrics['metrics']['pixels'] == 4 * 64 * 64
    assert metrics['params'] > 0 and metrics['training_time_s'] > 0
    assert json.loads((run / 'state.json').read_text())['finished'] is True


def test_resolved_config_is_commented_and_rebuilds_the_model(finished_run, prepared):
    text = (finished_run / 'config.yaml').read_text()
    leaf_lines = [ln for ln in text.splitlines()
                  if ln.strip() and not ln.startswith('#') and not ln.rstrip().endswith(':')]
    assert all('  # (' in ln for ln in leaf_lines)
    config, model = load_run(finished_run)
    assert config['model']['input_size'] == [64, 64]
    assert model.output_shape == (None, 64, 64, 8)
    x = np.random.default_rng(0).uniform(0, 1, (1, 64, 64, 3)).astype('float32')
    scores = model.predict(x, verbose=0)
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-4)


def test_resume_continues_from_the_saved_epoch_with_the_saved_state(prepared, tmp_path):
    run = train(_config(prepared, tmp_path, 'train.epochs=2'))
    # Make the folder look like a process killed after epoch 2 of 4.
    (run / 'metrics.json').unlink()
    state = json.loads((run / 'state.json').read_text())
    state.update(finished=False, learning_rate=0.002)
    state['plateau']['wait'] = 0
    (run / 'state.json').write_text(json.dumps(state))
    config = yaml.safe_load((run / 'config.yaml').read_text())
    config['train']['epochs'] = 4
    (run / 'config.yaml').write_text(yaml.safe_dump(config))
    # ...after its CSV logger had written epoch 3 but before state.json counted it.
    rows = _history(run)
    with (run / 'history.csv').open('a', newline='') as f:
        csv.DictWriter(f, fieldnames=list(rows[0])).writerow({**rows[-1], 'epoch': '2'})

    assert resume(run) == run
    rows = _history(run)
    assert [int(r['epoch']) for r in rows] == [0, 1, 2, 3]
    assert [float(r['lr']) for r in rows[2:]] == pytest.approx([0.002, 0.002])
    final = json.loads((run / 'state.json').read_text())
    assert final['epoch'] == 4 and final['finished'] is True
    assert json.loads((run / 'metrics.json').read_text())['epochs'] == 4


def test_resume_with_a_budget_extends_or_finishes_a_run(prepared, tmp_path, capsys):
    run = train(_config(prepared, tmp_path, 'train.epochs=1'))
    (run / 'metrics.json').unlink()
    state = json.loads((run / 'state.json').read_text())
    (run / 'state.json').write_text(json.dumps({**state, 'finished': False}))
    with pytest.raises(RunError, match='done 1 epochs already'):
        resume(run, epochs=0)
    assert main(['train', '--resume', str(run), 'train.epochs=2']) == 0
    assert json.loads((run / 'metrics.json').read_text())['epochs'] == 2
    assert 'epochs: 2' in (run / 'config.yaml').read_text()
    assert main(['train', '--resume', str(run), 'model.backbone=vgg16']) == 2
    assert 'takes no CONFIG and no overrides but train.epochs=N' in capsys.readouterr().err


def test_a_resumed_run_stopped_at_its_current_epoch_is_scored(prepared, tmp_path):
    run = train(_config(prepared, tmp_path, 'train.epochs=1'))
    (run / 'metrics.json').unlink()
    state = json.loads((run / 'state.json').read_text())
    (run / 'state.json').write_text(json.dumps({**state, 'finished': False}))
    assert resume(run, epochs=1) == run
    assert json.loads((run / 'metrics.json').read_text())['epochs'] == 1


def test_warm_start_begins_from_the_weights_of_an_earlier_run(finished_run, prepared, tmp_path):
    # A learning rate of 1e-9 leaves the kernels where the warm start put them.
    run = train(_config(prepared, tmp_path, 'train.epochs=1', 'train.learning_rate=1e-9',
                        f'train.init_weights={finished_run}'))
    _, source = load_run(finished_run, 'best')
    _, started = load_run(run, 'last')
    pairs = zip(source.weights, started.weights, strict=True)
    kernels = [(a, b) for a, b in pairs if 'kernel' in a.name]
    assert kernels and all(np.allclose(a.numpy(), b.numpy(), atol=1e-6) for a, b in kernels)
    _, fresh = load_run(train(_config(prepared, tmp_path / 'fresh', 'train.epochs=1',
                                      'train.learning_rate=1e-9')), 'last')
    assert not np.allclose(source.weights[0].numpy(), fresh.weights[0].numpy(), atol=1e-3)


def test_warm_start_from_a_different_model_or_nothing_says_so(finished_run, prepared,
                                                              tmp_path):
    with pytest.raises(RunError, match='does not fit this model'):
        train(_config(prepared, tmp_path, 'train.epochs=1', 'model.filters=[4, 8, 16]',
                      f'train.init_weights={finished_run}'))
    with pytest.raises(RunError, match='does not exist'):
        train(_config(prepared, tmp_path, 'train.epochs=1',
                      f'train.init_weights={tmp_path / "nope.weights.h5"}'))
    with pytest.raises(RunError, match='holds no best.weights.h5'):
        train(_config(prepared, tmp_path, 'train.epochs=1', f'train.init_weights={tmp_path}'))


def test_mirrored_strategy_trains_on_the_cpu(prepared, tmp_path):
    run = train(_config(prepared, tmp_path, 'train.epochs=1', 'train.strategy=mirrored'))
    assert json.loads((run / 'metrics.json').read_text())['epochs'] == 1


def test_finished_or_foreign_folders_do_not_resume(finished_run, tmp_path):
    with pytest.raises(RunError, match='already finished'):
        resume(finished_run)
    with pytest.raises(RunError, match='not a resumable run folder'):
        resume(tmp_path)


def test_run_folders_are_numbered(tmp_path):
    assert create_run_dir(tmp_path, 'exp').name == 'exp'
    assert create_run_dir(tmp_path, 'exp').name == 'exp-2'
    assert create_run_dir(tmp_path, 'exp').name == 'exp-3'


def test_cli_trains_a_config_file_with_overrides(prepared, tmp_path, capsys):
    config = tmp_path / 'exp.yaml'
    config.write_text(f'data:\n  prepared_dir: {prepared}\nmodel:\n  architecture: unet_like\n')
    assert main(['train', str(config), f'runs_dir={tmp_path / "runs"}', 'epochs=1',
                 'model.filters=[8, 16]', 'batch_size=4']) == 0
    run = tmp_path / 'runs' / 'exp'
    assert json.loads((run / 'metrics.json').read_text())['epochs'] == 1


def test_cli_reports_bad_input_size_in_one_line(prepared, tmp_path, capsys):
    code = main(['train', '--resume', str(tmp_path)])
    assert code == 2
    assert 'not a resumable run folder' in capsys.readouterr().err
    code = main(['train', 'nope.yaml'])
    assert code == 2 and 'does not exist' in capsys.readouterr().err
    config = tmp_path / 'bad.yaml'
    config.write_text(f'data:\n  prepared_dir: {prepared}\nmodel:\n  architecture: fpn\n'
                      '  backbone: mobilenetv2\n  encoder_weights: none\n'
                      '  input_size: [48, 48]\n')
    assert main(['train', str(config)]) == 2
    err = capsys.readouterr().err
    assert 'model.input_size is [48, 48]' in err and '[64, 64]' in err


def test_training_on_labels_prepared_before_alignment_warns(prepared, tmp_path, capsys):
    old = tmp_path / 'old' / prepared.name
    shutil.copytree(prepared, old)
    raw = json.loads((old / 'manifest.json').read_text())
    raw.pop('label_resize')  # as written before labels were resized pixel-centred
    (old / 'manifest.json').write_text(json.dumps(raw))
    tiny = ('train.epochs=1', 'model.filters=[8, 16]')
    train(_config(old, tmp_path / 'runs', *tiny))
    assert f'warning: {old} was prepared with OpenCV INTER_NEAREST' in capsys.readouterr().err
    train(_config(prepared, tmp_path / 'runs', *tiny))
    assert 'INTER_NEAREST' not in capsys.readouterr().err


def test_cosine_learning_rate_warms_up_then_decays_to_the_minimum():
    # 10 steps, 2 of warm-up: 0.5, 1.0, then cos from 1.0 down to 0.1 over 8 steps.
    rates = [cosine_learning_rate(s, 10, 2, 1.0, 0.1) for s in range(12)]
    assert rates[:2] == pytest.approx([0.5, 1.0])
    assert rates[2] == pytest.approx(1.0)
    assert rates[6] == pytest.approx(0.1 + 0.45 * (1 + np.cos(np.pi * 4 / 8)))  # 0.55
    assert rates[10] == pytest.approx(0.1) and rates[11] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(rates[1:], rates[2:], strict=False))
    assert cosine_learning_rate(0, 4, 0, 2.0) == pytest.approx(2.0)


LIGHT_FPN = ['model.architecture=light_fpn', 'model.backbone=efficientnet_lite0',
             'model.encoder_weights=imagenet', 'model.decoder_channels=16',
             'data.augment=scale_crop', 'train.lr_schedule=cosine', 'train.warmup_epochs=1',
             'train.learning_rate=0.001', 'train.monitor=val_miou']


def _encoder_weights(run, weights='last'):
    _, model = load_run(run, weights)
    return model.get_layer('encoder').get_weights()


def test_pretrained_light_fpn_trains_with_a_frozen_then_unfrozen_encoder(prepared, tmp_path):
    from fvt_training.models.efficientnet_lite import efficientnet_lite, load_imagenet_weights

    imagenet = efficientnet_lite('efficientnet_lite0', (64, 64, 3))
    load_imagenet_weights(imagenet, 'efficientnet_lite0')
    config = _config(prepared, tmp_path, *LIGHT_FPN, 'train.epochs=1',
                     'train.encoder_freeze_epochs=1')
    run = train(config)
    # Epoch 1 frozen: the encoder, BatchNorm statistics included, is still ImageNet's.
    for got, expected in zip(_encoder_weights(run), imagenet.get_weights(), strict=True):
        np.testing.assert_array_equal(got, expected)
    rows = _history(run)
    assert np.isfinite(float(rows[0]['loss']))
    state = json.loads((run / 'state.json').read_text())
    assert state['plateau'] is None
    assert state['learning_rate'] == pytest.approx(0.001, rel=1e-3)  # end of the warm-up
    metrics = json.loads((run / 'metrics.json').read_text())
    assert metrics['monitor'] == 'val_miou' and 0.0 <= metrics['best_monitored'] <= 1.0

    # As if interrupted after the first epoch, then resumed for a second: the encoder now
    # trains, from where it was.
    (run / 'state.json').write_text(json.dumps({**state, 'finished': False}))
    resume(run, epochs=2)
    changed = [not np.array_equal(g, e)
               for g, e in zip(_encoder_weights(run), imagenet.get_weights(), strict=True)]
    assert sum(changed) > len(changed) // 2
    assert [int(r['epoch']) for r in _history(run)] == [0, 1]


def test_progress_lines_report_batches_when_output_is_not_a_terminal(capsys):
    import tensorflow as tf

    from fvt_training.runs.callbacks import ProgressLines

    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer='sgd', loss='mse')
    x = np.zeros((6, 2), np.float32)
    model.fit(x, x[:, :1], batch_size=2, epochs=1, verbose=0, validation_data=(x, x[:, :1]),
              callbacks=[ProgressLines(0.0, 3)])
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(':')[0] for ln in lines] == [
        'epoch 1/1 train batch 1/3', 'epoch 1/1 train batch 2/3', 'epoch 1/1 train batch 3/3',
        'epoch 1/1 validation batch 1/3', 'epoch 1/1 validation batch 2/3',
        'epoch 1/1 validation batch 3/3']
    assert lines[0].startswith('epoch 1/1 train batch 1/3: loss ')


def test_sigterm_stops_training_between_batches_and_says_how_to_resume(prepared, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / 'long.yaml'
    config.write_text(yaml.safe_dump({
        'data': {'prepared_dir': str(prepared), 'batch_size': 4}, 'runs_dir': str(tmp_path),
        'model': {'architecture': 'unet_like', 'filters': [8, 16]}, 'train': {'epochs': 500}}))
    log = tmp_path / 'log.txt'
    with log.open('w') as out:
        proc = subprocess.Popen([sys.executable, '-m', 'fvt_training.cli', 'train',
                                 str(config)], stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ))
    state = tmp_path / 'long' / 'state.json'
    try:
        deadline = time.monotonic() + 120
        while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert state.is_file(), log.read_text()
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143, log.read_text()
        assert time.monotonic() - sent < 15
    finally:
        proc.kill()
    assert f'stopped by SIGTERM; {state.parent} holds' in log.read_text()
    assert f'fvt-train train --resume {state.parent}' in log.read_text()
    assert json.loads(state.read_text())['finished'] is False
    assert not (state.parent / 'metrics.json').exists()


FIXED = ['train.select=last', 'train.lr_schedule=cosine']


@pytest.fixture(scope='module')
def sequenced(tmp_path_factory):
    """Synthetic frames named as CamVid's: sequences A01 (4 frames) and B02 (2) in train.

    Every batch holds an even number of frames: on this TF 2.21 CPU build an odd one (a
    partial last batch too) crashes unet_like's training step in oneDNN
    (TF_ENABLE_ONEDNN_OPTS=0 avoids it).
    """
    from prepared_fixture import synthetic_frame, write_prepared

    rng = np.random.default_rng(1)
    names = {'train': [f'A01_{i:03d}' for i in range(4)] + [f'B02_f{i:03d}' for i in range(2)],
             'val': [f'C03_{i:03d}' for i in range(4)]}
    return write_prepared(tmp_path_factory.mktemp('sequenced'),
                          {split: {n: synthetic_frame(rng, 64, 64) for n in ids}
                           for split, ids in names.items()}, 'synthetic', 'synthetic')


def test_a_held_out_sequence_is_trained_without_and_scored_alone(sequenced, tmp_path):
    from fvt_training.data.prepared import DataError, label_frequencies, read_manifest
    from fvt_training.evaluation.compare import compare
    from fvt_training.runs.frames import run_frames
    from fvt_training.runs.losses import resolve_class_weights

    config = _config(sequenced, tmp_path, 'train.epochs=1', 'data.holdout_sequence=B02',
                     'loss.class_weights=auto', *FIXED)
    manifest = read_manifest(sequenced)
    frames = run_frames(config, manifest)
    assert frames.train_ids == tuple(f'A01_{i:03d}' for i in range(4))
    assert (frames.val_split, frames.val_ids) == ('train', ('B02_f000', 'B02_f001'))
    run = train(config)
    metrics = json.loads((run / 'metrics.json').read_text())
    assert metrics['holdout_sequence'] == 'B02'
    assert metrics['split'] == 'train sequence B02 (held out)'
    assert metrics['last_epoch']['epoch'] == 1
    assert metrics['last_epoch']['metrics']['pixels'] == 2 * 64 * 64  # B02 only, never val
    # auto class weights from the frequencies of the frames trained on, not the whole split
    assert metrics['class_weights'] == pytest.approx(resolve_class_weights(
        config['loss'], label_frequencies(manifest, 'train', frames.train_ids).tolist()))
    row = compare([run])
    assert '| B02 | ' + f'{metrics["last_epoch"]["metrics"]["miou"]:.4f} |' in row
    with pytest.raises(DataError, match="no sequence 'C03'; expected one of .*A01 \\(4 frames"):
        train(_config(sequenced, tmp_path, 'data.holdout_sequence=C03', *FIXED))
    assert [p.name for p in tmp_path.iterdir()] == [run.name]  # no folder for the bad one


def test_a_fixed_schedule_runs_every_epoch_and_scores_the_last(sequenced, tmp_path):
    run = train(_config(sequenced, tmp_path, 'train.epochs=1', *FIXED,
                        'train.early_stopping_patience=0'))
    # As if interrupted after epoch 1 with a best value no later epoch can beat: with
    # select: best and patience 0 the resumed run would stop after its first epoch.
    (run / 'metrics.json').unlink()
    state = json.loads((run / 'state.json').read_text())
    state['early_stopping']['best'] = -1.0  # val_loss is never below 0
    (run / 'state.json').write_text(json.dumps({**state, 'finished': False}))
    resume(run, epochs=3)
    assert [int(r['epoch']) for r in _history(run)] == [0, 1, 2]
    metrics = json.loads((run / 'metrics.json').read_text())
    assert (metrics['epochs'], metrics['best_epoch'], metrics['last_epoch']['epoch']) == (3, 1, 3)


def test_light_fpn_with_a_fine_stage_and_hard_pixel_edge_weighted_loss_trains_one_epoch(
        prepared, tmp_path):
    config = _config(prepared, tmp_path, *LIGHT_FPN, 'train.epochs=1', 'model.fine_channels=8',
                     'loss.name=cce_dice', 'loss.hard_pixel_fraction=0.25',
                     'loss.edge_weight=2', 'loss.edge_width=1')
    run = train(config)
    rows = _history(run)
    assert len(rows) == 1 and np.isfinite(float(rows[0]['loss']))
    _, model = load_run(run, 'last')
    assert model.get_layer('fine_conv').output.shape[1:3] == (32, 32)
