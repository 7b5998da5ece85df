"""Counters, rates and per-stage timings of the node's pipeline, in one place (no rclpy)."""

from __future__ import annotations

import time

from fvt_segmentation.core.stats import Counters, LatencyWindow, RateMeter, summarize
from fvt_segmentation.node.diagnostics import HealthSnapshot

STAGES = ('delivery', 'queue', 'conversion', 'preprocess', 'postprocess', 'handoff', 'outputs',
          'publish')
"""Per-frame stages around the inference, timed for ``/diagnostics`` (``stage_<name>_*``):
delivery = header stamp to the subscription callback (node clock: transport, plus the
camera's own delay and any clock offset; unstamped frames are left out), queue = waiting in
the newest-frame slot, conversion = message to numpy view (or JPEG/PNG decode),
preprocess/postprocess = :meth:`Segmenter.segment`'s, handoff = result ready to the output
thread starting on it, outputs = building the subscribed outputs, publish = the
``publish()`` calls. Inference is reported as ``inference_*``."""


class PipelineStats:
    """What the pipeline threads count and time, sampled by :meth:`snapshot` for diagnostics.

    Times are ``time.monotonic()`` seconds; durations are added in milliseconds.
    """

    def __init__(self, window_s: float, outputs: tuple[str, ...]) -> None:
        self.counters = Counters()
        self.published = Counters(outputs)
        self.started = time.monotonic()
        self._input_rate = RateMeter(window_s)
        self._output_rate = RateMeter(window_s)
        self._inference_ms = LatencyWindow()
        self._stage_ms = {name: LatencyWindow() for name in STAGES}
        self._end_to_end_ms = LatencyWindow()
        self._reported_rejections = 0
        self._reported_failures = 0
        self._reported_processed = 0
        self.last_failure = ''

    def received(self, now: float) -> None:
        """Count a frame that arrived in the subscription callback at ``now``."""
        self.counters.add('received')
        self._input_rate.tick(now)

    def stage(self, name: str, ms: float) -> None:
        """Add one duration of stage ``name`` (one of :data:`STAGES`)."""
        self._stage_ms[name].add(ms)

    def segmented(self, timings_ms: dict[str, float]) -> None:
        """Add the inference, preprocess and postprocess times of one segmented frame."""
        self._inference_ms.add(timings_ms['inference'])
        for name in ('preprocess', 'postprocess'):
            self._stage_ms[name].add(timings_ms[name])

    def failed(self, reason: str) -> None:
        """Count a frame whose processing raised; ``reason`` is kept for the status."""
        self.counters.add('failed')
        self.last_failure = reason

    def processed(self, received: float, done: float) -> None:
        """Count a frame whose outputs were all published at ``done``."""
        self.counters.add('processed')
        self._output_rate.tick(done)
        self._end_to_end_ms.add((done - received) * 1e3)

    def snapshot(self, provider: str, model: str, extra: dict[str, str]) -> HealthSnapshot:
        """Sample rates, latencies and counters now; the ``new_*`` count since the last call."""
        now = time.monotonic()
        counters = self.counters.snapshot()
        new_rejections = counters['rejected'] - self._reported_rejections
        new_failures = counters['failed'] - self._reported_failures
        new_processed = counters['processed'] - self._reported_processed
        self._reported_rejections = counters['rejected']
        self._reported_failures = counters['failed']
        self._reported_processed = counters['processed']
        published = {f'published_{name}': str(count)
                     for name, count in self.published.snapshot().items()}
        return HealthSnapshot(
            input_rate=self._input_rate.rate(now), output_rate=self._output_rate.rate(now),
            inference=summarize(self._inference_ms), end_to_end=summarize(self._end_to_end_ms),
            stages={name: summarize(window) for name, window in self._stage_ms.items()},
            counters=counters, new_rejections=new_rejections, new_failures=new_failures,
            new_processed=new_processed, last_failure=self.last_failure,
            seconds_since_input=self._input_rate.seconds_since_last(now),
            uptime_s=now - self.started, provider=provider, model=model,
            extra={**published, **extra})
