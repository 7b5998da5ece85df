"""ROS image messages <-> numpy arrays, colour masks and overlays (no rclpy import).

Messages are duck-typed: anything with the fields of ``sensor_msgs/Image`` or
``sensor_msgs/CompressedImage`` works, so the tests and tools use plain objects too.
Incoming pixels are viewed, never copied: ``np.frombuffer`` on ``msg.data`` (an
``array.array`` in rclpy) plus a strided view that skips the row padding of ``step``.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
import struct
from typing import Any

import cv2
import numpy as np

ENCODINGS: dict[str, tuple[int, str]] = {
    'rgb8': (3, 'RGB'),
    'bgr8': (3, 'BGR'),
    'rgba8': (4, 'RGB'),
    'bgra8': (4, 'BGR'),
    'mono8': (1, 'RGB'),
}
"""Supported input encodings: channel count and colour order (alpha, if any, is last)."""

_TO_RGB = {
    'bgr8': cv2.COLOR_BGR2RGB,
    'rgba8': cv2.COLOR_RGBA2RGB,
    'bgra8': cv2.COLOR_BGRA2RGB,
    'mono8': cv2.COLOR_GRAY2RGB,
}


def stamp_ns(header: Any) -> int:
    """Return a message header's stamp in nanoseconds (rclpy or rosbags message)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class FrameError(ValueError):
    """An input frame the node cannot use; the message says what was expected and got."""


@dataclass(frozen=True)
class Frame:
    """A decoded camera frame: uint8 pixels (a view where possible) and their encoding."""

    pixels: np.ndarray
    encoding: str

    @property
    def color_order(self) -> str:
        """'RGB' or 'BGR', as the inference core expects it (mono counts as RGB)."""
        return ENCODINGS[self.encoding][1]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.pixels.shape[0], self.pixels.shape[1]


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise FrameError(f'zero-sized frame ({width}x{height})')
    if height * width > max_pixels:
        raise FrameError(f'frame of {width}x{height} = {height * width} pixels exceeds '
                         f'max_input_pixels = {max_pixels}')


def image_to_frame(msg: Any, max_pixels: int) -> Frame:
    """View a ``sensor_msgs/Image`` as a numpy frame without copying its buffer.

    Row padding (``step > width * channels``) is skipped with a strided view. Raises
    :class:`FrameError` for an unsupported encoding, a zero-sized or too large frame, a
    ``step`` smaller than one row, or a data length other than ``step * height``.
    """
    encoding = msg.encoding
    if encoding not in ENCODINGS:
        raise FrameError(f'unsupported encoding {encoding!r}; expected one of '
                         f'{sorted(ENCODINGS)}')
    channels = ENCODINGS[encoding][0]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(height, width, max_pixels)
    row = width * channels
    if step < row:
        raise FrameError(f'step {step} is smaller than width*channels = {row} '
                         f'({width}x{height} {encoding})')
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if buffer.size != step * height:
        raise FrameError(f'data length {buffer.size} does not match step*height = '
                         f'{step}*{height} = {step * height} ({width}x{height} {encoding})')
    rows = buffer.reshape(height, step)[:, :row]
    pixels = rows if channels == 1 else rows.reshape(height, width, channels)
    return Frame(pixels, encoding)


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) >= 24 and data[12:16] == b'IHDR':
        width, height = struct.unpack('>II', data[16:24])
        return height, width
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    # Walk the marker segments up to the first start-of-frame (SOF0..SOF15 except DHT, JPG,
    # DAC), which holds the frame size; no pixel data is touched.
    pos = 2
    while pos + 9 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack('>HH', data[pos + 5:pos + 9])
            return height, width
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        pos += 2 + struct.unpack('>H', data[pos + 2:pos + 4])[0]
    return None


def compressed_size(data: bytes) -> tuple[int, int] | None:
    """Return the (height, width) a PNG or JPEG header announces, or None if unknown."""
    if data[:8] == b'\x89PNG\r\n\x1a\n':
        return _png_size(data)
    if data[:2] == b'\xff\xd8':
        return _jpeg_size(data)
    return None


