"""Benchmark the segmentation node between processes: delivery, latency, per-stage costs.

    bench --model output/bench.onnx [--sizes 1024x512,2048x1024] [--transport profile,default]
          [--duration 60] [--rate 30] [--json OUT]

For every frame size and transport, three processes run in a DDS domain of their own: the
node (``python -m fvt_segmentation.node.segmentation_node``), a camera publishing rgb8 frames at
``--rate`` Hz and a receiver subscribed to ``~/mask`` only (the node computes no other
output) and to ``/diagnostics``. ``profile`` gives all three the shipped DDS profiles
(:func:`fvt_segmentation.tools.dds_profiles.transport_environment`), ``default`` the
middleware defaults. Bare model
inference is timed in this process (``Segmenter.infer`` on a preprocessed tensor) right
before and after each configuration, so that the node overhead (end to end minus bare
inference) is measured against the machine's load of the moment. Prints two markdown tables.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass
import json
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
from tqdm import tqdm

import fvt_segmentation
from fvt_segmentation.core.contract import ModelLoadError
from fvt_segmentation.core.model_choice import add_model_options, load_model
from fvt_segmentation.core.segmenter import Segmenter
from fvt_segmentation.core.sizes import format_size, parse_sizes
from fvt_segmentation.node.pipeline_stats import STAGES
from fvt_segmentation.node.segmentation_node import NODE_NAME
from fvt_segmentation.tools.bench_probes import READY, STOP, percentiles_ms, write_json
from fvt_segmentation.tools.dds_profiles import (
    CYCLONEDDS_VARIABLE,
    FASTDDS_VARIABLES,
    transport_environment,
)
from fvt_segmentation.tools.frame_source import synthetic_frame

TRANSPORTS = ('profile', 'default')
IMAGE_TOPIC = '/bench/image'
MASK_TOPIC = f'/{NODE_NAME}/mask'
LAG_WINDOW_S = 10.0
WARMUP_RUNS = 3
STARTUP_TIMEOUT_S = 90.0
DRAIN_S = 2.0


@dataclass(frozen=True)
class Configuration:
    """One run: frame size, transport and the DDS domain that isolates it."""

    width: int
    height: int
    transport: str
    domain: int
    run: int = 1
    runs: int = 1

    @property
    def size(self) -> str:
        """'WIDTHxHEIGHT'."""
        return format_size(self.width, self.height)


def parse_transports(text: str) -> list[str]:
    """Parse a comma-separated list of transports (profile, default)."""
    names = [name.strip() for name in text.split(',') if name.strip()]
    unknown = [name for name in names if name not in TRANSPORTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f'expected a comma-separated subset of {list(TRANSPORTS)}, got {text!r}')
    return names


def child_environment(transport: str, domain: int) -> dict[str, str]:
    """Return the environment of the three processes of one configuration.

    Every DDS profile variable of the caller is removed; ``profile`` then adds the shipped
    ones. The DDS domain is the configuration's own and discovery stays on this machine.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in (*FASTDDS_VARIABLES, CYCLONEDDS_VARIABLE)}
    if transport == 'profile':
        env.update(transport_environment(environ=env))
    env['ROS_DOMAIN_ID'] = str(domain)
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    env['PYTHONUNBUFFERED'] = '1'
    # The children import this very package, even from a source checkout.
    package_root = str(Path(fvt_segmentation.__file__).resolve().parents[1])
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [package_root, env.get('PYTHONPATH')]))
    return env


def time_inference(segmenter: Segmenter, runs: int) -> list[float]:
    """Time ``segmenter.infer`` on one preprocessed tensor, in ms; warm-up runs not counted."""
    height, width = segmenter.input_size
    tensor = segmenter.preprocess(synthetic_frame(0, height, width))
    for _ in range(WARMUP_RUNS):
        segmenter.infer(tensor)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        segmenter.infer(tensor)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def cpu_seconds(pid: int) -> float | None:
    """Return the CPU time (user + system, all threads) process ``pid`` used so far.

    None where ``/proc`` does not have it (not Linux, or the process is gone).
    """
    try:
        fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def _cpu_used(before: float | None, pid: int) -> float | None:
    after = cpu_seconds(pid)
    return None if before is None or after is None else after - before


