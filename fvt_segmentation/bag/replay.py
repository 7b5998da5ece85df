"""Play a rosbag2 recording (sqlite3 or mcap) into ROS 2 topics: ``replay BAG [options]``.

Messages are published exactly as recorded (header stamps untouched), paced by their
recorded receive times, scaled by ``--rate``. :class:`BagPlayer` is the library side: it
calls a function per message and can run in any thread; :class:`BagPublisher` turns those
calls into ROS publications on a node.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
import logging
from pathlib import Path
import signal
import sys
import threading
import time
from typing import Any

from rosbags.rosbag2 import Reader, ReaderError

from fvt_segmentation.bag.rosbag_io import message_class, normalize_msgtype
from fvt_segmentation.core.ros_args import split_ros_args

LOG = logging.getLogger('replay')


@dataclass(frozen=True)
class BagMessage:
    """One recorded message, deserialised into its rclpy class."""

    topic: str
    """Topic to publish on (after remapping)."""
    bag_topic: str
    """Topic name in the bag."""
    msgtype: str
    """``pkg/msg/Name``."""
    bag_time_ns: int
    """Receive time recorded in the bag (ns)."""
    message: Any


def _absolute(topic: str) -> str:
    return topic if topic.startswith('/') else '/' + topic


def parse_remaps(items: Sequence[str]) -> dict[str, str]:
    """Parse ``old:=new`` items into a mapping of absolute topic names."""
    remaps = {}
    for item in items:
        old, sep, new = item.partition(':=')
        if not sep or not old or not new:
            raise ValueError(f'expected a remap like /old:=/new, got {item!r}')
        remaps[_absolute(old)] = _absolute(new)
    return remaps


class BagPlayer:
    """Reads a rosbag2 recording and delivers its messages at the recorded pace.

    ``topics`` (bag names) restricts what is played; ``remap`` maps bag topics to output
    topics; ``rate`` scales the speed (2.0: twice as fast, 0: as fast as possible);
    ``start_offset`` skips that many seconds from the start of the bag. Use as a context
    manager or call :meth:`close`.
    """

    def __init__(self, bag: str | Path, topics: Sequence[str] | None = None,
                 remap: Mapping[str, str] | None = None, rate: float = 1.0,
                 start_offset: float = 0.0, loop: bool = False):
        """Open the bag and resolve topics, types and message classes (errors name them)."""
        if rate < 0:
            raise ValueError(f'expected a rate >= 0, got {rate}')
        if start_offset < 0:
            raise ValueError(f'expected a start offset >= 0 s, got {start_offset}')
        self.path = Path(bag)
        self.rate = rate
        self.loop = loop
        self.remap = {_absolute(k): _absolute(v) for k, v in (remap or {}).items()}
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except (FileNotFoundError, ReaderError) as err:
            raise ValueError(f'{self.path}: expected a rosbag2 bag (a folder with '
                             f'metadata.yaml and .db3 or .mcap files): {err}') from err
        try:
            self._resolve(topics, start_offset)
        except Exception:
            self._reader.close()
            raise

    def _resolve(self, topics: Sequence[str] | None, start_offset: float) -> None:
        available = {c.topic for c in self._reader.connections}
        wanted = {_absolute(t) for t in topics} if topics else available
        if unknown := sorted(wanted - available):
            raise ValueError(f'{self.path}: expected topics from {sorted(available)}, '
                             f'got {unknown}')
        self.connections = [c for c in self._reader.connections if c.topic in wanted]
        self.types: dict[str, str] = {}
        for conn in self.connections:
            msgtype = normalize_msgtype(conn.msgtype)
            if self.types.setdefault(conn.topic, msgtype) != msgtype:
                raise ValueError(f'{self.path}: expected one type per topic, got '
                                 f'{self.types[conn.topic]} and {msgtype} on {conn.topic}; '
                                 'leave it out with --topics')
        outputs: dict[str, str] = {}
        for topic, msgtype in self.types.items():
            out = self.remap.get(topic, topic)
            if outputs.setdefault(out, msgtype) != msgtype:
                raise ValueError(f'expected one type per output topic, got {outputs[out]} '
                                 f'and {msgtype} remapped onto {out}')
        self.classes = {t: message_class(m) for t, m in self.types.items()}
        self.start_ns = self._reader.start_time + round(start_offset * 1e9)
        if self.start_ns >= self._reader.end_time:
            raise ValueError(f'{self.path}: start offset {start_offset} s is past the end of '
                             f'the bag ({self._reader.duration / 1e9:.3f} s long)')
        self.message_count = sum(c.msgcount for c in self.connections)

    @property
    def output_topics(self) -> dict[str, str]:
        """Output topic -> message type, after remapping."""
        return {self.remap.get(t, t): m for t, m in self.types.items()}

    def describe(self) -> str:
        """One line saying what will be played, for the log."""
        topics = ', '.join(
            f'{t}' + (f' -> {self.remap[t]}' if t in self.remap else '') + f' [{m}]'
            for t, m in sorted(self.types.items()))
        rate = 'as fast as possible' if self.rate == 0 else f'rate x{self.rate:g}'
        offset = (self.start_ns - self._reader.start_time) / 1e9
        return (f'{self.path} ({self._reader.duration / 1e9:.2f} s, {self.message_count} '
                'messages): '
                f'{topics}; {rate}, from {offset:g} s' + (', looping' if self.loop else ''))

    def messages(self) -> Iterator[BagMessage]:
        """Yield the selected messages once, in recorded order, without pacing."""
        from rclpy.serialization import deserialize_message

        for conn, timestamp, rawdata in self._reader.messages(connections=self.connections,
                                                               start=self.start_ns):
            yield BagMessage(
                topic=self.remap.get(conn.topic, conn.topic), bag_topic=conn.topic,
                msgtype=self.types[conn.topic], bag_time_ns=timestamp,
                message=deserialize_message(bytes(rawdata), self.classes[conn.topic]))

    def play(self, callback: Callable[[BagMessage], None],
             stop: threading.Event | None = None, progress: bool = False) -> int:
        """Call ``callback`` for each message at the recorded pace; return how many.

        Returns early when ``stop`` is set (checked while waiting, so within milliseconds).
        With ``loop`` it replays until stopped.
        """
        stop = stop or threading.Event()
        bar = None
        if progress:
            from tqdm import tqdm

            from_start = self.start_ns == self._reader.start_time
            bar = tqdm(total=self.message_count if from_start and not self.loop else None,
                       unit='msg', desc=self.path.name)
        delivered = 0
        try:
            while not stop.is_set():
                t0_wall = time.monotonic()
                for item in self.messages():
                    if self.rate > 0:
                        due = t0_wall + (item.bag_time_ns - self.start_ns) / 1e9 / self.rate
                        if stop.wait(max(0.0, due - time.monotonic())):
                            return delivered
                    elif stop.is_set():
                        return delivered
                    callback(item)
                    delivered += 1
                    if bar is not None:
                        bar.update()
                if not self.loop:
                    break
        finally:
            if bar is not None:
                bar.close()
        return delivered

    def close(self) -> None:
        """Close the bag."""
        self._reader.close()

    def __enter__(self) -> BagPlayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BagPublisher:
    """Publishers on ``node`` for a player's output topics; use :meth:`publish` as callback."""

    def __init__(self, node: Any, player: BagPlayer, reliable: bool = True, depth: int = 10):
        """Create one publisher per output topic (RELIABLE or BEST_EFFORT, keep last)."""
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        reliability = (ReliabilityPolicy.RELIABLE if reliable
                       else ReliabilityPolicy.BEST_EFFORT)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability)
        self.node = node
        self.publishers: dict[str, Any] = {}
        for bag_topic in player.types:
            out = player.remap.get(bag_topic, bag_topic)
            if out not in self.publishers:  # several bag topics may be remapped onto one
                self.publishers[out] = node.create_publisher(
                    player.classes[bag_topic], out, qos)

    def wait_for_subscribers(self, count: int, timeout: float,
                             reliable: bool = False) -> list[str]:
        """Wait until each topic has ``count`` subscribers; return the topics still missing.

        With ``reliable`` only matched reliable subscriptions count (see
        :func:`fvt_segmentation.bag.subscribers.wait_for_subscribers`).
        """
        from fvt_segmentation.bag.subscribers import wait_for_subscribers

        return wait_for_subscribers(self.node, self.publishers.values(), count, timeout,
                                    reliable=reliable)

    def publish(self, item: BagMessage) -> None:
        """Publish one message on its output topic, unchanged."""
        self.publishers[item.topic].publish(item.message)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until reliable subscribers acknowledged everything (before destroying).

        A reliable writer that is destroyed drops what is not acknowledged yet, typically
        the last message. Returns False if some were still unacknowledged after ``timeout``.
        """
        from rclpy.duration import Duration

        deadline = time.monotonic() + timeout
        return all(p.wait_for_all_acked(Duration(seconds=max(0.0, deadline - time.monotonic())))
                   for p in self.publishers.values())


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='replay', description=__doc__.splitlines()[0])
    parser.add_argument('bag', type=Path, help='rosbag2 folder (metadata.yaml + .db3/.mcap)')
    parser.add_argument('--topics', nargs='+', metavar='TOPIC',
                        help='play only these bag topics (default: all)')
    parser.add_argument('--remap', nargs='+', default=[], metavar='OLD:=NEW',
                        help='publish bag topic OLD on NEW')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='speed factor (2: twice as fast; 0: as fast as possible)')
    parser.add_argument('--loop', action='store_true', help='replay until interrupted')
    parser.add_argument('--start-offset', type=float, default=0.0, metavar='SECONDS',
                        help='skip this much from the start of the bag')
    parser.add_argument('--qos', choices=('reliable', 'best_effort'), default='reliable',
                        help='publisher reliability (reliable also serves best-effort '
                             'subscribers)')
    parser.add_argument('--wait-for-subscribers', type=int, default=0, metavar='N',
                        help='before playing, wait until every topic has N subscribers')
    parser.add_argument('--wait-timeout', type=float, default=30.0, metavar='SECONDS',
                        help='give up waiting for subscribers after this long (exit code 2)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``replay``.

    Exit codes: 0 played or interrupted, 1 bad bag or options, 2 no subscribers in time.
    """
    import rclpy
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions

    own, ros_args = split_ros_args(argv)
    args = _parse_args(own)
    logging.basicConfig(level=logging.INFO, format='[replay] %(message)s')
    try:
        player = BagPlayer(args.bag, args.topics, parse_remaps(args.remap), args.rate,
                           args.start_offset, args.loop)
    except (OSError, ValueError) as err:
        LOG.error('%s', err)
        return 1
    # Python's own SIGINT handling (KeyboardInterrupt) instead of rclpy's, so that Ctrl-C
    # ends the playback between two messages and everything closes in order.
    rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    node = Node('replay')
    stop = threading.Event()
    delivered = 0
    try:
        publisher = BagPublisher(node, player, reliable=args.qos == 'reliable')
        LOG.info('playing %s; %s QoS', player.describe(), args.qos)
        if args.wait_for_subscribers > 0:
            missing = publisher.wait_for_subscribers(args.wait_for_subscribers,
                                                     args.wait_timeout)
            if missing:
                LOG.error('expected %d subscriber(s) on every topic within %g s; none enough '
                          'on %s (pick topics with --topics)', args.wait_for_subscribers,
                          args.wait_timeout, ', '.join(missing))
                return 2
        delivered = player.play(publisher.publish, stop, progress=not args.no_progress)
        if not publisher.flush():
            LOG.warning('some subscribers did not acknowledge the last messages')
        LOG.info('published %d messages', delivered)
        return 0
    except KeyboardInterrupt:
        stop.set()
        LOG.info('interrupted')
        return 0
    finally:
        player.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
