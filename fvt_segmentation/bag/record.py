"""Record ROS 2 topics into a rosbag2 bag: ``record -o OUT TOPIC [TOPIC ...]``.

Messages are stored as received (serialised CDR, no re-encoding), stamped with the receive
time like ``ros2 bag record``. The bag is written under ``OUT.partial/`` and moved to ``OUT``
once closed, so ``OUT`` always is a complete bag. Each sqlite3 message is committed as it is
written: when the disk fills up, recording stops with one error line and exit code 1 and the
bag is finished with every message written before. By default the metadata is version 5, the
format Humble records, which Humble, Jazzy, Kilted and rosbags all read. :class:`BagRecorder`
is the library side, for recording from a node of one's own.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
import logging
from pathlib import Path
import shutil
import signal
import sqlite3
import sys
import threading
import time
from typing import Any

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from fvt_segmentation.bag.rosbag_io import (
    HUMBLE_BAG_VERSION,
    WRITER_VERSIONS,
    finish_bag,
    message_class,
    normalize_msgtype,
    offered_qos,
)
from fvt_segmentation.core.ros_args import split_ros_args

LOG = logging.getLogger('record')
STORAGE_ERRORS = (OSError, sqlite3.Error)
"""What a full disk (ENOSPC) or a file size limit (EFBIG) raises from the bag writer."""
STORAGES = {'sqlite3': StoragePlugin.SQLITE3, 'mcap': StoragePlugin.MCAP}
BAG_VERSIONS = (HUMBLE_BAG_VERSION, *WRITER_VERSIONS)


def _absolute(topic: str) -> str:
    return topic if topic.startswith('/') else '/' + topic


class BagRecorder:
    """Subscribes to topics of ``node`` and writes what arrives into a new bag at ``output``.

    ``bag_version`` 5 (default) is readable by every distro from Humble on; 8 is what Jazzy
    records, 9 what Kilted records. Call :meth:`close` (or use as a context manager) to
    finish the bag; until then it lies in ``<output>.partial``. Thread-safe: callbacks may
    run in any executor. Every call into the bag writer runs on one dedicated thread, since
    the sqlite3 storage may only be used from the thread that opened it. When a write fails
    (disk full), :attr:`failure` says so, nothing more is written and :meth:`close` still
    finishes the bag with the messages written before.
    """

    def __init__(self, node: Any, output: str | Path, storage: str = 'sqlite3',
                 bag_version: int = HUMBLE_BAG_VERSION,
                 on_message: Callable[[str, int], None] | None = None):
        """Create the bag; ``on_message(topic, total_count)`` is called after each write."""
        if storage not in STORAGES:
            raise ValueError(f'expected storage in {sorted(STORAGES)}, got {storage!r}')
        if bag_version not in BAG_VERSIONS:
            raise ValueError(f'expected bag version in {BAG_VERSIONS}, got {bag_version}')
        self.node = node
        self.output = Path(output)
        # Staged in <output>.partial/<name>: rosbags names the storage files after the bag
        # folder, so the finished bag keeps consistent names when moved to <output>.
        self.partial = self.output.with_name(self.output.name + '.partial')
        if self.output.exists():
            raise FileExistsError(f'{self.output} exists already; expected a new bag path')
        if self.partial.exists():
            shutil.rmtree(self.partial)  # left over by a crashed run: never a complete bag
        self.partial.mkdir(parents=True)
        self.bag_version = bag_version
        self.on_message = on_message
        self.failure: str | None = None
        """Why writing stopped (one line), or None while every write succeeded."""
        self.counts: dict[str, int] = {}
        self.types: dict[str, str] = {}
        self._typestore = get_typestore(Stores.LATEST)
        self._lock = threading.Lock()
        self._subscriptions: list[Any] = []
        self._connections: dict[str, Any] = {}  # topics written through write()
        writer_version = 8 if bag_version == HUMBLE_BAG_VERSION else bag_version
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix='bag-writer')
        self._writer = Writer(self.partial / self.output.name, version=writer_version,
                              storage_plugin=STORAGES[storage])
        self._on_io(self._open_writer, storage)
        self._closed = False

    def _open_writer(self, storage: str) -> None:
        self._writer.open()
        if storage == 'sqlite3':
            # rosbags keeps the whole bag in one transaction, committed at close: a full disk
            # would lose every message. Autocommit stores each message as it is written.
            self._writer.storage.conn.isolation_level = None

    def _on_io(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._io.submit(function, *args, **kwargs).result()

    @property
    def message_count(self) -> int:
        """Messages written so far, all topics."""
        with self._lock:
            return sum(self.counts.values())

    def discover_type(self, topic: str, timeout: float = 10.0) -> str:
        """Return the type of ``topic`` as seen in the ROS graph, waiting up to ``timeout`` s."""
        topic = _absolute(topic)
        deadline = time.monotonic() + timeout
        while True:
            types = dict(self.node.get_topic_names_and_types()).get(topic, [])
            if len(types) == 1:
                return normalize_msgtype(types[0])
            if len(types) > 1:
                raise ValueError(f'{topic} has several types {types}; give one with --type')
            if time.monotonic() >= deadline:
                raise TimeoutError(f'expected topic {topic} in the ROS graph within '
                                   f'{timeout:g} s to learn its type; it did not appear '
                                   '(give the type with --type TOPIC:=TYPE)')
            time.sleep(0.05)

    def add_topic(self, topic: str, msgtype: str | None = None, qos: Any = None,
                  timeout: float = 10.0) -> str:
        """Start recording ``topic``; returns its type (discovered when not given).

        Without ``qos``, the subscription adapts to the publishers like ``ros2 bag record``:
        best-effort unless every publisher is reliable, transient-local if every publisher is.
        It waits up to ``timeout`` s for a publisher to adapt to; with none, it subscribes
        best-effort, which matches publishers of either reliability.
        """
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        topic = _absolute(topic)
        if topic in self.types:
            raise ValueError(f'{topic} is recorded already')
        msgtype = normalize_msgtype(msgtype) if msgtype else self.discover_type(topic, timeout)
        if msgtype not in self._typestore.types:
            raise ValueError(f'{topic}: type {msgtype} is unknown to the rosbags typestore, '
                             'so its definition cannot be stored; expected a standard ROS '
                             'message type')
        cls = message_class(msgtype)
        offered = self._offered_qos(topic, timeout if qos is None else 0.0)
        if qos is None:
            if not offered:
                LOG.warning('%s: no publisher within %g s; recording best-effort', topic,
                            timeout)
            reliable = bool(offered) and all(
                p.reliability == ReliabilityPolicy.RELIABLE for p in offered)
            latched = bool(offered) and all(
                p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered)
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=100,
                reliability=(ReliabilityPolicy.RELIABLE if reliable
                             else ReliabilityPolicy.BEST_EFFORT),
                durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                            else DurabilityPolicy.VOLATILE))
        connection = self._connect(topic, msgtype, [offered_qos(p) for p in offered])
        self._subscriptions.append(self.node.create_subscription(
            cls, topic, lambda data: self._write(topic, connection, data), qos, raw=True))
        return msgtype

    def declare_topic(self, topic: str, msgtype: str) -> None:
        """Add ``topic`` without subscribing: the caller hands its messages to :meth:`write`.

        For a node that subscribes to the topic anyway and must record exactly the messages
        its own callback saw (a second subscription may lag behind it).
        """
        topic = _absolute(topic)
        if topic in self.types:
            raise ValueError(f'{topic} is recorded already')
        msgtype = normalize_msgtype(msgtype)
        if msgtype not in self._typestore.types:
            raise ValueError(f'{topic}: type {msgtype} is unknown to the rosbags typestore')
        self._connections[topic] = self._connect(topic, msgtype, [])

    def write(self, topic: str, message: Any) -> bool:
        """Write a message of a :meth:`declare_topic` topic; False once closed or failed."""
        from rclpy.serialization import serialize_message

        return self._write(_absolute(topic), self._connections[_absolute(topic)],
                           serialize_message(message))

    def _connect(self, topic: str, msgtype: str, qos_profiles: list[Any]) -> Any:
        with self._lock:
            connection = self._on_io(
                self._writer.add_connection, topic, msgtype, typestore=self._typestore,
                offered_qos_profiles=qos_profiles)
            self.types[topic] = msgtype
            self.counts[topic] = 0
        return connection

    def _offered_qos(self, topic: str, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            offered = [i.qos_profile for i in self.node.get_publishers_info_by_topic(topic)]
            if offered or time.monotonic() >= deadline:
                return offered
            time.sleep(0.05)

    def _write(self, topic: str, connection: Any, data: bytes) -> bool:
        stamp = self.node.get_clock().now().nanoseconds
        with self._lock:
            if self._closed or self.failure is not None:
                return False
            try:
                self._on_io(self._writer.write, connection, stamp, data)
            except STORAGE_ERRORS as err:
                written = sum(self.counts.values())
                self.failure = (
                    f'{self.output}: expected to write message {self.counts[topic] + 1} of '
                    f'{topic} ({len(data)} bytes), the storage refused: '
                    f'{type(err).__name__}: {err} (disk full?); recording stopped, the bag '
                    f'keeps the {written} messages written before')
                return False
            self.counts[topic] += 1
            total = sum(self.counts.values())
        if self.on_message is not None:
            self.on_message(topic, total)
        return True

    def _stop(self, end_writer: Callable[[], None]) -> bool:
        """Unsubscribe, end the writer with ``end_writer``; False if stopped already."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        self._subscriptions.clear()
        try:
            self._on_io(end_writer)
        finally:
            self._io.shutdown()
        return True

    def close(self) -> Path:
        """Stop recording, finish the bag and move it to ``output``; returns ``output``.

        Raises OSError naming the staging folder, which is then kept, when the bag cannot be
        finished (no room left even for its metadata).
        """
        try:
            if self._stop(self._writer.close):
                finish_bag(self.partial / self.output.name, self.output,
                           humble=self.bag_version == HUMBLE_BAG_VERSION)
                self.partial.rmdir()
        except STORAGE_ERRORS as err:
            raise OSError(f'{self.output}: expected to finish the bag, got '
                          f'{type(err).__name__}: {err}; the messages written so far stay in '
                          f'{self.partial}') from err
        return self.output

    def abort(self) -> None:
        """Stop recording and delete the unfinished bag (nothing is left at ``output``)."""
        if self._stop(self._writer.abort):
            shutil.rmtree(self.partial, ignore_errors=True)

    def __enter__(self) -> BagRecorder:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def parse_types(items: Sequence[str]) -> dict[str, str]:
    """Parse ``topic:=pkg/msg/Type`` items."""
    types = {}
    for item in items:
        topic, sep, msgtype = item.partition(':=')
        if not sep or not topic or not msgtype:
            raise ValueError(f'expected TOPIC:=TYPE like /image:=sensor_msgs/msg/Image, '
                             f'got {item!r}')
        types[_absolute(topic)] = msgtype
    return types


