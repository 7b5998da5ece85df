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

from collections.abc import Callable, Iterator, Mapping
import contextlib
import csv
from dataclasses import dataclass
import json
import math
import os
from pathlib import Path
import shlex
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from fvt_segmentation.core.contract import CATEGORIES, VOID
from fvt_segmentation.core.metrics import confusion_matrix, summarize
from fvt_training.data import pipeline
from fvt_training.data.prepared import Manifest, holdout_split, label_frequencies, read_manifest
from fvt_training.models.factories import (
    build_model,
    check_input_size,
    model_normalization,
    set_encoder_trainable,
)
from fvt_training.runs.cluster import StopGuard, TrainingStopped, WorkerTask, read_tf_config
from fvt_training.runs.config import MONITOR_MODES, load_config, write_config
from fvt_training.runs.keras_metrics import StreamingMeanIoU
from fvt_training.runs.losses import make_loss, resolve_class_weights
from fvt_training.runs.run_files import (
    BEST_WEIGHTS,
    COMMAND_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    LAST_WEIGHTS,
    METRICS_FILE,
    PLOT_FILE,
    STATE_FILE,
    TENSORBOARD_DIR,
    RunError,
    resume_hint,
    write_json,
)


def _save_weights(model: tf.keras.Model, path: Path) -> None:
    tmp = path.with_name(path.name.removesuffix('.weights.h5') + '.tmp.weights.h5')
    model.save_weights(str(tmp))
    os.replace(tmp, path)


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


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Return the ``tf.distribute`` strategy for ``default``, ``mirrored`` or ``multiworker``.

    ``mirrored`` uses every local GPU (the CPU when there is none); ``multiworker`` reads the
    cluster from the ``TF_CONFIG`` environment variable.
    """
    if name == 'default':
        return tf.distribute.get_strategy()
    if name == 'mirrored':
        return tf.distribute.MirroredStrategy()
    if name == 'multiworker':
        read_tf_config(os.environ.get('TF_CONFIG'))  # one-line errors before TensorFlow's
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise RunError(f'train.strategy must be default, mirrored or multiworker; got {name!r}')


@dataclass
class _Session:
    """What a training process works with: its strategy, stop guard and folders."""

    strategy: tf.distribute.Strategy
    guard: StopGuard
    task: WorkerTask | None
    scratch: Path | None  # a non-chief worker's throw-away output folder
    run_dir: Path | None = None

    def stop_hint(self) -> str:
        """Say what a stopped process leaves behind, and how to go on."""
        if self.scratch is not None:
            return f'scratch folder {self.scratch} removed (the chief writes the run folder)'
        if self.run_dir is None:
            return 'no run folder was written'
        return resume_hint(self.run_dir)


def _barrier(strategy: tf.distribute.Strategy) -> None:
    """Return once every worker of the cluster has got here (one all-reduce)."""
    def ones() -> Any:
        return strategy.run(lambda: tf.constant(1.0))

    # In a function: run() called eagerly warns of its overhead.
    strategy.reduce(tf.distribute.ReduceOp.SUM, tf.function(ones, autograph=False)(),
                    axis=None)


@contextlib.contextmanager
def _session(train_cfg: Mapping, notify: Callable[[str], None],
             scratch: Path | None) -> Iterator[_Session]:
    """Start the strategy (waiting for the cluster's other workers) under a stop guard.

    A non-chief worker writes into ``scratch`` (given by a supervising parent, which removes
    it) or into a temporary folder of its own, removed when the session ends.
    """
    name = train_cfg['strategy']
    task = read_tf_config(os.environ.get('TF_CONFIG')) if name == 'multiworker' else None
    with StopGuard(notify) as guard:
        if task is not None:
            guard.waiting()
        strategy = make_strategy(name)
        if task is not None:
            _barrier(strategy)
            guard.joined()
        own = task is not None and not task.chief and scratch is None
        if own:
            scratch = Path(tempfile.mkdtemp(prefix='fvt-worker-'))
        session = _Session(strategy, guard, task, scratch)
        try:
            yield session
        except TrainingStopped as stop:
            stop.hint = session.stop_hint()
            raise
        finally:
            if own:
                shutil.rmtree(scratch, ignore_errors=True)


class _ResumableCounters:
    """Keras callback mixin: ``wait``, ``best`` and the :attr:`COUNTERS` survive a restart.

    :meth:`state` gives them after an epoch; ``restore`` (a saved state) puts them back.
    """

    COUNTERS: tuple[str, ...] = ()

    def __init__(self, restore: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._restore = restore

    def on_train_begin(self, logs: Mapping | None = None) -> None:
        """Reset as Keras does, then apply the saved counters."""
        super().on_train_begin(logs)
        if self._restore:
            for name in ('wait', 'best', *self.COUNTERS):
                setattr(self, name, self._restore[name])

    def state(self) -> dict[str, Any]:
        """Return the counters to save after an epoch."""
        return {'wait': self.wait, 'best': float(self.best),
                **{name: getattr(self, name) for name in self.COUNTERS}}


class ResumableEarlyStopping(_ResumableCounters, tf.keras.callbacks.EarlyStopping):
    """EarlyStopping whose counters survive a restart.

    The best weights live in best.weights.h5 (ModelCheckpoint), which training loads at the
    end, so this callback keeps no copy of them.
    """

    COUNTERS = ('best_epoch',)


class ResumableReduceLROnPlateau(_ResumableCounters, tf.keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters survive a restart."""

    COUNTERS = ('cooldown_counter',)


def cosine_learning_rate(step: int, total_steps: int, warmup_steps: int, base: float,
                         minimum: float = 0.0) -> float:
    """Return the learning rate of ``step`` (from 0): linear warm-up, then cosine decay.

    Warm-up rises linearly to ``base`` over ``warmup_steps`` (step ``i`` gets
    ``base * (i + 1) / warmup_steps``); the decay goes from ``base`` to ``minimum`` over the
    remaining steps and stays at ``minimum`` after ``total_steps``.
    """
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return minimum + 0.5 * (base - minimum) * (1.0 + math.cos(math.pi * progress))


class CosineSchedule(tf.keras.callbacks.Callback):
    """Set the learning rate before every batch from :func:`cosine_learning_rate`.

    The rate depends only on the epoch and the batch, so a resumed run continues the curve.
    """

    def __init__(self, base: float, minimum: float, epochs: int, steps_per_epoch: int,
                 warmup_epochs: int) -> None:
        super().__init__()
        self.base, self.minimum = base, minimum
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = epochs * steps_per_epoch
        self.warmup_steps = warmup_epochs * steps_per_epoch
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Mapping | None = None) -> None:
        """Remember the epoch for the step count."""
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: Mapping | None = None) -> None:
        """Set this step's learning rate."""
        step = self.epoch * self.steps_per_epoch + batch
        tf.keras.backend.set_value(self.model.optimizer.learning_rate, cosine_learning_rate(
            step, self.total_steps, self.warmup_steps, self.base, self.minimum))


