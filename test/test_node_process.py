"""The node as a real process: startup errors exit non-zero with one line; a clean run."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from node_harness import RosHarness, image_msg
import numpy as np
import pytest
from sensor_msgs.msg import Image

from fvt_segmentation.core.contract import REQUIRED_KEYS

REPO = Path(__file__).resolve().parents[1]


def node_command(*params: str) -> list[str]:
    args = [sys.executable, '-m', 'fvt_segmentation.node.segmentation_node', '--ros-args',
            '-p', 'providers:=[cpu]']
    for param in params:
        args += ['-p', param]
    return args


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
    env['PYTHONUNBUFFERED'] = '1'
    return env


def run_failing(*params: str) -> list[str]:
    done = subprocess.run(node_command(*params), capture_output=True, text=True, timeout=60,
                          env=environment())
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 1, lines
    assert not any('Traceback' in line for line in lines), lines
    return lines


def test_missing_model_is_one_fatal_line(tmp_path: Path) -> None:
    missing = tmp_path / 'nowhere.onnx'
    [line] = run_failing(f'model_path:={missing}')
    assert '[FATAL]' in line and f'{missing}: no such model file' in line


@pytest.mark.parametrize('options, key', [
    ({'drop_keys': REQUIRED_KEYS}, 'no model contract in its metadata'),
    ({'metadata': {'fvt.palette': '[[1, 2]]'}}, "metadata key 'fvt.palette'"),
    ({'metadata': {'fvt.normalization': '{"scale": 1}'}}, "metadata key 'fvt.normalization'"),
])
def test_bad_model_is_one_fatal_line(model_factory, options: dict, key: str) -> None:
    path = model_factory(**options)
    [line] = run_failing(f'model_path:={path}')
    assert '[FATAL]' in line and str(path) in line and key in line


def test_bad_parameter_is_one_fatal_line(tiny_model: Path) -> None:
    [line] = run_failing(f'model_path:={tiny_model}', 'mask_resolution:=full')
    assert '[FATAL]' in line and "mask_resolution must be one of ['input', 'model']" in line


def test_process_segments_and_stops_cleanly_on_sigint(tiny_model: Path) -> None:
    process = subprocess.Popen(
        node_command(f'model_path:={tiny_model}') + ['-r', 'image:=/camera/image_raw'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment())
    ros = RosHarness()
    try:
        ros.subscribe('/segmentation_node/mask', Image, 'mask')
        pub = ros.publisher('/camera/image_raw')
        ros.wait_for(lambda: ros.probe.count_publishers('/segmentation_node/mask') > 0,
                     'the mask publisher')
        pixels = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
        for i in range(100):  # until discovery in both directions has settled
            pub.publish(image_msg(pixels, 'rgb8', i + 1, 'proc'))
            try:
                ros.wait_count('mask', 1, timeout=0.3)
                break
            except AssertionError:
                continue
        mask = ros.wait_count('mask', 1)[0]
        assert (mask.height, mask.width, mask.header.frame_id) == (24, 40, 'proc')
    finally:
        ros.close()
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert 'ready: model tiny' in output and 'input: /camera/image_raw' in output
    assert 'Traceback' not in output


def test_model_that_fails_on_its_first_run_is_one_fatal_line_and_an_exit(
        model_factory) -> None:
    path = model_factory(fails_at_run=True)
    done = subprocess.run(node_command(f'model_path:={path}'), capture_output=True, text=True,
                          timeout=60, env=environment())
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert 'Traceback' not in output
    [fatal] = [line for line in output.splitlines() if '[FATAL]' in line]
    assert f'{path}: the model loads but fails on its first run' in fatal
    assert 'Gather' in fatal


def test_load_retries_try_again_then_error_on_diagnostics_and_exit(model_factory) -> None:
    path = model_factory(fails_at_run=True)
    ros = RosHarness()
    try:
        ros.subscribe('/diagnostics', DiagnosticArray, 'diagnostics')
        done = subprocess.run(
            node_command(f'model_path:={path}', 'load_retries:=1', 'diagnostics_period:=0.2'),
            capture_output=True, text=True, timeout=60, env=environment())
        statuses = [(m.status[0].level, m.status[0].message)
                    for m in ros.received['diagnostics']]
    finally:
        ros.close()
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    retry = [line for line in output.splitlines() if 'try 1 of 2' in line]
    assert len(retry) == 1 and '[ERROR]' in retry[0] and 'trying again in 2 s' in retry[0]
    assert 'try 2 of 2' not in output
    assert len([line for line in output.splitlines() if '[FATAL]' in line]) == 1
    level, message = statuses[-1]
    assert level == DiagnosticStatus.ERROR, statuses
    assert message.startswith('model failed to load: ') and 'fails on its first run' in message
