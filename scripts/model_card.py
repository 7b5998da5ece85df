#!/usr/bin/env python3
"""Collect the figures of a model card into one JSON file (models/README.md quotes them).

    python scripts/model_card.py --model models/default.onnx \
        --eval models/default.eval_val.json --export models/default.export.json \
        --out models/default.card.json

Scores every variant (float32, int8) on the bundled recording through the node's own
inference path, and copies the validation scores (``fvt-train evaluate``) and the export
report (parity, int8 accuracy and speed, ``fvt-train export``) beside them. The test
``test/test_shipped_model.py`` checks the shipped files against this file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys

from fvt_segmentation.bag.bundled_recording import default_recording, score_on_recording
from fvt_segmentation.core.inference import load_segmenter


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', type=Path, required=True)
    parser.add_argument('--eval', type=Path, required=True, help='fvt-train evaluate JSON')
    parser.add_argument('--export', type=Path, required=True, help='fvt-train export JSON')
    parser.add_argument('--out', type=Path, required=True)
    args = parser.parse_args(argv)
    variants = {'float32': args.model}
    int8 = args.model.with_suffix('.int8.onnx')
    if int8.exists():
        variants['int8'] = int8
    recording = {}
    for name, path in variants.items():
        segmenter = load_segmenter(path, providers=['cpu'])
        recording[name] = {'file': path.name, 'provenance': dict(segmenter.contract.provenance),
                           **score_on_recording(segmenter)}
    card = {
        'model': args.model.name,
        'validation': json.loads(args.eval.read_text()),
        'export': json.loads(args.export.read_text()),
        'recording': {'bag': default_recording().name, 'variants': recording},
    }
    args.out.write_text(json.dumps(card, indent=1) + '\n')
    for name, scores in recording.items():
        print(f'{name}: recording mIoU {scores["miou"]:.4f} over {scores["frames"]} frames')
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
