"""The session a training process runs in: its tf.distribute strategy, stop guard and folders.

A ``multiworker`` session waits for the cluster's other workers (one all-reduce) before the
run folder is made, so a worker that gives up waiting leaves none behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
import contextlib
from dataclasses import dataclass
import os
from pathlib import Path
import shutil
import tempfile
from typing import Any

import tensorflow as tf

from fvt_training.runs.cluster import StopGuard, TrainingStopped, WorkerTask, read_tf_config
from fvt_training.runs.run_files import RunError, resume_hint


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
class TrainingSession:
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
def training_session(train_cfg: Mapping, notify: Callable[[str], None],
                     scratch: Path | None) -> Iterator[TrainingSession]:
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
        session = TrainingSession(strategy, guard, task, scratch)
        try:
            yield session
        except TrainingStopped as stop:
            stop.hint = session.stop_hint()
            raise
        finally:
            if own:
                shutil.rmtree(scratch, ignore_errors=True)
