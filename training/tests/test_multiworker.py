"""`train.strategy: multiworker` as a cluster runs it: localhost workers, TF_CONFIG, signals."""

import json
import os
from pathlib import Path
import re
import signal
import socket
import subprocess
import sys
import time

from prepared_fixture import make_prepared
import pytest

from fvt_training.cli import main
from fvt_training.runs.cluster import read_tf_config
from fvt_training.runs.run_files import RunError

STOP_LIMIT_S = 15.0


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp('prepared'), (32, 32),
                         {'train': 8, 'val': 4})


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(('localhost', 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _config(tmp_path, prepared, **train):
    path = tmp_path / 'mw.yaml'
    settings = {'epochs': 1, 'strategy': 'multiworker', **train}
    path.write_text(json.dumps({
        'name': 'mw', 'runs_dir': str(tmp_path / 'runs'),
        'data': {'prepared_dir': str(prepared), 'batch_size': 4},
        'model': {'architecture': 'unet_like', 'filters': [8, 16]}, 'train': settings}))
    return path


class Cluster:
    """Worker processes of one localhost cluster, each with its own log and TMPDIR."""

    def __init__(self, tmp_path, config, size=2):
        self.tmp = tmp_path / 'tmp'
        self.tmp.mkdir()
        self.cluster = {'worker': [f'localhost:{p}' for p in _free_ports(size)]}
        self.config = config
        self.procs = {}
        self.logs = {}

    def start(self, index):
        env = dict(os.environ, TMPDIR=str(self.tmp), TF_CONFIG=json.dumps(
            {'cluster': self.cluster, 'task': {'type': 'worker', 'index': index}}))
        self.logs[index] = self.tmp.parent / f'worker{index}.log'
        with self.logs[index].open('w') as log:
            self.procs[index] = subprocess.Popen(
                [sys.executable, '-m', 'fvt_training.cli', 'train', str(self.config)],
                env=env, stdout=log, stderr=subprocess.STDOUT)

    def log(self, index):
        return self.logs[index].read_text()

    def wait_for(self, condition, timeout_s, what):
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f'no {what} within {timeout_s} s: ' + \
                '\n'.join(self.log(i) for i in self.procs)
            time.sleep(0.2)

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def scratch_left(self):
        return list(self.tmp.glob('fvt-worker-*'))


@pytest.fixture
def cluster_of(tmp_path, prepared):
    made = []

    def make(size=2, **train):
        made.append(Cluster(tmp_path, _config(tmp_path, prepared, **train), size))
        return made[-1]
    yield make
    for cluster in made:
        cluster.stop()


def test_two_workers_train_together_and_leave_only_the_chiefs_run_folder(cluster_of):
    cluster = cluster_of()
    started = time.monotonic()
    cluster.start(0)
    cluster.start(1)
    codes = [cluster.procs[i].wait(timeout=150) for i in (0, 1)]
    print(f'two workers, one epoch: {time.monotonic() - started:.1f} s')
    assert codes == [0, 0], cluster.log(0) + cluster.log(1)
    run = cluster.tmp.parent / 'runs' / 'mw'
    assert json.loads((run / 'metrics.json').read_text())['epochs'] == 1
    assert sorted(p.name for p in (cluster.tmp.parent / 'runs').iterdir()) == ['mw']
    assert cluster.scratch_left() == []
    # Worker 1 trained (the sharded per-epoch validation included) but scored nothing alone.
    assert 'val_loss' in cluster.log(1)
    assert 'val metrics' not in cluster.log(1) and 'done:' not in cluster.log(1)


def test_a_lone_worker_names_its_peer_and_stops_on_sigterm(cluster_of):
    cluster = cluster_of()
    cluster.start(0)
    cluster.wait_for(lambda: 'waiting for the other workers' in cluster.log(0), 90,
                     'waiting line')
    assert 'worker 1 (localhost:' in cluster.log(0)
    sent = time.monotonic()
    cluster.procs[0].send_signal(signal.SIGTERM)
    code = cluster.procs[0].wait(timeout=STOP_LIMIT_S + 5)
    took = time.monotonic() - sent
    print(f'lone worker stopped {took:.1f} s after SIGTERM')
    assert code == 128 + signal.SIGTERM and took < STOP_LIMIT_S
    assert 'stopped by SIGTERM' in cluster.log(0)
    assert not (cluster.tmp.parent / 'runs').exists()


def test_a_lone_worker_gives_up_after_the_worker_timeout(cluster_of):
    cluster = cluster_of(worker_timeout_s=3)
    cluster.start(1)
    assert cluster.procs[1].wait(timeout=90) == 2
    log = cluster.log(1)
    assert 'did not come together within 3 s (train.worker_timeout_s)' in log
    assert 'worker 0 (localhost:' in log and 'Traceback' not in log
    assert cluster.scratch_left() == []


def test_sigterm_during_training_stops_both_workers_and_leaves_a_resumable_run(cluster_of):
    cluster = cluster_of(epochs=200)
    cluster.start(0)
    cluster.start(1)
    state = cluster.tmp.parent / 'runs' / 'mw' / 'state.json'
    cluster.wait_for(state.is_file, 120, 'finished epoch')
    sent = time.monotonic()
    for proc in cluster.procs.values():
        proc.send_signal(signal.SIGTERM)
    codes = [cluster.procs[i].wait(timeout=STOP_LIMIT_S + 5) for i in (0, 1)]
    assert time.monotonic() - sent < STOP_LIMIT_S
    assert codes == [143, 143], cluster.log(0) + cluster.log(1)
    saved = json.loads(state.read_text())
    assert saved['finished'] is False and saved['epoch'] >= 1
    assert f'--resume {state.parent}' in cluster.log(0), cluster.log(0)
    # The killed workers' TensorFlow leaves its AutoGraph files in TMPDIR: removed with it.
    assert cluster.scratch_left() == [] and not list(cluster.tmp.glob('__autograph*'))


@pytest.mark.parametrize(('text', 'expected'), [
    (None, 'needs the TF_CONFIG environment variable'),
    ('{"cluster": ', 'TF_CONFIG is not valid JSON'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}}', 'TF_CONFIG needs "task"'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     'task index 2 is outside the cluster: "worker" has 2 addresses, so expected 0..1'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     "task type 'chief' is not in the cluster"),
    ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
     'may hold "chief" (at most one) and "worker"'),
])
def test_a_bad_tf_config_is_named(text, expected):
    with pytest.raises(RunError, match=re.escape(expected)):
        read_tf_config(text)


def test_the_chief_is_chief_0_else_worker_0():
    workers = '{"cluster": {"worker": ["a:1", "b:2"]%s}, "task": {"type": "%s", "index": %d}}'
    assert read_tf_config(workers % ('', 'worker', 0)).chief
    assert not read_tf_config(workers % ('', 'worker', 1)).chief
    assert not read_tf_config(workers % (', "chief": ["c:3"]', 'worker', 0)).chief
    assert read_tf_config(workers % (', "chief": ["c:3"]', 'chief', 0)).chief


def test_cli_reports_a_task_outside_the_cluster_in_one_line(tmp_path, prepared, monkeypatch,
                                                            capsys):
    monkeypatch.setenv('TF_CONFIG', json.dumps(
        {'cluster': {'worker': ['localhost:1', 'localhost:2']},
         'task': {'type': 'worker', 'index': 5}}))
    assert main(['train', str(_config(tmp_path, prepared))]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'task index 5 is outside the cluster' in err
    assert not Path(tmp_path / 'runs').exists()