class EncoderFreezeSchedule(tf.keras.callbacks.Callback):
    """Keep the model's encoder frozen for the first ``frozen_epochs`` epochs, then train it."""

    def __init__(self, frozen_epochs: int) -> None:
        super().__init__()
        self.frozen_epochs = frozen_epochs
        self.frozen: bool | None = None

    def on_epoch_begin(self, epoch: int, logs: Mapping | None = None) -> None:
        """Switch the encoder at the scheduled epoch; the train step is traced anew."""
        frozen = epoch < self.frozen_epochs
        if frozen == self.frozen:
            return
        if not set_encoder_trainable(self.model, not frozen):
            raise RunError('train.encoder_freeze_epochs needs a model with an encoder layer '
                           '(model.architecture: light_fpn)')
        self.frozen = frozen
        # The train function captured the trainable variables when it was traced.
        self.model.make_train_function(force=True)
        print(f'epoch {epoch + 1}: encoder {"frozen" if frozen else "trained"}')


class RunState(tf.keras.callbacks.Callback):
    """After each epoch: save last weights and ``state.json`` (must run after the others)."""

    def __init__(self, run_dir: Path, stopping: ResumableEarlyStopping,
                 plateau: ResumableReduceLROnPlateau | None, elapsed_s: float) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.stopping = stopping
        self.plateau = plateau
        self.elapsed_s = elapsed_s
        self._since = time.monotonic()

    def on_train_begin(self, logs: Mapping | None = None) -> None:
        """Start the clock of this session."""
        self._since = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        """Write last.weights.h5 then state.json (the state never points past the weights)."""
        now = time.monotonic()
        self.elapsed_s += now - self._since
        self._since = now
        _save_weights(self.model, self.run_dir / LAST_WEIGHTS)
        write_json(self.run_dir / STATE_FILE, {
            'epoch': epoch + 1,
            'learning_rate': float(tf.keras.backend.get_value(self.model.optimizer.lr)),
            'early_stopping': self.stopping.state(),
            'plateau': self.plateau.state() if self.plateau else None,
            'training_time_s': self.elapsed_s,
            'finished': False,
        }, sort_keys=True)


