"""Faults of docs/faults.md that the running node meets: what it does, with real messages.

The bag faults (disk full while recording) are in test_replay_record.py and test_demo.py.
"""

from __future__ import annotations

from pathlib import Path
import re

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from node_harness import RosHarness, image_msg
import numpy as np
from onnx_models import build_model
import pytest
from sensor_msgs.msg import Image

NS = '/segmentation_node'


@pytest.fixture
def ros():
    harness = RosHarness()
    yield harness
    harness.close()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return build_model(tmp_path / 'faults.onnx', size=(32, 64))


def _pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (48, 80, 3), np.uint8)


def _values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def _wait_status(ros: RosHarness, predicate, what: str,
                 timeout: float = 10.0) -> DiagnosticStatus:
    """Wait for a /diagnostics status of the node with ``predicate(status)``; return it."""
    def latest() -> DiagnosticStatus | None:
        arrays = ros.received['diagnostics']
        return arrays[-1].status[0] if arrays else None

    ros.wait_for(lambda: latest() is not None and predicate(latest()), what, timeout)
    return latest()


def test_camera_gone_turns_diagnostics_to_error_and_a_new_frame_clears_it(
        ros: RosHarness, model: Path) -> None:
    node = ros.start_node(model, diagnostics_period=0.1, stale_timeout=0.6)
    ros.subscribe('/diagnostics', DiagnosticArray, 'diagnostics')
    ros.subscribe(f'{NS}/mask', Image, 'mask')
    ros.wait_matched('mask')
    camera = ros.publisher('/image')
    for i in range(3):
        camera.publish(image_msg(_pixels(i), 'rgb8', i + 1))
        ros.wait_count('mask', i + 1)
    _wait_status(ros, lambda s: s.level == DiagnosticStatus.OK
                 and _values(s)['frames_processed'] == '3', 'an OK status counting 3 frames')
    # The camera stops: within stale_timeout plus a period the status says so, as ERROR.
    status = _wait_status(ros, lambda s: s.level == DiagnosticStatus.ERROR,
                          'an ERROR status once input stopped', timeout=5.0)
    match = re.fullmatch(r'no input frame for ([0-9.]+) s', status.message)
    assert match and float(match.group(1)) >= 0.6, status.message
    assert float(_values(status)['seconds_since_last_frame']) >= 0.6
    assert node.counters.snapshot()['failed'] == 0
    # The node kept running: the next frame is segmented and the ERROR is gone.
    camera.publish(image_msg(_pixels(3), 'rgb8', 4))
    ros.wait_count('mask', 4)
    _wait_status(ros, lambda s: s.level == DiagnosticStatus.OK,
                 'an OK status after the camera came back')


def test_consumer_gone_stops_that_output_and_nothing_else(ros: RosHarness,
                                                          model: Path) -> None:
    node = ros.start_node(model, diagnostics_period=0.1)
    ros.subscribe('/diagnostics', DiagnosticArray, 'diagnostics')
    consumer = ros.subscribe(f'{NS}/mask', Image, 'mask')
    ros.subscribe(f'{NS}/overlay', Image, 'overlay')
    ros.wait_matched('mask', 'overlay')
    camera = ros.publisher('/image')
    for i in range(3):
        camera.publish(image_msg(_pixels(i), 'rgb8', i + 1))
        ros.wait_count('overlay', i + 1)
    ros.wait_count('mask', 3)
    # The mask consumer disappears (its node crashed or unsubscribed).
    ros.probe.destroy_subscription(consumer)
    mask_publisher = node._outputs['mask']
    ros.wait_for(lambda: mask_publisher.get_subscription_count() == 0,
                 'the node to see the mask consumer gone')
    for i in range(3, 6):
        camera.publish(image_msg(_pixels(i), 'rgb8', i + 1))
        ros.wait_count('overlay', i + 1)
    # No mask computed for nobody, the other consumer still served, no error anywhere.
    published = node.published.snapshot()
    assert published['mask'] == 3 and published['overlay'] == 6
    counters = node.counters.snapshot()
    assert counters['processed'] == 6 and counters['failed'] == 0
    status = _wait_status(ros, lambda s: _values(s).get('frames_processed') == '6',
                          'a status counting the 6 frames')
    assert status.level == DiagnosticStatus.OK, status.message
    assert _values(status)['published_mask'] == '3'
    assert len(ros.received['mask']) == 3
    # A consumer that comes back gets masks again from the next frame.
    ros.subscribe(f'{NS}/mask', Image, 'mask')
    ros.wait_matched('mask')
    camera.publish(image_msg(_pixels(6), 'rgb8', 7))
    assert ros.wait_count('mask', 4)[-1].header.stamp.nanosec == 7


def test_every_frame_failing_in_the_model_is_an_error_and_the_node_stays_up(
        ros: RosHarness, tmp_path: Path) -> None:
    """A model that passed its warm-up but fails on real frames: ERROR naming the error."""
    model = build_model(tmp_path / 'bright.onnx', size=(32, 64), fails_on_bright=True)
    ros.subscribe('/diagnostics', DiagnosticArray, 'diagnostics')
    ros.subscribe(f'{NS}/mask', Image, 'mask')
    node = ros.start_node(model, diagnostics_period=0.2, stale_timeout=600.0)
    ros.wait_matched('mask')
    camera = ros.publisher('/image')
    bright = np.full((32, 64, 3), 255, np.uint8)
    for i in range(5):
        camera.publish(image_msg(bright, 'rgb8', i + 1))
    ros.wait_for(lambda: node.counters.snapshot()['failed'] >= 1, 'a failed frame')
    status = _wait_status(ros, lambda s: s.level == DiagnosticStatus.ERROR, 'an ERROR')
    assert status.message.startswith('every frame fails (')
    assert 'Gather' in status.message and 'out of data bounds' in status.message
    assert ros.received['mask'] == []
    camera.publish(image_msg(np.zeros((32, 64, 3), np.uint8), 'rgb8', 99))
    [mask] = ros.wait_count('mask', 1)  # still up: a frame the model can run is served
    assert mask.header.stamp.nanosec == 99
    _wait_status(ros, lambda s: s.level == DiagnosticStatus.OK, 'OK again')
