#!/usr/bin/env python3
"""What ``fvt-train adopt``'s category head adds to a channels-first (NCHW) model on this CPU.

    python training/scripts/time_category_head.py [--classes 12] [--size 480x360] [--runs 200]

Builds a stand-in of a PyTorch export (NCHW logits over ``--classes`` classes at the input
size: a strided 3x3 convolution, a 1x1 classifier, a bilinear x2 upsampling), adopts it with
``fvt_training.adopt.adopt.adopt`` (a YAML label set spreading the classes over the 8 categories),
then times the source and the adopted file in turns (``time_interleaved``, batch 1, the same
tensor, sessions that do not spin) and prints both medians, their difference and the load
average: the difference is the head's cost.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fvt_segmentation.core.contract import CATEGORIES
from fvt_segmentation.core.sizes import parse_size
from fvt_training.adopt.adopt import adopt
from fvt_training.adopt.inspection import AdoptOptions, cpu_session
from fvt_training.evaluation.latency import time_interleaved


def stand_in(path: Path, classes: int, input_size: tuple[int, int]) -> Path:
    """Write an NCHW source: ``[1, 3, H, W]`` -> logits ``[1, classes, H, W]`` (opset 17)."""
    rng = np.random.default_rng(0)
    height, width = input_size
    inits = [numpy_helper.from_array(rng.normal(scale=0.3, size=(32, 3, 3, 3)).astype(
                 np.float32), 'K1'),
             numpy_helper.from_array(rng.normal(scale=1.0, size=(classes, 32, 1, 1)).astype(
                 np.float32), 'K2'),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), 'scales')]
    nodes = [helper.make_node('Conv', ['image', 'K1'], ['c1'], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node('Relu', ['c1'], ['r1']),
             helper.make_node('Conv', ['r1', 'K2'], ['small']),
             helper.make_node('Resize', ['small', '', 'scales'], ['logits'], mode='linear')]
    graph = helper.make_graph(
        nodes, 'stand_in', [helper.make_tensor_value_info('image', TensorProto.FLOAT,
                                                          [1, 3, height, width])],
        [helper.make_tensor_value_info('logits', TensorProto.FLOAT,
                                       [1, classes, height, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def labels_yaml(path: Path, classes: int) -> Path:
    """Write a label set of ``classes`` classes, class i in category i mod 8."""
    lines = [f'  - {{name: class{i}, category: {CATEGORIES[i % len(CATEGORIES)]}}}'
             for i in range(classes)]
    path.write_text('classes:\n' + '\n'.join(lines) + '\n')
    return path


def main() -> None:
    """Adopt the stand-in, time it against the source, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--classes', type=int, default=12)
    parser.add_argument('--size', type=parse_size, default=(480, 360), help='WxH')
    parser.add_argument('--runs', type=int, default=200)
    parser.add_argument('--warmup', type=int, default=10)
    args = parser.parse_args()
    width, height = args.size
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = stand_in(folder / 'source.onnx', args.classes, (height, width))
        labels = labels_yaml(folder / 'labels.yaml', args.classes)
        adopted = folder / 'adopted.onnx'
        adopt(source, adopted, AdoptOptions(labels=str(labels), licence='stand-in',
                                            color_order='RGB', mean=(0, 0, 0),
                                            std=(255, 255, 255)))
        sessions = {'source': cpu_session(onnx.load(str(source))),
                    'adopted': cpu_session(onnx.load(str(adopted)))}
        tensor = np.random.default_rng(1).random((1, 3, height, width), np.float32)
        stats = time_interleaved(
            {name: (lambda s=s: s.run(None, {'image': tensor}))
             for name, s in sessions.items()}, args.runs, args.warmup)
    source_ms, adopted_ms = stats['source']['median_ms'], stats['adopted']['median_ms']
    load = ' '.join(Path('/proc/loadavg').read_text().split()[:3])
    print(f'{args.classes} classes, NCHW, {width}x{height}, median of {args.runs} runs in '
          f'turns: adopted {adopted_ms:.2f} ms, source {source_ms:.2f} ms, head '
          f'{adopted_ms - source_ms:+.2f} ms; load average {load} on '
          f'{stats["source"]["cpu_count"]} CPUs')


if __name__ == '__main__':
    main()
