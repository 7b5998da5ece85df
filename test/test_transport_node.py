"""Full-resolution frames from another process reach the node through the shipped profile.

The camera (``python -m fvt_segmentation.tools.frame_source``) and the segmentation node each run
in a process of their own with :func:`transport_environment`, as the launch file starts
them; the camera sends best-effort 2048x1024 rgb8 frames slowly enough that the node is
never busy, and every frame must come back as its own full-resolution mask.
"""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from node_harness import stamp_ns
import numpy as np
from onnx_models import build_model, default_weights, expected_scores
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import ros_node, spin_until
from sensor_msgs.msg import Image

from fvt_segmentation.core.contract import ModelContract, Normalization
from fvt_segmentation.core.conversions import image_to_frame, resize_nearest
from fvt_segmentation.core.frame_processing import preprocess_frame
from fvt_segmentation.tools.dds_profiles import transport_environment

REPO = Path(__file__).resolve().parents[1]
COUNT, WIDTH, HEIGHT, RATE_HZ = 8, 2048, 1024, 3.0
MODEL_SIZE = (32, 64)
# Pixels normalised to [-1, 1] make the tiny model's affine classifier use several classes.
CONTRACT = ModelContract(normalization=Normalization(mean=(0.5,) * 3, std=(0.5,) * 3))
IMAGE_TOPIC = '/transport_node/image'
MASK_TOPIC = '/segmentation_node/mask'


def camera_frame(index: int) -> np.ndarray:
    """Colour gradients shifted sideways by ``index``: every frame has its own mask."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([xx * 255 // WIDTH, yy * 255 // HEIGHT,
                     (xx + yy) * 127 // (WIDTH + HEIGHT)], axis=2).astype(np.uint8)
    return np.roll(base, index * WIDTH // COUNT, axis=1)


def expected_mask(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tiny model's full-resolution mask and where its top-2 margin is clear."""
    tensor = preprocess_frame(frame, 'RGB', MODEL_SIZE, CONTRACT)
    scores = expected_scores(tensor[0], default_weights())
    top2 = np.sort(scores, axis=2)[:, :, -2:]
    classes = np.argmax(scores, axis=2).astype(np.uint8)
    clear = ((top2[:, :, 1] - top2[:, :, 0]) > 1e-3).astype(np.uint8)
    return (resize_nearest(classes, (HEIGHT, WIDTH)),
            resize_nearest(clear, (HEIGHT, WIDTH)).astype(bool))


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(transport_environment())
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
    env['PYTHONUNBUFFERED'] = '1'
    return env


def test_every_full_resolution_frame_gets_its_mask_across_processes(tmp_path: Path) -> None:
    model = build_model(tmp_path / 'tiny.onnx', size=MODEL_SIZE, contract=CONTRACT)
    frames = [camera_frame(i) for i in range(COUNT)]
    files = []
    for i, frame in enumerate(frames):
        files.append(str(tmp_path / f'frame_{i}.png'))
        cv2.imwrite(files[-1], cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    env = environment()
    masks: list[Image] = []
    status: dict[str, str] = {}

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for entry in msg.status:
            status.update({kv.key: kv.value for kv in entry.values})

    node = subprocess.Popen(
        [sys.executable, '-m', 'fvt_segmentation.node.segmentation_node', '--ros-args',
         '-p', 'providers:=[cpu]', '-p', f'model_path:={model}', '-r', f'image:={IMAGE_TOPIC}',
         '-p', 'diagnostics_period:=0.2'],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    camera = None
    try:
        with ros_node('transport_node_probe') as (probe, executor):
            subscription = probe.create_subscription(
                Image, MASK_TOPIC, masks.append,
                QoSProfile(depth=COUNT + 2, reliability=ReliabilityPolicy.RELIABLE))
            probe.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10)
            assert spin_until(executor, lambda: subscription.get_publisher_count() > 0
                              and 'frames_received' in status, timeout=30), 'node not up'
            camera = subprocess.Popen(
                [sys.executable, '-m', 'fvt_segmentation.tools.frame_source',
                 '--topic', IMAGE_TOPIC, '--images', *files, '--count', str(COUNT),
                 '--rate', str(RATE_HZ), '--qos', 'best_effort', '--timeout', '30'],
                env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            spin_until(executor, lambda: camera.poll() is not None, timeout=60)
            spin_until(executor, lambda: len(masks) >= COUNT
                       and status.get('frames_processed') == str(COUNT), timeout=5)
    finally:
        if camera is not None and camera.poll() is None:
            camera.kill()
        node.send_signal(signal.SIGINT)
        node_output, _ = node.communicate(timeout=30)
    out, err = camera.communicate()
    assert camera.returncode == 0, err
    assert f'published {COUNT} frames' in out
    assert 'XMLPARSER' not in err and 'rror' not in err, err  # the profile loaded cleanly
    assert node.returncode == 0 and 'Traceback' not in node_output, node_output

    assert (status['frames_received'], status['frames_processed'], status['frames_dropped']) \
        == (str(COUNT), str(COUNT), '0')
    stamps = [stamp_ns(mask) for mask in masks]
    assert len(masks) == COUNT and stamps == sorted(set(stamps)), stamps
    for index, (mask, frame) in enumerate(zip(masks, frames, strict=True)):
        assert (mask.height, mask.width, mask.encoding) == (HEIGHT, WIDTH, 'mono8')
        want, clear = expected_mask(frame)
        assert clear.mean() > 0.95
        np.testing.assert_array_equal(image_to_frame(mask, WIDTH * HEIGHT).pixels[clear],
                                      want[clear], err_msg=f'mask of frame {index}')
    first, second = expected_mask(frames[0])[0], expected_mask(frames[1])[0]
    assert (first != second).mean() > 0.05  # the masks tell the frames apart
