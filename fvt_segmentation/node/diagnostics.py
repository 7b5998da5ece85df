"""Build the node's ``diagnostic_msgs/DiagnosticStatus`` from a snapshot of its statistics.

Pure functions of plain values (no rclpy, no clock), so every level decision is tested
without ROS. The node calls :func:`build_status` about once a second, with the figures of its
statistics and what runs (:func:`serving_values`, :func:`model_values`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from fvt_segmentation.core.sizes import format_size
from fvt_segmentation.core.stats import LatencySummary

if TYPE_CHECKING:
    from fvt_segmentation.core.segmenter import Segmenter
    from fvt_segmentation.node.model_holder import Serving
    from fvt_segmentation.node.params import RuntimeSettings

RATE_TOLERANCE = 0.1
"""A rate more than this fraction below ``expected_rate`` is a WARN (as diagnostic_updater)."""


@dataclass(frozen=True)
class HealthSnapshot:
    """Everything the status reports, sampled at one moment."""

    input_rate: float
    output_rate: float
    inference: LatencySummary | None
    end_to_end: LatencySummary | None
    counters: dict[str, int]
    new_rejections: int
    seconds_since_input: float | None
    uptime_s: float
    provider: str
    model: str
    extra: dict[str, str] = field(default_factory=dict)
    new_failures: int = 0
    """Frames whose processing raised since the previous status."""
    new_processed: int = 0
    """Frames whose outputs were published since the previous status."""
    last_failure: str = ''
    stages: dict[str, LatencySummary | None] = field(default_factory=dict)
    """Per-frame stages other than inference (queue, conversion, ...), in pipeline order."""


def _fmt(value: float) -> str:
    return f'{value:.2f}'


def _level_and_message(health: HealthSnapshot, expected_rate: float,
                       stale_timeout: float) -> tuple[bytes, str]:
    since = health.seconds_since_input
    if since is None and health.uptime_s >= stale_timeout:
        return DiagnosticStatus.ERROR, f'no input frame since startup ({health.uptime_s:.1f} s)'
    if since is not None and since >= stale_timeout:
        return DiagnosticStatus.ERROR, f'no input frame for {since:.1f} s'
    if health.new_failures and not health.new_processed:
        return DiagnosticStatus.ERROR, (f'every frame fails ({health.new_failures} since the '
                                        f'last status): {health.last_failure}')
    problems = []
    if health.new_failures:
        problems.append(f'{health.new_failures} frame(s) failed: {health.last_failure}')
    if expected_rate > 0 and since is not None:
        floor = expected_rate * (1.0 - RATE_TOLERANCE)
        if health.input_rate < floor:
            problems.append(f'input rate {health.input_rate:.1f} Hz below expected '
                            f'{expected_rate:.1f} Hz')
        if health.output_rate < floor:
            problems.append(f'output rate {health.output_rate:.1f} Hz below expected '
                            f'{expected_rate:.1f} Hz')
    if health.new_rejections:
        problems.append(f'{health.new_rejections} bad input frame(s) rejected')
    if problems:
        return DiagnosticStatus.WARN, '; '.join(problems)
    if since is None:
        return DiagnosticStatus.OK, 'waiting for the first frame'
    return DiagnosticStatus.OK, f'segmenting at {health.output_rate:.1f} Hz'


def build_status(health: HealthSnapshot, name: str, expected_rate: float,
                 stale_timeout: float) -> DiagnosticStatus:
    """Return the status: level and message from rates and staleness, all figures as values.

    ERROR when no frame arrived for ``stale_timeout`` s; WARN when the input or output rate
    is more than :data:`RATE_TOLERANCE` below ``expected_rate`` (0 disables) or frames were
    rejected since the previous status; OK otherwise.
    """
    level, message = _level_and_message(health, expected_rate, stale_timeout)
    values = {
        'input_rate_hz': _fmt(health.input_rate),
        'output_rate_hz': _fmt(health.output_rate),
        'expected_rate_hz': _fmt(expected_rate),
    }
    latencies = [('inference', health.inference), ('end_to_end', health.end_to_end),
                 *((f'stage_{name}', summary) for name, summary in health.stages.items())]
    for label, summary in latencies:
        if summary is not None:
            values[f'{label}_p50_ms'] = _fmt(summary.p50_ms)
            values[f'{label}_p95_ms'] = _fmt(summary.p95_ms)
    for counter, count in health.counters.items():
        values[f'frames_{counter}'] = str(count)
    values['seconds_since_last_frame'] = (
        'never' if health.seconds_since_input is None else _fmt(health.seconds_since_input))
    values['provider'] = health.provider
    values['model'] = health.model
    values.update(health.extra)
    return DiagnosticStatus(
        level=level, name=name, message=message, hardware_id=health.provider,
        values=[KeyValue(key=k, value=v) for k, v in values.items()])


def model_values(segmenter: Segmenter) -> dict[str, str]:
    """Return what the loader resolved, as /diagnostics values (also used in the log).

    ``provider_fallback`` is empty when the first preferred provider runs; otherwise it names
    each preferred provider that does not, and why.
    """
    if segmenter.engine_cached is None:
        engine = 'none'
    else:
        engine = 'loaded from cache' if segmenter.engine_cached else 'built at this start'
    threads, spinning = segmenter.threads
    return {
        'provider_fallback': segmenter.fallback_reason,
        'precision': segmenter.precision,
        'trt_engine': engine,
        'trt_engine_dir': '' if segmenter.engine_dir is None else str(segmenter.engine_dir),
        'trt_parity': segmenter.parity,
        'load_time_s': _fmt(segmenter.load_seconds),
        'intra_op_threads': (f'{threads or "default"}'
                             f' ({"spinning" if spinning else "no spinning"})'),
        'contract_version': segmenter.contract.version,
        'io_binding': segmenter.io_binding or 'off',
    }


def serving_values(serving: Serving, input_topic: str, settings: RuntimeSettings,
                   precision: str, reload_state: str) -> dict[str, str]:
    """Return what runs, as /diagnostics values: input, model file and why, settings.

    ``precision`` is the ``precision`` parameter, ``reload_state`` the latest reload's.
    """
    segmenter, choice = serving.segmenter, serving.choice
    return {
        'input_topic': input_topic,
        'model_file': str(segmenter.model_path),
        'model_precision': choice.precision,
        'model_precision_reason': choice.warning or choice.reason,
        'precision_parameter': precision,
        'model_reload': reload_state,
        'model_input_size': format_size(*segmenter.input_size[::-1]),
        'mask_resolution': settings.mask_resolution,
        'max_frame_age_ms': str(settings.max_frame_age_ms),
        **model_values(segmenter),
    }


def loading_status(name: str, stage: str, elapsed_s: float, model: str,
                   error: str = '') -> DiagnosticStatus:
    """Return the status while the model loads: WARN naming the stage, ERROR with ``error``."""
    level = DiagnosticStatus.ERROR if error else DiagnosticStatus.WARN
    message = (f'model failed to load: {error}' if error
               else f'{stage} ({elapsed_s:.0f} s so far)')
    values = {'provider': 'loading', 'model': model, 'loading_s': _fmt(elapsed_s)}
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id='loading',
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])
