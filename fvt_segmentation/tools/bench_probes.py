"""The benchmark's helper processes: a camera that publishes frames, a receiver of masks.

``bench`` starts each in a process of its own (``python -m fvt_segmentation.tools.bench_probes
camera|receiver --help``): the latency worth measuring is the one between processes, and
the DDS transport settings are read once per process. Each writes its figures as JSON.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import os
from pathlib import Path
import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from fvt_segmentation.core.conversions import stamp_ns
from fvt_segmentation.core.ros_args import split_ros_args
from fvt_segmentation.node.ros_compat import publisher_count
from fvt_segmentation.tools.frame_source import FramePublisher, image_message, synthetic_frame

CAMERA_FRAMES = 4
"""Distinct frames the camera cycles through; built once, so publishing costs what a camera
driver's ``publish()`` costs and not the making of 6 MB of noise per frame."""
STATUS_SUFFIX = ': segmentation'
READY = 'ready'
STOP = 'stop'


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, then rename)."""
    temporary = path.with_suffix(path.suffix + '.tmp')
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)


def percentiles_ms(values: Sequence[float], *qs: float) -> list[float | None]:
    """Return percentiles ``qs`` (0..100) of ``values`` in ms, None each when empty."""
    if not values:
        return [None] * len(qs)
    return [float(v) for v in np.percentile(np.asarray(values, np.float64), qs)]


def run_camera(args: argparse.Namespace) -> int:
    """Publish ``rate`` rgb8 frames per second for ``duration`` s once the node subscribed.

    Frames are stamped from the system clock right before ``publish()``, like a camera
    driver; the receiver's latency therefore includes the publish call. Pacing follows a
    fixed schedule and does not catch up after a stall (a camera does not either).
    """
    node = Node('bench_camera')
    try:
        source = FramePublisher(node, args.topic, reliable=False)
        if not source.wait_for_subscribers(1, args.timeout):
            print(f'bench camera: no subscriber on {args.topic} after {args.timeout:.0f} s',
                  file=sys.stderr)
            return 2
        messages = [image_message(synthetic_frame(i, args.height, args.width), 'rgb8',
                                  'bench_camera') for i in range(CAMERA_FRAMES)]
        clock = node.get_clock()
        period = 1.0 / args.rate
        publish_ms: list[float] = []
        stamps: list[int] = []
        start = next_time = time.monotonic()
        while next_time < start + args.duration:
            delay = next_time - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_time = max(next_time + period, time.monotonic())
            msg = messages[len(stamps) % CAMERA_FRAMES]
            msg.header.stamp = clock.now().to_msg()
            began = time.perf_counter()
            source.publisher.publish(msg)
            publish_ms.append((time.perf_counter() - began) * 1e3)
            stamps.append(stamp_ns(msg.header))
        elapsed = time.monotonic() - start
        # Keep the writer (and its shared-memory buffers) alive until readers took the last.
        time.sleep(args.linger)
        p50, p99 = percentiles_ms(publish_ms, 50, 99)
        write_json(args.out, {
            'published': len(stamps), 'seconds': elapsed,
            'rate_hz': len(stamps) / elapsed if elapsed > 0 else 0.0,
            'first_stamp_ns': stamps[0] if stamps else None,
            'last_stamp_ns': stamps[-1] if stamps else None,
            'publish_p50_ms': p50, 'publish_p99_ms': p99})
        return 0
    finally:
        node.destroy_node()


class _Receiver:
    """Records the arrival of every mask and the node's latest diagnostics status."""

    def __init__(self, node: Node, mask_topic: str) -> None:
        self.masks: list[tuple[int, int]] = []  # (header stamp, arrival), both in ns
        self.shapes: set[tuple[int, int, str]] = set()
        self.statuses: list[dict[str, str]] = []  # the node's, about one per second
        self.subscription = node.create_subscription(
            Image, mask_topic, self._on_mask,
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def _on_mask(self, msg: Image) -> None:
        self.masks.append((stamp_ns(msg.header), time.time_ns()))
        self.shapes.add((msg.height, msg.width, msg.encoding))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(STATUS_SUFFIX):
                self.statuses.append({kv.key: kv.value for kv in status.values})


def _spin_until(executor: SingleThreadedExecutor, done: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return bool(done())


def run_receiver(args: argparse.Namespace) -> int:
    """Subscribe to the mask and /diagnostics; print 'ready', record until 'stop' on stdin.

    'ready' means the mask subscription matched the node's publisher and a status arrived.
    After 'stop' (or the end of stdin) the receiver waits for one more status, so that the
    last one counts every frame, then writes the JSON (every status kept) and exits.
    """
    node = Node('bench_receiver')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        receiver = _Receiver(node, args.mask_topic)
        if not _spin_until(executor, lambda: publisher_count(node, receiver.subscription) > 0
                           and receiver.statuses, args.timeout):
            print(f'bench receiver: no publisher on {args.mask_topic} or no segmentation '
                  f'status on /diagnostics after {args.timeout:.0f} s', file=sys.stderr)
            return 2
        print(READY, flush=True)
        stop = threading.Event()

        def wait_for_stop() -> None:
            for line in sys.stdin:
                if line.strip() == STOP:
                    break
            stop.set()

        threading.Thread(target=wait_for_stop, daemon=True).start()
        _spin_until(executor, stop.is_set, float('inf'))
        seen = len(receiver.statuses)
        _spin_until(executor, lambda: len(receiver.statuses) > seen, 5.0)
        write_json(args.out, {'masks': receiver.masks, 'statuses': receiver.statuses,
                              'shapes': sorted(receiver.shapes)})
        return 0
    finally:
        executor.shutdown()
        node.destroy_node()


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    roles = parser.add_subparsers(dest='role', required=True)
    camera = roles.add_parser('camera', help='publish frames at a fixed rate')
    camera.add_argument('--topic', required=True)
    camera.add_argument('--width', type=int, required=True)
    camera.add_argument('--height', type=int, required=True)
    camera.add_argument('--rate', type=float, default=30.0)
    camera.add_argument('--duration', type=float, required=True, help='seconds')
    camera.add_argument('--linger', type=float, default=1.0)
    receiver = roles.add_parser('receiver', help='record masks and the node status')
    receiver.add_argument('--mask-topic', required=True)
    for role in (camera, receiver):
        role.add_argument('--out', type=Path, required=True, help='JSON file to write')
        role.add_argument('--timeout', type=float, default=60.0,
                          help='seconds to wait for the other side')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one role; exit 0 after writing its JSON, 2 when the other side never came."""
    own, ros_args = split_ros_args(argv)
    args = _parse_args(own)
    rclpy.init(args=ros_args)
    try:
        return run_camera(args) if args.role == 'camera' else run_receiver(args)
    except KeyboardInterrupt:
        return 130
    finally:
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