def _stop(process: subprocess.Popen, timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(receiver: subprocess.Popen, node: subprocess.Popen, log: Path) -> None:
    line = receiver.stdout.readline() if receiver.stdout else ''
    if line.strip() != READY:
        tail = log.read_text(errors='replace')[-2000:] if log.exists() else ''
        state = 'running' if node.poll() is None else f'exited with {node.returncode}'
        raise RuntimeError(f'the receiver did not get ready (said {line.strip()!r}); the '
                           f'node is {state}; node log tail:\n{tail}')


def run_configuration(config: Configuration, args: argparse.Namespace,
                      workdir: Path) -> dict[str, Any]:
    """Start node, receiver and camera for ``config``; return the raw figures of the run."""
    env = child_environment(config.transport, config.domain)
    python = sys.executable
    tag = f'{config.size}_{config.transport}'
    node_log = workdir / f'node_{tag}.log'
    camera_json, receiver_json = workdir / f'camera_{tag}.json', workdir / f'rx_{tag}.json'
    node_cmd = [python, '-m', 'fvt_segmentation.node.segmentation_node', '--ros-args',
                '-r', f'image:={IMAGE_TOPIC}', '-p', f'precision:={args.precision}',
                '-p', f'providers:=[{",".join(args.providers)}]',
                '-p', f'intra_op_threads:={args.intra_op_threads}']
    if args.model:
        node_cmd += ['-p', f'model_path:={args.model}']
    for param in args.node_param:
        node_cmd += ['-p', param]
    processes: list[subprocess.Popen] = []
    with open(node_log, 'w') as log:
        try:
            node = subprocess.Popen(node_cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            processes.append(node)
            receiver = subprocess.Popen(
                [python, '-m', 'fvt_segmentation.tools.bench_probes', 'receiver', '--mask-topic',
                 MASK_TOPIC, '--out', str(receiver_json), '--timeout', str(STARTUP_TIMEOUT_S)],
                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            processes.append(receiver)
            _wait_ready(receiver, node, node_log)
            # CPU time of the node and the receiver while the camera streams (not their
            # start-up): what each frame costs, whatever the machine's load does to latency.
            cpu_before = {'node': cpu_seconds(node.pid), 'receiver': cpu_seconds(receiver.pid)}
            streaming = time.monotonic()
            camera = subprocess.Popen(
                [python, '-m', 'fvt_segmentation.tools.bench_probes', 'camera', '--topic',
                 IMAGE_TOPIC, '--width', str(config.width), '--height', str(config.height),
                 '--rate', str(args.rate), '--duration', str(args.duration), '--out',
                 str(camera_json)], env=env)
            processes.append(camera)
            _follow(camera, args.duration, f'{config.size} {config.transport}')
            cpu = {'stream_s': time.monotonic() - streaming,
                   'node_s': _cpu_used(cpu_before['node'], node.pid),
                   'receiver_s': _cpu_used(cpu_before['receiver'], receiver.pid)}
            if camera.returncode != 0:
                raise RuntimeError(f'the camera process exited with {camera.returncode}')
            time.sleep(DRAIN_S)  # the masks of the last frames are on their way
            _stop_receiver(receiver)
        finally:
            for process in reversed(processes):
                _stop(process)
    return {'camera': json.loads(camera_json.read_text()),
            'receiver': json.loads(receiver_json.read_text()), 'cpu': cpu}


def _follow(camera: subprocess.Popen, duration: float, label: str) -> None:
    """Show a progress bar while the camera runs (startup plus ``duration`` seconds)."""
    with tqdm(total=round(duration), desc=label, unit='s', leave=False) as bar:
        start = time.monotonic()
        while camera.poll() is None:
            time.sleep(0.5)
            bar.n = min(round(time.monotonic() - start), bar.total)
            bar.refresh()
            if time.monotonic() - start > duration + STARTUP_TIMEOUT_S:
                camera.kill()
                camera.wait()


def _stop_receiver(receiver: subprocess.Popen) -> None:
    assert receiver.stdin is not None
    receiver.stdin.write(STOP + '\n')
    receiver.stdin.flush()
    receiver.wait(timeout=30)
    if receiver.returncode != 0:
        raise RuntimeError(f'the receiver process exited with {receiver.returncode}')


def _number(status: dict[str, str], key: str) -> float | None:
    value = status.get(key)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def run_median(statuses: list[dict[str, str]], key: str) -> float | None:
    """Median over the run of a latency the node reports about once a second.

    Each status holds a percentile over the node's last 200 frames, so the last status
    alone would describe only the end of a long run; statuses before the first processed
    frame carry no latency and are skipped.
    """
    values = [v for v in (_number(s, key) for s in statuses) if v is not None]
    return float(np.median(values)) if values else None


def summarize_run(config: Configuration, raw: dict[str, Any],
                  bare_ms: list[float]) -> dict[str, Any]:
    """Turn the raw figures of one run and the bare inference times into the reported ones."""
    camera, receiver = raw['camera'], raw['receiver']
    bare_p50, bare_p90 = percentiles_ms(bare_ms, 50, 90)
    status = receiver['statuses'][-1]  # the counters: the last status counts every frame
    statuses = receiver['statuses']
    masks = np.asarray(receiver['masks'], np.int64).reshape(-1, 2)
    latency_ms = (masks[:, 1] - masks[:, 0]) / 1e6
    e2e_p50, e2e_p99 = percentiles_ms(latency_ms.tolist(), 50, 99)
    first, last = camera['first_stamp_ns'], camera['last_stamp_ns']
    window_ns = int(LAG_WINDOW_S * 1e9)
    lag_first = percentiles_ms(latency_ms[masks[:, 0] < first + window_ns].tolist(), 50)[0]
    lag_last = percentiles_ms(latency_ms[masks[:, 0] > last - window_ns].tolist(), 50)[0]
    # Whole windows from the first frame; the last one takes the stream's end (a 60 s stream
    # at 30 Hz is 6 windows, not 6 and a one-frame seventh: its last stamp is 60.0x s in).
    windows = max(1, round((last - first) / window_ns))
    window_of = np.minimum((masks[:, 0] - first) // window_ns, windows - 1)
    lag_windows = [percentiles_ms(latency_ms[window_of == i].tolist(), 50)[0]
                   for i in range(windows)]
    # A growing backlog shows as a positive trend of latency over the stream's time.
    lag_slope = (float(np.polyfit((masks[:, 0] - first) / 60e9, latency_ms, 1)[0])
                 if len(masks) >= 2 and np.ptp(masks[:, 0]) > 0 else None)
    published = camera['published']
    received = _number(status, 'frames_received')
    overhead = None if e2e_p50 is None else e2e_p50 - bare_p50
    node_inference = run_median(statuses, 'inference_p50_ms')
    overhead_node = (None if e2e_p50 is None or node_inference is None
                     else e2e_p50 - node_inference)
    return {
        **asdict(config), 'size': config.size,
        'published': published, 'camera_rate_hz': camera['rate_hz'],
        'camera_publish_p50_ms': camera['publish_p50_ms'],
        'received_by_node': received,
        'received_pct': None if received is None else 100.0 * received / max(published, 1),
        'processed': _number(status, 'frames_processed'),
        'dropped': _number(status, 'frames_dropped'),
        'masks_published': _number(status, 'published_mask'),
        'masks_received': int(len(masks)), 'mask_shapes': receiver['shapes'],
        'e2e_p50_ms': e2e_p50, 'e2e_p99_ms': e2e_p99,
        'bare_inference_p50_ms': bare_p50, 'bare_inference_p90_ms': bare_p90,
        'bare_inference_runs': len(bare_ms),
        'node_inference_p50_ms': node_inference,
        'node_end_to_end_p50_ms': run_median(statuses, 'end_to_end_p50_ms'),
        'overhead_ms': overhead,
        'overhead_pct': None if overhead is None else 100.0 * overhead / bare_p50,
        'overhead_vs_node_inference_ms': overhead_node,
        'overhead_vs_node_inference_pct': (None if overhead_node is None
                                           else 100.0 * overhead_node / node_inference),
        'stages_p50_ms': {name: run_median(statuses, f'stage_{name}_p50_ms')
                          for name in STAGES},
        'lag_first_p50_ms': lag_first, 'lag_last_p50_ms': lag_last,
        'lag_window_s': LAG_WINDOW_S, 'lag_p50_by_window_ms': lag_windows,
        'lag_slope_ms_per_min': lag_slope,
        'output_rate_hz': run_median(statuses, 'output_rate_hz'),
        **cpu_figures(raw['cpu'], published),
    }


def cpu_figures(cpu: dict[str, float | None], frames: int) -> dict[str, float | None]:
    """CPU time per camera frame (ms) and share of one core (%), of node and receiver."""
    figures: dict[str, float | None] = {}
    for who in ('node', 'receiver'):
        used = cpu.get(f'{who}_s')
        figures[f'{who}_cpu_ms_per_frame'] = (None if used is None
                                              else 1e3 * used / max(frames, 1))
        figures[f'{who}_cpu_pct_of_core'] = (None if used is None
                                             else 100.0 * used / cpu['stream_s'])
    return figures


def _fmt(value: float | None, digits: int = 1) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def _frames(row: dict[str, Any]) -> str:
    runs = row.get('runs', 1)
    return row['size'] if runs == 1 else f"{row['size']} run {row['run']}/{runs}"


def worst_runs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per frame size and transport, the run that processed the smallest share of frames."""
    worst: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row['size'], row['transport'])
        share = (row['processed'] or 0) / max(row['published'], 1)
        if key not in worst or share < (worst[key]['processed'] or 0) / max(
                worst[key]['published'], 1):
            worst[key] = row
    return list(worst.values())


def render_tables(rows: list[dict[str, Any]], header: str) -> str:
    """Return the header line and the two markdown tables (delivery/latency, stages)."""
    lines = [header, '',
             '| frames | transport | published (Hz) | received by node | processed | '
             'masks published | masks received | e2e p50 / p99 ms | bare inference p50 ms | '
             'overhead ms (% of inference) | node inference p50 ms | overhead vs node '
             'inference ms (%) | lag p50 first / last 10 s ms |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for row in rows:
        lines.append(
            f"| {_frames(row)} | {row['transport']} | {row['published']} "
            f"({_fmt(row['camera_rate_hz'])}) | {_fmt(row['received_by_node'], 0)} "
            f"({_fmt(row['received_pct'])} %) | {_fmt(row['processed'], 0)} | "
            f"{_fmt(row['masks_published'], 0)} | {row['masks_received']} | "
            f"{_fmt(row['e2e_p50_ms'])} / {_fmt(row['e2e_p99_ms'])} | "
            f"{_fmt(row['bare_inference_p50_ms'])} | {_fmt(row['overhead_ms'])} "
            f"({_fmt(row['overhead_pct'], 0)} %) | {_fmt(row['node_inference_p50_ms'])} | "
            f"{_fmt(row['overhead_vs_node_inference_ms'])} "
            f"({_fmt(row['overhead_vs_node_inference_pct'], 0)} %) | "
            f"{_fmt(row['lag_first_p50_ms'])} / "
            f"{_fmt(row['lag_last_p50_ms'])} |")
    split = STAGES.index('preprocess') + 1
    lines += ['', '| frames | transport | ' + ' | '.join(STAGES[:split]) + ' | inference | '
              + ' | '.join(STAGES[split:]) + ' | node receipt to publish | '
              + 'outside the node (e2e - node) | camera publish() |',
              '| --- | --- |' + ' --- |' * (len(STAGES) + 4)]
    for row in rows:
        stages = row['stages_p50_ms']
        node_e2e = row['node_end_to_end_p50_ms']
        outside = (None if node_e2e is None or row['e2e_p50_ms'] is None
                   else row['e2e_p50_ms'] - node_e2e)
        cells = [_fmt(stages[name], 2) for name in STAGES]
        cells.insert(STAGES.index('preprocess') + 1, _fmt(row['node_inference_p50_ms'], 2))
        cells += [_fmt(node_e2e, 2), _fmt(outside, 2), _fmt(row['camera_publish_p50_ms'], 2)]
        lines.append(f"| {_frames(row)} | {row['transport']} | " + ' | '.join(cells) + ' |')
    lines += ['', '| frames | transport | node CPU ms per camera frame | node CPU (% of one '
              'core) | receiver CPU ms per camera frame | receiver CPU (% of one core) |',
              '| --- | --- | --- | --- | --- | --- |']
    for row in rows:
        lines.append(f"| {_frames(row)} | {row['transport']} | "
                     f"{_fmt(row.get('node_cpu_ms_per_frame'), 2)} | "
                     f"{_fmt(row.get('node_cpu_pct_of_core'), 0)} | "
                     f"{_fmt(row.get('receiver_cpu_ms_per_frame'), 2)} | "
                     f"{_fmt(row.get('receiver_cpu_pct_of_core'), 0)} |")
    lines += ['', f'| frames | transport | e2e p50 per {LAG_WINDOW_S:g} s of stream (ms) | '
              'trend of e2e over the stream (ms per minute) |', '| --- | --- | --- | --- |']
    for row in rows:
        windows = ' '.join(_fmt(v) for v in row['lag_p50_by_window_ms'])
        lines.append(f"| {_frames(row)} | {row['transport']} | {windows} | "
                     f"{_fmt(row['lag_slope_ms_per_min'], 2)} |")
    if any(row.get('runs', 1) > 1 for row in rows):
        lines += ['', '| frames | transport | processed per run (% of published) | worst run |',
                  '| --- | --- | --- | --- |']
        for worst in worst_runs(rows):
            same = [r for r in rows if (r['size'], r['transport']) == (
                worst['size'], worst['transport'])]
            shares = ' '.join(f"{_fmt(100.0 * (r['processed'] or 0) / max(r['published'], 1))}"
                              for r in same)
            lines.append(f"| {worst['size']} | {worst['transport']} | {shares} | "
                         f"{worst['run']}: {_fmt(worst['processed'], 0)} of "
                         f"{worst['published']} |")
    return '\n'.join(lines)


def _load_text() -> str:
    return '/'.join(f'{v:.1f}' for v in os.getloadavg())


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog='Without models/default.onnx, write a model of a few GFLOPs first: '
               'python scripts/make_bench_model.py output/bench.onnx')
    add_model_options(parser)
    parser.add_argument('--sizes', default='1024x512,2048x1024',
                        type=lambda text: parse_sizes([text]),
                        help='comma-separated frame sizes WIDTHxHEIGHT')
    parser.add_argument('--transport', type=parse_transports, default=list(TRANSPORTS),
                        help='comma-separated: profile (shipped DDS profiles), default')
    parser.add_argument('--repeat', type=int, default=1,
                        help='runs of each configuration, one after the other (the tables '
                             'show each run and the worst; default: %(default)s)')
    parser.add_argument('--duration', type=float, default=60.0,
                        help='seconds of frames per configuration')
    parser.add_argument('--rate', type=float, default=30.0, help='camera frames per second')
    parser.add_argument('--inference-runs', type=int, default=30,
                        help='timed bare inference runs before and after each configuration')
    parser.add_argument('--providers', default='cpu',
                        type=lambda text: [p.strip() for p in text.split(',') if p.strip()],
                        help='ONNX Runtime providers for the node and the bare timing')
    parser.add_argument('--intra-op-threads', type=int, default=0)
    parser.add_argument('--node-param', action='append', default=[], metavar='NAME:=VALUE',
                        help='extra node parameter (repeatable), e.g. input_depth:=4')
    parser.add_argument('--domain-base', type=int, default=None,
                        help='ROS_DOMAIN_ID of the first configuration, the next ones count '
                             'up (default: random in 120..199)')
    parser.add_argument('--json', type=Path, help='also write every figure to this file')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every configuration, print the tables; return 1 if the model cannot be used."""
    args = _parse_args(argv)
    if args.model:
        args.model = str(Path(args.model).expanduser().resolve())
    try:
        # The bare timing runs the file the node will choose, by the same rule.
        segmenter, choice = load_model(args.model, args.precision, args.providers,
                                       intra_op_threads=args.intra_op_threads)
    except ModelLoadError as err:
        print(f'bench: {err}\n  write a benchmark model with: python '
              'scripts/make_bench_model.py output/bench.onnx', file=sys.stderr)
        return 1
    if args.repeat < 1:
        print(f'bench: --repeat must be at least 1; got {args.repeat}', file=sys.stderr)
        return 2
    plan = [(size, transport, run) for size in args.sizes for transport in args.transport
            for run in range(1, args.repeat + 1)]
    base = (args.domain_base if args.domain_base is not None
            else random.Random(os.getpid()).randrange(120, max(121, 232 - len(plan))))
    configs = [Configuration(width, height, transport, base + i, run, args.repeat)
               for i, ((width, height), transport, run) in enumerate(plan)]
    load_before = _load_text()
    rows = []
    with tempfile.TemporaryDirectory(prefix='fvt_bench_') as tmp:
        for config in configs:
            # Timed just before and just after the run: the machine's load of the moment.
            bare = time_inference(segmenter, args.inference_runs)
            raw = run_configuration(config, args, Path(tmp))
            bare += time_inference(segmenter, args.inference_runs)
            rows.append(summarize_run(config, raw, bare))
    height, width = segmenter.input_size
    params = f'; node parameters {" ".join(args.node_param)}' if args.node_param else ''
    header = (f'bench: model {choice.path.name} ({choice.precision}, precision '
              f'{args.precision}; input {width}x{height}, '
              f'{segmenter.active_provider}), camera {_fmt(args.rate, 0)} Hz rgb8 for '
              f'{_fmt(args.duration, 0)} s per row, mask only subscribed{params}; machine: '
              f'{os.cpu_count()} CPUs, load average {load_before} before, {_load_text()} '
              'after (1/5/15 min)')
    print(render_tables(rows, header), flush=True)
    if args.json:
        write_json(args.json, {'header': header, 'model': str(choice.path),
                               'model_precision': choice.precision,
                               'rate_hz': args.rate, 'duration_s': args.duration,
                               'rows': rows})
    return 0


if __name__ == '__main__':
    sys.exit(main())
