"""Rates, latency windows, counters and the latest-frame slot, without ROS."""

from __future__ import annotations

import threading
import time

import pytest

from fvt_segmentation.core.stats import Counters, LatencyWindow, RateMeter, summarize
from fvt_segmentation.node.latest_frame import LatestSlot


def test_rate_of_a_steady_stream() -> None:
    meter = RateMeter(window_s=2.0)
    for i in range(100):  # 10 Hz for 10 s
        meter.tick(i * 0.1)
    assert meter.rate(9.9) == pytest.approx(10.0, rel=0.06)
    assert meter.seconds_since_last(10.4) == pytest.approx(0.5)


def test_rate_of_a_stream_that_just_started() -> None:
    meter = RateMeter(window_s=5.0)
    for i in range(5):  # 20 Hz for 0.2 s: not under-reported as 1 Hz
        meter.tick(100.0 + i * 0.05)
    assert meter.rate(100.2) == pytest.approx(20.0)


def test_rate_falls_to_zero_when_the_stream_stops() -> None:
    meter = RateMeter(window_s=1.0)
    assert meter.rate(0.0) == 0.0 and meter.seconds_since_last(0.0) is None
    for i in range(20):
        meter.tick(i * 0.05)
    assert meter.rate(0.99) > 15
    assert meter.rate(5.0) == 0.0


def test_rate_meter_rejects_an_empty_window() -> None:
    with pytest.raises(ValueError, match='window_s must be > 0; got 0'):
        RateMeter(0)


def test_latency_percentiles_over_the_last_samples() -> None:
    window = LatencyWindow(size=100)
    assert window.percentiles(50) is None and summarize(window) is None
    for value in range(1000, 1100):  # pushed out by the next 100 samples
        window.add(value)
    for value in range(1, 101):
        window.add(float(value))
    p50, p95 = window.percentiles(50, 95)
    assert p50 == pytest.approx(50.5) and p95 == pytest.approx(95.05)
    summary = summarize(window)
    assert (summary.p50_ms, summary.samples) == (pytest.approx(50.5), 100)


def test_counters_are_exact_under_concurrency() -> None:
    counters = Counters(('a', 'b'))

    def work() -> None:
        for _ in range(10_000):
            counters.add('a')
        counters.add('b', 5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counters.snapshot() == {'a': 40_000, 'b': 20}
    with pytest.raises(KeyError):
        counters.add('c')


def test_slot_keeps_only_the_newest_item() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is None
    assert slot.put(2) == 1  # 1 was never taken: the caller counts it as dropped
    assert slot.take(timeout=0) == 2
    assert slot.take(timeout=0.01) is None


def test_slot_wakes_the_worker_and_closes() -> None:
    slot: LatestSlot[str] = LatestSlot()
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take(timeout=10)))
    worker.start()
    slot.put('frame')
    worker.join(timeout=5)
    assert got == ['frame']
    waiting = threading.Thread(target=lambda: got.append(slot.take(timeout=10)))
    waiting.start()
    started = time.monotonic()
    slot.close()
    waiting.join(timeout=5)
    assert got == ['frame', None] and slot.closed
    assert time.monotonic() - started < 5  # close woke it; it did not sit out its timeout


def test_slow_consumer_sees_newest_frames_in_order() -> None:
    slot: LatestSlot[int] = LatestSlot()
    seen: list[int] = []
    dropped = 0

    def consume() -> None:
        while True:
            item = slot.take(timeout=5)
            if item is None:
                return
            seen.append(item)
            time.sleep(0.002)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(2000):
        if slot.put(i) is not None:
            dropped += 1
    deadline = time.monotonic() + 10
    while (not seen or seen[-1] != 1999) and time.monotonic() < deadline:
        time.sleep(0.01)
    slot.close()
    consumer.join(timeout=5)
    assert seen[-1] == 1999  # the newest frame always wins
    assert seen == sorted(seen)
    assert len(seen) + dropped == 2000 and dropped > 0  # every frame taken or counted
