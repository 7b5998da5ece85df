"""The segmentation node end to end, in-process: real rclpy, real messages, tiny ONNX models."""

from __future__ import annotations

import array
import functools
import json
from pathlib import Path
import threading
import time

import cv2
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from fake_providers import MISSING, FakeGpu
from node_harness import LATCHED, RosHarness, image_msg, stamp_ns
import numpy as np
from onnx_models import build_model, default_weights, expected_scores, to_v2
import pytest
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32MultiArray, String

from fvt_segmentation.core.contract import CATEGORIES, PALETTE, ModelContract, Normalization
from fvt_segmentation.core.conversions import blend, image_to_frame, resize_nearest
from fvt_segmentation.core.frame_processing import preprocess_frame
from fvt_segmentation.core.model_choice import load_model
from fvt_segmentation.core.providers import CUDA, TENSORRT
from fvt_segmentation.core.segmenter import Segmenter
from fvt_segmentation.node import model_holder
from fvt_segmentation.node.pipeline_stats import STAGES

MODEL_SIZE = (32, 64)
# Pixels normalised to [-1, 1] make the tiny model's affine classifier use most classes.
CONTRACT = ModelContract(normalization=Normalization(mean=(0.5,) * 3, std=(0.5,) * 3))
PALETTE_ARRAY = np.asarray(PALETTE, np.uint8)
NS = '/segmentation_node'


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return build_model(tmp_path / 'varied.onnx', size=MODEL_SIZE, contract=CONTRACT)


@pytest.fixture
def ros():
    harness = RosHarness()
    yield harness
    harness.close()


def frame_pixels(seed: int, height: int = 48, width: int = 80, channels: int = 3) -> np.ndarray:
    """Smooth colour gradients plus noise, so the tiny model sees several classes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 127 // (width + height)],
                    axis=2)
    noisy = base + rng.integers(-40, 40, (height, width, 3))
    pixels = np.clip(noisy, 0, 255).astype(np.uint8)
    if channels == 1:
        return pixels[:, :, 0].copy()
    if channels == 4:
        return np.concatenate([pixels, np.full((height, width, 1), 255, np.uint8)], axis=2)
    return pixels


def expected(frame: np.ndarray, order: str) -> tuple[np.ndarray, np.ndarray]:
    """The tiny model's class map at model resolution and where its top-2 margin is clear."""
    tensor = preprocess_frame(frame, order, MODEL_SIZE, CONTRACT)
    scores = np.sort(expected_scores(tensor[0], default_weights()), axis=2)
    classes = np.argmax(expected_scores(tensor[0], default_weights()), axis=2).astype(np.uint8)
    clear = (scores[:, :, -1] - scores[:, :, -2]) > 1e-3
    return classes, clear


def assert_classes(mask: np.ndarray, frame: np.ndarray, order: str) -> None:
    classes, clear = expected(frame, order)
    size = mask.shape[:2]
    want = resize_nearest(classes, size)
    where = resize_nearest(clear.astype(np.uint8), size).astype(bool)
    assert where.mean() > 0.95
    np.testing.assert_array_equal(mask[where], want[where])
    assert len(np.unique(want)) >= 2  # the frame really exercises several classes


def pixels_of(msg: Image) -> np.ndarray:
    return image_to_frame(msg, 1 << 30).pixels


ALL_OUTPUTS = ('mask', 'colored_mask', 'overlay', 'confidence')


def subscribe_outputs(ros: RosHarness, *names: str) -> None:
    for name in names:
        ros.subscribe(f'{NS}/{name}',
                      Float32MultiArray if name == 'class_fractions' else Image, name)
    ros.wait_matched(*names)


@pytest.mark.parametrize('encoding, padding', [('bgr8', 5), ('rgb8', 0), ('mono8', 3),
                                               ('bgra8', 0)])
