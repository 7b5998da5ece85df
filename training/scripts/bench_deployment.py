#!/usr/bin/env python3
"""Deployment benchmark: the earlier studies' Keras predict against the node's paths.

    python training/scripts/bench_deployment.py --run runs/default_unet_like_256 \
        --model models/default.onnx [--rounds 3] [--node-duration 30]

On the bundled recording's camera frames (decoded as the node decodes them), times per frame:
(a) Keras ``model.predict`` on the trained Keras model, (b) ONNX Runtime float32,
(c) ONNX Runtime int8 (``--int8``, default ``<model>.int8.onnx`` if present), each as
preprocess + network + argmax with the node's own pre/post-processing, so only the network
call differs; and (d) the
whole node end to end through ROS 2 (``bench``: camera frame published in one process, mask
received in another, at the recording's frame size). Prints a markdown table with ratios
against (a) and the node overhead against (b).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import time

import numpy as np

from fvt_segmentation.inference import load_segmenter, preprocess_frame, scores_to_classes
from fvt_segmentation.recording import CAMERA_TOPIC, default_recording, read_images
from fvt_training.run_contract import run_contract
from fvt_training.train import load_run

WARMUP = 5


def _time(step, frames: list[np.ndarray], rounds: int) -> np.ndarray:
    for frame in frames[:WARMUP]:
        step(frame)
    times = []
    for _ in range(rounds):
        for frame in frames:
            t0 = time.perf_counter()
            step(frame)
            times.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(times)


def _node_end_to_end(model: Path, size: tuple[int, int], duration: float, rate: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'bench.json'
        subprocess.run([sys.executable, '-m', 'fvt_segmentation.bench', '--model', str(model),
                        '--sizes', f'{size[1]}x{size[0]}', '--transport', 'profile',
                        '--duration', str(duration), '--rate', str(rate), '--json', str(out)],
                       check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())['rows'][0]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--run', type=Path, required=True, help='the Keras run (fvt-train)')
    parser.add_argument('--model', type=Path, required=True, help='its float32 ONNX export')
    parser.add_argument('--int8', type=Path, default=None,
                        help='int8 file for (c) (default: <model>.int8.onnx if present)')
    parser.add_argument('--rounds', type=int, default=3, help='passes over the frames')
    parser.add_argument('--node-duration', type=float, default=30.0)
    parser.add_argument('--node-rate', type=float, default=5.0,
                        help='camera rate for (d), low enough that the node is never busy')
    args = parser.parse_args(argv)

    frames = list(read_images(default_recording(), CAMERA_TOPIC).values())
    fp32 = load_segmenter(args.model, providers=['cpu'])
    contract = fp32.contract
    config, keras_model = load_run(args.run)
    if run_contract(args.run, config).normalization != contract.normalization:
        raise SystemExit(f'{args.model} was not exported from {args.run}')

    def keras_step(frame: np.ndarray) -> np.ndarray:
        x = preprocess_frame(frame, 'BGR', fp32.input_size, contract)
        scores = keras_model.predict(x, verbose=0)
        return scores_to_classes(scores, contract.layout, contract.output)[0]

    def onnx_step(segmenter):
        return lambda frame: segmenter.segment(frame, 'BGR').classes

    rows = [('(a) Keras model.predict', _time(keras_step, frames, args.rounds))]
    rows.append(('(b) ONNX Runtime float32', _time(onnx_step(fp32), frames, args.rounds)))
    int8_path = args.int8 or args.model.with_suffix('.int8.onnx')
    if int8_path.exists():
        int8 = load_segmenter(int8_path, providers=['cpu'])
        rows.append(('(c) ONNX Runtime int8', _time(onnx_step(int8), frames, args.rounds)))
    node = _node_end_to_end(args.model, frames[0].shape[:2], args.node_duration,
                            args.node_rate)

    keras_p50 = float(np.median(rows[0][1]))
    onnx_p50 = float(np.median(rows[1][1]))
    print(f'frames: {len(frames)} of {default_recording().name} '
          f'({frames[0].shape[1]}x{frames[0].shape[0]}), model input '
          f'{fp32.input_size[1]}x{fp32.input_size[0]}, {args.rounds} rounds after {WARMUP} '
          f'warm-up frames; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n')
    print(f'(b): {args.model}' + (f', (c): {int8_path}' if int8_path.exists() else '') + '\n')
    print('| path | p50 ms/frame | p90 ms/frame | speed-up vs (a) |')
    print('| --- | --- | --- | --- |')
    for name, times in rows:
        p50, p90 = np.percentile(times, [50, 90])
        print(f'| {name} | {p50:.1f} | {p90:.1f} | {keras_p50 / p50:.2f}x |')
    e2e = node['e2e_p50_ms']
    print(f'| (d) node end to end (float32, ROS 2, another process, {args.node_rate:g} Hz) '
          f'| {e2e:.1f} (p99 {node["e2e_p99_ms"]:.1f}) | - | {keras_p50 / e2e:.2f}x |')
    print(f'\nnode overhead against (b): {e2e - onnx_p50:+.1f} ms = '
          f'{100 * (e2e - onnx_p50) / onnx_p50:+.1f} % of (b); frames received by the node '
          f'{node["received_by_node"]:.0f} of {node["published"]}, masks received '
          f'{node["masks_received"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