def compressed_to_frame(msg: Any, max_pixels: int) -> Frame:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG) into a bgr8 or mono8 frame.

    The size announced by the header is checked against ``max_pixels`` before decoding, so a
    hostile or broken frame cannot make the node allocate gigabytes. Raises
    :class:`FrameError` for an unknown format or undecodable data.
    """
    data = np.frombuffer(msg.data, dtype=np.uint8)
    head = data[:4096].tobytes()
    size = compressed_size(head)
    if size is None:
        raise FrameError(f'undecodable compressed frame: expected JPEG or PNG data; format '
                         f'field is {msg.format!r}, first bytes {head[:8]!r} '
                         f'({data.size} bytes)')
    _check_size(size[0], size[1], max_pixels)
    # IMREAD_ANYCOLOR keeps grey images grey (mono8) and turns colour into 8-bit BGR.
    pixels = cv2.imdecode(data, cv2.IMREAD_ANYCOLOR)
    if pixels is None:
        raise FrameError(f'undecodable compressed frame ({msg.format!r}, {data.size} bytes, '
                         f'header says {size[1]}x{size[0]})')
    return Frame(pixels, 'mono8' if pixels.ndim == 2 else 'bgr8')


def frame_to_rgb(frame: Frame, size: tuple[int, int] | None = None) -> np.ndarray:
    """Return the frame as HxWx3 RGB uint8, resized to ``size`` = (h, w) if given.

    Resizing happens before the colour conversion, on the uint8 pixels. An rgb8 frame at its
    own size is returned as is (a view).
    """
    pixels = frame.pixels
    if size is not None and tuple(size) != frame.size:
        if frame.encoding in ('rgba8', 'bgra8'):
            pixels = pixels[:, :, :3]
        pixels = cv2.resize(pixels, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        encoding = {'rgba8': 'rgb8', 'bgra8': 'bgr8'}.get(frame.encoding, frame.encoding)
    else:
        encoding = frame.encoding
    if encoding == 'rgb8':
        return pixels
    # OpenCV reads row-padded views directly (the row step becomes the Mat step).
    return cv2.cvtColor(pixels, _TO_RGB[encoding])


# OpenCV's INTER_NEAREST takes input pixel floor(x * in / out) for output pixel x: a map
# resized with it lands up to one pixel off the same image resized linearly or by area, which
# both map pixel centres (CamVid val's labels scaled to 640x480 and back so kept an object IoU
# of 0.785: models/README.md, "Label alignment"). INTER_NEAREST_EXACT maps pixel centres too,
# so a resized mask stays on its image.
NEAREST = cv2.INTER_NEAREST_EXACT
"""The OpenCV interpolation flag for every resize of class, label or colour maps."""


def resize_nearest(src: np.ndarray, size: tuple[int, int],
                   out: np.ndarray | None = None) -> np.ndarray:
    """Resize a class, confidence or colour map to ``size`` = (h, w), nearest neighbour.

    Pixel centres are aligned (:data:`NEAREST`), as in the linear and area resizes of images.

    With ``out`` (a writable array of the target shape, e.g. a message buffer from
    :func:`alloc_image`) the result is written there directly, without an intermediate array.
    """
    if out is None:
        if src.shape[:2] == tuple(size):
            return src
        return cv2.resize(src, (size[1], size[0]), interpolation=NEAREST)
    if src.shape[:2] == tuple(size):
        np.copyto(out, src)
        return out
    return cv2.resize(src, (size[1], size[0]), dst=out, interpolation=NEAREST)


def colorize(classes: np.ndarray, palette: np.ndarray, size: tuple[int, int] | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
    """Return the HxWx3 RGB colour mask of a class map, at ``size`` = (h, w) if given.

    The palette lookup runs on the (small) model-resolution map and the colours are then
    resized with nearest neighbour: the same pixels as colouring the resized class map, at a
    tenth of the cost for a 2 MP frame. ``out`` receives the result if given.
    """
    if out is not None:
        size = out.shape[:2]
    return resize_nearest(palette[classes], size or classes.shape[:2], out)


def blend(rgb: np.ndarray, color_mask: np.ndarray, alpha: float,
          out: np.ndarray | None = None) -> np.ndarray:
    """Return ``(1 - alpha) * rgb + alpha * color_mask`` as uint8 (same size required)."""
    if rgb.shape != color_mask.shape:
        raise ValueError(f'overlay needs a frame and a colour mask of one shape; got '
                         f'{rgb.shape} and {color_mask.shape}')
    return cv2.addWeighted(rgb, 1.0 - alpha, color_mask, alpha, 0.0, dst=out)


def class_fractions(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Return the fraction of pixels of each class id as a float32 vector of ``num_classes``."""
    counts = np.bincount(classes.ravel(), minlength=num_classes)[:num_classes]
    return (counts / max(classes.size, 1)).astype(np.float32)


def alloc_image(msg: Any, header: Any, size: tuple[int, int], encoding: str) -> np.ndarray:
    """Set up an empty ``sensor_msgs/Image`` of ``size`` = (h, w); return a view of its data.

    ``msg.data`` becomes a new ``array.array('B')`` and the returned writable numpy view
    (HxW for mono8, HxWxC otherwise) lets the caller compute the output straight into the
    message: no copy between the result and the message. Create ``msg`` with
    ``check_fields=True`` where the message takes it (Iron on), otherwise rclpy copies the
    array once more on assignment; the view is of the array the message really holds.
    """
    channels = ENCODINGS[encoding][0]
    height, width = int(size[0]), int(size[1])
    msg.header = header
    msg.height, msg.width = height, width
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = width * channels
    msg.data = array.array('B', b'\0') * (height * width * channels)
    view = np.frombuffer(msg.data, dtype=np.uint8)
    return view.reshape(height, width) if channels == 1 else view.reshape(height, width, channels)