def test_every_output_per_frame(ros: RosHarness, model: Path, encoding: str,
                                padding: int) -> None:
    node = ros.start_node(model)
    subscribe_outputs(ros, *ALL_OUTPUTS, 'class_fractions')
    pub = ros.publisher('/image')
    channels = {'mono8': 1, 'bgra8': 4}.get(encoding, 3)
    order = 'BGR' if encoding.startswith('bgr') else 'RGB'
    for i in range(3):
        pixels = frame_pixels(i, channels=channels)
        stamp = 1_700_000_000_000_000_000 + i * 33_000_000
        pub.publish(image_msg(pixels, encoding, stamp, f'cam{i}', padding))
        for name in (*ALL_OUTPUTS, 'class_fractions'):
            ros.wait_count(name, i + 1)
        mask_msg = ros.received['mask'][i]
        assert stamp_ns(mask_msg) == stamp and mask_msg.header.frame_id == f'cam{i}'
        assert (mask_msg.height, mask_msg.width, mask_msg.encoding) == (48, 80, 'mono8')
        mask = pixels_of(mask_msg)
        assert_classes(mask, pixels, order)
        colored = ros.received['colored_mask'][i]
        assert stamp_ns(colored) == stamp and colored.encoding == 'rgb8'
        np.testing.assert_array_equal(pixels_of(colored), PALETTE_ARRAY[mask])
        rgb = {'bgr8': lambda p: p[:, :, ::-1], 'bgra8': lambda p: p[:, :, 2::-1],
               'mono8': lambda p: np.repeat(p[:, :, None], 3, axis=2)}.get(
                   encoding, lambda p: p)(pixels)
        overlay = ros.received['overlay'][i]
        assert overlay.header.frame_id == f'cam{i}'
        np.testing.assert_array_equal(
            pixels_of(overlay), blend(np.ascontiguousarray(rgb), PALETTE_ARRAY[mask], 0.5))
        confidence = ros.received['confidence'][i]
        assert (confidence.height, confidence.width, confidence.encoding) == (48, 80, 'mono8')
        assert stamp_ns(confidence) == stamp
        assert pixels_of(confidence).min() >= 255 // 8  # top probability of 8 classes
        fractions = ros.received['class_fractions'][i]
        assert fractions.layout.dim[0].label == ','.join(CATEGORIES)
        assert fractions.layout.dim[0].size == 8
        want, _ = expected(pixels, order)
        np.testing.assert_allclose(
            fractions.data, np.bincount(want.ravel(), minlength=8) / want.size, atol=0.01)
    counts = node.counters.snapshot()
    assert counts['received'] == counts['processed'] == 3
    assert counts['rejected'] == counts['dropped'] == 0


def test_categories_are_latched_for_late_joiners(ros: RosHarness, model: Path) -> None:
    ros.start_node(model)
    time.sleep(0.2)
    ros.subscribe(f'{NS}/categories', String, 'categories', LATCHED)
    doc = json.loads(ros.wait_count('categories', 1)[0].data)
    assert [c['name'] for c in doc['categories']] == list(CATEGORIES)
    assert [tuple(c['color']) for c in doc['categories']] == list(PALETTE)


def test_compressed_png_and_jpeg_input(ros: RosHarness, model: Path) -> None:
    node = ros.start_node(model, cli_args=['--ros-args', '-r', 'image:=/cam/front'],
                          input_transport='compressed')
    assert node.input_topic == '/cam/front/compressed'
    subscribe_outputs(ros, 'mask')
    pub = ros.publisher('/cam/front/compressed', CompressedImage)
    pixels = frame_pixels(5)
    for i, ext in enumerate(('.png', '.jpg')):
        ok, data = cv2.imencode(ext, pixels)
        msg = CompressedImage(format=ext[1:])
        msg.header.frame_id = f'c{i}'
        msg.data = array.array('B', data.tobytes())
        pub.publish(msg)
        mask_msg = ros.wait_count('mask', i + 1)[i]
        assert mask_msg.header.frame_id == f'c{i}'
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
        assert_classes(pixels_of(mask_msg), decoded, 'BGR')


@pytest.mark.parametrize('reliability', [ReliabilityPolicy.BEST_EFFORT,
                                         ReliabilityPolicy.RELIABLE])
def test_best_effort_and_reliable_publishers_connect(ros: RosHarness, model: Path,
                                                     reliability: ReliabilityPolicy) -> None:
    ros.start_node(model)
    subscribe_outputs(ros, 'mask')
    pub = ros.publisher('/image', reliability=reliability)
    # Best effort may lose a sample while discovery settles: publish until one comes back.
    for i in range(50):
        pub.publish(image_msg(frame_pixels(1), 'rgb8', i + 1))
        try:
            ros.wait_count('mask', 1, timeout=0.5)
            break
        except AssertionError:
            continue
    assert ros.received['mask'], 'no mask for any frame'


