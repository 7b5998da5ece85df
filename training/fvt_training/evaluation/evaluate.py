"""``fvt-train evaluate``: score a Keras run or an exported ONNX file on a prepared split.

Both kinds of model are scored the node's way (:mod:`fvt_training.evaluation.scoring`). The
report holds per-category IoU, mIoU (void ignored) and the 8-class mean, Dice, pixel accuracy,
parameters, GFLOPs and inference time; figures are a confusion matrix and image | truth |
prediction panels.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime, timezone
import os
from pathlib import Path

import numpy as np

from fvt_segmentation.core.contract import CATEGORIES, VOID
from fvt_segmentation.core.metrics import summarize
from fvt_segmentation.core.sizes import format_size
from fvt_training.common.arg_types import non_negative_int, positive_int
from fvt_training.evaluation.scoring import (
    DEFAULT_PROVIDERS,
    EvaluationError,
    confusion_over_split,
    open_model,
    pick_samples,
    time_inference,
)
from fvt_training.runs.run_files import summary_text, write_json


def plot_confusion(cm: np.ndarray, categories: Sequence[str], path: Path,
                   title: str = '') -> Path:
    """Draw the row-normalised confusion matrix (rows = truth) into ``path`` atomically."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(normalised, cmap='Blues', vmin=0.0, vmax=1.0)
    ticks = range(len(categories))
    ax.set_xticks(ticks, categories, rotation=45, ha='right')
    ax.set_yticks(ticks, categories)
    ax.set_xlabel('prediction')
    ax.set_ylabel('truth (each row sums to 1)')
    for i in ticks:
        for j in ticks:
            value = normalised[i, j]
            ax.text(j, i, f'{value:.2f}', ha='center', va='center', fontsize=8,
                    color='white' if value > 0.5 else 'black')
    ax.set_title(title or 'confusion matrix')
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    tmp = path.with_name(f'.tmp-{os.getpid()}-{path.name}')
    fig.savefig(tmp, dpi=100, format='png')
    plt.close(fig)
    os.replace(tmp, path)
    return path


def sample_panel(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                 palette: np.ndarray, gap: int = 4) -> np.ndarray:
    """Return ``image | truth | prediction`` side by side (RGB uint8), masks in palette colours.

    The image is resized to the mask size; ``gap`` white columns separate the panels.
    """
    import cv2

    height, width = truth.shape
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    spacer = np.full((height, gap, 3), 255, np.uint8)
    return np.hstack([image, spacer, palette[truth], spacer, palette[prediction]])


def evaluate(source: str | os.PathLike, data: str | os.PathLike | None = None,
             split: str | None = None, *, out_dir: str | os.PathLike | None = None,
             batch_size: int = 8, limit: int | None = None, samples: int = 4,
             timing_runs: int = 30, timing_warmup: int = 5, timing_batch: int = 8,
             providers: Sequence[str] = DEFAULT_PROVIDERS,
             weights: str | None = None) -> dict:
    """Evaluate a run folder or ONNX file on ``split`` of a prepared folder; return the report.

    Writes the JSON report and the figures (see ``report_paths`` of the model kinds, or
    ``out_dir`` for both). ``data`` defaults to a run's own prepared folder; ``split`` to
    ``test``, or ``val`` where the data has no test split (a prepared CamVid); ``timing_runs=0``
    skips the timing.
    """
    from fvt_training.common.files import write_png_atomic
    from fvt_training.data.prepared import load_pair, read_manifest

    model = open_model(source, providers, weights, data)
    data = data or model.prepared_dir
    if data is None:
        raise EvaluationError(f'{model.source}: an ONNX file does not name its data; pass '
                              '--data with a prepared folder (holding manifest.json)')
    manifest = read_manifest(data)
    if split is None:
        split = 'test' if 'test' in manifest.splits else 'val'
        if split != 'test':
            why = ('the split the run validated on' if model.weights == 'last'
                   else 'the split that picked the best weights')
            print(f'{manifest.folder} has no test split: scoring val, {why} (so an optimistic '
                  'score)')
    ids = manifest.ids(split)[:limit]
    chosen = pick_samples(ids, samples)
    cm, kept = confusion_over_split(model, manifest, split, batch_size, limit, chosen)

    json_path, figures = model.report_paths(split)
    if out_dir is not None:
        figures = Path(out_dir)
        json_path = figures / json_path.name
    figures.mkdir(parents=True, exist_ok=True)
    written = [str(plot_confusion(cm, CATEGORIES, figures / 'confusion.png',
                                  f'{model.name} on {split} ({len(ids)} images)'))]
    palette = model.contract.palette_array()
    for sample_id in chosen:
        image, truth, prediction = kept[sample_id]
        path = figures / f'sample_{sample_id}.png'
        write_png_atomic(path, sample_panel(image, truth, prediction, palette), rgb=True)
        written.append(str(path))

    timing = {}
    if timing_runs > 0:
        frames = [load_pair(manifest, split, i)[0] for i in ids[:max(1, timing_batch)]]
        timing = time_inference(model, frames, timing_runs, timing_warmup, timing_batch)
    report = {
        'model': model.name,
        'kind': model.kind,
        'source': str(model.source),
        'data': str(manifest.folder),
        'dataset': manifest.dataset,
        'split': split,
        'images': len(ids),
        'input_size': list(model.input_size),
        'provider': model.provider,
        'metrics': summarize(cm, CATEGORIES, VOID),
        'confusion_matrix': cm.tolist(),
        **model.describe(),
        'inference_ms': timing,
        'figures': written,
        'created': datetime.now(timezone.utc).isoformat(timespec='seconds'),
    }
    write_json(json_path, report)
    report['report_path'] = str(json_path)
    return report


