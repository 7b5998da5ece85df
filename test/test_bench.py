"""The benchmark's bookkeeping: per-configuration environments and the reported figures.

The benchmark itself is a script that prints timings (docs/benchmark.md); these tests only
check what it derives from the raw figures of its helper processes, on made-up values.
"""

from __future__ import annotations

import argparse
import os
import time

import pytest

from fvt_segmentation.core.sizes import parse_size
from fvt_segmentation.node.pipeline_stats import STAGES
from fvt_segmentation.tools.bench import (
    Configuration,
    child_environment,
    cpu_seconds,
    parse_transports,
    render_tables,
    summarize_run,
    worst_runs,
)
from fvt_segmentation.tools.dds_profiles import CYCLONEDDS_VARIABLE, FASTDDS_VARIABLES

MS = 1_000_000  # ns


def test_each_transport_gets_its_own_profile_variables_and_domain(monkeypatch) -> None:
    monkeypatch.setenv(FASTDDS_VARIABLES[0], '/etc/user_profile.xml')
    monkeypatch.setenv(CYCLONEDDS_VARIABLE, 'file:///etc/user_cyclone.xml')
    default = child_environment('default', 151)
    assert not {*FASTDDS_VARIABLES, CYCLONEDDS_VARIABLE} & set(default)
    assert default['ROS_DOMAIN_ID'] == '151'
    profile = child_environment('profile', 152)
    shipped = [profile[name] for name in FASTDDS_VARIABLES if name in profile]
    assert shipped and all(path.endswith('config/fastdds.xml') for path in shipped)
    assert profile[CYCLONEDDS_VARIABLE].endswith('config/cyclonedds.xml')
    assert profile['ROS_DOMAIN_ID'] == '152'


def test_sizes_and_transports_are_parsed_or_refused() -> None:
    assert parse_size('2048x1024') == (2048, 1024)
    assert parse_transports('profile, default') == ['profile', 'default']
    for bad in ('2048', '0x10', 'axb'):
        with pytest.raises(argparse.ArgumentTypeError, match='WIDTHxHEIGHT|positive'):
            parse_size(bad)
    with pytest.raises(argparse.ArgumentTypeError, match='profile'):
        parse_transports('shm')


def status(received: int, inference: str, queue: str) -> dict[str, str]:
    values = {'frames_received': str(received), 'frames_processed': '3',
              'frames_dropped': str(received - 3), 'published_mask': '3',
              'inference_p50_ms': inference, 'end_to_end_p50_ms': '60.00'}
    values.update({f'stage_{name}_p50_ms': '1.00' for name in STAGES})
    values['stage_queue_p50_ms'] = queue
    return values


