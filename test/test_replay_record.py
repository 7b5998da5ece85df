"""Bag replay and recording with real rclpy nodes and real rosbag2 files (rosbags)."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from rclpy.duration import Duration
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from ros_helpers import ros_node, spin_until
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from ruamel.yaml import YAML
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from fvt_segmentation.bag.record import BagRecorder
from fvt_segmentation.bag.replay import BagPlayer, BagPublisher
from fvt_segmentation.bag.rosbag_io import finish_bag

REPO = Path(__file__).resolve().parents[1]
STORE = get_typestore(Stores.LATEST)
IMAGE, COMPRESSED, STRING = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage',
                             'std_msgs/msg/String')
BAG_START_NS = 1_700_000_000 * 10**9
PERIOD_NS = 20_000_000  # 50 Hz in the bag
COUNT = 6  # messages per topic
QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)


def _header(i: int):
    # Header stamps far from the bag's receive times: replay must not restamp.
    return STORE.types['std_msgs/msg/Header'](
        stamp=STORE.types['builtin_interfaces/msg/Time'](sec=1000 + i, nanosec=123 + i),
        frame_id=f'camera_{i}')


def _pixels(i: int) -> np.ndarray:
    return (np.arange(6 * 8 * 3, dtype=np.uint8) * 7 + i).reshape(6, 8, 3)


def write_bag(path: Path, version: int, storage: StoragePlugin) -> Path:
    """Write COUNT Images, CompressedImages and Strings, interleaved, 20 ms apart."""
    with Writer(path, version=version, storage_plugin=storage) as writer:
        connections = {t: writer.add_connection(topic, t, typestore=STORE) for topic, t in (
            ('/camera/image_raw', IMAGE), ('/camera/image_raw/compressed', COMPRESSED),
            ('/note', STRING))}
        for i in range(COUNT):
            header = _header(i)
            messages = (
                (IMAGE, STORE.types[IMAGE](
                    header=header, height=6, width=8, encoding='rgb8', is_bigendian=0,
                    step=24, data=_pixels(i).reshape(-1))),
                (COMPRESSED, STORE.types[COMPRESSED](
                    header=header, format='jpeg', data=np.frombuffer(
                        b'\xff\xd8fake-jpeg-%d\xff\xd9' % i, dtype=np.uint8))),
                (STRING, STORE.types[STRING](data=f'note {i}')),
            )
            for k, (msgtype, msg) in enumerate(messages):
                stamp = BAG_START_NS + (3 * i + k) * PERIOD_NS
                writer.write(connections[msgtype], stamp,
                             STORE.serialize_cdr(msg, msgtype))
    return path


def _key(topic: str, msg) -> tuple:
    if isinstance(msg, String):
        return (topic, msg.data)
    stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
    if isinstance(msg, Image):
        return (topic, stamp, msg.height, msg.width, msg.encoding, bytes(msg.data))
    return (topic, stamp, msg.format, bytes(msg.data))


def _expected(remap: dict[str, str] | None = None) -> dict[str, list[tuple]]:
    remap = remap or {}
    image, compressed, note = (remap.get(t, t) for t in (
        '/camera/image_raw', '/camera/image_raw/compressed', '/note'))
    return {
        image: [(image, (1000 + i, 123 + i, f'camera_{i}'), 6, 8, 'rgb8',
                 _pixels(i).tobytes()) for i in range(COUNT)],
        compressed: [(compressed, (1000 + i, 123 + i, f'camera_{i}'), 'jpeg',
                      b'\xff\xd8fake-jpeg-%d\xff\xd9' % i) for i in range(COUNT)],
        note: [(note, f'note {i}') for i in range(COUNT)],
    }


def _subscribe(node, topics: dict[str, type]) -> dict[str, list[tuple]]:
    received: dict[str, list[tuple]] = {t: [] for t in topics}
    for topic, cls in topics.items():
        node.create_subscription(
            cls, topic, lambda msg, topic=topic: received[topic].append(_key(topic, msg)), QOS)
    return received


def _humble_bag(path: Path, storage: StoragePlugin) -> Path:
    staged = write_bag(path.parent / 'staging' / path.name, 8, storage)
    return finish_bag(staged, path, humble=True)


BAG_FORMATS = {
    # What `ros2 bag record` writes: Jazzy (version 8), Kilted (version 9), both storages;
    # and the version 5 layout this package records for Humble.
    'sqlite3-v8': lambda p: write_bag(p, 8, StoragePlugin.SQLITE3),
    'mcap-v8': lambda p: write_bag(p, 8, StoragePlugin.MCAP),
    'sqlite3-v9': lambda p: write_bag(p, Writer.VERSION_LATEST, StoragePlugin.SQLITE3),
    'mcap-v9': lambda p: write_bag(p, Writer.VERSION_LATEST, StoragePlugin.MCAP),
    'sqlite3-v5': lambda p: _humble_bag(p, StoragePlugin.SQLITE3),
}


@pytest.mark.parametrize('fmt', sorted(BAG_FORMATS))
def test_replay_publishes_every_message_as_recorded(tmp_path, fmt):
    bag = BAG_FORMATS[fmt](tmp_path / 'bag')
    with BagPlayer(bag, rate=4.0) as player, ros_node('replay_sink') as (node, executor):
        assert player.output_topics == {'/camera/image_raw': IMAGE, '/note': STRING,
                                        '/camera/image_raw/compressed': COMPRESSED}
        received = _subscribe(node, {'/camera/image_raw': Image, '/note': String,
                                     '/camera/image_raw/compressed': CompressedImage})
        publisher = BagPublisher(node, player)
        assert publisher.wait_for_subscribers(1, timeout=10) == []
        order: list[tuple[str, int]] = []

        def publish(item):
            order.append((item.bag_topic, item.bag_time_ns))
            publisher.publish(item)

        thread = threading.Thread(target=player.play, args=(publish,))
        thread.start()
        spin_until(executor, lambda: sum(map(len, received.values())) >= 3 * COUNT, 15)
        thread.join(5)
    assert received == _expected()
    assert [t for _, t in order] == sorted(t for _, t in order)  # recorded order kept
    assert len(order) == 3 * COUNT


def test_player_filters_remaps_skips_and_loops(tmp_path):
    bag = write_bag(tmp_path / 'bag', 9, StoragePlugin.SQLITE3)
    remap = {'/camera/image_raw': '/cam/image'}
    with BagPlayer(bag, topics=['/camera/image_raw', 'note'], remap=remap,
                   start_offset=3 * 2 * PERIOD_NS / 1e9, rate=0) as player:
        assert player.output_topics == {'/cam/image': IMAGE, '/note': STRING}
        items = list(player.messages())
    # The offset skips the first two rounds (6 messages); the compressed topic is filtered.
    assert [(m.topic, m.bag_topic) for m in items] == [
        ('/cam/image', '/camera/image_raw'), ('/note', '/note')] * (COUNT - 2)
    assert [_key(m.topic, m.message) for m in items[::2]] == _expected(remap)['/cam/image'][2:]

    seen = []
    stop = threading.Event()
    with BagPlayer(bag, topics=['/note'], rate=0, loop=True) as player:
        def collect(item):
            seen.append(item.message.data)
            if len(seen) == 2 * COUNT + 1:
                stop.set()
        delivered = player.play(collect, stop)
    assert delivered == 2 * COUNT + 1
    assert seen == [f'note {i}' for i in range(COUNT)] * 2 + ['note 0']


def test_player_errors_name_the_problem(tmp_path):
    bag = write_bag(tmp_path / 'bag', 9, StoragePlugin.MCAP)
    with pytest.raises(ValueError, match=r'/nope'):
        BagPlayer(bag, topics=['/nope'])
    with pytest.raises(ValueError, match='past the end'):
        BagPlayer(bag, start_offset=60)


def _child_env() -> dict[str, str]:
    return dict(os.environ)


def test_replay_command_waits_for_subscribers_then_plays(tmp_path):
    bag = write_bag(tmp_path / 'bag', 8, StoragePlugin.MCAP)
    cmd = [sys.executable, '-m', 'fvt_segmentation.bag.replay', str(bag), '--topics', '/note',
           '/camera/image_raw', '--remap', '/note:=/replayed_note', '--rate', '5',
           '--wait-for-subscribers', '1', '--wait-timeout', '20', '--no-progress']
    with ros_node('replay_cli_sink') as (node, executor):
        received = _subscribe(node, {'/replayed_note': String, '/camera/image_raw': Image})
        process = subprocess.Popen(cmd, cwd=REPO, env=_child_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        try:
            spin_until(executor, lambda: process.poll() is not None, 40)
            spin_until(executor, lambda: sum(map(len, received.values())) >= 2 * COUNT, 2)
        finally:
            if process.poll() is None:
                process.kill()
            output = process.communicate()[0]
    assert process.returncode == 0, output
    assert 'playing' in output and '/note -> /replayed_note' in output
    expected = _expected({'/note': '/replayed_note'})
    assert received == {t: expected[t] for t in received}


def test_replay_command_gives_up_without_subscribers(tmp_path):
    bag = write_bag(tmp_path / 'bag', 9, StoragePlugin.SQLITE3)
    result = subprocess.run(
        [sys.executable, '-m', 'fvt_segmentation.bag.replay', str(bag), '--topics', '/note',
         '--remap', '/note:=/nobody_listens', '--wait-for-subscribers', '1',
         '--wait-timeout', '0.5', '--no-progress'],
        cwd=REPO, env=_child_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert '/nobody_listens' in result.stderr


def _read_bag(bag: Path) -> dict[str, list[tuple[str, object]]]:
    with AnyReader([bag], default_typestore=STORE) as reader:
        out: dict[str, list[tuple[str, object]]] = {}
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(
                (conn.msgtype, reader.deserialize(raw, conn.msgtype)))
    return out


def _metadata(bag: Path) -> dict:
    return YAML(typ='safe').load((bag / 'metadata.yaml').read_text())[
        'rosbag2_bagfile_information']


def test_recorder_writes_what_was_published(tmp_path):
    out = tmp_path / 'recorded'
    with ros_node('recorder_test') as (node, executor):
        strings = node.create_publisher(String, '/rec/note', QOS)
        images = node.create_publisher(Image, '/rec/image', QOS)
        with BagRecorder(node, out, storage='sqlite3') as recorder:
            assert recorder.add_topic('/rec/note') == STRING  # type from the graph
            assert recorder.add_topic('/rec/image', 'sensor_msgs/Image') == IMAGE
            assert recorder.partial.is_dir() and not out.exists()
            spin_until(executor, lambda: strings.get_subscription_count() == 1
                       and images.get_subscription_count() == 1, 10)
            for i in range(COUNT):
                strings.publish(String(data=f'rec {i}'))
                msg = Image(height=6, width=8, encoding='rgb8', step=24,
                            data=_pixels(i).tobytes())
                msg.header.stamp.sec, msg.header.frame_id = 2000 + i, 'cam'
                images.publish(msg)
            spin_until(executor, lambda: recorder.message_count == 2 * COUNT, 10)
    assert out.is_dir() and not recorder.partial.exists()
    meta = _metadata(out)
    assert meta['version'] == 5 and meta['message_count'] == 2 * COUNT
    assert meta['relative_file_paths'] == ['recorded.db3']
    assert sorted(p.name for p in out.iterdir()) == ['metadata.yaml', 'recorded.db3']
    assert all('type_description_hash' not in t['topic_metadata']
               for t in meta['topics_with_message_count'])
    qos_text = {t['topic_metadata']['name']: t['topic_metadata']['offered_qos_profiles']
                for t in meta['topics_with_message_count']}
    assert 'reliability: 1' in qos_text['/rec/note']  # the publisher's QoS, Humble style
    bag = _read_bag(out)
    assert [(t, m.data) for t, m in bag['/rec/note']] == [
        (STRING, f'rec {i}') for i in range(COUNT)]
    assert [(t, m.header.stamp.sec, bytes(m.data)) for t, m in bag['/rec/image']] == [
        (IMAGE, 2000 + i, _pixels(i).tobytes()) for i in range(COUNT)]


def test_recorder_writes_the_messages_handed_to_it_until_closed(tmp_path):
    out = tmp_path / 'handed'
    with ros_node('recorder_write_test') as (node, _):
        recorder = BagRecorder(node, out)
        recorder.declare_topic('rec/image', 'sensor_msgs/Image')
        with pytest.raises(ValueError, match='recorded already'):
            recorder.declare_topic('/rec/image', IMAGE)
        for i in range(COUNT):
            msg = Image(height=6, width=8, encoding='rgb8', step=24, data=_pixels(i).tobytes())
            msg.header.stamp.sec = 3000 + i
            assert recorder.write('/rec/image', msg)
        recorder.close()
        assert not recorder.write('/rec/image', msg)  # closed: nothing more is written
    assert recorder.message_count == COUNT
    assert [(t, m.header.stamp.sec, bytes(m.data)) for t, m in _read_bag(out)['/rec/image']] == [
        (IMAGE, 3000 + i, _pixels(i).tobytes()) for i in range(COUNT)]


def test_record_command_closes_a_complete_bag_on_ctrl_c(tmp_path):
    out = tmp_path / 'cli_bag'
    cmd = [sys.executable, '-m', 'fvt_segmentation.bag.record', '/cli/note', '-o', str(out),
           '--storage', 'mcap', '--bag-version', '9', '--type',
           '/cli/note:=std_msgs/msg/String']
    with ros_node('record_cli_source') as (node, executor):
        publisher = node.create_publisher(String, '/cli/note', QOS)
        process = subprocess.Popen(cmd, cwd=REPO, env=_child_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        try:
            assert spin_until(executor, lambda: publisher.get_subscription_count() == 1, 30)
            for i in range(20):
                publisher.publish(String(data=f'cli {i}'))
            assert publisher.wait_for_all_acked(Duration(seconds=10))
            process.send_signal(signal.SIGINT)
            output = process.communicate(timeout=30)[0]
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, output
    assert 'wrote' in output
    assert _metadata(out)['version'] == 9
    assert sorted(p.name for p in out.iterdir()) == ['cli_bag.mcap', 'metadata.yaml']
    bag = _read_bag(out)
    assert [m.data for _, m in bag['/cli/note']] == [f'cli {i}' for i in range(20)]
    with AnyReader([out]) as reader:  # stored as CDR that rclpy reads back
        assert [deserialize_message(bytes(r), String).data for _, _, r in reader.messages()
                ] == [f'cli {i}' for i in range(20)]


def test_record_command_leaves_nothing_when_the_topic_never_appears(tmp_path):
    out = tmp_path / 'never'
    result = subprocess.run(
        [sys.executable, '-m', 'fvt_segmentation.bag.record', '/never/published', '-o', str(out),
         '--discovery-timeout', '0.5'],
        cwd=REPO, env=_child_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert '/never/published' in result.stderr and '--type' in result.stderr
    assert list(tmp_path.iterdir()) == []  # neither the bag nor its .partial staging folder


def _file_size_limit(limit: int):
    """preexec_fn: files of the child may not grow past ``limit`` bytes, as on a full disk.

    Portable stand-in for a full disk (no root, no mount): a write past RLIMIT_FSIZE fails
    with EFBIG instead of ENOSPC; SIGXFSZ, which would kill the child instead, is ignored.
    """
    import resource

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


FULL_DISK_FRAMES = [np.random.default_rng(i).integers(0, 255, (100, 100, 3), np.uint8)
                    for i in range(40)]


def _record_on_a_full_disk(out: Path, *options: str) -> tuple[int, str]:
    """Run ``record`` under a 400 kB file size limit while 40 images of 30 kB arrive.

    Returns the exit code and the last line ``record`` printed itself (before it, Fast DDS may
    say that its shared memory transport does not fit under the limit either and it falls
    back to UDP).
    """
    cmd = [sys.executable, '-m', 'fvt_segmentation.bag.record', '/full/image', '-o', str(out),
           '--type', '/full/image:=sensor_msgs/msg/Image', *options]
    with ros_node('record_full_source') as (node, executor):
        publisher = node.create_publisher(Image, '/full/image', QOS)
        process = subprocess.Popen(cmd, cwd=REPO, env=_child_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True,
                                   preexec_fn=_file_size_limit(400_000))
        try:
            assert spin_until(executor, lambda: publisher.get_subscription_count() == 1, 30)
            for i, pixels in enumerate(FULL_DISK_FRAMES):
                msg = Image(height=100, width=100, encoding='rgb8', step=300,
                            data=pixels.tobytes())
                msg.header.stamp.sec = 4000 + i
                publisher.publish(msg)  # reliable, keep all: each arrives, in order
            output = process.communicate(timeout=30)[0]
        finally:
            if process.poll() is None:
                process.kill()
    return process.returncode, [line for line in output.splitlines()
                                if line.startswith('[record]')][-1]


def test_record_command_on_a_full_disk_keeps_what_was_written(tmp_path):
    out = tmp_path / 'full'
    code, error = _record_on_a_full_disk(out)
    assert code == 1, error
    assert 'expected to write message' in error and 'disk full?' in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ['full']  # no .partial left behind
    stored = [(m.header.stamp.sec, bytes(m.data)) for _, m in _read_bag(out)['/full/image']]
    # Every message up to the failure, in order, none after it; the metadata agrees.
    assert 3 <= len(stored) < len(FULL_DISK_FRAMES)
    assert stored == [(4000 + i, FULL_DISK_FRAMES[i].tobytes()) for i in range(len(stored))]
    assert f'keeps the {len(stored)} messages' in error
    assert _metadata(out)['message_count'] == len(stored)


def test_record_command_on_a_full_disk_names_an_unfinished_mcap_bag(tmp_path):
    # MCAP writes in chunks: the failure shows when the bag is finished, and what was written
    # stays where the error says, never deleted.
    out = tmp_path / 'full'
    code, error = _record_on_a_full_disk(out, '--storage', 'mcap')
    assert code == 1, error
    partial = tmp_path / 'full.partial'
    assert 'expected to finish the bag' in error and str(partial) in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ['full.partial']
    assert (partial / 'full' / 'full.mcap').stat().st_size > 300_000


def test_wait_for_reliable_subscribers_ignores_best_effort_ones(tmp_path):
    bag = write_bag(tmp_path / 'bag', 9, StoragePlugin.SQLITE3)
    with BagPlayer(bag, topics=['/note']) as player, ros_node('wait_probe') as (node, _):
        publisher = BagPublisher(node, player)
        best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        node.create_subscription(String, '/note', lambda _: None, best_effort)
        # Matched, but best effort: it may still drop the first message, so it does not count.
        assert publisher.wait_for_subscribers(1, timeout=10) == []
        assert publisher.wait_for_subscribers(1, timeout=1, reliable=True) == ['/note']
        node.create_subscription(String, '/note', lambda _: None, QOS)
        assert publisher.wait_for_subscribers(1, timeout=10, reliable=True) == []
        assert publisher.publishers['/note'].get_subscription_count() == 2
