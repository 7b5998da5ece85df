"""Small helpers for tests with real rclpy nodes: an isolated context and bounded spinning."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


@contextmanager
def ros_node(name: str) -> Iterator[tuple[Node, SingleThreadedExecutor]]:
    """A node in its own context with its own executor, shut down afterwards."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def spin_until(executor: SingleThreadedExecutor, done: Callable[[], bool],
               timeout: float) -> bool:
    """Spin until ``done()`` is true or ``timeout`` seconds passed; returns ``done()``."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return done()