def test_run_figures_from_raw_measurements() -> None:
    start = 1_000_000_000_000
    second = 1_000 * MS
    # Three masks: early (80 ms), middle (100 ms), late (90 ms) in a 30 s stream.
    masks = [[start, start + 80 * MS], [start + 15 * second, start + 15 * second + 100 * MS],
             [start + 29 * second, start + 29 * second + 90 * MS]]
    raw = {'camera': {'published': 900, 'rate_hz': 30.0, 'publish_p50_ms': 2.0,
                      'first_stamp_ns': start, 'last_stamp_ns': start + 29 * second},
           'receiver': {'masks': masks, 'shapes': [[1024, 2048, 'mono8']],
                        'statuses': [{'frames_received': '0'},  # before the first frame
                                     status(450, '40.00', '10.00'),
                                     status(891, '50.00', '14.00'),
                                     status(900, '60.00', '12.00')]},
           'cpu': {'stream_s': 30.0, 'node_s': 18.0, 'receiver_s': 0.9}}
    row = summarize_run(Configuration(2048, 1024, 'profile', 150), raw, [50.0, 60.0, 70.0])
    assert row['received_by_node'] == 900 and row['received_pct'] == 100.0
    assert row['masks_received'] == 3 and row['e2e_p50_ms'] == pytest.approx(90.0)
    assert row['bare_inference_p50_ms'] == 60.0
    assert row['overhead_ms'] == pytest.approx(30.0) and row['overhead_pct'] == pytest.approx(50)
    # Latencies the node reports once a second: the median over the run, not the last one.
    assert row['node_inference_p50_ms'] == 50.0
    assert row['overhead_vs_node_inference_ms'] == pytest.approx(40.0)
    assert row['stages_p50_ms']['queue'] == 12.0
    assert (row['lag_first_p50_ms'], row['lag_last_p50_ms']) == pytest.approx((80.0, 90.0))
    # 10 s windows: [0, 10) s holds the 80 ms mask, [10, 20) the 100 ms one, [20, 29] 90 ms.
    assert row['lag_p50_by_window_ms'] == pytest.approx([80.0, 100.0, 90.0])
    # A stream of exactly 20 s: two windows, its last frame in the second one.
    raw['camera']['last_stamp_ns'] = start + 20 * second
    raw['receiver']['masks'] = [[start, start + 50 * MS], [start + 20 * second,
                                                          start + 20 * second + 70 * MS]]
    assert summarize_run(Configuration(2048, 1024, 'profile', 150), raw, [60.0])[
        'lag_p50_by_window_ms'] == pytest.approx([50.0, 70.0])
    # 20.03 s, as a real 20 s stream measures: still two windows, no one-frame third.
    raw['camera']['last_stamp_ns'] = start + 20 * second + 30 * MS
    raw['receiver']['masks'][1] = [start + 20 * second + 30 * MS, start + 20 * second + 100 * MS]
    assert summarize_run(Configuration(2048, 1024, 'profile', 150), raw, [60.0])[
        'lag_p50_by_window_ms'] == pytest.approx([50.0, 70.0])
    # Least-squares line through (0 s, 80), (15 s, 100), (29 s, 90): 21.4 ms per minute.
    assert row['lag_slope_ms_per_min'] == pytest.approx(21.39, abs=0.01)
    text = render_tables([row], 'header')
    assert '| 2048x1024 | profile | 900 (30.0) | 900 (100.0 %) | 3 |' in text
    assert '30.0 (50 %)' in text and '80.0 / 90.0' in text
    assert '| 2048x1024 | profile | 80.0 100.0 90.0 | 21.39 |' in text
    # 18 s of node CPU over 900 frames in 30 s: 20 ms a frame, 60 % of one core.
    assert row['node_cpu_ms_per_frame'] == pytest.approx(20.0)
    assert row['node_cpu_pct_of_core'] == pytest.approx(60.0)
    assert '| 2048x1024 | profile | 20.00 | 60 | 1.00 | 3 |' in text


def test_cpu_seconds_reads_this_process() -> None:
    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert cpu_seconds(os.getpid()) - before == pytest.approx(0.3, abs=0.05)
    assert cpu_seconds(2 ** 22 + 1) is None  # above Linux's pid limit: no such process


def test_a_run_without_masks_reports_no_latency() -> None:
    raw = {'camera': {'published': 30, 'rate_hz': 30.0, 'publish_p50_ms': 2.0,
                      'first_stamp_ns': 1, 'last_stamp_ns': 2},
           'receiver': {'masks': [], 'shapes': [], 'statuses': [{'frames_received': '0'}]},
           'cpu': {'stream_s': 1.0, 'node_s': None, 'receiver_s': None}}
    row = summarize_run(Configuration(1024, 512, 'default', 151), raw, [50.0])
    assert row['received_pct'] == 0.0 and row['e2e_p50_ms'] is None
    assert row['overhead_ms'] is None and row['lag_first_p50_ms'] is None
    assert row['lag_p50_by_window_ms'] == [None] and row['lag_slope_ms_per_min'] is None
    assert '| 1024x512 | default | 30 (30.0) | 0 (0.0 %) | - |' in render_tables([row], 'h')


def test_repeated_runs_are_labelled_and_the_worst_is_named() -> None:
    def row(run: int, processed: float) -> dict:
        return {'size': '480x360', 'transport': 'profile', 'run': run, 'runs': 3,
                'published': 1800, 'processed': processed}

    rows = [row(1, 1800.0), row(2, 1791.0), row(3, 1799.0)]
    [worst] = worst_runs(rows)
    assert worst['run'] == 2
    raw = {'camera': {'published': 1800, 'rate_hz': 30.0, 'publish_p50_ms': 1.0,
                      'first_stamp_ns': 1, 'last_stamp_ns': 2},
           'receiver': {'masks': [], 'shapes': [], 'statuses': [{'frames_received': '0'}]},
           'cpu': {'stream_s': 60.0, 'node_s': None, 'receiver_s': None}}
    text = render_tables([{**summarize_run(Configuration(480, 360, 'profile', 150, r['run'], 3),
                                           raw, [10.0]), 'processed': r['processed']}
                          for r in rows], 'h')
    assert '| 480x360 run 2/3 | profile |' in text
    assert '| 480x360 | profile | 100.0 99.5 99.9 | 2: 1791 of 1800 |' in text
