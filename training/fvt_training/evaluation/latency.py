"""Inference timing done properly: warm-up runs excluded, median and p90 over many runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
import os
import time
from typing import Any

import numpy as np


def time_interleaved(calls: Mapping[str, Callable[[], Any]], runs: int, warmup: int,
                     batch: int = 1) -> dict[str, dict]:
    """Time several calls (each one forward pass over ``batch`` images), round-robin.

    Every call is warmed up ``warmup`` times, then the calls take turns for ``runs`` rounds,
    so a busy machine slows them alike and their ratio stays fair. ONNX Runtime sessions
    timed this way must not spin (``load_segmenter(..., intra_op_spinning=False)``): the
    spinning threads of one steal the cores from the next one's run. Returns, per name,
    per-image milliseconds (a run's time divided by ``batch``): ``median_ms``, ``p90_ms``,
    ``mean_ms``, ``min_ms``, plus ``batch``, ``runs``, ``warmup``, the CPU count and the
    1-minute load average before and after the timed rounds, so a figure is never read
    without knowing how it was taken.
    """
    if runs < 1 or warmup < 0 or batch < 1:
        raise ValueError(f'expected runs >= 1, warmup >= 0 and batch >= 1; got runs={runs}, '
                         f'warmup={warmup}, batch={batch}')
    for call in calls.values():
        for _ in range(warmup):
            call()
    seconds = {name: np.empty(runs) for name in calls}
    load_before = os.getloadavg()[0]
    for i in range(runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[name][i] = time.perf_counter() - start
    load = [load_before, os.getloadavg()[0]]
    stats = {}
    for name, values in seconds.items():
        per_image_ms = values * 1e3 / batch
        stats[name] = {
            'batch': batch,
            'runs': runs,
            'warmup': warmup,
            'median_ms': float(np.median(per_image_ms)),
            'p90_ms': float(np.percentile(per_image_ms, 90)),
            'mean_ms': float(per_image_ms.mean()),
            'min_ms': float(per_image_ms.min()),
            'cpu_count': os.cpu_count(),
            'load_average': load,
        }
    return stats


def time_calls(call: Callable[[], Any], runs: int, warmup: int, batch: int = 1) -> dict:
    """Time one call; see :func:`time_interleaved` for the figures returned."""
    return time_interleaved({'call': call}, runs, warmup, batch)['call']
