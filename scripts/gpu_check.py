#!/usr/bin/env python3
"""Run the node's inference core on TensorRT and CUDA and report against the CPU.

    PYTHONPATH=.:training python scripts/gpu_check.py [--model FILE] [--runs 50]

For each of TensorRT fp32, fp16 and int8 (a symmetric int8 QDQ copy made here from the
recording's frames, when the training package is importable), CUDA, and CUDA with a contract
version 2 copy: the load time (for TensorRT the engine build, into a fresh cache folder,
then the restart from that cache), the provider that really ran, the argmax agreement with
the CPU float32 file on the bundled recording's frames, and the median per-frame latency of
``Segmenter.segment``. ``scripts/gpu_check.sh`` installs what this needs and calls it.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
import statistics
import sys
import tempfile
import time

import numpy as np

from fvt_segmentation.bag.bundled_recording import sample_frames
from fvt_segmentation.core.inference import load_segmenter
from fvt_segmentation.core.parity import argmax_agreement
from fvt_segmentation.core.resources import resolve_model_path
from fvt_segmentation.core.segmenter import Segmenter


def latency_ms(segmenter: Segmenter, frames: list[np.ndarray], runs: int) -> float:
    """Median ms of ``segment`` (with confidence) over ``runs`` frames, after 5 warm-ups."""
    times = []
    for i in range(runs + 5):
        start = time.perf_counter()
        segmenter.segment(frames[i % len(frames)], 'RGB', want_confidence=True)
        if i >= 5:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def derived_files(cpu: Segmenter, folder: Path, frames: list[np.ndarray]) -> dict[str, Path]:
    """Make int8 (TensorRT) and contract v2 copies of ``cpu``'s file (needs fvt_training)."""
    try:
        from fvt_training.contract_v2 import write_v2_copy
        from fvt_training.export import FrameCalibrationReader, int8_trt_settings, quantize_int8
    except ImportError as err:
        print(f'(no int8 and v2 rows: the training package is not importable: {err})')
        return {}
    source = cpu.model_path
    int8 = folder / 'int8trt.onnx'
    contract = replace(cpu.contract, quantization='int8_symmetric_qdq')
    quantize_int8(source, int8, FrameCalibrationReader(iter(frames), cpu.contract,
                                                       cpu.input_size),
                  contract, int8_trt_settings())
    v2 = folder / 'v2.onnx'
    write_v2_copy(source, v2)
    return {'int8': int8, 'v2': v2}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns 1 if no GPU provider ran at all."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default='', help="float32 file; '' = the shipped one")
    parser.add_argument('--runs', type=int, default=50)
    args = parser.parse_args(argv)
    source = resolve_model_path(args.model)
    frames = sample_frames(8)
    reference = load_segmenter(source, providers=['cpu'])
    rows = [('cpu fp32', reference, 0.0, None)]
    gpu_ran = False
    with tempfile.TemporaryDirectory(prefix='fvt-gpu-check-') as tmp:
        files = derived_files(reference, Path(tmp), frames)
        cases = [('tensorrt fp32', source, ['tensorrt'], False),
                 ('tensorrt fp16', source, ['tensorrt'], True)]
        if 'int8' in files:
            cases.append(('tensorrt int8', files['int8'], ['tensorrt'], True))
        cases.append(('cuda fp32', source, ['cuda'], False))
        if 'v2' in files:
            cases.append(('cuda fp32 v2', files['v2'], ['cuda'], False))
        for tag, path, providers, fp16 in cases:
            cache = Path(tmp) / 'trt'
            try:
                first = load_segmenter(path, providers=providers, trt_cache_dir=cache,
                                       trt_fp16=fp16, parity_frames=lambda: frames[:4],
                                       progress=lambda line: print(f'  {line}', flush=True))
                restart = None
                if providers == ['tensorrt']:
                    restart = load_segmenter(path, providers=providers, trt_cache_dir=cache,
                                             trt_fp16=fp16).load_seconds
            except Exception as err:  # noqa: BLE001 - report and go on with the next row
                print(f'{tag}: FAILED: {type(err).__name__}: {err}')
                continue
            gpu_ran |= first.active_provider != 'CPUExecutionProvider'
            rows.append((tag, first, first.load_seconds, restart))
        print(f'\n{source.name}: input {reference.input_size[1]}x{reference.input_size[0]}, '
              f'{len(frames)} recording frames')
        print(f'{"case":16s}{"provider":28s}{"prec":>6s}{"load s":>9s}{"cached s":>10s}'
              f'{"agree %":>10s}{"ms/frame":>10s}  fallback / parity')
        for tag, seg, load_s, restart in rows:
            agreement = argmax_agreement(seg, reference, frames) * 100
            cached = '' if restart is None else f'{restart:.2f}'
            print(f'{tag:16s}{seg.active_provider:28s}{seg.precision:>6s}{load_s:9.2f}'
                  f'{cached:>10s}{agreement:10.3f}{latency_ms(seg, frames, args.runs):10.2f}'
                  f'  {seg.fallback_reason or "-"} / {seg.parity or "-"}')
    return 0 if gpu_ran else 1


if __name__ == '__main__':
    sys.exit(main())