PROGRESS_EVERY_S = 30.0
"""With output to a file (a cluster log), a progress line at most this often during an epoch."""


class StopBetweenBatches(tf.keras.callbacks.Callback):
    """Raise TrainingStopped between batches once a stop signal came; guard epoch-end files.

    Used twice: first in the list (its ``on_epoch_end`` starts the epoch-end writes, which a
    forced stop lets finish) and, with ``last``, at the end of it (which ends them).
    """

    def __init__(self, guard: StopGuard, last: bool = False) -> None:
        super().__init__()
        self.guard = guard
        self.last = last

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        """Stop here if asked."""
        self.guard.check()

    def on_test_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        """Stop here if asked (validation)."""
        self.guard.check()

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        """Begin (first instance) or end (``last``) the epoch-end writes."""
        if self.last:
            self.guard.end_saving()
        else:
            self.guard.begin_saving()


class ProgressLines(tf.keras.callbacks.Callback):
    """Print a line of progress at most every ``every_s`` seconds during training/validation.

    For output that is not a terminal, where Keras prints one line per epoch.
    """

    def __init__(self, every_s: float, validation_steps: int) -> None:
        super().__init__()
        self.every_s = every_s
        self.validation_steps = validation_steps
        self.epoch = 0
        self._last = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: Mapping | None = None) -> None:
        """Remember the epoch for the lines."""
        self.epoch = epoch
        self._last = time.monotonic()

    def _line(self, phase: str, batch: int, steps: int, logs: Mapping | None) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        values = ', '.join(f'{k} {float(v):.4f}' for k, v in (logs or {}).items()
                           if k in ('loss', 'miou'))
        print(f'epoch {self.epoch + 1}/{self.params["epochs"]} {phase} batch {batch + 1}/'
              f'{steps}' + (f': {values}' if values else ''), flush=True)

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        """Report training progress if it is time."""
        self._line('train', batch, self.params.get('steps'), logs)

    def on_test_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        """Report validation progress if it is time."""
        self._line('validation', batch, self.validation_steps, logs)


class PlotHistory(tf.keras.callbacks.Callback):
    """Redraw ``plot.png`` (loss and mIoU curves) from ``history.csv`` after each epoch."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        """Plot every epoch recorded so far."""
        plot_history(self.run_dir / HISTORY_FILE, self.run_dir / PLOT_FILE)


def read_history(path: Path) -> dict[str, list[float]]:
    """Return the CSV history as ``{column: values}`` (empty when the file is missing)."""
    if not path.is_file():
        return {}
    with path.open(newline='') as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(float(value) if value not in ('', None)
                                               else float('nan'))
    return columns


def _truncate_history(path: Path, epochs: int) -> None:
    """Drop rows of epochs that ``state.json`` does not count (a crash between the two)."""
    if not path.is_file():
        return
    with path.open(newline='') as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) < epochs]
    if len(kept) != len(rows):
        tmp = path.with_name(path.name + '.tmp')
        with tmp.open('w', newline='') as f:
            csv.writer(f).writerows(kept)
        os.replace(tmp, path)


def plot_history(history_csv: Path, out_png: Path) -> None:
    """Draw loss and mIoU (train and validation) per epoch into ``out_png`` atomically."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    history = read_history(history_csv)
    if not history.get('epoch'):
        return
    epochs = [int(e) + 1 for e in history['epoch']]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], 'loss', 'loss'), (axes[1], 'miou', 'mIoU (void ignored)')):
        for prefix, label in (('', 'train'), ('val_', 'val')):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], marker='o', label=label)
        ax.set_xlabel('epoch')
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = out_png.with_name(out_png.stem + '.tmp.png')
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, out_png)


@dataclass(frozen=True)
class RunFrames:
    """The frames a run trains on and validates (and is scored) on, by split and id."""

    manifest: Manifest
    train_split: str
    train_ids: tuple[str, ...]
    val_split: str
    val_ids: tuple[str, ...]
    holdout_sequence: str | None

    @property
    def scored(self) -> str:
        """Name the validation frames, as metrics.json and the progress bars do."""
        if self.holdout_sequence is None:
            return self.val_split
        return f'{self.train_split} sequence {self.holdout_sequence} (held out)'

    def train_frequencies(self) -> np.ndarray:
        """Return the fraction of pixels per category over the training frames."""
        if self.holdout_sequence is None:
            return self.manifest.class_frequencies(self.train_split)
        # The split's frequencies in the manifest would count the held-out labels too.
        return label_frequencies(self.manifest, self.train_split, self.train_ids)


