"""Message <-> numpy conversions on real sensor_msgs messages, pixel-exact."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from fvt_segmentation.core.contract import PALETTE
from fvt_segmentation.core.conversions import (
    ENCODINGS,
    FrameError,
    alloc_image,
    blend,
    class_fractions,
    colorize,
    compressed_size,
    compressed_to_frame,
    frame_to_rgb,
    image_to_frame,
    resize_nearest,
)

RNG = np.random.default_rng(3)
MAX = 10_000


def make_image(pixels: np.ndarray, encoding: str, padding: int = 0) -> Image:
    """An Image whose rows are followed by ``padding`` junk bytes."""
    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1)
    padded = np.concatenate([row, np.full((height, padding), 0xAB, np.uint8)], axis=1)
    msg = Image(height=height, width=width, encoding=encoding, step=row.shape[1] + padding)
    msg.data = array.array('B', padded.tobytes())
    msg.header.frame_id = 'camera'
    return msg


def random_pixels(encoding: str, height: int = 5, width: int = 7) -> np.ndarray:
    channels = ENCODINGS[encoding][0]
    shape = (height, width) if channels == 1 else (height, width, channels)
    return RNG.integers(0, 256, shape, dtype=np.uint8)


EXPECTED_RGB = {
    'rgb8': lambda p: p,
    'bgr8': lambda p: p[:, :, ::-1],
    'rgba8': lambda p: p[:, :, :3],
    'bgra8': lambda p: p[:, :, 2::-1],
    'mono8': lambda p: np.repeat(p[:, :, None], 3, axis=2),
}


@pytest.mark.parametrize('padding', [0, 3])
@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
def test_image_to_frame_is_an_exact_view(encoding: str, padding: int) -> None:
    pixels = random_pixels(encoding)
    msg = make_image(pixels, encoding, padding)
    frame = image_to_frame(msg, MAX)
    assert frame.encoding == encoding
    assert frame.size == (5, 7)
    np.testing.assert_array_equal(frame.pixels, pixels)
    # A view on the message buffer: no copy of the incoming frame.
    assert np.shares_memory(frame.pixels, np.frombuffer(msg.data, np.uint8))
    np.testing.assert_array_equal(frame_to_rgb(frame), EXPECTED_RGB[encoding](pixels))


@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
def test_frame_to_rgb_resizes_from_uint8(encoding: str) -> None:
    pixels = random_pixels(encoding, 8, 12)
    frame = image_to_frame(make_image(pixels, encoding, 2), MAX)
    rgb = frame_to_rgb(frame, (4, 6))
    expected = cv2.resize(np.ascontiguousarray(EXPECTED_RGB[encoding](pixels)), (6, 4),
                          interpolation=cv2.INTER_AREA)
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 6, 3)
    np.testing.assert_array_equal(rgb, expected)


@pytest.mark.parametrize('change, message', [
    ({'encoding': 'yuv422'}, "unsupported encoding 'yuv422'"),
    ({'encoding': '16UC1'}, 'unsupported encoding'),
    ({'step': 20}, 'step 20 is smaller than width*channels = 21'),
    ({'step': 22}, 'data length 105 does not match step*height = 22*5 = 110'),
    ({'height': 0}, 'zero-sized frame (7x0)'),
    ({'width': 0}, 'zero-sized frame (0x5)'),
    ({'height': 5000, 'width': 5000}, 'exceeds max_input_pixels = 10000'),
])
def test_bad_images_are_rejected_with_a_reason(change: dict, message: str) -> None:
    msg = make_image(random_pixels('rgb8'), 'rgb8')
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(FrameError) as err:
        image_to_frame(msg, MAX)
    assert message in str(err.value)


def test_truncated_data_is_rejected() -> None:
    msg = make_image(random_pixels('bgr8'), 'bgr8')
    msg.data = msg.data[:-1]
    with pytest.raises(FrameError, match='data length 104 does not match'):
        image_to_frame(msg, MAX)


def compressed(pixels: np.ndarray, ext: str) -> CompressedImage:
    ok, data = cv2.imencode(ext, pixels)
    assert ok
    msg = CompressedImage(format=ext[1:])
    msg.data = array.array('B', data.tobytes())
    return msg


@pytest.mark.parametrize('shape, encoding', [((6, 9, 3), 'bgr8'), ((6, 9), 'mono8')])
def test_png_decodes_exactly(shape: tuple, encoding: str) -> None:
    pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
    msg = compressed(pixels, '.png')
    assert compressed_size(bytes(msg.data)) == (6, 9)
    frame = compressed_to_frame(msg, MAX)
    assert frame.encoding == encoding
    np.testing.assert_array_equal(frame.pixels, pixels)


def test_png_with_alpha_decodes_to_bgr() -> None:
    pixels = RNG.integers(0, 256, (4, 5, 4), dtype=np.uint8)
    frame = compressed_to_frame(compressed(pixels, '.png'), MAX)
    assert frame.encoding == 'bgr8'
    np.testing.assert_array_equal(frame.pixels, pixels[:, :, :3])


@pytest.mark.parametrize('shape, encoding', [((16, 24, 3), 'bgr8'), ((16, 24), 'mono8')])
def test_jpeg_decodes_like_opencv(shape: tuple, encoding: str) -> None:
    pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
    msg = compressed(pixels, '.jpg')
    assert compressed_size(bytes(msg.data)) == (16, 24)
    frame = compressed_to_frame(msg, MAX)
    assert frame.encoding == encoding
    reference = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(frame.pixels, reference)


def test_enormous_compressed_frame_is_rejected_before_decoding() -> None:
    msg = compressed(np.zeros((4, 4, 3), np.uint8), '.png')
    data = bytearray(msg.data)
    data[16:24] = (100_000).to_bytes(4, 'big') + (100_000).to_bytes(4, 'big')
    msg.data = array.array('B', bytes(data))
    with pytest.raises(FrameError, match='100000x100000 = 10000000000 pixels exceeds'):
        compressed_to_frame(msg, MAX)


@pytest.mark.parametrize('data', [b'', b'not an image at all', b'\xff\xd8\xff\xe0garbage',
                                  b'\x89PNG\r\n\x1a\n' + bytes(8) + b'IHDR' + bytes(20)])
def test_undecodable_compressed_frame_is_rejected(data: bytes) -> None:
    msg = CompressedImage(format='jpeg')
    msg.data = array.array('B', data)
    with pytest.raises(FrameError, match='undecodable compressed frame|zero-sized'):
        compressed_to_frame(msg, MAX)


def test_colorize_matches_colouring_the_resized_class_map() -> None:
    palette = np.asarray(PALETTE, np.uint8)
    classes = RNG.integers(0, 8, (4, 6), dtype=np.uint8)
    np.testing.assert_array_equal(colorize(classes, palette), palette[classes])
    for size in [(8, 12), (9, 5), (4, 6)]:
        np.testing.assert_array_equal(colorize(classes, palette, size),
                                      palette[resize_nearest(classes, size)])


def test_blend_weights_frame_and_mask() -> None:
    rgb = np.full((2, 3, 3), 200, np.uint8)
    mask = np.full((2, 3, 3), 100, np.uint8)
    np.testing.assert_array_equal(blend(rgb, mask, 0.0), rgb)
    np.testing.assert_array_equal(blend(rgb, mask, 1.0), mask)
    np.testing.assert_array_equal(blend(rgb, mask, 0.25), np.full((2, 3, 3), 175, np.uint8))
    with pytest.raises(ValueError, match='one shape'):
        blend(rgb, mask[:1], 0.5)


def test_class_fractions() -> None:
    classes = np.array([[0, 0, 1, 7], [1, 1, 1, 1]], np.uint8)
    fractions = class_fractions(classes, 8)
    assert fractions.dtype == np.float32
    np.testing.assert_allclose(fractions, [0.25, 0.625, 0, 0, 0, 0, 0, 0.125])


@pytest.mark.parametrize('encoding', ['mono8', 'rgb8'])
def test_outputs_are_computed_straight_into_the_message(encoding: str) -> None:
    header = make_image(random_pixels('rgb8'), 'rgb8').header
    classes = RNG.integers(0, 8, (4, 6), dtype=np.uint8)
    palette = np.asarray(PALETTE, np.uint8)
    msg = Image(check_fields=True)
    pixels = alloc_image(msg, header, (8, 12), encoding)
    assert msg.header is header and (msg.height, msg.width, msg.encoding) == (8, 12, encoding)
    assert isinstance(msg.data, array.array)
    assert np.shares_memory(pixels, np.frombuffer(msg.data, np.uint8))
    if encoding == 'mono8':
        assert msg.step == 12 and resize_nearest(classes, (8, 12), out=pixels) is pixels
        expected = resize_nearest(classes, (8, 12))
    else:
        assert msg.step == 36 and colorize(classes, palette, out=pixels) is pixels
        expected = palette[resize_nearest(classes, (8, 12))]
    np.testing.assert_array_equal(image_to_frame(msg, MAX).pixels, expected)


def test_same_size_outputs_are_copied_into_the_message() -> None:
    classes = RNG.integers(0, 8, (4, 6), dtype=np.uint8)
    out = np.zeros((4, 6), np.uint8)
    assert resize_nearest(classes, (4, 6)) is classes  # no output buffer: no copy at all
    np.testing.assert_array_equal(resize_nearest(classes, (4, 6), out=out), classes)
    rgb = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    target = np.zeros_like(rgb)
    assert blend(rgb, rgb, 0.3, out=target) is target
    np.testing.assert_array_equal(target, rgb)


def test_resize_nearest_is_nearest_and_noop_at_same_size():
    cm = np.array([[0, 1], [2, 3]], np.uint8)
    big = resize_nearest(cm, (4, 6))
    assert big.shape == (4, 6) and set(np.unique(big)) == {0, 1, 2, 3}
    assert big[0, 0] == 0 and big[3, 5] == 3
    assert resize_nearest(cm, (2, 2)) is cm


@pytest.mark.parametrize('size', [(480, 640), (144, 192), (1024, 2048)])
def test_resize_nearest_keeps_a_class_map_on_its_linearly_resized_image(size):
    # Each pixel holds its column: after a resize, a map value says which source column the
    # pixel came from and the linearly resized image where that pixel's centre lies.
    columns = np.tile(np.arange(240, dtype=np.uint8), (180, 1))
    came_from = resize_nearest(columns, size).astype(np.float32)
    centre = cv2.resize(columns.astype(np.float32), size[::-1], interpolation=cv2.INTER_LINEAR)
    inside = slice(8, -8)  # the linear resize clamps at the borders
    assert np.abs(came_from - centre)[:, inside].max() <= 0.5 + 1e-4


def test_resize_nearest_there_and_back_gives_the_map_again():
    # The node upscales a 480x360 camera for a 640x480 network and scales the mask back.
    labels = RNG.integers(0, 8, (360, 480), dtype=np.uint8)
    np.testing.assert_array_equal(resize_nearest(resize_nearest(labels, (480, 640)), (360, 480)),
                                  labels)
