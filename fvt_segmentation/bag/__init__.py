"""Bags without ``ros2 bag``: record, replay, rosbag2 metadata, the bundled recording."""