def run_frames(config: Mapping, manifest: Manifest) -> RunFrames:
    """Return the frames a run trains and validates on.

    With ``data.holdout_sequence`` set: the training split without that sequence to train on,
    the sequence to validate on, and the validation split not read at all.
    """
    spec = config['data']
    train_split, sequence = spec['train_split'], spec['holdout_sequence']
    if sequence is None:
        return RunFrames(manifest, train_split, manifest.ids(train_split), spec['val_split'],
                         manifest.ids(spec['val_split']), None)
    train_ids, held_out = holdout_split(manifest, train_split, sequence)
    return RunFrames(manifest, train_split, train_ids, train_split, held_out, sequence)


def _sequences(config: Mapping, frames: RunFrames) -> tuple[Any, Any]:
    normalization, color_order = model_normalization(config)
    spec = config['data']
    common = dict(batch_size=spec['batch_size'], normalization=normalization,
                  color_order=color_order, workers=spec['workers'], seed=config['seed'])
    train_seq = pipeline.make_sequence(frames.manifest, frames.train_split, ids=frames.train_ids,
                                   augment=spec['augment'], shuffle=True, **common)
    val_seq = pipeline.make_sequence(frames.manifest, frames.val_split, ids=frames.val_ids,
                                 augment='none', shuffle=False, **common)
    return train_seq, val_seq


def resolve_config(config: dict) -> tuple[dict, RunFrames]:
    """Fill ``model.input_size`` from the prepared data (or check it matches); return frames.

    Every check that needs the prepared data runs here, before a run folder is made.
    """
    manifest = read_manifest(config['data']['prepared_dir'])
    size = list(manifest.height_width)
    spec = config['model']
    if spec['input_size'] is None:
        spec['input_size'] = size
    elif list(spec['input_size']) != size:
        raise RunError(f'model.input_size is {spec["input_size"]} but the prepared data in '
                       f'{config["data"]["prepared_dir"]} is {size} ([height, width]); set '
                       'model.input_size: null or prepare the data at that size')
    check_input_size(spec['architecture'], spec['input_size'], spec['filters'])
    return config, run_frames(config, manifest)


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
    with _session(config['train'], notify, scratch) as session:
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
    with _session(config['train'], notify, scratch) as session:
        # Every worker of a multiworker run reads the folder; only the chief writes to it.
        if session.scratch is None:
            session.run_dir = folder
            session.guard.notify(f'run_dir {folder}')
            if epochs is not None:
                write_config(config, folder / CONFIG_FILE, header=f'Resolved configuration '
                             f'of run {folder.name} (fvt-train train; epoch budget set on '
                             'resume).')
            _record_command(folder)
            _truncate_history(folder / HISTORY_FILE, state['epoch'])
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


def _fit(config: dict, frames: RunFrames, folder: Path, session: _Session,
         state: Mapping | None) -> Path | None:
    out = session.scratch or folder  # a resumed non-chief reads the run folder, writes here
    tf.keras.utils.set_random_seed(config['seed'])
    train_cfg = config['train']
    loss_spec = config['loss']
    needs_freq = loss_spec['class_weights'] == 'auto' or (
        loss_spec['name'] == 'weighted_dice' and loss_spec['class_weights'] is None)
    frequencies = frames.train_frequencies().tolist() if needs_freq else None
    train_seq, val_seq = _sequences(config, frames)

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


def load_run(run_dir: str | os.PathLike, weights: str = 'best') -> tuple[dict, tf.keras.Model]:
    """Rebuild a run's model from its config.yaml and load its ``best`` (or ``last``) weights."""
    folder = Path(run_dir)
    path = folder / (BEST_WEIGHTS if weights == 'best' else LAST_WEIGHTS)
    if not (folder / CONFIG_FILE).is_file() or not path.is_file():
        raise RunError(f'{folder} is not a run folder with weights: expected {CONFIG_FILE} '
                       f'and {path.name}')
    config = load_config(folder / CONFIG_FILE)
    spec = dict(config['model'], encoder_weights='none')  # the run's weights replace them
    model = build_model({**config, 'model': spec})
    model.load_weights(str(path))
    return config, model
