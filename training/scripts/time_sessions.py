#!/usr/bin/env python3
"""Two ONNX files in one process: alone and in turns, ONNX Runtime threads spinning or not.

    python training/scripts/time_sessions.py FLOAT32.onnx INT8.onnx [--runs 40] [--profile]

Shows why ``fvt_training.latency.time_interleaved`` needs sessions that do not spin: a
spinning session's threads steal the cores from the next session's run. ``--profile`` adds
ONNX Runtime's per-operator times of each file (its own profiler, alone, not spinning), and
its convolutions split by kind: depthwise, 1x1 (pointwise) and the rest, which gain very
differently from int8. Each file gets its own input from a frame of the bundled recording (a
uint8-input file takes the pixels). "network" is each file's graph up to its scores output
(a contract version 2 file's class ids and confidence left out); "per frame" is what the node
does: its preprocessing and the whole file, fetching the class ids.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
import functools
import json
import os
from pathlib import Path
import re
import sys
import tempfile
from typing import Any

import numpy as np
import onnx

from fvt_segmentation.bag.bundled_recording import sample_frames
from fvt_segmentation.core.inference import load_segmenter
from fvt_segmentation.core.sessions import open_session
from fvt_training.latency import time_calls, time_interleaved


def conv_kinds(path: Path) -> dict[str, str]:
    """Map each convolution's node name, output and fused activation output to its kind."""
    graph = onnx.load(str(path)).graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    kinds: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != 'Conv':
            continue
        weight = node.input[1]
        if weight not in shapes and weight in producers:  # QDQ: the weight's DequantizeLinear
            weight = producers[weight].input[0]
        out_channels, in_per_group, *kernel = shapes[weight]
        group = next((a.i for a in node.attribute if a.name == 'group'), 1)
        kind = ('depthwise' if group > 1 and in_per_group == 1 else
                'pointwise' if kernel == [1, 1] else f'{"x".join(map(str, kernel))} conv')
        kinds[node.name] = kinds[node.output[0]] = kind
    # ONNX Runtime folds a following BatchNormalization and fuses the activation, naming the
    # fused node after the activation's output.
    for node in graph.node:
        if node.op_type in ('BatchNormalization', 'Relu', 'Clip') and node.input[0] in kinds:
            kinds[node.output[0]] = kinds[node.input[0]]
    return kinds


def _kind(name: str, kinds: dict[str, str]) -> str | None:
    base = re.sub(r'(_nchwc|_token_\d+)+$', '', name)
    return kinds.get(base)


def _operator_ms(path: Path, x: np.ndarray, runs: int) -> tuple[Counter, Counter]:
    with tempfile.TemporaryDirectory() as tmp:
        session = open_session(path, spinning=False, profile_prefix=Path(tmp) / 'profile')
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    kinds = conv_kinds(path)
    per_op: Counter = Counter()
    per_conv: Counter = Counter()
    for event in events:
        if event.get('cat') == 'Node' and event['name'].endswith('_kernel_time'):
            op = event['args'].get('op_name')
            ms = event['dur'] / 1e3 / runs
            per_op[op] += ms
            if op in ('Conv', 'QLinearConv'):
                per_conv[_kind(event['name'][:-len('_kernel_time')], kinds) or 'unmatched'] += ms
    return per_op, per_conv


def network_call(segmenter: Any, frame: np.ndarray, spinning: bool,
                 folder: Path) -> Callable[[], Any]:
    """Return a call of the file's network alone: its graph up to the scores output.

    ONNX Runtime runs every node of a graph whatever outputs are fetched, so a contract
    version 2 file fetched for its scores still computes its class ids and confidence; the
    network is timed as the sub-graph that ends at the scores.
    """
    path = folder / f'{segmenter.model_path.stem}.scores.onnx'
    onnx.utils.extract_model(str(segmenter.model_path), str(path), [segmenter.input_name],
                             [segmenter.scores_name])
    session = open_session(path, spinning=spinning)
    feed = {segmenter.input_name: segmenter.preprocess(frame)}
    return functools.partial(session.run, [segmenter.scores_name], feed)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('first', type=Path)
    parser.add_argument('second', type=Path)
    parser.add_argument('--runs', type=int, default=40)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--profile', action='store_true')
    args = parser.parse_args(argv)
    paths = {'first': args.first, 'second': args.second}

    # A real camera frame, each file fed its own input (a uint8-input file takes the pixels).
    frame = sample_frames(1)[0]
    print(f'{args.first.name} / {args.second.name}, batch 1, median ms of {args.runs} runs; '
          f'load average {os.getloadavg()[0]:.2f} before')
    with tempfile.TemporaryDirectory(prefix='fvt-network-') as tmp:
        for spinning in (True, False):
            models = {tag: load_segmenter(p, providers=['cpu'], intra_op_spinning=spinning)
                      for tag, p in paths.items()}
            calls = {tag: network_call(m, frame, spinning, Path(tmp))
                     for tag, m in models.items()}
            alone = {tag: time_calls(c, args.runs, args.warmup)['median_ms']
                     for tag, c in calls.items()}
            turns = {tag: s['median_ms'] for tag, s in
                     time_interleaved(calls, args.runs, args.warmup).items()}
            # Per camera frame: the node's preprocessing too (a float32 file's normalisation is
            # numpy work outside the graph, a uint8-input file's is inside).
            frames = {tag: (lambda m=m: m.segment(frame)) for tag, m in models.items()}
            per_frame = {tag: s['median_ms'] for tag, s in
                         time_interleaved(frames, args.runs, args.warmup).items()}
            print(f'spinning {"on " if spinning else "off"}: network alone {alone["first"]:.1f} / '
                  f'{alone["second"]:.1f} ({alone["first"] / alone["second"]:.2f}x), network in '
                  f'turns {turns["first"]:.1f} / {turns["second"]:.1f} '
                  f'({turns["first"] / turns["second"]:.2f}x), per frame in turns '
                  f'{per_frame["first"]:.1f} / {per_frame["second"]:.1f} '
                  f'({per_frame["first"] / per_frame["second"]:.2f}x)')
            del models, calls, frames
    print(f'load average {os.getloadavg()[0]:.2f} after')
    if args.profile:
        for path in paths.values():
            tensor = load_segmenter(path, providers=['cpu']).preprocess(frame)
            per_op, per_conv = _operator_ms(path, tensor, args.runs)
            total = sum(per_op.values())
            print(f'\n{path.name}: {total:.2f} ms in operators')
            for op, ms in per_op.most_common(8):
                print(f'  {op:22s} {ms:6.2f} ms  {100 * ms / total:5.1f} %')
            print('  convolutions by kind: ' + ', '.join(
                f'{kind} {ms:.2f} ms' for kind, ms in per_conv.most_common()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
