"""The node's outputs as pure functions: one hand-made frame and class map, no node, no rclpy."""

from __future__ import annotations

import numpy as np
import pytest
from std_msgs.msg import Header

from fvt_segmentation.core.contract import CATEGORIES, PALETTE, ModelContract
from fvt_segmentation.core.conversions import Frame
from fvt_segmentation.core.frame_processing import Segmentation
from fvt_segmentation.node.outputs import (
    BUILDERS,
    MESSAGE_TYPES,
    OUTPUTS,
    FrameOutputs,
    OutputStyle,
)

CLASSES = np.array([[0, 1], [7, 1]], np.uint8)
CONFIDENCE = np.array([[255, 128], [0, 64]], np.uint8)
STYLE = OutputStyle.of(ModelContract(), {})


def frame_outputs(mask_resolution: str = 'input', alpha: float = 0.5,
                  confidence: np.ndarray | None = CONFIDENCE) -> FrameOutputs:
    header = Header(frame_id='cam')
    header.stamp.sec = 7
    pixels = np.full((4, 4, 3), 200, np.uint8)  # a grey bgr8 frame at twice the model size
    result = Segmentation(CLASSES, confidence, {})
    return FrameOutputs(STYLE, header, Frame(pixels, 'bgr8'), result, mask_resolution, alpha)


def pixels_of(msg: object) -> np.ndarray:
    data = np.frombuffer(msg.data, np.uint8)
    return data.reshape(msg.height, msg.width, -1).squeeze(-1) if msg.encoding == 'mono8' \
        else data.reshape(msg.height, msg.width, 3)


def test_the_table_covers_every_output_with_its_message_type() -> None:
    assert OUTPUTS == ('mask', 'colored_mask', 'overlay', 'confidence', 'class_fractions')
    assert set(BUILDERS) == set(MESSAGE_TYPES) == set(OUTPUTS)
    out = frame_outputs()
    for name in OUTPUTS:
        assert isinstance(BUILDERS[name](out), MESSAGE_TYPES[name]), name


@pytest.mark.parametrize('resolution, size', [('input', (4, 4)), ('model', (2, 2))])
def test_image_outputs_carry_the_header_at_the_chosen_resolution(
        resolution: str, size: tuple[int, int]) -> None:
    out = frame_outputs(resolution)
    for name in ('mask', 'colored_mask', 'overlay', 'confidence'):
        msg = BUILDERS[name](out)
        assert (msg.header.frame_id, msg.header.stamp.sec) == ('cam', 7), name
        assert (msg.height, msg.width) == size, name


def test_mask_and_confidence_are_the_maps_resized_nearest() -> None:
    out = frame_outputs()
    np.testing.assert_array_equal(pixels_of(BUILDERS['mask'](out)),
                                  np.kron(CLASSES, np.ones((2, 2), np.uint8)))
    np.testing.assert_array_equal(pixels_of(BUILDERS['confidence'](out)),
                                  np.kron(CONFIDENCE, np.ones((2, 2), np.uint8)))
    assert BUILDERS['confidence'](frame_outputs(confidence=None)) is None


def test_colored_mask_and_overlay_share_one_colour_mask() -> None:
    palette = np.asarray(PALETTE, np.uint8)
    out = frame_outputs('model', alpha=1.0)
    colored = BUILDERS['colored_mask'](out)
    assert BUILDERS['colored_mask'](out) is colored  # computed once per frame
    np.testing.assert_array_equal(pixels_of(colored), palette[CLASSES])
    np.testing.assert_array_equal(pixels_of(BUILDERS['overlay'](out)), palette[CLASSES])
    grey = pixels_of(BUILDERS['overlay'](frame_outputs('model', alpha=0.0)))
    np.testing.assert_array_equal(grey, np.full((2, 2, 3), 200, np.uint8))


def test_class_fractions_are_labelled_with_the_categories() -> None:
    msg = BUILDERS['class_fractions'](frame_outputs())
    (dim,) = msg.layout.dim
    assert (dim.label, dim.size, dim.stride) == (','.join(CATEGORIES), len(CATEGORIES), 1)
    np.testing.assert_allclose(msg.data, [0.25, 0.5, 0, 0, 0, 0, 0, 0.25])
