"""Publish camera-like ``sensor_msgs/Image`` frames at a fixed rate.

Used by the transport test (a publisher in its own process), by benchmarks and for demos
without a camera: ``python -m fvt_segmentation.tools.frame_source --help``. Frames are either
synthetic (deterministic pseudo-random pixels, the same bytes in every process, so a receiver
can check them) or given as arrays / image files.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator, Sequence
import hashlib
import itertools
from pathlib import Path
import sys
import time

import numpy as np
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from fvt_segmentation.bag.subscribers import wait_for_subscribers
from fvt_segmentation.core.ros_args import split_ros_args
from fvt_segmentation.node.params import RELIABILITIES

ENCODING_BY_CHANNELS = {1: 'mono8', 3: 'rgb8'}


def synthetic_frame(index: int, height: int, width: int, channels: int = 3) -> np.ndarray:
    """Return frame ``index``: uint8 ``(height, width, channels)`` noise seeded by ``index``.

    Noise rather than a smooth pattern so that any lost or misplaced fragment changes the
    frame's digest.
    """
    rng = np.random.default_rng(index)
    return rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)


def frame_digest(data: bytes | bytearray | memoryview | np.ndarray) -> str:
    """Return a short hex digest of image bytes (``Image.data`` or a frame array)."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).data
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def image_qos(reliable: bool, depth: int = 5) -> QoSProfile:
    """Return a keep-last QoS profile for image topics, reliable or best-effort."""
    reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability)


def image_message(frame: np.ndarray, encoding: str | None = None,
                  frame_id: str = 'camera') -> Image:
    """Wrap a uint8 ``(h, w)`` or ``(h, w, c)`` array in an Image (header stamp left zero)."""
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
        raise ValueError(f'expected a uint8 (h, w) or (h, w, c) array, got {frame.dtype} '
                         f'{frame.shape}')
    channels = 1 if frame.ndim == 2 else frame.shape[2]
    if encoding is None:
        if channels not in ENCODING_BY_CHANNELS:
            raise ValueError(f'expected 1 or 3 channels to guess the encoding, got {channels}')
        encoding = ENCODING_BY_CHANNELS[channels]
    msg = Image()
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(frame.shape[0]), int(frame.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels
    msg.data = np.ascontiguousarray(frame).tobytes()
    return msg


def load_frames(paths: Sequence[str | Path]) -> list[np.ndarray]:
    """Read image files as RGB uint8 arrays (OpenCV), in the given order."""
    import cv2

    frames = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f'expected a readable image file, got {path}')
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return frames


class FramePublisher:
    """Publishes frames on one topic of ``node`` at a steady rate."""

    def __init__(self, node: Node, topic: str, reliable: bool = False, depth: int = 5):
        """Create the publisher; ``reliable`` picks RELIABLE instead of BEST_EFFORT."""
        self.node = node
        self.topic = topic
        self.publisher = node.create_publisher(Image, topic, image_qos(reliable, depth))

    def wait_for_subscribers(self, count: int = 1, timeout: float = 10.0,
                             settle: float = 0.5) -> bool:
        """Wait for ``count`` matched subscriptions of this source's publisher.

        See :func:`fvt_segmentation.bag.subscribers.wait_for_subscribers`. Returns False
        when they did not all match within ``timeout`` seconds.
        """
        return not wait_for_subscribers(self.node, [self.publisher], count, timeout, settle)

    def publish_frames(self, frames: Iterable[np.ndarray], rate_hz: float,
                       encoding: str | None = None, frame_id: str = 'camera',
                       progress: bool = False) -> list[str]:
        """Publish every frame, stamped with the node clock, ``rate_hz`` per second.

        Pacing keeps to a fixed schedule (no drift when one publish is slow) and does not
        catch up after a stall. Returns the digests of the published frames, in order.
        """
        period = 1.0 / rate_hz if rate_hz > 0 else 0.0
        digests: list[str] = []
        frames = _with_progress(frames, progress, self.topic)
        next_time = time.monotonic()
        for frame in frames:
            msg = image_message(frame, encoding, frame_id)
            now = time.monotonic()
            if next_time > now:
                time.sleep(next_time - now)
            next_time = max(next_time + period, time.monotonic())
            msg.header.stamp = self.node.get_clock().now().to_msg()
            self.publisher.publish(msg)
            digests.append(frame_digest(msg.data))
        return digests


def _with_progress(frames: Iterable[np.ndarray], enabled: bool,
                   topic: str) -> Iterable[np.ndarray]:
    if not enabled:
        return frames
    from tqdm import tqdm

    total = len(frames) if isinstance(frames, Sequence) else None
    return tqdm(frames, total=total, desc=f'publishing {topic}', unit='frame')


def _frames(args: argparse.Namespace) -> Iterator[np.ndarray]:
    if args.images:
        given = load_frames(args.images)
        return itertools.islice(itertools.cycle(given), args.count)
    return (synthetic_frame(i, args.height, args.width) for i in range(args.count))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--topic', default='/camera/image_raw')
    parser.add_argument('--count', type=int, default=30, help='frames to publish')
    parser.add_argument('--rate', type=float, default=10.0, help='frames per second (0: max)')
    parser.add_argument('--width', type=int, default=2048)
    parser.add_argument('--height', type=int, default=1024)
    parser.add_argument('--images', nargs='+', metavar='FILE',
                        help='publish these images (cycled) instead of synthetic frames')
    parser.add_argument('--qos', choices=RELIABILITIES, default='best_effort')
    parser.add_argument('--frame-id', default='camera')
    parser.add_argument('--wait-for-subscribers', type=int, default=1, metavar='N',
                        help='wait for N matched subscriptions before publishing (0: no wait)')
    parser.add_argument('--timeout', type=float, default=30.0,
                        help='seconds to wait for subscribers')
    parser.add_argument('--linger', type=float, default=1.0,
                        help='seconds to keep the publisher alive after the last frame')
    parser.add_argument('--progress', action='store_true')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; prints one summary line with the count and a digest."""
    import rclpy

    own, ros_args = split_ros_args(argv)
    args = _parse_args(own)
    rclpy.init(args=ros_args)
    node = Node('frame_source')
    try:
        source = FramePublisher(node, args.topic, reliable=args.qos == 'reliable')
        if args.wait_for_subscribers and not source.wait_for_subscribers(
                args.wait_for_subscribers, args.timeout):
            print(f'frame_source: expected {args.wait_for_subscribers} subscriber(s) on '
                  f'{args.topic}, found {source.publisher.get_subscription_count()} after '
                  f'{args.timeout:.0f} s', file=sys.stderr)
            return 2
        digests = source.publish_frames(_frames(args), args.rate, frame_id=args.frame_id,
                                        progress=args.progress)
        # Keep the writer (and its SHM buffers) alive until readers took the last frames.
        time.sleep(args.linger)
        combined = hashlib.blake2b(''.join(digests).encode(), digest_size=16).hexdigest()
        print(f'frame_source: published {len(digests)} frames on {args.topic} '
              f'(digest {combined})', flush=True)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
