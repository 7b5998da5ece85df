"""The node's per-frame outputs: one pure function per output topic, no rclpy.

Each builder takes the :class:`FrameOutputs` of one segmented frame and returns the message
for ``~/<name>``, computed straight into the message buffer (or None when there is nothing to
publish). :data:`BUILDERS` is the table the node walks for the outputs somebody subscribes
to; the colour mask that ``colored_mask`` and ``overlay`` share is computed once per frame.
"""

from __future__ import annotations

import array
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, MultiArrayDimension

from fvt_segmentation.core.contract import ModelContract
from fvt_segmentation.core.conversions import (
    Frame,
    alloc_image,
    blend,
    class_fractions,
    colorize,
    frame_to_rgb,
    resize_nearest,
)
from fvt_segmentation.core.frame_processing import Segmentation


@dataclass(frozen=True)
class OutputStyle:
    """What the outputs need besides the frame; fixed once the model is loaded."""

    palette: np.ndarray
    num_classes: int
    fractions_label: str
    """The ``class_fractions`` layout label: the category names, comma-separated."""
    image_kwargs: dict[str, bool]
    """Keyword arguments for ``Image()``: ``check_fields=True`` where rclpy takes it, so that
    it keeps the array the output was computed into instead of copying it."""

    @classmethod
    def of(cls, contract: ModelContract, image_kwargs: dict[str, bool]) -> OutputStyle:
        """Return the style of ``contract``'s palette and categories."""
        return cls(contract.palette_array(), len(contract.categories),
                   ','.join(contract.categories), image_kwargs)


@dataclass
class FrameOutputs:
    """One segmented frame, ready to be turned into any of the outputs."""

    style: OutputStyle
    header: Any
    frame: Frame
    result: Segmentation
    mask_resolution: str
    overlay_alpha: float

    @cached_property
    def size(self) -> tuple[int, int]:
        """(h, w) of the image outputs: the input's or the model's (``mask_resolution``)."""
        if self.mask_resolution == 'input':
            return self.frame.size
        return self.result.classes.shape[:2]

    def image(self, encoding: str) -> tuple[Image, np.ndarray]:
        """Return an empty output image with this frame's header and a writable view of it."""
        msg = Image(**self.style.image_kwargs)
        return msg, alloc_image(msg, self.header, self.size, encoding)

    @cached_property
    def colored(self) -> tuple[Image, np.ndarray]:
        """The colour mask message and its pixels, shared by ``colored_mask`` and ``overlay``."""
        msg, pixels = self.image('rgb8')
        colorize(self.result.classes, self.style.palette, out=pixels)
        return msg, pixels


def mask(out: FrameOutputs) -> Image:
    """``~/mask``: class id per pixel, mono8."""
    msg, pixels = out.image('mono8')
    resize_nearest(out.result.classes, out.size, out=pixels)
    return msg


def colored_mask(out: FrameOutputs) -> Image:
    """``~/colored_mask``: the palette colour per pixel, rgb8."""
    return out.colored[0]


def overlay(out: FrameOutputs) -> Image:
    """``~/overlay``: the frame blended with the colour mask by ``overlay_alpha``, rgb8."""
    msg, pixels = out.image('rgb8')
    blend(frame_to_rgb(out.frame, out.size), out.colored[1], out.overlay_alpha, out=pixels)
    return msg


def confidence(out: FrameOutputs) -> Image | None:
    """``~/confidence``: top class probability x 255, mono8; None if the model gave none."""
    if out.result.confidence is None:
        return None
    msg, pixels = out.image('mono8')
    resize_nearest(out.result.confidence, out.size, out=pixels)
    return msg


def fractions(out: FrameOutputs) -> Float32MultiArray:
    """``~/class_fractions``: fraction of pixels per category on the model-resolution map."""
    count = out.style.num_classes
    msg = Float32MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=out.style.fractions_label, size=count,
                                          stride=1)]
    msg.data = array.array('f', class_fractions(out.result.classes, count).tobytes())
    return msg


BUILDERS: dict[str, Callable[[FrameOutputs], Any]] = {
    'mask': mask,
    'colored_mask': colored_mask,
    'overlay': overlay,
    'confidence': confidence,
    'class_fractions': fractions,
}
"""Per-frame outputs, published as ``~/<name>``; each is computed only when subscribed."""
OUTPUTS = tuple(BUILDERS)
MESSAGE_TYPES = {name: Float32MultiArray if name == 'class_fractions' else Image
                 for name in OUTPUTS}
