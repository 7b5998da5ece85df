"""DiagnosticStatus levels and values from health snapshots (no ROS graph needed)."""

from __future__ import annotations

from dataclasses import replace

from diagnostic_msgs.msg import DiagnosticStatus
import pytest

from fvt_segmentation.core.inference import load_segmenter
from fvt_segmentation.core.stats import LatencySummary
from fvt_segmentation.node.diagnostics import (
    HealthSnapshot,
    build_status,
    loading_status,
    model_values,
)

HEALTHY = HealthSnapshot(
    input_rate=30.0, output_rate=29.5, inference=LatencySummary(12.0, 20.5, 100),
    end_to_end=LatencySummary(15.0, 25.0, 100),
    counters={'received': 300, 'processed': 290, 'dropped': 10, 'rejected': 0},
    new_rejections=0, seconds_since_input=0.03, uptime_s=60.0,
    provider='CUDAExecutionProvider', model='default (unet/mobilenetv2)',
    extra={'published_mask': '290'})


def status(health: HealthSnapshot, expected_rate: float = 30.0) -> DiagnosticStatus:
    return build_status(health, '/cam/segmentation_node: segmentation', expected_rate, 2.0)


def values(result: DiagnosticStatus) -> dict[str, str]:
    return {v.key: v.value for v in result.values}


def test_healthy_stream_is_ok_with_all_figures() -> None:
    result = status(HEALTHY)
    assert result.level == DiagnosticStatus.OK
    assert result.message == 'segmenting at 29.5 Hz'
    assert result.name == '/cam/segmentation_node: segmentation'
    assert result.hardware_id == 'CUDAExecutionProvider'
    assert values(result) == {
        'input_rate_hz': '30.00', 'output_rate_hz': '29.50', 'expected_rate_hz': '30.00',
        'inference_p50_ms': '12.00', 'inference_p95_ms': '20.50',
        'end_to_end_p50_ms': '15.00', 'end_to_end_p95_ms': '25.00',
        'frames_received': '300', 'frames_processed': '290', 'frames_dropped': '10',
        'frames_rejected': '0', 'seconds_since_last_frame': '0.03',
        'provider': 'CUDAExecutionProvider', 'model': 'default (unet/mobilenetv2)',
        'published_mask': '290'}


@pytest.mark.parametrize('change, level, message', [
    ({'output_rate': 20.0}, DiagnosticStatus.WARN, 'output rate 20.0 Hz below expected 30.0'),
    ({'input_rate': 12.0, 'output_rate': 12.0}, DiagnosticStatus.WARN,
     'input rate 12.0 Hz below expected 30.0 Hz; output rate 12.0 Hz'),
    ({'output_rate': 27.5}, DiagnosticStatus.OK, 'segmenting at 27.5 Hz'),  # within 10 %
    ({'new_rejections': 3}, DiagnosticStatus.WARN, '3 bad input frame(s) rejected'),
    ({'new_failures': 4, 'new_processed': 0, 'last_failure': 'Fail: Gather index 9'},
     DiagnosticStatus.ERROR, 'every frame fails (4 since the last status): Fail: Gather index'),
    ({'new_failures': 1, 'new_processed': 29, 'last_failure': 'Fail: x'},
     DiagnosticStatus.WARN, '1 frame(s) failed: Fail: x'),
    ({'seconds_since_input': 2.5}, DiagnosticStatus.ERROR, 'no input frame for 2.5 s'),
    ({'seconds_since_input': None, 'uptime_s': 1.0}, DiagnosticStatus.OK,
     'waiting for the first frame'),
    ({'seconds_since_input': None, 'uptime_s': 3.0}, DiagnosticStatus.ERROR,
     'no input frame since startup (3.0 s)'),
])
def test_levels(change: dict, level: bytes, message: str) -> None:
    result = status(replace(HEALTHY, **change))
    assert result.level == level
    assert message in result.message


def test_rate_check_is_off_without_expected_rate() -> None:
    result = status(replace(HEALTHY, input_rate=0.5, output_rate=0.5), expected_rate=0.0)
    assert result.level == DiagnosticStatus.OK


def test_no_latency_before_the_first_frame() -> None:
    result = status(replace(HEALTHY, inference=None, end_to_end=None, seconds_since_input=None,
                            uptime_s=0.5))
    assert 'inference_p50_ms' not in values(result)
    assert values(result)['seconds_since_last_frame'] == 'never'


def test_stage_times_are_reported_per_stage() -> None:
    stages = {'queue': LatencySummary(4.0, 9.5, 50), 'conversion': LatencySummary(0.01, 0.02, 50),
              'publish': None}
    result = values(status(replace(HEALTHY, stages=stages)))
    assert result['stage_queue_p50_ms'] == '4.00' and result['stage_queue_p95_ms'] == '9.50'
    assert result['stage_conversion_p50_ms'] == '0.01'
    assert 'stage_publish_p50_ms' not in result  # no sample yet
    assert result['inference_p50_ms'] == '12.00'


def test_loading_status_is_warn_with_the_stage_then_error_on_failure() -> None:
    loading = loading_status('/seg: segmentation', 'building TensorRT engine (fp16) in /c',
                             12.4, '/m/default.onnx')
    assert loading.level == DiagnosticStatus.WARN
    assert loading.message == 'building TensorRT engine (fp16) in /c (12 s so far)'
    assert values(loading) == {'provider': 'loading', 'model': '/m/default.onnx',
                               'loading_s': '12.40'}
    failed = loading_status('/seg: segmentation', 'loading model', 1.0, '/m/x.onnx',
                            error='/m/x.onnx: the model loads but fails on its first run')
    assert failed.level == DiagnosticStatus.ERROR
    assert failed.message == ('model failed to load: /m/x.onnx: the model loads but fails on '
                              'its first run')


def test_model_values_say_what_the_loader_resolved(tiny_model, tmp_path) -> None:
    segmenter = load_segmenter(tiny_model, providers=['cpu'], intra_op_threads=2,
                               intra_op_spinning=False)
    assert segmenter.load_seconds > 0
    segmenter.load_seconds = 1.234
    assert model_values(segmenter) == {
        'provider_fallback': '', 'precision': 'fp32', 'trt_engine': 'none',
        'trt_engine_dir': '', 'trt_parity': '', 'load_time_s': '1.23',
        'intra_op_threads': '2 (no spinning)', 'contract_version': '1', 'io_binding': 'off'}
    segmenter.engine_dir, segmenter.engine_cached = tmp_path, True
    assert model_values(segmenter)['trt_engine'] == 'loaded from cache'
    segmenter.engine_cached = False
    assert model_values(segmenter)['trt_engine'] == 'built at this start'
