"""Windowed run-time statistics for diagnostics: rates, latency percentiles, counters.

No rclpy here. Times are plain floats in seconds from a monotonic clock chosen by the
caller (``time.monotonic`` in the node), so the tests drive them with made-up times.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import threading

import numpy as np


class RateMeter:
    """Events per second over the last ``window_s`` seconds (thread-safe)."""

    def __init__(self, window_s: float = 5.0) -> None:
        if window_s <= 0:
            raise ValueError(f'window_s must be > 0; got {window_s}')
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self._first: float | None = None
        self._last: float | None = None

    def tick(self, now: float) -> None:
        """Record one event at time ``now``."""
        with self._lock:
            self._times.append(now)
            if self._first is None:
                self._first = now
            self._last = now
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()

    def rate(self, now: float) -> float:
        """Return events per second over the window ending at ``now``.

        Until a full window has passed since the first event, the rate is measured over the
        time since that event, so a stream that just started is not under-reported.
        """
        with self._lock:
            self._trim(now)
            count = len(self._times)
            if self._first is None or now - self._first >= self.window_s:
                return count / self.window_s
            span = now - self._first
            return (count - 1) / span if count >= 2 and span > 0 else 0.0

    def seconds_since_last(self, now: float) -> float | None:
        """Return the time since the last event, or None if there was none."""
        with self._lock:
            return None if self._last is None else now - self._last


class LatencyWindow:
    """The last ``size`` samples of a latency, with percentiles (thread-safe)."""

    def __init__(self, size: int = 200) -> None:
        if size <= 0:
            raise ValueError(f'size must be > 0; got {size}')
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        """Record one sample."""
        with self._lock:
            self._values.append(value)

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def percentiles(self, *qs: float) -> tuple[float, ...] | None:
        """Return the requested percentiles (0..100) of the window, or None if it is empty."""
        with self._lock:
            if not self._values:
                return None
            values = np.fromiter(self._values, dtype=np.float64, count=len(self._values))
        return tuple(float(v) for v in np.percentile(values, qs))


COUNTER_NAMES = ('received', 'processed', 'dropped', 'stale', 'rejected', 'failed')
"""Frame counters: every received frame ends as processed, dropped (replaced by a newer one
before the inference or the output stage took it), stale (older than ``max_frame_age_ms``),
rejected (bad input) or failed (an unexpected error while processing it)."""


class Counters:
    """Named integer counters, incremented from several threads."""

    def __init__(self, names: tuple[str, ...] = COUNTER_NAMES) -> None:
        self._values = dict.fromkeys(names, 0)
        self._lock = threading.Lock()

    def add(self, name: str, amount: int = 1) -> None:
        """Increase counter ``name`` (which must exist) by ``amount``."""
        with self._lock:
            self._values[name] += amount

    def snapshot(self) -> dict[str, int]:
        """Return a consistent copy of all counters."""
        with self._lock:
            return dict(self._values)


@dataclass(frozen=True)
class LatencySummary:
    """p50/p95 of one latency in milliseconds and the number of samples behind them."""

    p50_ms: float
    p95_ms: float
    samples: int


def summarize(window: LatencyWindow) -> LatencySummary | None:
    """Return p50/p95 of ``window`` (values in ms), or None when it holds no sample."""
    result = window.percentiles(50, 95)
    if result is None:
        return None
    return LatencySummary(result[0], result[1], len(window))
