#!/usr/bin/env python3
"""Deployment benchmark: the earlier studies' Keras predict against the node's paths.

    python training/scripts/bench_deployment.py --run runs/default_unet_like_256 \
        --model models/default.onnx [--rounds 3] [--node-duration 30]
    python training/scripts/bench_deployment.py --config training/configs/camvid_default.yaml \
        --model models/default.onnx

On the bundled recording's camera frames (decoded as the node decodes them), times per frame:
(a) Keras ``model.predict`` on the trained Keras model (``--run``), or on the same network
built untrained from the run's configuration (``--config``: where the run folder is not at
hand; the weights do not change the time), (b) ONNX Runtime float32,
(c) ONNX Runtime int8 (``--int8``, default ``<model>.int8.onnx`` if present), each as
preprocess + network + argmax with the node's own pre/post-processing, so only the network
call differs; (d) the whole node end to end through ROS 2 (``bench``: camera frame published
in one process, mask received in another, at the recording's frame size) and (e) the same
with the int8 file. Prints a markdown table with ratios against (a) and the node overhead
against (b) (and (e) against (c)).
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

from fvt_segmentation.bag.bundled_recording import CAMERA_TOPIC, default_recording, read_images
from fvt_segmentation.core.frame_processing import preprocess_frame, scores_to_classes
from fvt_segmentation.core.inference import load_segmenter
from fvt_training.config import load_config
from fvt_training.models import build_model, model_normalization
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
        subprocess.run([sys.executable, '-m', 'fvt_segmentation.tools.bench',
                        '--model', str(model), '--sizes', f'{size[1]}x{size[0]}',
                        '--transport', 'profile',
                        '--duration', str(duration), '--rate', str(rate), '--json', str(out)],
                       check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())['rows'][0]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    keras = parser.add_mutually_exclusive_group(required=True)
    keras.add_argument('--run', type=Path, help='the Keras run (fvt-train) behind --model')
    keras.add_argument('--config', type=Path,
                       help="the run's configuration: (a) then times that network untrained")
    parser.add_argument('--model', type=Path, required=True, help='its float32 ONNX export')
    parser.add_argument('--int8', type=Path, default=None,
                        help='int8 file for (c) (default: <model>.int8.onnx if present)')
    parser.add_argument('--rounds', type=int, default=3, help='passes over the frames')
    parser.add_argument('--node-duration', type=float, default=30.0)
    parser.add_argument('--node-rate', type=float, default=5.0,
                        help='camera rate for (d), low enough that the node is never busy')
    args = parser.parse_args(argv)

    frames = list(read_images(default_recording(), CAMERA_TOPIC).values())
    # Not spinning: TensorFlow and two ONNX Runtime sessions share this process (see
    # fvt_training.evaluate.OnnxFileModel); the node rows run the node's own defaults.
    fp32 = load_segmenter(args.model, providers=['cpu'], intra_op_spinning=False)
    contract = fp32.contract
    if args.run is not None:
        config, keras_model = load_run(args.run)
        normalization = run_contract(args.run, config).normalization
        keras_source = f'the trained model of {args.run}'
    else:
        config = load_config(args.config, [f'model.input_size={list(fp32.input_size)}'])
        keras_model = build_model(config)
        normalization = model_normalization(config)[0]
        keras_source = f'the network of {args.config}, untrained (same layers, same time)'
    if normalization != contract.normalization:
        raise SystemExit(f'{args.model} does not take the input {args.run or args.config} '
                         'describes (normalisation differs)')

    def keras_step(frame: np.ndarray) -> np.ndarray:
        x = preprocess_frame(frame, 'BGR', fp32.input_size, contract)
        scores = keras_model.predict(x, verbose=0)
        return scores_to_classes(scores, contract.layout, contract.output)[0]

    def onnx_step(segmenter):
        return lambda frame: segmenter.segment(frame, 'BGR').classes

    # One file per precision: its path, the letter of its bare row and of its node row.
    files = {'float32': (args.model, 'b', 'd')}
    int8_path = args.int8 or args.model.with_suffix('.int8.onnx')
    if int8_path.exists():
        files['int8'] = (int8_path, 'c', 'e')
    # ONNX Runtime first: once TensorFlow has run, its own worker threads spin for a while.
    bare = {'float32': _time(onnx_step(fp32), frames, args.rounds)}
    if 'int8' in files:
        int8 = load_segmenter(int8_path, providers=['cpu'], intra_op_spinning=False)
        bare['int8'] = _time(onnx_step(int8), frames, args.rounds)
    keras_times = _time(keras_step, frames, args.rounds)
    nodes = {tag: _node_end_to_end(path, frames[0].shape[:2], args.node_duration,
                                   args.node_rate) for tag, (path, _, _) in files.items()}

    keras_p50 = float(np.median(keras_times))
    print(f'frames: {len(frames)} of {default_recording().name} '
          f'({frames[0].shape[1]}x{frames[0].shape[0]}), model input '
          f'{fp32.input_size[1]}x{fp32.input_size[0]}, {args.rounds} rounds after {WARMUP} '
          f'warm-up frames; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n')
    print(f'(a): {keras_source}; '
          + ', '.join(f'({bare_row}): {path}' for path, bare_row, _ in files.values()) + '\n')
    print('| path | p50 ms/frame | p90 ms/frame | speed-up vs (a) |')
    print('| --- | --- | --- | --- |')
    rows = [('(a) Keras model.predict', keras_times)] + [
        (f'({files[tag][1]}) ONNX Runtime {tag}', times) for tag, times in bare.items()]
    for name, times in rows:
        p50, p90 = np.percentile(times, [50, 90])
        print(f'| {name} | {p50:.1f} | {p90:.1f} | {keras_p50 / p50:.2f}x |')
    for tag, node in nodes.items():
        e2e = node['e2e_p50_ms']
        print(f'| ({files[tag][2]}) node end to end ({tag}, ROS 2, another process, '
              f'{args.node_rate:g} Hz) | {e2e:.1f} (p99 {node["e2e_p99_ms"]:.1f}) | - '
              f'| {keras_p50 / e2e:.2f}x |')
    print()
    for tag, node in nodes.items():
        against, base = files[tag][1], float(np.median(bare[tag]))
        e2e = node['e2e_p50_ms']
        print(f'node overhead ({tag}) against ({against}): {e2e - base:+.1f} ms = '
              f'{100 * (e2e - base) / base:+.1f} % of ({against}); frames received '
              f'by the node {node["received_by_node"]:.0f} of {node["published"]}, masks '
              f'received {node["masks_received"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
