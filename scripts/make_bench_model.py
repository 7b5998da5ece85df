"""Write a contract-following ONNX model of a few GFLOPs for ``bench`` (no training needed).

    python scripts/make_bench_model.py [OUT.onnx] [--size 512x256] [--repeats 2]

The model is the test suite's tiny affine segmenter (``test/onnx_models.py``) plus
``--repeats`` 3x3 convolutions of 32 channels at the model input resolution, each
H*W*18432 FLOPs (2.4 GFLOP at 256x512), so inference costs what a small real network
costs while the masks stay exactly predictable. Use it when ``models/default.onnx`` is not
there yet or to compare machines with a fixed workload.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'test'))

from onnx_models import build_model  # noqa: E402

from fvt_segmentation.core.sizes import parse_size  # noqa: E402

CONV_FLOPS_PER_PIXEL = 2 * 32 * 32 * 9  # multiply-adds of one 3x3 32->32 convolution, x2


def main() -> None:
    """Write the model and print its size and estimated cost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out', nargs='?', type=Path, default=REPO / 'output' / 'bench.onnx',
                        help='where to write it (default: output/bench.onnx, git-ignored)')
    parser.add_argument('--size', type=parse_size, default=(512, 256),
                        help='model input WIDTHxHEIGHT (default 512x256)')
    parser.add_argument('--repeats', type=int, default=2,
                        help='3x3 32-channel convolutions (default 2)')
    args = parser.parse_args()
    width, height = args.size
    path = build_model(args.out, size=(height, width), slow_repeats=args.repeats)
    gflops = width * height * CONV_FLOPS_PER_PIXEL * args.repeats / 1e9
    print(f'wrote {path}: input {width}x{height}, {args.repeats} convolutions, '
          f'about {gflops:.1f} GFLOP per frame')


if __name__ == '__main__':
    main()