def test_reliable_input_qos_ignores_best_effort_publishers(ros: RosHarness,
                                                           model: Path) -> None:
    node = ros.start_node(model, input_reliability='reliable', input_depth=3)
    pub = ros.probe.create_publisher(
        Image, '/image', QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    reliable = ros.publisher('/image')  # waits for discovery of the node's subscription
    assert node._subscription.handle is not None
    assert reliable.get_subscription_count() == 1
    assert pub.get_subscription_count() == 0  # incompatible QoS: never matched


BAD_FRAMES = [
    ('unsupported encoding', lambda: image_msg(frame_pixels(0), 'yuv422', 1)),
    ('short data', lambda: _truncated()),
    ('zero size', lambda: Image(height=0, width=0, encoding='rgb8', step=0)),
    ('enormous', lambda: _enormous()),
    ('step too small', lambda: _with(image_msg(frame_pixels(0), 'rgb8', 1), step=10)),
]


def _with(msg: Image, **fields) -> Image:
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


def _truncated() -> Image:
    msg = image_msg(frame_pixels(0), 'rgb8', 1)
    msg.data = msg.data[:-7]
    return msg


def _enormous() -> Image:
    return image_msg(np.zeros((60, 60), np.uint8), 'mono8', 1)  # max_input_pixels is 3000


def test_bad_frames_are_rejected_and_the_next_good_frame_is_processed(
        ros: RosHarness, model: Path) -> None:
    node = ros.start_node(model, max_input_pixels=3000, diagnostics_period=0.2)
    subscribe_outputs(ros, 'mask')
    ros.subscribe('/diagnostics', DiagnosticArray, 'diagnostics')
    pub = ros.publisher('/image')
    for i, (what, make) in enumerate(BAD_FRAMES):
        pub.publish(make())
        ros.wait_for(lambda n=i + 1: node.counters.snapshot()['rejected'] == n, what)
        good = frame_pixels(i, 40, 60)
        pub.publish(image_msg(good, 'rgb8', 1000 + i, 'good'))
        mask_msg = ros.wait_count('mask', i + 1)[i]
        assert stamp_ns(mask_msg) == 1000 + i and mask_msg.header.frame_id == 'good'
        assert_classes(pixels_of(mask_msg), good, 'RGB')
    counts = node.counters.snapshot()
    assert counts['rejected'] == len(BAD_FRAMES)
    assert counts['processed'] == len(BAD_FRAMES)
    assert counts['failed'] == 0

    def rejected_reported() -> bool:
        return any(v.key == 'frames_rejected' and v.value == str(len(BAD_FRAMES))
                   for msg in ros.received['diagnostics'] for s in msg.status
                   for v in s.values)
    ros.wait_for(rejected_reported, 'diagnostics counting the rejected frames')


def test_undecodable_compressed_frame_is_rejected(ros: RosHarness, model: Path) -> None:
    node = ros.start_node(model, input_transport='compressed')
    subscribe_outputs(ros, 'mask')
    pub = ros.publisher('/image/compressed', CompressedImage)
    broken = CompressedImage(format='jpeg')
    broken.data = array.array('B', b'\xff\xd8\xff\xe0 this is not a jpeg')
    pub.publish(broken)
    ros.wait_for(lambda: node.counters.snapshot()['rejected'] == 1, 'the rejection')
    ok, data = cv2.imencode('.png', frame_pixels(2))
    good = CompressedImage(format='png')
    good.data = array.array('B', data.tobytes())
    pub.publish(good)
    assert ros.wait_count('mask', 1)[0].height == 48


def rss_bytes() -> int:
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    raise RuntimeError('no VmRSS in /proc/self/status')


def test_slow_model_drops_frames_instead_of_building_a_backlog(
        ros: RosHarness, tmp_path: Path) -> None:
    slow = build_model(tmp_path / 'slow.onnx', slow_repeats=12)
    # A reliable, deeper input queue delivers most of the burst to the node, so the
    # latest-frame slot (not DDS) has to do the dropping.
    node = ros.start_node(slow, mask_resolution='model', input_reliability='reliable',
                          input_depth=10)
    subscribe_outputs(ros, 'mask')
    pub = ros.publisher('/image')
    frame = frame_pixels(0, 480, 640)
    pub.publish(image_msg(frame, 'rgb8', 1))
    ros.wait_count('mask', 1)
    before = rss_bytes()
    sent = 200
    for i in range(2, sent + 2):  # 200 VGA frames = 184 MB if anything queued them
        pub.publish(image_msg(frame, 'rgb8', i))
    ros.wait_for(lambda: stamp_ns(ros.received['mask'][-1]) == sent + 1,
                 'the mask of the last frame', timeout=30)
    time.sleep(0.3)
    grown = rss_bytes() - before
    counts = node.counters.snapshot()
    masks = ros.received['mask']
    stamps = [stamp_ns(m) for m in masks]
    print(f'backlog: sent {sent}, received {counts["received"]}, processed '
          f'{counts["processed"]}, dropped {counts["dropped"]}, RSS +{grown / 1e6:.1f} MB')
    assert stamps == sorted(stamps)  # never an older frame after a newer one
    assert counts['received'] == counts['processed'] + counts['dropped']
    assert counts['dropped'] > 0
    assert len(masks) - 1 == counts['processed'] - 1 < sent // 2
    assert grown < 100e6


def test_runtime_parameters_are_validated_and_applied(ros: RosHarness,
                                                      model: Path) -> None:
    node = ros.start_node(model)
    subscribe_outputs(ros, 'mask', 'overlay')
    pub = ros.publisher('/image')
    [result] = ros.set_params(overlay_alpha=1.0)
    assert result.successful
    [result] = ros.set_params(mask_resolution='model')
    assert result.successful and node.settings.mask_resolution == 'model'
    pixels = frame_pixels(4)
    pub.publish(image_msg(pixels, 'rgb8', 5))
    ros.wait_count('mask', 1)
    overlay = ros.wait_count('overlay', 1)[0]
    mask = pixels_of(ros.received['mask'][0])
    assert mask.shape == MODEL_SIZE
    np.testing.assert_array_equal(pixels_of(overlay), PALETTE_ARRAY[mask])  # alpha 1

    for name, value, reason in [
            ('overlay_alpha', 1.5, 'out of range'),
            ('mask_resolution', 'full', "mask_resolution must be one of ['input', 'model']"),
            ('max_frame_age_ms', -1, 'out of range'),
            ('model_path', '/tmp/other.onnx', 'read-only'),
            ('input_reliability', 'reliable', 'read-only')]:
        [result] = ros.set_params(**{name: value})
        assert not result.successful, name
        assert reason in result.reason, result.reason
    assert node.settings.overlay_alpha == 1.0 and node.settings.mask_resolution == 'model'
    descriptor: ParameterDescriptor = node.describe_parameter('overlay_alpha')
    assert descriptor.floating_point_range[0].to_value == 1.0 and not descriptor.read_only
    assert node.describe_parameter('model_path').read_only


def test_outputs_without_subscribers_are_not_computed(ros: RosHarness,
                                                      model: Path) -> None:
    node = ros.start_node(model)
    subscribe_outputs(ros, 'mask', 'overlay')
    [result] = ros.set_params(publish_overlay=False)
    assert result.successful
    pub = ros.publisher('/image')
    for i in range(3):
        pub.publish(image_msg(frame_pixels(i), 'rgb8', i + 1))
        ros.wait_count('mask', i + 1)
    assert node.published.snapshot() == {
        'mask': 3, 'colored_mask': 0, 'overlay': 0, 'confidence': 0, 'class_fractions': 0}
    assert not ros.received['overlay']  # subscribed, but switched off
    health = node.health()
    assert health.extra['published_colored_mask'] == '0'
    assert health.counters['processed'] == 3


def test_old_frames_are_skipped(ros: RosHarness, model: Path) -> None:
    node = ros.start_node(model, max_frame_age_ms=500)
    subscribe_outputs(ros, 'mask')
    pub = ros.publisher('/image')
    now_ns = node.get_clock().now().nanoseconds
    pub.publish(image_msg(frame_pixels(0), 'rgb8', now_ns - 10_000_000_000, 'old'))
    ros.wait_for(lambda: node.counters.snapshot()['stale'] == 1, 'the stale frame')
    pub.publish(image_msg(frame_pixels(0), 'rgb8', node.get_clock().now().nanoseconds, 'new'))
    assert ros.wait_count('mask', 1)[0].header.frame_id == 'new'
    [result] = ros.set_params(max_frame_age_ms=0)
    assert result.successful
    pub.publish(image_msg(frame_pixels(0), 'rgb8', now_ns - 10_000_000_000, 'old'))
    assert ros.wait_count('mask', 2)[1].header.frame_id == 'old'


def test_diagnostics_report_provider_counts_and_staleness(ros: RosHarness,
                                                          model: Path) -> None:
    ros.start_node(model, diagnostics_period=0.2, stale_timeout=0.5, expected_rate=30.0)
    ros.subscribe('/diagnostics', DiagnosticArray, 'diagnostics')

    def latest() -> dict:
        status = ros.received['diagnostics'][-1].status[0]
        return {'level': status.level, 'message': status.message, 'name': status.name,
                **{v.key: v.value for v in status.values}}

    ros.wait_for(lambda: ros.received['diagnostics'] and latest()['level']
                 == DiagnosticStatus.ERROR, 'an ERROR status without input')
    status = latest()
    assert status['name'] == '/segmentation_node: segmentation'
    assert 'no input frame' in status['message']
    assert status['provider'] == 'CPUExecutionProvider'
    assert status['model'].startswith('varied')
    pub = ros.publisher('/image')
    subscribe_outputs(ros, 'mask')
    for i in range(3):
        pub.publish(image_msg(frame_pixels(i), 'rgb8', i + 1))
        ros.wait_count('mask', i + 1)
    ros.wait_for(lambda: latest()['frames_processed'] == '3', 'diagnostics counting 3 frames')
    status = latest()
    assert status['level'] == DiagnosticStatus.WARN  # far below the expected 30 Hz
    assert 'below expected 30.0 Hz' in status['message']
    for key in ('inference_p50_ms', 'inference_p95_ms', 'end_to_end_p50_ms', 'input_rate_hz',
                'frames_dropped', 'frames_rejected', 'published_mask'):
        assert key in status
    stage_keys = {k for k in status if k.startswith('stage_')}
    assert stage_keys == {f'stage_{name}_{q}_ms' for name in STAGES for q in ('p50', 'p95')}
    assert float(status['stage_publish_p50_ms']) > 0  # the mask was published


def latest_status(ros: RosHarness) -> dict:
    status = ros.received['diagnostics'][-1].status[0]
    return {'level': status.level, 'message': status.message,
            **{v.key: v.value for v in status.values}}


def test_model_loads_in_the_background_diagnostics_warn_then_ok(ros: RosHarness,
                                                                tmp_path: Path) -> None:
    # Seconds of warm-up: the side branch of 3x3 convolutions at 384x512.
    slow = build_model(tmp_path / 'slow_load.onnx', size=(384, 512), slow_repeats=100)
    ros.subscribe('/diagnostics', DiagnosticArray, 'diagnostics')
    node = ros.start_node(slow, wait=False, diagnostics_period=0.1, stale_timeout=600.0)
    ros.wait_for(lambda: ros.received['diagnostics'], 'a status while loading')
    status = latest_status(ros)
    assert status['level'] == DiagnosticStatus.WARN, status
    assert status['message'].startswith('loading model') and status['provider'] == 'loading'
    [result] = ros.set_params(overlay_alpha=0.25)  # parameter services answer meanwhile
    assert result.successful and node.model.segmenter is None, 'the model loaded too fast to tell'
    assert node.model.wait_ready(120.0)
    ros.wait_for(lambda: latest_status(ros)['level'] == DiagnosticStatus.OK, 'an OK status')
    status = latest_status(ros)
    assert status['message'] == 'waiting for the first frame'
    assert status['provider'] == 'CPUExecutionProvider' and status['provider_fallback'] == ''
    assert float(status['load_time_s']) > 0 and node.settings.overlay_alpha == 0.25


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    """The node's loader runs on the fake GPU of fake_providers.py."""
    gpu = FakeGpu()
    monkeypatch.setattr(model_holder, 'load_model',
                        functools.partial(load_model, layer=gpu.layer()))
    return gpu


def test_default_providers_say_why_the_gpu_is_not_used(ros: RosHarness, model: Path,
                                                       tmp_path: Path, fake_gpu: FakeGpu) -> None:
    fake_gpu.missing.update(MISSING)
    ros.subscribe('/diagnostics', DiagnosticArray, 'diagnostics')
    node = ros.start_node(model, providers=['tensorrt', 'cuda', 'cpu'],
                          trt_cache_dir=str(tmp_path / 'trt'), diagnostics_period=0.1)
    ros.wait_for(lambda: ros.received['diagnostics']
                 and latest_status(ros)['provider'] != 'loading', 'a status after loading')
    status = latest_status(ros)
    assert status['provider'] == 'CPUExecutionProvider'
    assert status['provider_fallback'] == node.model.segmenter.fallback_reason == (
        f'TensorrtExecutionProvider: its library does not load: {MISSING[TENSORRT]}; '
        f'CUDAExecutionProvider: its library does not load: {MISSING[CUDA]}')
    assert status['precision'] == 'fp32' and status['trt_engine'] == 'none'
    assert status['intra_op_threads'] == 'default (no spinning)'


def test_shutdown_during_an_engine_build_starts_and_publishes_nothing(
        model: Path, tmp_path: Path, fake_gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[BaseException] = []
    monkeypatch.setattr(threading, 'excepthook', lambda args: errors.append(args.exc_value))
    fake_gpu.build_gate = threading.Event()
    harness = RosHarness()
    node = harness.start_node(model, wait=False, providers=['tensorrt'],
                              trt_cache_dir=str(tmp_path / 'trt'))
    assert fake_gpu.building.wait(30.0), 'the engine build did not start'
    harness.close()  # the node is destroyed while TensorRT builds
    fake_gpu.build_gate.set()  # the build ends after the shutdown
    node.model.loader.join(30.0)
    assert not node.model.loader.is_alive()
    assert errors == [] and node.model.segmenter is None and node._threads == []
    assert fake_gpu.built == ['fp16']


def test_an_fp16_parity_failure_is_an_error_once_then_a_warning(
        model: Path, tmp_path: Path, fake_gpu: FakeGpu, capfd) -> None:
    fake_gpu.fp16_disagrees = True

    def start() -> tuple[Segmenter, list[str]]:
        harness = RosHarness()
        try:
            segmenter = harness.start_node(model, providers=['tensorrt'],
                                           trt_cache_dir=str(tmp_path / 'trt')).model.segmenter
        finally:
            harness.close()
        return segmenter, capfd.readouterr().err.splitlines()

    first, log = start()
    assert first.precision == 'fp32' and first.parity_failed
    assert [line for line in log if line.startswith('[ERROR]')] == [
        line for line in log if line.endswith(f'TensorRT parity check: {first.parity}')]
    assert len([line for line in log if line.startswith('[ERROR]')]) == 1
    later, log = start()
    assert fake_gpu.opened[-1] == (TENSORRT, 'fp32') and not later.parity_failed
    assert not [line for line in log if line.startswith('[ERROR]')]
    [warning] = [line for line in log if line.startswith('[WARN]')]
    assert 'TensorRT fp16 engine FAILED parity at an earlier start' in warning
    assert warning.endswith('running fp32 without opening it')


def run_frames(model: Path, frames: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Run ``frames`` through a fresh node; return each output's pixels (or fractions)."""
    harness = RosHarness()
    try:
        segmenter = harness.start_node(model).model.segmenter
        names = ('mask', 'confidence', 'class_fractions')
        subscribe_outputs(harness, *names)
        pub = harness.publisher('/image')
        for i, pixels in enumerate(frames):
            pub.publish(image_msg(pixels, 'bgr8', i + 1))
            for name in names:
                harness.wait_count(name, i + 1)
        outputs = {name: [np.asarray(m.data) if name == 'class_fractions' else pixels_of(m)
                          for m in harness.received[name]] for name in names}
        # What the node fetched from ONNX Runtime: the file's float scores or its uint8 maps.
        outputs['fetched'] = [segmenter.classes_name or segmenter.scores_name,
                              segmenter.session.get_inputs()[0].type]
        return outputs
    finally:
        harness.close()


@pytest.mark.parametrize('output', ['probabilities', 'logits'])
@pytest.mark.parametrize('uint8_input', [False, True])
def test_contract_v2_outputs_match_v1_pixel_for_pixel(tmp_path: Path, output: str,
                                                      uint8_input: bool) -> None:
    contract = ModelContract(output=output, normalization=CONTRACT.normalization)
    v1 = build_model(tmp_path / 'v1.onnx', size=MODEL_SIZE, contract=contract)
    v2 = to_v2(v1, tmp_path / 'v2.onnx', uint8_input=uint8_input)
    frames = [frame_pixels(seed, 96, 160) for seed in range(3)]
    old, new = run_frames(v1, frames), run_frames(v2, frames)
    assert old.pop('fetched') == ['scores', 'tensor(float)']
    assert new.pop('fetched') == ['class_ids', 'tensor(uint8)' if uint8_input
                                  else 'tensor(float)']
    for name in old:
        for got, want in zip(new[name], old[name], strict=True):
            np.testing.assert_array_equal(got, want, err_msg=name)
