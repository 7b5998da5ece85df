#!/usr/bin/env python3
"""Time contract version 1 against version 2 on the CPU, through the node's inference core.

    PYTHONPATH=.:training python scripts/bench_contract_v2.py [--model models/default.onnx]

Writes version 2 copies of a version 1 file to a temporary folder (class ids and confidence
in the graph; then also a uint8 input) and runs the bundled recording's frames through
:meth:`Segmenter.segment` of each, in turns, with confidence (what ``~/confidence`` needs)
and without. Prints the median milliseconds per stage. Figures, not a test: a shared or
busy machine moves them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import statistics
import sys
import tempfile

import numpy as np

from fvt_segmentation.bag.bundled_recording import sample_frames
from fvt_segmentation.core.inference import load_segmenter
from fvt_segmentation.core.resources import resolve_model_path
from fvt_segmentation.core.segmenter import Segmenter
from fvt_training.contract_v2 import write_v2_copy

STAGES = ('preprocess', 'inference', 'postprocess')


def time_in_turns(segmenters: dict[str, Segmenter], frames: list[np.ndarray], runs: int,
                  confidence: bool) -> dict[str, dict[str, float]]:
    """Median ms per stage (and in all) of each segmenter, run in turns on ``frames``."""
    times: dict[str, dict[str, list[float]]] = {
        tag: {stage: [] for stage in (*STAGES, 'total')} for tag in segmenters}
    for run in range(runs):
        frame = frames[run % len(frames)]
        for tag, segmenter in segmenters.items():
            result = segmenter.segment(frame, 'RGB', want_confidence=confidence)
            for stage in STAGES:
                times[tag][stage].append(result.timings_ms[stage])
            times[tag]['total'].append(sum(result.timings_ms.values()))
    return {tag: {stage: statistics.median(v) for stage, v in stages.items()}
            for tag, stages in times.items()}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default='', help="version 1 file; '' = the shipped one")
    parser.add_argument('--runs', type=int, default=60, help='timed runs per file')
    parser.add_argument('--threads', type=int, default=0, help='intra-op threads (0 = all)')
    args = parser.parse_args(argv)
    source = resolve_model_path(args.model)
    frames = sample_frames(8)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {'v1': source, 'v2': Path(tmp) / 'v2.onnx',
                 'v2 uint8 input': Path(tmp) / 'v2u8.onnx'}
        write_v2_copy(source, paths['v2'])
        write_v2_copy(source, paths['v2 uint8 input'], uint8_input=True)
        segmenters = {tag: load_segmenter(path, providers=['cpu'], intra_op_spinning=False,
                                          intra_op_threads=args.threads)
                      for tag, path in paths.items()}
        for segmenter in segmenters.values():
            segmenter.warm_up(3)
        height, width = segmenters['v1'].input_size
        print(f'{source.name}: input {width}x{height}, {len(frames)} recording frames '
              f'{frames[0].shape[1]}x{frames[0].shape[0]}, {args.runs} runs each, in turns')
        for confidence in (False, True):
            medians = time_in_turns(segmenters, frames, args.runs, confidence)
            print(f'\nmedian ms, {"with" if confidence else "without"} confidence:')
            print(f'{"file":16s}' + ''.join(f'{s:>13s}' for s in (*STAGES, 'total')))
            for tag, row in medians.items():
                print(f'{tag:16s}' + ''.join(f'{row[s]:13.2f}' for s in (*STAGES, 'total')))
    return 0


if __name__ == '__main__':
    sys.exit(main())
