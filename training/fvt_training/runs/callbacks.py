"""The Keras callbacks of a training run: schedules, resumable counters, stops and progress.

After every epoch the run folder gets its last weights and ``state.json`` (:class:`RunState`),
so an interrupted run resumes where it was; the early-stopping and plateau counters and the
cosine schedule continue from the saved state.
"""

from __future__ import annotations

from collections.abc import Mapping
import math
import os
from pathlib import Path
import time
from typing import Any

import tensorflow as tf

from fvt_training.models.factories import set_encoder_trainable
from fvt_training.runs.cluster import StopGuard
from fvt_training.runs.history import plot_history
from fvt_training.runs.run_files import (
    HISTORY_FILE,
    LAST_WEIGHTS,
    PLOT_FILE,
    STATE_FILE,
    RunError,
    write_json,
)


def _save_weights(model: tf.keras.Model, path: Path) -> None:
    tmp = path.with_name(path.name.removesuffix('.weights.h5') + '.tmp.weights.h5')
    model.save_weights(str(tmp))
    os.replace(tmp, path)


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
