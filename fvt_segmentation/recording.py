"""The bundled recording: its topics and how to read its ground truth (no rclpy needed).

The recording (``recordings/camvid_0016E5``, built by ``scripts/make_recording.py``) carries
camera frames as JPEG and ground-truth category masks as PNG, both
``sensor_msgs/msg/CompressedImage`` with the same header per frame.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from rosbags.highlevel import AnyReader

from fvt_segmentation.resources import package_file

CAMERA_TOPIC = '/camera/image_raw/compressed'
TRUTH_TOPIC = '/camera/ground_truth/compressed'
CAMERA_BASE_TOPIC = '/camera/image_raw'
"""What the node's ``image`` is remapped to; it subscribes to ``<base>/compressed``."""
DEFAULT_RECORDING = 'recordings/camvid_0016E5'


def default_recording() -> Path:
    """Return the bundled recording's folder, wherever the package is installed."""
    return package_file(DEFAULT_RECORDING)


def stamp_ns(header: object) -> int:
    """Return a message header's stamp in nanoseconds (rclpy or rosbags message)."""
    stamp = header.stamp  # type: ignore[attr-defined]
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def read_truth(bag: str | Path, topic: str = TRUTH_TOPIC) -> dict[int, np.ndarray]:
    """Return the ground-truth masks of a recording, keyed by header stamp (ns).

    Raises ``ValueError`` naming the bag when it has no such topic or a mask does not decode.
    """
    truth: dict[int, np.ndarray] = {}
    with AnyReader([Path(bag)]) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        if not connections:
            raise ValueError(f'{bag}: no topic {topic}; it has '
                             f'{sorted(c.topic for c in reader.connections)}')
        for connection, _, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            mask = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_UNCHANGED)
            if mask is None or mask.ndim != 2:
                raise ValueError(f'{bag}: a {topic} message at {stamp_ns(msg.header)} ns is '
                                 'not a single-channel PNG mask')
            truth[stamp_ns(msg.header)] = mask
    return truth
