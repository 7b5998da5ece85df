"""The bundled recording opens and holds what recordings/README.md says."""

import cv2
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Reader
import yaml

from fvt_segmentation.bag.bundled_recording import (
    CAMERA_TOPIC,
    TRUTH_TOPIC,
    default_recording,
    read_images,
    read_truth,
    sample_frames,
)
from fvt_segmentation.core.conversions import stamp_ns


def test_recording_has_camera_frames_and_truth_with_matching_stamps():
    bag = default_recording()
    frames = {}
    with AnyReader([bag]) as reader:
        topics = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        assert topics == {CAMERA_TOPIC: ('sensor_msgs/msg/CompressedImage', 40),
                          TRUTH_TOPIC: ('sensor_msgs/msg/CompressedImage', 40)}
        camera = [c for c in reader.connections if c.topic == CAMERA_TOPIC]
        for conn, _, raw in reader.messages(connections=camera):
            msg = reader.deserialize(raw, conn.msgtype)
            assert msg.header.frame_id == 'camera' and 'jpeg' in msg.format
            frames[stamp_ns(msg.header)] = cv2.imdecode(np.frombuffer(msg.data, np.uint8),
                                                        cv2.IMREAD_COLOR)
    truth = read_truth(bag)
    assert sorted(truth) == sorted(frames)
    stamps = sorted(frames)
    assert all(b - a == 1_000_000_000  # 1 s apart
               for a, b in zip(stamps, stamps[1:], strict=False))
    for stamp, image in frames.items():
        assert image.shape == (360, 480, 3)
        assert truth[stamp].shape == (360, 480) and truth[stamp].max() <= 7
    every = np.concatenate([t.ravel() for t in truth.values()])
    assert set(np.unique(every)) >= {1, 2, 4, 5, 7}  # flat, construction, nature, sky, vehicle


def test_recording_metadata_is_humble_readable():
    bag = default_recording()
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['version'] == 5 and info['storage_identifier'] == 'sqlite3'
    for topic in info['topics_with_message_count']:
        assert 'type_description_hash' not in topic['topic_metadata']
        assert isinstance(topic['topic_metadata']['offered_qos_profiles'], str)
    with Reader(bag) as reader:  # the plain rosbag2 reader accepts it too
        assert reader.message_count == 80


def test_sample_frames_for_the_parity_check_are_rgb_and_spread():
    bgr = [image for _, image in sorted(read_images(default_recording(), CAMERA_TOPIC).items())]
    frames = sample_frames(4)
    assert len(frames) == 4 and all(f.shape == (360, 480, 3) for f in frames)
    step = len(bgr) // 4
    for i, frame in enumerate(frames):  # RGB copies of every step-th frame
        np.testing.assert_array_equal(frame, bgr[i * step][:, :, ::-1])
    assert sample_frames(0) == []
