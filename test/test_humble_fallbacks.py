"""Humble support, tested without Humble: the node with the Iron-and-later APIs hidden.

Humble has no PyPI wheels. Its rclpy lacks ``Node.add_post_set_parameters_callback`` (and
the pre-set one) and ``Subscription.get_publisher_count``, and its generated message
constructors reject ``check_fields`` with an AssertionError. The ``humble`` fixture removes
exactly those from the installed rclpy and messages; the real node then has to start, serve
its parameters through the real parameter services, validate them and segment frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import diagnostic_msgs.msg
from node_harness import RosHarness, image_msg
import numpy as np
import pytest
import rcl_interfaces.msg
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.subscription import Subscription
import sensor_msgs.msg
from sensor_msgs.msg import Image
import std_msgs.msg

from fvt_segmentation.core.conversions import resize_nearest
from fvt_segmentation.node.ros_compat import (
    CHECK_FIELDS_FALLBACK,
    POST_SET_FALLBACK,
    publisher_count,
)

IRON_NODE_APIS = ('add_pre_set_parameters_callback', 'add_post_set_parameters_callback')
MESSAGE_MODULES = (sensor_msgs.msg, std_msgs.msg, diagnostic_msgs.msg, rcl_interfaces.msg)
NODE = '/segmentation_node'


def humble_constructor(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a generated ``__init__`` so that it rejects ``check_fields`` as Humble's does."""
    def init_without_check_fields(self: Any, **kwargs: Any) -> None:
        if 'check_fields' in kwargs:
            raise AssertionError('Invalid arguments passed to constructor: check_fields')
        init(self, **kwargs)
    return init_without_check_fields


@pytest.fixture
def humble(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Hide the Iron-and-later rclpy and rosidl APIs that the package uses, as on Humble."""
    for name in IRON_NODE_APIS:
        monkeypatch.delattr(Node, name)
    monkeypatch.delattr(Subscription, 'get_publisher_count')
    for module in MESSAGE_MODULES:
        for cls in vars(module).values():
            if isinstance(cls, type) and '_check_fields' in getattr(cls, '__slots__', ()):
                monkeypatch.setattr(cls, '__init__', humble_constructor(cls.__init__))
    yield


@pytest.fixture
def ros() -> Iterator[RosHarness]:
    harness = RosHarness()
    yield harness
    harness.close()


def call(ros: RosHarness, service_type: Any, name: str, request: Any) -> Any:
    """Call a service of the node under test from the probe node; return the response."""
    client = ros.probe.create_client(service_type, f'{NODE}/{name}')
    assert client.wait_for_service(timeout_sec=10.0), name
    future = client.call_async(request)
    ros.wait_for(future.done, name)
    ros.probe.destroy_client(client)
    return future.result()


def get_value(ros: RosHarness, name: str) -> Any:
    request = GetParameters.Request(names=[name])
    [value] = call(ros, GetParameters, 'get_parameters', request).values
    return Parameter.from_parameter_msg(ParameterMsg(name=name, value=value)).value


def set_value(ros: RosHarness, name: str, value: Any) -> Any:
    request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    [result] = call(ros, SetParameters, 'set_parameters', request).results
    return result


def test_the_hidden_apis_are_gone(humble) -> None:
    assert not any(hasattr(Node, name) for name in IRON_NODE_APIS)
    assert not hasattr(Subscription, 'get_publisher_count')
    with pytest.raises(AssertionError, match='check_fields'):
        Image(check_fields=True)


def test_node_starts_serves_and_validates_parameters(humble, ros: RosHarness,
                                                    tiny_model: Path) -> None:
    node = ros.start_node(tiny_model)
    assert node.fallbacks == [POST_SET_FALLBACK, CHECK_FIELDS_FALLBACK.format(name='Image')]

    assert get_value(ros, 'overlay_alpha') == 0.5
    assert set_value(ros, 'overlay_alpha', 0.25).successful
    assert get_value(ros, 'overlay_alpha') == 0.25
    assert node.settings.overlay_alpha == 0.25

    for name, value, reason in [
            ('mask_resolution', 'full', "mask_resolution must be one of ['input', 'model']"),
            ('overlay_alpha', 1.5, 'out of range'),
            ('model_path', '/tmp/other.onnx', 'read-only')]:
        result = set_value(ros, name, value)
        assert not result.successful, name
        assert reason in result.reason, result.reason
    assert get_value(ros, 'mask_resolution') == 'input'
    assert node.settings.mask_resolution == 'input' and node.settings.overlay_alpha == 0.25


def test_outputs_and_runtime_changes_work(humble, ros: RosHarness, tiny_model: Path) -> None:
    node = ros.start_node(tiny_model, publish_overlay=False, publish_colored_mask=False,
                          publish_confidence=False, publish_class_fractions=False)
    ros.subscribe(f'{NODE}/mask', Image, 'mask')
    ros.wait_matched('mask')
    pub = ros.publisher('/image')
    pixels = np.random.default_rng(3).integers(0, 256, (48, 80, 3), np.uint8)
    expected = node.model.segmenter.segment(pixels, 'RGB').classes

    pub.publish(image_msg(pixels, 'rgb8', 1))
    [mask] = ros.wait_count('mask', 1)
    # The message built without check_fields really carries the mask computed into it.
    np.testing.assert_array_equal(np.asarray(mask.data).reshape(48, 80),
                                  resize_nearest(expected, (48, 80)))

    assert set_value(ros, 'mask_resolution', 'model').successful
    pub.publish(image_msg(pixels, 'rgb8', 2))
    mask = ros.wait_count('mask', 2)[1]
    assert (mask.height, mask.width) == expected.shape
    np.testing.assert_array_equal(np.asarray(mask.data).reshape(expected.shape), expected)


def test_invalid_startup_value_stops_the_node(humble, ros: RosHarness,
                                              tiny_model: Path) -> None:
    with pytest.raises(ParameterException, match='mask_resolution must be one of'):
        ros.start_node(tiny_model, mask_resolution='full')


def test_publisher_count_without_subscription_api(humble, ros: RosHarness) -> None:
    subscription = ros.subscribe('/counted', Image)
    assert publisher_count(ros.probe, subscription) == 0
    ros.probe.create_publisher(Image, '/counted', 1)
    ros.wait_for(lambda: publisher_count(ros.probe, subscription) == 1, 'the publisher')


def test_no_fallback_where_the_apis_exist(ros: RosHarness, tiny_model: Path) -> None:
    assert ros.start_node(tiny_model).fallbacks == []
