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

from fvt_segmentation.core.conversions import (
    FrameError,
    compressed_to_frame,
    resize_nearest,
    stamp_ns,
)
from fvt_segmentation.core.metrics import confusion_matrix, summarize
from fvt_segmentation.core.resources import package_file
from fvt_segmentation.core.segmenter import Segmenter

CAMERA_TOPIC = '/camera/image_raw/compressed'
TRUTH_TOPIC = '/camera/ground_truth/compressed'
CAMERA_BASE_TOPIC = '/camera/image_raw'
"""What the node's ``image`` is remapped to; it subscribes to ``<base>/compressed``."""
DEFAULT_RECORDING = 'recordings/camvid_0016E5'
MAX_PIXELS = 1 << 31
"""No size limit worth the name: a recording is trusted input, unlike a camera topic."""


def default_recording() -> Path:
    """Return the bundled recording's folder, wherever the package is installed."""
    return package_file(DEFAULT_RECORDING)


def read_images(bag: str | Path, topic: str) -> dict[int, np.ndarray]:
    """Decode every ``CompressedImage`` of ``topic``, keyed by header stamp (ns).

    Decoded as the node decodes its compressed input: colour frames come back as BGR, masks
    as single-channel arrays. Raises ``ValueError`` naming the bag for a missing topic or data
    that does not decode.
    """
    images: dict[int, np.ndarray] = {}
    with AnyReader([Path(bag)]) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        if not connections:
            raise ValueError(f'{bag}: no topic {topic}; it has '
                             f'{sorted(c.topic for c in reader.connections)}')
        for connection, _, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            try:
                frame = compressed_to_frame(msg, MAX_PIXELS)
            except FrameError as err:
                raise ValueError(f'{bag}: the {topic} message at {stamp_ns(msg.header)} ns '
                                 f'does not decode: {err}') from err
            images[stamp_ns(msg.header)] = frame.pixels
    return images


def read_truth(bag: str | Path, topic: str = TRUTH_TOPIC) -> dict[int, np.ndarray]:
    """Return the ground-truth category masks of a recording, keyed by header stamp (ns)."""
    truth = read_images(bag, topic)
    for stamp, mask in truth.items():
        if mask.ndim != 2:
            raise ValueError(f'{bag}: the {topic} message at {stamp} ns is not a '
                             'single-channel mask')
    return truth


def score_on_recording(segmenter: Segmenter, bag: str | Path | None = None) -> dict:
    """Segment every camera frame of a recording as the node does; score against its truth.

    Frames are decoded to BGR as the node's compressed input path does, segmented, and the
    class map resized (nearest) to the frame. Returns
    :func:`fvt_segmentation.core.metrics.summarize` of the dataset-level confusion matrix,
    plus ``frames``.
    """
    bag = bag or default_recording()
    frames = read_images(bag, CAMERA_TOPIC)
    truth = read_truth(bag)
    num_classes = segmenter.contract.num_classes
    cm = np.zeros((num_classes, num_classes), np.int64)
    for stamp, frame in frames.items():
        classes = resize_nearest(segmenter.segment(frame, 'BGR').classes, frame.shape[:2])
        cm += confusion_matrix(truth[stamp], classes, num_classes)
    scores = summarize(cm, segmenter.contract.categories, segmenter.contract.ignore_index)
    scores['frames'] = len(frames)
    return scores


def sample_frames(count: int, bag: str | Path | None = None) -> list[np.ndarray]:
    """Return ``count`` camera frames of a recording (the bundled one by default) as RGB.

    Evenly spread over the recording; the TensorRT parity check runs on them.
    """
    frames = [image for _, image in sorted(
        read_images(bag or default_recording(), CAMERA_TOPIC).items())]
    if count <= 0 or not frames:
        return []
    step = max(1, len(frames) // count)
    return [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames[::step][:count]]
