#!/usr/bin/env python3
"""The best scores a network's output stride allows on a prepared split (no model involved).

    python training/scripts/grid_bound.py data/camvid/480x360 [--split val]
        [--input 640x480] [--strides 4 2]

For each stride, a perfect classifier on the grid that stride gives at the network input size
(``fvt_training.evaluation.grid_bound``) is scored on the split's labels, as ``fvt-train
evaluate`` scores a model: mIoU over the 7 non-void categories and IoU per category, printed
as a Markdown table. ``light_fpn`` classifies at stride 4 (2 with ``model.fine_channels``).
"""

from __future__ import annotations

import argparse

from fvt_segmentation.core.contract import CATEGORIES, VOID
from fvt_segmentation.core.metrics import summarize
from fvt_segmentation.core.sizes import parse_size
from fvt_training.data.prepared import read_manifest
from fvt_training.evaluation.grid_bound import grid_bound_confusion, split_labels


def main() -> None:
    """Print the grid bound of each stride as a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('data', help='prepared folder (holds manifest.json)')
    parser.add_argument('--split', default='val', help='split to score (default: val)')
    parser.add_argument('--input', default='640x480', type=parse_size,
                        help='network input size WxH (default: 640x480)')
    parser.add_argument('--strides', nargs='+', type=int, default=[4, 2],
                        help='output strides to score (default: 4 2)')
    args = parser.parse_args()
    manifest = read_manifest(args.data)
    labels = split_labels(manifest, args.split)
    width, height = args.input
    names = [name for index, name in enumerate(CATEGORIES) if index != VOID]
    print(f'{args.split} of {args.data} ({len(labels)} label maps), network input '
          f'{width}x{height}: a perfect classifier on the grid of each stride\n')
    print('| stride | mIoU | ' + ' | '.join(names) + ' |')
    print('| --- ' * (len(names) + 2) + '|')
    for stride in args.strides:
        scores = summarize(grid_bound_confusion(labels, (height, width), stride), CATEGORIES,
                           ignore_index=VOID)
        print(f'| {stride} | {scores["miou"]:.3f} | '
              + ' | '.join(f'{scores["iou"][n]:.3f}' for n in names) + ' |')


if __name__ == '__main__':
    main()
