"""rosbag2 details shared by replay and record: message classes, QoS, metadata versions.

Bags are read and written with ``rosbags`` (no rosbag2 C++ needed); message payloads stay
the CDR bytes that rclpy serialises, so any message type rclpy can import works.
"""

from __future__ import annotations

from importlib import import_module
from io import StringIO
from pathlib import Path
from typing import Any

from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from ruamel.yaml import YAML

HUMBLE_BAG_VERSION = 5
"""The metadata version Humble's ``ros2 bag record`` writes and the newest Humble reads."""

WRITER_VERSIONS = (8, 9)
"""Versions the rosbags Writer produces (8: Jazzy's ``ros2 bag record``, 9: Kilted's)."""

# Keys that metadata versions 6..9 added and a version 5 reader never looks at.
_POST_V5_BAG_KEYS = ('custom_data', 'ros_distro')
_POST_V5_TOPIC_KEYS = ('type_description_hash',)
_INFINITE_NS = 2**63 - 1
_INFINITE = QosTime(sec=9223372036, nsec=854775807)  # how rosbag2 writes "no deadline"


def message_class(msgtype: str) -> type:
    """Return the rclpy message class for ``pkg/msg/Name`` (or ``pkg/Name``).

    Uses ``rosidl_runtime_py`` when installed, else imports ``pkg.msg`` directly.
    """
    try:
        from rosidl_runtime_py.utilities import get_message
    except ImportError:
        pass
    else:
        try:
            return get_message(msgtype)
        except (AttributeError, ModuleNotFoundError, ValueError) as err:
            raise ValueError(f'expected an importable message type, got {msgtype!r}: '
                             f'{err}') from err
    parts = msgtype.split('/')
    if len(parts) == 2:
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3 or parts[1] != 'msg' or not all(parts):
        raise ValueError(f'expected a message type like sensor_msgs/msg/Image, got {msgtype!r}')
    package, _, name = parts
    try:
        cls = getattr(import_module(f'{package}.msg'), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f'expected an importable message type, got {msgtype!r}: '
                         f'{err}') from err
    return cls


def normalize_msgtype(msgtype: str) -> str:
    """Return ``pkg/msg/Name`` for ``pkg/Name`` or ``pkg/msg/Name``."""
    parts = msgtype.split('/')
    return f'{parts[0]}/msg/{parts[1]}' if len(parts) == 2 else msgtype


def _qos_time(duration_ns: int) -> QosTime:
    if duration_ns <= 0 or duration_ns >= _INFINITE_NS:
        return _INFINITE if duration_ns >= _INFINITE_NS else QosTime(0, 0)
    return QosTime(sec=duration_ns // 10**9, nsec=duration_ns % 10**9)


def offered_qos(profile: Any) -> Qos:
    """Convert an rclpy ``QoSProfile`` (a publisher's offered QoS) to a rosbags ``Qos``."""
    return Qos(
        history=QosHistory(int(profile.history)),
        depth=int(profile.depth),
        reliability=QosReliability(int(profile.reliability)),
        durability=QosDurability(int(profile.durability)),
        deadline=_qos_time(profile.deadline.nanoseconds),
        lifespan=_qos_time(profile.lifespan.nanoseconds),
        liveliness=QosLiveliness(int(profile.liveliness)),
        liveliness_lease_duration=_qos_time(profile.liveliness_lease_duration.nanoseconds),
        avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions),
    )


def finish_bag(staged: Path, output: Path, humble: bool) -> Path:
    """Move the closed rosbag2 folder ``staged`` to ``output`` (same name, other parent).

    With ``humble`` the metadata, written by rosbags as version 8, is first rewritten as
    version 5 (see :func:`humble_metadata`). The folder is moved last, so ``output`` only ever
    holds a complete bag.
    """
    staged, output = Path(staged), Path(output)
    if staged.name != output.name:
        raise ValueError(f'expected a staged bag named {output.name}, got {staged}: the '
                         'storage files are named after the folder')
    if humble:
        path = staged / 'metadata.yaml'
        yaml = YAML(typ='safe')
        yaml.default_flow_style = False
        document = yaml.load(path.read_text('utf8'))
        humble_metadata(document['rosbag2_bagfile_information'])
        stream = StringIO()
        yaml.dump(document, stream)
        tmp = path.with_suffix('.yaml.tmp')
        tmp.write_text(stream.getvalue(), 'utf8')
        tmp.replace(path)
    staged.rename(output)
    return output


def humble_metadata(info: dict[str, Any]) -> None:
    """Make ``rosbag2_bagfile_information`` written by rosbags as version 8 a version 5 one.

    Version 5 is what Humble records; later distros keep reading it. Version 8 differs only
    by keys a version 5 reader never asks for (6 added custom_data, 7 type_description_hash,
    8 ros_distro), and its QoS strings already use Humble's integer form (version 9 changed
    them to a list with names, which Humble cannot parse).
    """
    if info.get('version') != 8:
        raise ValueError(f'expected metadata version 8 to rewrite as 5, '
                         f'got {info.get("version")!r}')
    info['version'] = HUMBLE_BAG_VERSION
    for key in _POST_V5_BAG_KEYS:
        info.pop(key, None)
    for entry in info.get('topics_with_message_count', []):
        for key in _POST_V5_TOPIC_KEYS:
            entry['topic_metadata'].pop(key, None)
