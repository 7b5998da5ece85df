"""Train one experiment into its own run folder, resume it, and load finished runs.

A run folder holds ``config.yaml`` (the resolved configuration the model is rebuilt from),
``best.weights.h5`` / ``last.weights.h5``, ``state.json`` (epoch, learning rate, early-stopping
and plateau counters, written after every epoch), ``history.csv``, ``plot.png``,
``tensorboard/`` and, at the end, ``metrics.json`` (validation scores of the best weights and
of the last epoch's, each from one dataset-level confusion matrix). Only weights are saved:
resuming rebuilds the model from config.yaml. With ``data.holdout_sequence`` a run trains on
the training split without one recording sequence and validates on that sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import json
import os
from pathlib import Path
import shlex
import sys
from typing import Any

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from fvt_segmentation.core.contract import CATEGORIES, VOID
from fvt_segmentation.core.metrics import confusion_matrix, summarize
from fvt_training.data.prepared import LABEL_RESIZE
from fvt_training.models.factories import build_model, model_normalization
from fvt_training.runs.callbacks import (
    PROGRESS_EVERY_S,
    CosineSchedule,
    EncoderFreezeSchedule,
    PlotHistory,
    ProgressLines,
    ResumableEarlyStopping,
    ResumableReduceLROnPlateau,
    RunState,
    StopBetweenBatches,
)
from fvt_training.runs.config import load_config, write_config
from fvt_training.runs.config_schema import MONITOR_MODES
from fvt_training.runs.frames import RunFrames, make_sequences, resolve_config
from fvt_training.runs.history import truncate_history
from fvt_training.runs.keras_metrics import StreamingMeanIoU
from fvt_training.runs.losses import make_loss, resolve_class_weights
from fvt_training.runs.run_files import (
    BEST_WEIGHTS,
    COMMAND_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    LAST_WEIGHTS,
    METRICS_FILE,
    STATE_FILE,
    TENSORBOARD_DIR,
    RunError,
    write_json,
)
from fvt_training.runs.session import TrainingSession, training_session


def create_run_dir(runs_dir: str | os.PathLike, name: str) -> Path:
    """Create and return ``runs_dir/name``, or ``name-2``, ``name-3``... if it already exists."""
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        candidate = root / (name if number == 1 else f'{name}-{number}')
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1


def evaluate_confusion(model: tf.keras.Model, sequence: Any, desc: str = 'evaluate',
                       between_batches: Callable[[], None] = lambda: None) -> np.ndarray:
    """Return the confusion matrix of ``model`` over every batch of ``sequence``.

    ``between_batches`` runs before each batch (it may raise to stop).
    """
    cm = np.zeros((len(CATEGORIES), len(CATEGORIES)), dtype=np.int64)
    for i in tqdm(range(len(sequence)), desc=desc, unit='batch'):
        between_batches()
        x, y = sequence[i][:2]
        pred = np.argmax(model.predict_on_batch(x), axis=-1)
        cm += confusion_matrix(np.argmax(y, axis=-1), pred, len(CATEGORIES))
    return cm


def _compile(model: tf.keras.Model, loss: tf.keras.losses.Loss, learning_rate: float) -> None:
    optimizer = tf.keras.optimizers.Adam(learning_rate)
    # Built on every trainable variable now: an encoder unfrozen later finds its slots ready.
    optimizer.build(model.trainable_variables)
    model.compile(optimizer=optimizer, loss=loss, metrics=[StreamingMeanIoU(name='miou')])


def train(config: dict, run_dir: str | os.PathLike | None = None) -> Path | None:
    """Train a validated config from scratch into a new run folder; return the folder.

    With ``run_dir`` given, that existing folder is resumed instead (see :func:`resume`).
    A non-chief worker of a ``multiworker`` run writes no run folder and returns None.
    Raises :class:`~fvt_training.runs.cluster.TrainingStopped` on SIGTERM or SIGINT.
    """
    if run_dir is not None:
        return resume(run_dir)
    return _train(config, lambda message: None, None)


def worker_main(notify: Callable[[str], None], config: dict | None, resume_dir: str | None,
                epochs: int | None, scratch: str | None) -> int:
    """Train (``config``) or resume (``resume_dir``) as one supervised multiworker process.

    Called by :func:`fvt_training.runs.cluster.supervise` in its child; returns the exit status.
    """
    folder = Path(scratch) if scratch else None
    if resume_dir is not None:
        _resume(resume_dir, epochs, notify, folder)
    else:
        _train(config, notify, folder)
    return 0


def _train(config: dict, notify: Callable[[str], None], scratch: Path | None) -> Path | None:
    config, frames = resolve_config(config)
    # The run folder is made once the cluster has come together: a worker that gives up
    # waiting leaves none behind.
    with training_session(config['train'], notify, scratch) as session:
        if session.scratch is None:
            folder = session.run_dir = create_run_dir(config['runs_dir'], config['name'])
            session.guard.notify(f'run_dir {folder}')
            _record_command(folder)
            print(f'run folder: {folder}')
        else:
            folder = session.scratch
            print(f'{session.task.name}: scratch folder {folder} (removed at the end; the '
                  'chief writes the run folder)')
        write_config(config, folder / CONFIG_FILE,
                     header=f'Resolved configuration of run {folder.name} (fvt-train train).')
        if frames.trained_val_frames:
            print(f'note: {frames.trained_val_frames} of the {len(frames.val_ids)} '
                  f'{frames.val_split} frames are trained on ({frames.train_split}): their '
                  'scores say how well the model fits them, not how it does on unseen streets')
        if frames.manifest.label_resize != LABEL_RESIZE:
            print(f'warning: {frames.manifest.folder} was prepared with OpenCV INTER_NEAREST, '
                  'whose labels sit up to a pixel off their image: run the same `fvt-train '
                  'prepare` again to rebuild them', file=sys.stderr)
        return _fit(config, frames, folder, session, state=None)


def _record_command(folder: Path) -> None:
    """Append the command line that started (or resumed) the run to ``command.txt``."""
    words = ['fvt-train', *sys.argv[1:]] if Path(sys.argv[0]).name == 'fvt-train' else [
        'python', *sys.argv]
    with open(folder / COMMAND_FILE, 'a') as file:
        file.write(' '.join(shlex.quote(w) for w in words) + '\n')


def resume(run_dir: str | os.PathLike, epochs: int | None = None) -> Path | None:
    """Continue an interrupted run from its last epoch: weights, lr and counters restored.

    ``epochs`` sets a new epoch budget: larger extends the run, the epochs already done
    finish it at once (the final scores are then computed from its best weights).
    Every worker of a multiworker run resumes the same folder (a shared file system or a
    copy); only the chief writes to it. A non-chief worker returns None.
    """
    return _resume(run_dir, epochs, lambda message: None, None)


def _resume(run_dir: str | os.PathLike, epochs: int | None, notify: Callable[[str], None],
            scratch: Path | None) -> Path | None:
    folder = Path(run_dir)
    state_path = folder / STATE_FILE
    if not (folder / CONFIG_FILE).is_file() or not state_path.is_file():
        raise RunError(f'{folder} is not a resumable run folder: expected {CONFIG_FILE} and '
                       f'{STATE_FILE} (written after the first finished epoch)')
    state = json.loads(state_path.read_text())
    if state.get('finished'):
        raise RunError(f'{folder} already finished ({state["epoch"]} epochs); start a new run '
                       'instead')
    config = load_config(folder / CONFIG_FILE)
    if epochs is not None:
        if epochs < state['epoch']:
            raise RunError(f'{folder} has done {state["epoch"]} epochs already; expected a '
                           f'budget of at least that many, got train.epochs={epochs}')
        config['train']['epochs'] = epochs
    config, frames = resolve_config(config)
    with training_session(config['train'], notify, scratch) as session:
        # Every worker of a multiworker run reads the folder; only the chief writes to it.
        if session.scratch is None:
            session.run_dir = folder
            session.guard.notify(f'run_dir {folder}')
            if epochs is not None:
                write_config(config, folder / CONFIG_FILE, header=f'Resolved configuration '
                             f'of run {folder.name} (fvt-train train; epoch budget set on '
                             'resume).')
            _record_command(folder)
            truncate_history(folder / HISTORY_FILE, state['epoch'])
        print(f'resuming {folder} after epoch {state["epoch"]}')
        return _fit(config, frames, folder, session, state)


def init_weights_path(source: str | os.PathLike) -> Path:
    """Resolve ``train.init_weights``: a run folder gives its best (else last) weights file."""
    path = Path(source)
    if path.is_dir():
        for name in (BEST_WEIGHTS, LAST_WEIGHTS):
            if (path / name).is_file():
                return path / name
        raise RunError(f'train.init_weights: {path} holds no {BEST_WEIGHTS} or {LAST_WEIGHTS}; '
                       'expected a run folder written by fvt-train train or a weights file')
    if not path.is_file():
        raise RunError(f'train.init_weights: {path} does not exist; expected a run folder or a '
                       '.weights.h5 file')
    return path


def _load_init_weights(model: tf.keras.Model, path: Path) -> None:
    try:
        model.load_weights(str(path))
    except ValueError as err:  # Keras names the first layer whose shapes disagree
        raise RunError(f'train.init_weights: {path} does not fit this model (same '
                       f'model.architecture, backbone, filters and category count needed): '
                       f'{err}') from err


def _fit(config: dict, frames: RunFrames, folder: Path, session: TrainingSession,
         state: Mapping | None) -> Path | None:
    out = session.scratch or folder  # a resumed non-chief reads the run folder, writes here
    tf.keras.utils.set_random_seed(config['seed'])
    train_cfg = config['train']
    loss_spec = config['loss']
    needs_freq = loss_spec['class_weights'] == 'auto' or (
        loss_spec['name'] == 'weighted_dice' and loss_spec['class_weights'] is None)
    frequencies = frames.train_frequencies().tolist() if needs_freq else None
    train_seq, val_seq = make_sequences(config, frames)

    with session.strategy.scope():
        model = build_model(config)
        # Before compile: a weights file must not meet compiled metric variables.
        if state:
            model.load_weights(str(folder / LAST_WEIGHTS))
        elif train_cfg['init_weights']:
            path = init_weights_path(train_cfg['init_weights'])
            _load_init_weights(model, path)
            print(f'warm start from {path}')
        loss = make_loss(loss_spec, frequencies)
        class_weights = resolve_class_weights(loss_spec, frequencies)
        learning_rate = state['learning_rate'] if state else train_cfg['learning_rate']
        _compile(model, loss, learning_rate)
    monitor = train_cfg['monitor']
    mode = MONITOR_MODES[monitor]
    # select: last still records the best epoch but never stops early: the wait counter
    # grows by at most one per epoch, so a patience of the whole budget is reached, if ever,
    # at the last epoch, after which training ends anyway.
    patience = (train_cfg['early_stopping_patience'] if train_cfg['select'] == 'best'
                else train_cfg['epochs'])
    stopping = ResumableEarlyStopping(
        restore=state['early_stopping'] if state else None, monitor=monitor, mode=mode,
        patience=patience, verbose=1)
    checkpoint = tf.keras.callbacks.ModelCheckpoint(
        str(out / BEST_WEIGHTS), monitor=monitor, mode=mode, save_best_only=True,
        save_weights_only=True, verbose=0,
        initial_value_threshold=state['early_stopping']['best'] if state else None)
    plateau = None
    schedule: list[tf.keras.callbacks.Callback] = []
    if train_cfg['lr_schedule'] == 'cosine':
        steps = train_cfg['steps_per_epoch'] or len(train_seq)
        schedule.append(CosineSchedule(train_cfg['learning_rate'],
                                       train_cfg['min_learning_rate'], train_cfg['epochs'],
                                       steps, train_cfg['warmup_epochs']))
    else:
        plateau = ResumableReduceLROnPlateau(
            restore=state['plateau'] if state else None, monitor=monitor, mode=mode,
            factor=train_cfg['plateau_factor'], patience=train_cfg['plateau_patience'],
            min_lr=train_cfg['min_learning_rate'], verbose=1)
        schedule.append(plateau)
    if train_cfg['encoder_freeze_epochs']:
        schedule.append(EncoderFreezeSchedule(train_cfg['encoder_freeze_epochs']))
    guard = session.guard
    tty = os.isatty(1)
    callbacks = [
        StopBetweenBatches(guard),
        *([] if tty else [ProgressLines(PROGRESS_EVERY_S,
                                        train_cfg['validation_steps'] or len(val_seq))]),
        *schedule, checkpoint, stopping,
        tf.keras.callbacks.CSVLogger(str(out / HISTORY_FILE), append=state is not None),
        tf.keras.callbacks.TensorBoard(str(out / TENSORBOARD_DIR), profile_batch=0),
        PlotHistory(out),
        RunState(out, stopping, plateau, state['training_time_s'] if state else 0.0),
        StopBetweenBatches(guard, last=True),
    ]
    initial_epoch = state['epoch'] if state else 0
    train_seq.set_epoch(initial_epoch)  # the shuffle order the interrupted run would have used
    try:
        model.fit(train_seq, validation_data=val_seq, epochs=train_cfg['epochs'],
                  initial_epoch=initial_epoch, callbacks=callbacks,
                  steps_per_epoch=train_cfg['steps_per_epoch'] or None,
                  validation_steps=train_cfg['validation_steps'] or None,
                  verbose=1 if tty else 2)
    finally:
        guard.end_saving()
    if session.scratch is not None:
        # Each epoch's validation above is sharded across the workers; the final scores
        # below are not a collective, and would only be thrown away with the scratch folder.
        return None

    run_state = json.loads((folder / STATE_FILE).read_text())

    def score(weights: str) -> tuple[np.ndarray, tf.keras.Model]:
        # The final scores come from the model as load_run gives it to evaluate and export:
        # rebuilt outside the strategy.
        _, model = load_run(folder, weights)
        return evaluate_confusion(model, val_seq, desc=f'{frames.scored}, {weights} weights',
                                  between_batches=guard.check), model

    last_cm, model = score('last')
    # No best weights were saved if the monitored value never was a number.
    best_cm = score('best')[0] if (folder / BEST_WEIGHTS).is_file() else last_cm
    best, last = (summarize(cm, CATEGORIES, VOID) for cm in (best_cm, last_cm))
    normalization, color_order = model_normalization(config)
    guard.begin_saving()
    write_json(folder / METRICS_FILE, {
        'split': frames.scored,
        'holdout_sequence': frames.holdout_sequence,
        'metrics': best,
        'confusion_matrix': best_cm.tolist(),
        'last_epoch': {'epoch': run_state['epoch'], 'metrics': last,
                       'confusion_matrix': last_cm.tolist()},
        'epochs': run_state['epoch'],
        'best_epoch': run_state['early_stopping']['best_epoch'] + 1,
        'monitor': config['train']['monitor'],
        'best_monitored': run_state['early_stopping']['best'],
        'training_time_s': run_state['training_time_s'],
        'params': int(model.count_params()),
        'trainable_params': int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        'class_weights': class_weights,
        'normalization': json.loads(normalization.to_json()),
        'color_order': color_order,
    }, sort_keys=True)
    write_json(folder / STATE_FILE, {**run_state, 'finished': True}, sort_keys=True)
    guard.end_saving()
    print(f'done: {folder} ({frames.scored} mIoU: best weights {best["miou"]:.4f}, last epoch '
          f'{last["miou"]:.4f})')
    return folder


def run_weights(run_dir: str | os.PathLike, weights: str | None = None) -> str:
    """Return ``weights`` (``best`` or ``last``), or when None the run's ``train.select``.

    A run judged at its last epoch (``select: last``) is then exported and evaluated with the
    weights it was judged by, not those val picked. A folder without a readable config
    gives ``best`` (:func:`load_run` then says what is missing).
    """
    if weights is not None:
        return weights
    path = Path(run_dir) / CONFIG_FILE
    return load_config(path)['train']['select'] if path.is_file() else 'best'


def load_run(run_dir: str | os.PathLike,
             weights: str | None = None) -> tuple[dict, tf.keras.Model]:
    """Rebuild a run's model from its config.yaml and load its ``best`` or ``last`` weights.

    ``weights`` None takes those of the run's ``train.select`` (see :func:`run_weights`).
    """
    folder = Path(run_dir)
    weights = run_weights(folder, weights)
    path = folder / (BEST_WEIGHTS if weights == 'best' else LAST_WEIGHTS)
    if not (folder / CONFIG_FILE).is_file() or not path.is_file():
        raise RunError(f'{folder} is not a run folder with weights: expected {CONFIG_FILE} '
                       f'and {path.name}')
    config = load_config(folder / CONFIG_FILE)
    spec = dict(config['model'], encoder_weights='none')  # the run's weights replace them
    model = build_model({**config, 'model': spec})
    model.load_weights(str(path))
    return config, model
