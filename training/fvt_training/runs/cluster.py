"""Training as a cluster job: the TF_CONFIG of a worker, and stopping on SIGTERM or SIGINT.

A worker waiting for its peers blocks in TensorFlow's C++ code without releasing the GIL: no
Python signal handler or thread of that process runs until the peers come, so SIGTERM and
Ctrl-C do nothing. ``fvt-train train`` therefore runs a ``multiworker`` worker in a child
process under :func:`supervise`, a parent without TensorFlow that stays responsive: it says
whom the worker waits for, ends it when the cluster does not come together in time, passes
SIGTERM and SIGINT on (the child stops between batches, see :class:`StopGuard`), ends the
child when it does not stop within seconds, and removes the child's temporary folder (a
non-chief worker's scratch folder, TensorFlow's own temporary files) however the child ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import ctypes
from dataclasses import dataclass
import importlib
import json
import multiprocessing
from multiprocessing.connection import Connection
import os
from pathlib import Path
import shutil
import signal
import sys
import threading
import time
from typing import Any

from fvt_training.runs.run_files import RunError, resume_hint

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WORKER_TYPES = ('chief', 'worker')
STOP_GRACE_S = 10.0
"""Seconds a signalled worker has to stop between batches before it is ended."""
SAVE_WAIT_S = 60.0
"""Longest an ending waits for epoch-end files being written (so they stay whole)."""
WAIT_NOTICE_S = 2.0
"""A worker that has not met its peers after this long says whom it waits for."""


class TrainingStopped(Exception):  # noqa: N818 - a request, not a failure
    """Training ended early because the process received SIGTERM or SIGINT."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.hint = ''  # what the stopped run leaves behind, filled in by the trainer
        super().__init__(f'stopped by {signal.Signals(signum).name}')

    @property
    def exit_code(self) -> int:
        """The shell's status for a process ended by this signal (143 SIGTERM, 130 SIGINT)."""
        return 128 + self.signum


@dataclass(frozen=True)
class WorkerTask:
    """A process's place in a multi-worker cluster, as TF_CONFIG gives it."""

    cluster: Mapping[str, list[str]]
    type: str
    index: int

    @property
    def name(self) -> str:
        """``worker 1``, ``chief 0``."""
        return f'{self.type} {self.index}'

    @property
    def chief(self) -> bool:
        """The task that writes the run folder: ``chief 0``, else ``worker 0``."""
        lead = 'chief' if 'chief' in self.cluster else 'worker'
        return self.type == lead and self.index == 0

    @property
    def peers(self) -> list[str]:
        """Every other task of the cluster as ``worker 0 (host:port)``."""
        return [f'{kind} {i} ({address})' for kind in WORKER_TYPES
                for i, address in enumerate(self.cluster.get(kind, []))
                if (kind, i) != (self.type, self.index)]


def read_tf_config(text: str | None) -> WorkerTask:
    """Check the TF_CONFIG text of a ``multiworker`` run and return this worker's task.

    Raises :class:`RunError` naming what is wrong: no variable, malformed JSON, no cluster,
    no task, a task type other than chief/worker, or an index outside its list.
    """
    example = ('e.g. {"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    if not text:
        raise RunError(f'train.strategy: multiworker needs the TF_CONFIG environment variable '
                       f'describing the cluster and this worker, {example}')
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise RunError(f'TF_CONFIG is not valid JSON ({err.msg} at column {err.colno}); '
                       f'expected {example}') from None
    cluster = value.get('cluster') if isinstance(value, dict) else None
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(v, list) and v and all(isinstance(a, str) for a in v)
            for v in cluster.values()):
        raise RunError(f'TF_CONFIG needs "cluster": a mapping of task type to a list of '
                       f'"host:port" addresses, {example}; got {cluster!r}')
    unknown = sorted(set(cluster) - set(WORKER_TYPES))
    if unknown or 'worker' not in cluster and 'chief' not in cluster:
        raise RunError(f'TF_CONFIG "cluster" may hold "chief" (at most one) and "worker" '
                       f'lists for train.strategy: multiworker; got {sorted(cluster)}')
    if len(cluster.get('chief', [])) > 1:
        raise RunError(f'TF_CONFIG "cluster" has {len(cluster["chief"])} chief addresses; '
                       'expected at most one (the task that writes the run folder)')
    task = value.get('task')
    if not isinstance(task, dict) or 'type' not in task or 'index' not in task:
        raise RunError(f'TF_CONFIG needs "task": {{"type": ..., "index": ...}} saying which '
                       f'task of the cluster this process is, {example}; got {task!r}')
    kind, index = task['type'], task['index']
    if kind not in cluster:
        raise RunError(f'TF_CONFIG task type {kind!r} is not in the cluster; expected one of '
                       f'{sorted(cluster)}')
    if isinstance(index, bool) or not isinstance(index, int) or not (
            0 <= index < len(cluster[kind])):
        raise RunError(f'TF_CONFIG task index {index!r} is outside the cluster: "{kind}" has '
                       f'{len(cluster[kind])} addresses, so expected 0..'
                       f'{len(cluster[kind]) - 1}')
    return WorkerTask(cluster=cluster, type=kind, index=index)


