"""The main job runs end to end on a few frames of the bundled recording."""

import json
import os
import subprocess
import sys

from onnx_models import build_model
from rosbags.rosbag2 import Reader

from fvt_segmentation.core.contract import ModelContract, Normalization


def demo_command(tmp_path, *args, rate='5'):
    return [sys.executable, '-m', 'fvt_segmentation.tools.demo', '--out', str(tmp_path / 'out'),
            '--rate', rate, '--providers', 'cpu', *args]


DEMO_ENV = dict(os.environ, PYTHONUNBUFFERED='1')


def run_demo(tmp_path, *args, rate='5'):
    return subprocess.run(demo_command(tmp_path, *args, rate=rate), capture_output=True,
                          text=True, timeout=180, env=DEMO_ENV)


def test_demo_on_a_few_frames_writes_everything_it_promises(tmp_path):
    model = build_model(tmp_path / 'm.onnx', size=(96, 128), contract=ModelContract(
        normalization=Normalization(1 / 255, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))))
    result = run_demo(tmp_path, '--frames', '6', '--model', str(model))
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / 'out'
    summary = json.loads((out / 'summary.json').read_text())
    # Every frame is segmented, on a loaded machine too: the demo paces the replay by the
    # node's answers, so its newest-frame-only input never replaces one.
    masks = summary['masks_out']
    assert summary['frames_in'] == masks == 6 and summary['lost_or_dropped'] == 0
    assert summary['node_counters'] == {'received': '6', 'processed': '6', 'dropped': '0',
                                        'stale': '0', 'rejected': '0', 'failed': '0'}
    assert summary['latency_ms_p50'] > 0 and summary['latency_ms_p99'] >= summary[
        'latency_ms_p50']
    assert 0 <= summary['metrics']['miou'] <= 1
    assert summary['metrics']['pixels'] == masks * 480 * 360
    assert summary['provider'] == 'CPUExecutionProvider'
    assert summary['model'] == str(model) and summary['model_precision'] == 'file'
    assert len(list((out / 'overlays').glob('frame_*.png'))) == masks
    assert (out / 'overlay.gif').stat().st_size > 0
    with Reader(out / 'masks_bag') as bag:
        assert bag.message_count == masks == summary['masks_recorded']
        assert [c.topic for c in bag.connections] == ['/segmentation_node/mask']
    assert 'mIoU' in result.stdout and 'p99' in result.stdout


def test_demo_reports_a_missing_model_in_one_line(tmp_path):
    result = run_demo(tmp_path, '--model', str(tmp_path / 'nope.onnx'))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f'error: model {tmp_path / "nope.onnx"} '
                                                  'not found']


def test_ctrl_c_stops_cleanly_and_keeps_what_was_written(tmp_path):
    import signal
    import time

    model = build_model(tmp_path / 'm.onnx', size=(96, 128))
    out = tmp_path / 'out'
    proc = subprocess.Popen([sys.executable, '-m', 'fvt_segmentation.tools.demo',
                             '--out', str(out), '--rate', '2', '--providers', 'cpu',
                             '--model', str(model)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list((out / 'overlays').glob('*.png'))) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert 'Traceback' not in stderr
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['interrupted'] and 3 <= summary['frames_in'] < 40
    assert summary['node_exit_code'] == 0
    with Reader(out / 'masks_bag') as bag:
        assert bag.message_count >= 2
    assert (out / 'overlay.gif').exists()


def test_demo_as_fast_as_possible_loses_no_frame_of_the_recording(tmp_path):
    # Rate 0 publishes faster than any model answers: without the pacing the node's one-slot
    # input would replace most frames, and a discovery race would lose the first ones.
    model = build_model(tmp_path / 'm.onnx', size=(96, 128))
    result = run_demo(tmp_path, '--model', str(model), '--no-gif', rate='0')
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    assert summary['frames_in'] == summary['masks_out'] == summary['masks_recorded'] == 40
    assert summary['node_counters']['received'] == summary['node_counters']['processed'] == '40'


def test_demo_on_a_full_disk_fails_in_one_line_and_keeps_the_masks_written(tmp_path):
    import resource

    model = build_model(tmp_path / 'm.onnx', size=(96, 128))
    proc = subprocess.Popen(demo_command(tmp_path, '--model', str(model), '--no-gif', rate='0'),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=DEMO_ENV)
    try:
        # The disk fills up once the replay runs, and only the demo's own files see it
        # (EFBIG past RLIMIT_FSIZE stands in for ENOSPC; Python ignores SIGXFSZ). Limiting the
        # process from its start would also stop Fast DDS from creating its 64 MiB shared
        # memory segment (/dev/shm is another file system on a real car), and the 480x360
        # outputs over the UDP fallback then crawl or stall on a machine with small socket
        # buffers: a failure of the test, not of the demo.
        started = b''  # read from the descriptor: communicate() below reads from it too
        while b'frames in -> masks out' not in started:
            chunk = os.read(proc.stderr.fileno(), 256)
            assert chunk, started.decode()
            started += chunk
        # 480x360 masks are 173 kB each: the mask bag reaches the limit after a few of them.
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (1_500_000, 1_500_000))
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
        proc.wait()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout.decode(),
                                         (started + stderr).decode())
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith('error: ') and 'expected to write message' in error, result.stderr
    out = tmp_path / 'out'
    summary = json.loads((out / 'summary.json').read_text())
    with Reader(out / 'masks_bag') as bag:
        assert 3 <= bag.message_count == summary['masks_recorded'] < 40
        assert summary['frames_in'] == bag.message_count + 1  # stopped at the failure
        assert f'keeps the {bag.message_count} messages' in error
        assert len(list(bag.messages())) == bag.message_count