def _fmt(value: float | None, digits: int = 4) -> str:
    return '—' if value is None or value != value else f'{value:.{digits}f}'


def format_report(report: dict) -> str:
    """Return a short human summary of an evaluation report (markdown-friendly)."""
    metrics = report['metrics']
    lines = [f'{report["model"]} ({report["kind"]}) on {report["dataset"]} '
             f'{report["split"]}: {report["images"]} images at '
             f'{format_size(report["input_size"][1], report["input_size"][0])}', '',
             '| category | IoU | Dice |', '| --- | --- | --- |']
    for name, iou in metrics['iou'].items():
        lines.append(f'| {name} | {_fmt(iou)} | {_fmt(metrics["dice_per_class"][name])} |')
    lines += ['', f'mIoU (7 categories, void ignored): {_fmt(metrics["miou"])}',
              f'mean IoU over all 8 (void as a class): {_fmt(metrics["miou_all"])}',
              f'Dice (mean of 7): {_fmt(metrics["dice"])}',
              f'pixel accuracy (void ignored): {_fmt(metrics["pixel_accuracy"])}']
    params, gflops = report.get('params'), report.get('gflops')
    lines.append(f'parameters: {params:,}' if params is not None else 'parameters: —')
    lines.append(f'GFLOPs (batch 1): {_fmt(gflops, 2)}')
    for key, stats in report.get('inference_ms', {}).items():
        lines.append(f'inference per image, {key.replace("_", " ")} ({report["provider"]}, '
                     f'{stats["runs"]} runs after {stats["warmup"]} warm-up): median '
                     f'{stats["median_ms"]:.2f} ms, p90 {stats["p90_ms"]:.2f} ms')
    return summary_text(lines, report)


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fvt-train evaluate``."""
    parser = subparsers.add_parser(
        'evaluate', help='score a run or an exported .onnx file on a prepared split',
        description='Per-category IoU, mIoU (void ignored) and the 8-class mean, Dice, pixel '
                    'accuracy, confusion matrix and sample figures, parameters, GFLOPs and '
                    'inference time of a run folder (Keras) or an .onnx file. Writes '
                    '<run>/eval_<split>.json or <model>.eval_<split>.json plus figures.')
    parser.add_argument('source', metavar='RUN_OR_MODEL', help='run folder or .onnx file')
    parser.add_argument('--data', help='prepared folder (holds manifest.json); default: the '
                        "run's data.prepared_dir (required for an .onnx file)")
    parser.add_argument('--split', help='split to score (default: test, or val where the '
                        'data has no test split)')
    parser.add_argument('--batch-size', type=positive_int, default=8,
                        help='images per forward pass (default: 8)')
    parser.add_argument('--limit', type=positive_int, help='score only the first N images')
    parser.add_argument('--samples', type=non_negative_int, default=4,
                        help='image | truth | prediction figures to write (default: 4)')
    parser.add_argument('--timing-runs', type=non_negative_int, default=30,
                        help='timed runs per batch size after warm-up; 0 skips timing '
                             '(default: 30)')
    parser.add_argument('--timing-warmup', type=non_negative_int, default=5,
                        help='untimed warm-up runs (default: 5)')
    parser.add_argument('--timing-batch', type=positive_int, default=8,
                        help='the large batch timed besides batch 1 (default: 8)')
    parser.add_argument('--providers', default=','.join(DEFAULT_PROVIDERS),
                        help='ONNX Runtime providers in preference order (default: cpu)')
    parser.add_argument('--weights', choices=('best', 'last'),
                        help="a run's best or last-epoch weights (default: those its "
                             'train.select judged it by)')
    parser.add_argument('--out-dir', help='folder for the JSON report and figures (default: '
                        'beside the run or model)')
    parser.set_defaults(func=run_evaluate_command)
    return parser


def run_evaluate_command(args: argparse.Namespace) -> int:
    """Run ``fvt-train evaluate`` from parsed arguments; print the summary."""
    report = evaluate(args.source, args.data, args.split, out_dir=args.out_dir,
                      batch_size=args.batch_size, limit=args.limit, samples=args.samples,
                      timing_runs=args.timing_runs, timing_warmup=args.timing_warmup,
                      timing_batch=args.timing_batch,
                      providers=[p for p in args.providers.split(',') if p],
                      weights=args.weights)
    print(format_report(report))
    return 0
