#!/usr/bin/env python3
"""Where a model misses one category on a prepared split: edge band or inside, parts by size.

    python training/scripts/miss_regions.py MODEL --data data/camvid/480x360 [--split val]
        [--category object] [--band 2]

MODEL is a run folder or an exported .onnx file; it is run over the split as ``fvt-train
evaluate`` runs it (class maps resized to the label size), then
``fvt_training.evaluation.miss_regions`` tallies the category's pixels: found share in the
band of ``--band`` pixels along its edges and inside it, parts (connected regions) missed
whole, and found share by part size.
"""

from __future__ import annotations

import argparse

from fvt_segmentation.core.contract import CATEGORIES
from fvt_training.data.prepared import read_manifest
from fvt_training.evaluation.evaluate import DEFAULT_PROVIDERS, open_model
from fvt_training.evaluation.miss_regions import MISSED_BELOW, summarize_misses, tally_misses
from fvt_training.evaluation.scoring import confusion_over_split


def _pct(value: float | None) -> str:
    return '—' if value is None else f'{100 * value:.1f} %'


def main() -> None:
    """Print where the category's pixels are missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', help='run folder or exported .onnx file')
    parser.add_argument('--data', required=True, help='prepared folder (holds manifest.json)')
    parser.add_argument('--split', default='val', help='split to score (default: val)')
    parser.add_argument('--category', default='object', choices=CATEGORIES[1:],
                        help='category to examine (default: object)')
    parser.add_argument('--band', type=int, default=2,
                        help='width of the edge band in label pixels (default: 2)')
    args = parser.parse_args()
    model = open_model(args.model, DEFAULT_PROVIDERS, None, args.data)
    manifest = read_manifest(args.data)
    ids = manifest.ids(args.split)
    # keep every map pair: a split of CamVid's size fits in memory easily
    _, kept = confusion_over_split(model, manifest, args.split, keep=ids)
    category = CATEGORIES.index(args.category)
    tally = None
    for sample_id in ids:
        _, truth, prediction = kept[sample_id]
        tally = tally_misses(truth, prediction, category, args.band, tally)
    s = summarize_misses(tally)
    print(f'{model.name} on {args.split} of {args.data} ({len(ids)} maps): {args.category}, '
          f'{s["pixels"]} pixels in {s["parts"]} parts\n')
    print('| where | share of the pixels | found |')
    print('| --- | --- | --- |')
    print(f'| within {args.band} px of an edge | {_pct(s["band_share"])} | '
          f'{_pct(s["band_recall"])} |')
    print(f'| inside | {_pct(s["inner_share"])} | {_pct(s["inner_recall"])} |')
    for size in s['by_size']:
        low, high = size['min_pixels'], size['max_pixels']
        sizes = f'{low}+' if high is None else f'{low} to {high - 1}'
        print(f'| parts of {sizes} px ({size["parts"]} parts) | '
              f'{_pct(size["pixel_share"])} | {_pct(size["recall"])} |')
    print(f'\nparts missed whole (under {_pct(MISSED_BELOW)} found): '
          f'{s["parts_missed_whole"]} of {s["parts"]}, '
          f'{_pct(s["missed_whole_pixel_share"])} of the pixels')


if __name__ == '__main__':
    main()
