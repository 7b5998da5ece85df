#!/usr/bin/env python3
"""Build the bundled rosbag2 recording from consecutive frames of a prepared data set.

Usage (from the repository root, with both packages installed)::

    fvt-train prepare camvid --root ../shared/datasets/camvid --out data/camvid --size 480x360
    python scripts/make_recording.py --prepared data/camvid/480x360 --split val \
        --sequence 0016E5 --count 40 --out recordings/camvid_0016E5

The bag holds two topics, both ``sensor_msgs/msg/CompressedImage`` with the same header per
frame: the camera frame as JPEG on ``/camera/image_raw/compressed`` and the ground-truth
category mask (ids 0..7, PNG, lossless) on ``/camera/ground_truth/compressed``. Frames are
stamped one ``--period`` apart from a fixed start, so rebuilding gives the same bag. It is
written on sqlite3 with its metadata in rosbag2 version 5 (Humble's own), which the
``ros2 bag`` of Humble, Jazzy and Kilted all read.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import shutil
import sys
import tempfile

import cv2
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from fvt_segmentation.bag.bundled_recording import CAMERA_TOPIC, TRUTH_TOPIC
from fvt_segmentation.bag.rosbag_io import finish_bag
from fvt_training.data.prepared import DataError, image_path, label_path, read_manifest

COMPRESSED = 'sensor_msgs/msg/CompressedImage'
START_NS = 1_200_000_000 * 10**9  # a fixed, plausible epoch so the file is reproducible


def build(prepared: Path, split: str, sequence: str, count: int, start: int, period: float,
          out: Path, storage: str, quality: int) -> int:
    """Write the recording; return the number of frames written."""
    manifest = read_manifest(prepared)
    ids = [i for i in manifest.ids(split) if i.startswith(sequence + '_')]
    if len(ids) < start + count:
        raise DataError(f'{prepared}: split {split!r} has {len(ids)} frames of sequence '
                        f'{sequence!r}; asked for {count} from index {start}')
    ids = sorted(ids)[start:start + count]
    store = get_typestore(Stores.ROS2_HUMBLE)
    image_cls = store.types[COMPRESSED]
    header_cls = store.types['std_msgs/msg/Header']
    time_cls = store.types['builtin_interfaces/msg/Time']
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix='.recording-', dir=out.parent))
    tmp = staging / out.name
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(tmp, version=8, storage_plugin=plugin) as writer:
        cam = writer.add_connection(CAMERA_TOPIC, COMPRESSED, typestore=store)
        truth = writer.add_connection(TRUTH_TOPIC, COMPRESSED, typestore=store)
        for index, sample in enumerate(ids):
            rgb = cv2.cvtColor(cv2.imread(str(image_path(prepared, split, sample))),
                               cv2.COLOR_BGR2RGB)
            label = cv2.imread(str(label_path(prepared, split, sample)), cv2.IMREAD_UNCHANGED)
            stamp_ns = START_NS + round(index * period * 1e9)
            header = header_cls(stamp=time_cls(sec=stamp_ns // 10**9,
                                               nanosec=stamp_ns % 10**9), frame_id='camera')
            _, jpeg = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, quality])
            _, png = cv2.imencode('.png', label)
            for conn, fmt, data in ((cam, 'bgr8; jpeg compressed bgr8', jpeg),
                                    (truth, 'mono8; png compressed mono8', png)):
                msg = image_cls(header=header, format=fmt, data=data.reshape(-1))
                writer.write(conn, stamp_ns, store.serialize_cdr(msg, COMPRESSED))
    if out.exists():
        shutil.rmtree(out)
    finish_bag(tmp, out, humble=True)
    staging.rmdir()
    return len(ids)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--prepared', type=Path, required=True,
                        help='a prepared data set folder (OUT/<W>x<H>) at camera resolution')
    parser.add_argument('--split', default='val')
    parser.add_argument('--sequence', default='0016E5', help='frame id prefix (time order)')
    parser.add_argument('--count', type=int, default=40)
    parser.add_argument('--start', type=int, default=0, help='index of the first frame')
    parser.add_argument('--period', type=float, default=1.0,
                        help='seconds between stamps (CamVid labelled frames are 1 s apart)')
    parser.add_argument('--quality', type=int, default=90, help='JPEG quality')
    parser.add_argument('--storage', choices=('sqlite3', 'mcap'), default='sqlite3')
    parser.add_argument('--out', type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        n = build(args.prepared, args.split, args.sequence, args.count, args.start,
                  args.period, args.out, args.storage, args.quality)
    except DataError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f'wrote {args.out}: {n} frames on {CAMERA_TOPIC} and {TRUTH_TOPIC}, '
          f'{size / 1e6:.1f} MB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