class StopGuard:
    """Turn SIGTERM and SIGINT into :class:`TrainingStopped`, raised between batches.

    Inside ``with StopGuard(notify)`` a signal only records itself; :meth:`check` (called by
    a Keras callback between batches) raises. ``notify`` tells a supervising parent when the
    cluster has come together (:meth:`joined`) and when epoch-end files are being written
    (:meth:`begin_saving`, :meth:`end_saving`), so it never ends the process mid-file. The
    previous handlers are put back on exit; off the main thread nothing is installed.
    """

    def __init__(self, notify: Callable[[str], None] = lambda message: None) -> None:
        self.notify = notify
        self.signum: int | None = None
        self._saving = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopGuard:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._note) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._old.items():
            signal.signal(signum, handler)

    def _note(self, signum: int, frame: object) -> None:
        self.signum = signum

    def check(self) -> None:
        """Raise :class:`TrainingStopped` once a stop signal has arrived."""
        if self.signum is not None:
            raise TrainingStopped(self.signum)

    def waiting(self) -> None:
        """Report that the process starts to wait for the other workers of the cluster."""
        self.notify('waiting')

    def joined(self) -> None:
        """Report that every worker of the cluster is there."""
        self.notify('joined')

    def begin_saving(self) -> None:
        """Report that files which must stay whole are being written."""
        if not self._saving:
            self._saving = True
            self.notify('saving')

    def end_saving(self) -> None:
        """Report that those files are written (nothing if :meth:`begin_saving` was not)."""
        if self._saving:
            self._saving = False
            self.notify('saved')


def _child(entry: str, conn: Connection, args: tuple) -> None:
    """Run ``module:function(notify, *args)`` in the child; exit with the status it returns.

    A user error or a stop is sent to the parent as the last message, which it prints.
    """
    if sys.platform == 'linux':  # die with the parent, even one ended by SIGKILL
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    from fvt_training.common.user_errors import user_errors

    module, function = entry.split(':')
    try:
        status = getattr(importlib.import_module(module), function)(conn.send, *args)
    except TrainingStopped as stop:
        conn.send(f'stopped {stop.signum} {stop.hint}')
        status = stop.exit_code
    except user_errors() as err:
        conn.send(f'error {err}')
        status = 2
    sys.exit(status)


