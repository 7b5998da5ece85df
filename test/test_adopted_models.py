"""Public models adopted with ``fvt-train adopt``, run by the real node with real messages.

The stand-ins of public_models.py are adopted by the training package (skipped where it is
not installed; an import error inside it fails) and the node must publish, for frames it
receives, the mask of the official class -> category mapping pixel for pixel, at the model's
output resolution and resized to the frame, with its colour mask, overlay and confidence.
"""

from __future__ import annotations

import hashlib
import importlib.util

from node_harness import RosHarness, image_msg
import numpy as np
from public_models import SOURCES, patchwork
import pytest
from sensor_msgs.msg import Image

from fvt_segmentation.core.contract import PALETTE
from fvt_segmentation.core.conversions import blend, image_to_frame

if importlib.util.find_spec('fvt_training') is None:
    pytest.skip('adopting needs the training package, not installed here',
                allow_module_level=True)
# Installed: an import error inside the package fails this module instead of skipping it.
from fvt_training.adopt import adopt  # noqa: E402
from fvt_training.adopt.inspection import AdoptOptions  # noqa: E402

NS = '/segmentation_node'
LICENCE = 'stand-in weights, test only'
PALETTE_ARRAY = np.asarray(PALETTE, np.uint8)
OUTPUTS = ('mask', 'colored_mask', 'overlay', 'confidence')


@pytest.fixture(scope='module', params=sorted(SOURCES))
def adopted(request, tmp_path_factory):
    spec = SOURCES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    source = spec.build(folder / f'{request.param}.onnx')
    out = folder / 'adopted.onnx'
    adopt.adopt(source, out, AdoptOptions(licence=LICENCE, **spec.adopt_kwargs()))
    return spec, source, out


@pytest.fixture
def ros():
    harness = RosHarness()
    yield harness
    harness.close()


def pixels_of(msg: Image) -> np.ndarray:
    return image_to_frame(msg, 1 << 30).pixels


def receive(ros: RosHarness, frame: np.ndarray, encoding: str, count: int) -> dict:
    """Publish one frame and return the ``count``-th message of every output."""
    pub = ros.publisher('/image')
    pixels = frame[:, :, ::-1].copy() if encoding == 'bgr8' else frame
    pub.publish(image_msg(pixels, encoding, 1_700_000_000_000_000_000 + count, 'cam'))
    return {name: ros.wait_count(name, count)[count - 1] for name in OUTPUTS}


@pytest.mark.parametrize('mask_resolution', ['model', 'input'])
def test_node_publishes_the_official_mapping(ros: RosHarness, adopted, mask_resolution: str,
                                             capfd) -> None:
    spec, source, out = adopted
    node = ros.start_node(out, mask_resolution=mask_resolution)
    for name in OUTPUTS:
        ros.subscribe(f'{NS}/{name}', Image, name)
    ros.wait_matched(*OUTPUTS)
    for i, encoding in enumerate(('rgb8', 'bgr8')):
        frame = patchwork(spec.input_size, seed=10 + i)
        probabilities, mask = spec.expected(source, frame)
        confidence = np.clip(probabilities.max(axis=-1) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if mask_resolution == 'input':
            # Nearest-neighbour upsampling by the output stride: each cell becomes a block.
            rows, cols = (s // m for s, m in zip(spec.input_size, mask.shape, strict=True))
            mask = np.repeat(np.repeat(mask, rows, axis=0), cols, axis=1)
            confidence = np.repeat(np.repeat(confidence, rows, axis=0), cols, axis=1)
        got = receive(ros, frame, encoding, i + 1)
        np.testing.assert_array_equal(pixels_of(got['mask']), mask)
        assert len(np.unique(mask)) >= 3
        np.testing.assert_array_equal(pixels_of(got['colored_mask']), PALETTE_ARRAY[mask])
        if mask_resolution == 'input':
            np.testing.assert_array_equal(pixels_of(got['overlay']),
                                          blend(frame, PALETTE_ARRAY[mask], 0.5))
        assert pixels_of(got['overlay']).shape == (*mask.shape, 3)
        assert np.abs(pixels_of(got['confidence']).astype(int) - confidence).max() <= 1
    counts = node.counters.snapshot()
    assert counts['processed'] == 2 and counts['failed'] == counts['rejected'] == 0
    log = capfd.readouterr().err
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert 'ready: model adopted' in log and digest in log and LICENCE in log
    assert f'labels={spec.labels}' in log and 'mapping=' in log
