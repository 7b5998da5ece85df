"""Split a command line into the tool's own options and the ROS arguments after --ros-args.

``rclpy.init(args=sys.argv)`` would read the tool's own ``old:=new`` options (``--remap``,
``--type``) as deprecated ROS remap rules, so only the ``--ros-args`` part goes to rclpy.
"""

from __future__ import annotations

from collections.abc import Sequence
import sys


def split_ros_args(argv: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """Return ``(own, ros)``: the tool's options and ``[prog, '--ros-args', ...]``.

    ``argv`` excludes the program name (default ``sys.argv[1:]``). The ROS part runs from
    ``--ros-args`` to a closing ``--`` or the end, as in ``ros2 run``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if '--ros-args' not in argv:
        return argv, [sys.argv[0]]
    start = argv.index('--ros-args')
    end = argv.index('--', start) if '--' in argv[start:] else len(argv)
    return argv[:start] + argv[end + 1:], [sys.argv[0], *argv[start:end]]