def supervise(entry: str, args: tuple, task: WorkerTask, timeout_s: float,
              work_dir: Path, grace_s: float = STOP_GRACE_S) -> int:
    """Run one multiworker training process as a child; return the command's exit status.

    ``entry`` (``module:function``) is called in a fresh process as ``function(notify,
    *args)``. Between its ``waiting`` and ``joined`` reports: one line after
    :data:`WAIT_NOTICE_S` naming the peers, and after ``timeout_s`` the child is ended and the
    status is 2. SIGTERM and SIGINT are passed on; a child still running ``grace_s`` later
    (at once while it waits for peers) is killed, after any epoch-end writes. ``work_dir``
    is the child's TMPDIR, removed at the end however the child ended (a killed TensorFlow
    leaves its AutoGraph files there).
    """
    label = f'fvt-train train ({task.name})'
    received: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: received.append(signum))
           for s in STOP_SIGNALS}
    parent_conn, child_conn = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context('spawn').Process(
        target=_child, args=(entry, child_conn, args), name=f'fvt-train {task.name}')
    tmp = os.environ.get('TMPDIR')
    try:
        os.environ['TMPDIR'] = str(work_dir)  # the child's environment is the parent's
        try:
            process.start()
        finally:
            os.environ.pop('TMPDIR')
            if tmp is not None:
                os.environ['TMPDIR'] = tmp
        child_conn.close()
        code = _watch(process, parent_conn, task, label, timeout_s, grace_s, received)
    finally:
        if process.is_alive():
            process.kill()
            process.join()
        for signum, handler in old.items():
            signal.signal(signum, handler)
        shutil.rmtree(work_dir, ignore_errors=True)
    return code


def _watch(process: multiprocessing.Process, conn: Connection, task: WorkerTask, label: str,
           timeout_s: float, grace_s: float, received: list[int]) -> int:
    """Follow the child until it ends or is ended; print why; return the exit status."""
    waiting_since: float | None = None
    joined = told = saving = False
    last = ''
    run_dir: Path | None = None  # the chief's, once it has made it
    kill_at: float | None = None
    peers = ', '.join(task.peers)
    while process.is_alive():
        if conn.poll(0.2):
            try:
                message = conn.recv()
            except EOFError:  # the child closed its end: it is exiting
                process.join(0.2)
                continue
            joined |= message == 'joined'
            if message == 'waiting':
                waiting_since = time.monotonic()
            if message.startswith('run_dir '):
                run_dir = Path(message.removeprefix('run_dir '))
            saving = {'saving': True, 'saved': False}.get(message, saving)
            last = message
        now = time.monotonic()
        if received and kill_at is None:
            process.terminate()  # SIGTERM: the child stops between batches
            # A worker still waiting for its peers is stuck in C++ and cannot stop itself.
            kill_at = now + (grace_s if joined else 0.0)
        if kill_at is not None and (len(received) > 1 or now >= kill_at and (
                not saving or now >= kill_at + SAVE_WAIT_S)):
            process.kill()
            process.join()
            if not last.startswith('stopped'):
                hint = resume_hint(run_dir) if run_dir else 'no run folder written here'
                last = f'stopped {received[0]} ' + (
                    f'the current step did not end within {grace_s:g} s; {hint}' if joined
                    else 'the cluster had not come together, nothing was written')
            break
        waited = 0.0 if joined or waiting_since is None else now - waiting_since
        if not told and waited >= WAIT_NOTICE_S:
            told = True
            print(f'{label}: waiting for the other workers of TF_CONFIG: {peers} (giving up '
                  f'after {timeout_s:g} s, train.worker_timeout_s)', file=sys.stderr, flush=True)
        if waited >= timeout_s:
            process.kill()
            process.join()
            last = (f'error the cluster did not come together within {timeout_s:g} s '
                    f'(train.worker_timeout_s); expected {peers} to join: start every worker '
                    'with the same TF_CONFIG cluster, each with its own task')
            break
    while conn.poll():  # what the child said just before it ended
        try:
            last = conn.recv()
        except EOFError:
            break
    return _report(label, last, process.exitcode)


def _report(label: str, last: str, exitcode: int) -> int:
    """Print the child's last word (a stop or an error) and return the command's status."""
    kind, _, detail = last.partition(' ')
    if kind == 'stopped':
        number, _, hint = detail.partition(' ')
        signum = int(number)
        print(f'{label}: stopped by {signal.Signals(signum).name}'
              + (f'; {hint}' if hint else ''), file=sys.stderr)
        return 128 + signum
    if kind == 'error':
        print(f'{label}: error: {detail}', file=sys.stderr)
        return 2
    if exitcode:
        print(f'{label}: the training process failed with exit status {exitcode} '
              '(its traceback is above)', file=sys.stderr)
    return exitcode if exitcode >= 0 else 128 - exitcode  # killed by a signal: as a shell
