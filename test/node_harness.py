"""Run the segmentation node in-process with a probe node that publishes and records.

Each :class:`RosHarness` owns a fresh rclpy Context and an executor spinning in a background
thread, so tests never share ROS state. conftest.py gives every pytest process its own DDS
domain.
"""

from __future__ import annotations

import array
from collections import defaultdict
from collections.abc import Callable
import threading
import time
from typing import Any

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from fvt_segmentation.core import conversions
from fvt_segmentation.node.segmentation_node import SegmentationNode

TIMEOUT = 15.0


def image_msg(pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = 'cam',
              padding: int = 0) -> Image:
    """An Image of ``pixels`` with optional row padding and the given stamp."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    if padding:
        rows = np.concatenate([rows, np.zeros((height, padding), np.uint8)], axis=1)
    msg = Image(height=height, width=width, encoding=encoding, step=rows.shape[1])
    msg.data = array.array('B', rows.tobytes())
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    return msg


def stamp_ns(msg: Any) -> int:
    """Return a header stamp in nanoseconds."""
    return conversions.stamp_ns(msg.header)


class RosHarness:
    """A Context, an executor thread, the node under test and a probe node."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.probe = Node('probe', context=self.context)
        self.executor.add_node(self.probe)
        self.received: dict[str, list[Any]] = defaultdict(list)
        self._cond = threading.Condition()
        self.node: SegmentationNode | None = None
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def start_node(self, model: Any, cli_args: list[str] | None = None, wait: bool = True,
                   **params: Any) -> SegmentationNode:
        """Start the node with ``model_path`` = ``model``, CPU provider and ``params``.

        With ``wait`` (the default) return once the model is loaded in the background.
        """
        params = {'providers': ['cpu'], 'model_path': str(model), **params}
        self.node = SegmentationNode(
            context=self.context, cli_args=cli_args,
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.executor.add_node(self.node)
        if wait:
            model = self.node.model
            assert model.wait_ready(TIMEOUT), f'the model did not load: {model.load_error}'
        return self.node

    def subscribe(self, topic: str, msg_type: Any, key: str | None = None,
                  qos: QoSProfile | None = None) -> Any:
        """Record every message on ``topic`` under ``received[key or topic]``."""
        key = key or topic

        def store(msg: Any) -> None:
            with self._cond:
                self.received[key].append(msg)
                self._cond.notify_all()

        return self.probe.create_subscription(
            msg_type, topic, store, qos or QoSProfile(depth=100))

    def publisher(self, topic: str, msg_type: Any = Image,
                  reliability: ReliabilityPolicy = ReliabilityPolicy.RELIABLE) -> Any:
        """Create a probe publisher and wait until the node's subscription matched it."""
        pub = self.probe.create_publisher(
            msg_type, topic, QoSProfile(depth=10, reliability=reliability))
        self.wait_for(lambda: pub.get_subscription_count() > 0, 'the node to subscribe')
        return pub

    def set_params(self, **values: Any) -> list:
        """Set the node's parameters through its parameter service; return the results."""
        client = AsyncParameterClient(self.probe, 'segmentation_node')
        assert client.wait_for_services(timeout_sec=10.0)
        future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        self.wait_for(future.done, 'set_parameters')
        return future.result().results

    def wait_matched(self, *outputs: str) -> None:
        """Wait until the node's ``~/<output>`` publishers see the probe's subscriptions."""
        assert self.node is not None
        for name in outputs:
            pub = self.node._outputs[name]
            self.wait_for(lambda p=pub: p.get_subscription_count() > 0, f'{name} to match')

    def wait_for(self, predicate: Callable[[], bool], what: str,
                 timeout: float = TIMEOUT) -> None:
        """Block until ``predicate()`` is true; fail naming ``what`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f'timed out after {timeout} s waiting for {what}')
                self._cond.wait(min(left, 0.05))

    def wait_count(self, key: str, count: int, timeout: float = TIMEOUT) -> list[Any]:
        """Wait until ``count`` messages arrived under ``key``; return them all."""
        self.wait_for(lambda: len(self.received[key]) >= count,
                      f'{count} message(s) on {key} (got {len(self.received[key])})', timeout)
        return self.received[key]

    def close(self) -> None:
        """Stop spinning and destroy everything."""
        self.executor.shutdown(timeout_sec=5.0)
        if self.node is not None:
            self.node.destroy_node()
        self.probe.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)


LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