def _drain(node: Any, recorder: BagRecorder, quiet: float = 0.3) -> None:
    """Take what already arrived before closing, until ``quiet`` seconds bring nothing new."""
    import rclpy

    count, quiet_since = recorder.message_count, time.monotonic()
    while time.monotonic() - quiet_since < quiet:
        rclpy.spin_once(node, timeout_sec=0.05)
        if recorder.message_count != count:
            count, quiet_since = recorder.message_count, time.monotonic()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='record', description=__doc__.splitlines()[0])
    parser.add_argument('topics', nargs='+', metavar='TOPIC')
    parser.add_argument('-o', '--output', type=Path, required=True, help='new bag folder')
    parser.add_argument('--storage', choices=sorted(STORAGES), default='sqlite3')
    parser.add_argument('--bag-version', type=int, choices=BAG_VERSIONS,
                        default=HUMBLE_BAG_VERSION,
                        help='metadata version: 5 readable from Humble on (default), '
                             '8 as Jazzy records, 9 as Kilted records')
    parser.add_argument('--type', nargs='+', default=[], metavar='TOPIC:=TYPE',
                        help='message types (default: discovered from the graph)')
    parser.add_argument('--discovery-timeout', type=float, default=10.0, metavar='SECONDS',
                        help='how long to wait for a topic to appear to learn its type')
    parser.add_argument('--duration', type=float, metavar='SECONDS',
                        help='stop after this long')
    parser.add_argument('--count', type=int, metavar='N', help='stop after N messages in all')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``record``; Ctrl-C or SIGTERM ends it with a complete bag.

    Exit codes: 0 bag written, 1 bad options or topic, or writing failed (disk full: the
    bag then holds what was written before, or the error names the folder that does).
    """
    import rclpy
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions

    own, ros_args = split_ros_args(argv)
    args = _parse_args(own)
    logging.basicConfig(level=logging.INFO, format='[record] %(message)s')
    try:
        given_types = parse_types(args.type)
    except ValueError as err:
        LOG.error('%s', err)
        return 1
    stop = threading.Event()
    # Stop between two callbacks, never inside one: a signal only sets the flag.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
    node = Node('record')

    def on_message(_topic: str, total: int) -> None:
        if args.count is not None and total >= args.count:
            stop.set()

    recorder = None
    try:
        recorder = BagRecorder(node, args.output, args.storage, args.bag_version, on_message)
        for topic in args.topics:
            msgtype = recorder.add_topic(topic, given_types.get(_absolute(topic)),
                                         timeout=args.discovery_timeout)
            LOG.info('recording %s [%s]', _absolute(topic), msgtype)
            if stop.is_set():  # interrupted while waiting for a topic to appear
                recorder.abort()
                return 0
        LOG.info('writing %s (%s, bag version %d)', args.output, args.storage,
                 args.bag_version)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop.is_set() and recorder.failure is None and (
                deadline is None or time.monotonic() < deadline):
            rclpy.spin_once(node, timeout_sec=0.1)
        if args.count is None and recorder.failure is None:
            _drain(node, recorder)
        path = recorder.close()
        if recorder.failure is not None:
            LOG.error('%s', recorder.failure)
            return 1
        LOG.info('wrote %s: %s', path,
                 ', '.join(f'{t} {n} messages' for t, n in recorder.counts.items()))
        return 0
    except (OSError, ValueError, TimeoutError) as err:
        LOG.error('%s', err)
        if recorder is not None:
            recorder.abort()
        return 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
