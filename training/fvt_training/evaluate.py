"""``fvt-train evaluate``: score a Keras run or an exported ONNX file on a prepared split.

Both kinds of model go through the same path: frames are preprocessed by the node's own
:func:`~fvt_segmentation.core.frame_processing.preprocess_frame` (a Keras run with the contract
its export would carry), scores become class maps with the node's post-processing, and every
score comes from one dataset-level confusion matrix (:mod:`fvt_segmentation.core.metrics`). The
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
from typing import Any

import numpy as np

from fvt_segmentation.core.contract import CATEGORIES, VOID, ModelContract
from fvt_segmentation.core.conversions import resize_nearest
from fvt_segmentation.core.frame_processing import preprocess_frame, scores_to_classes
from fvt_segmentation.core.metrics import confusion_matrix, summarize
from fvt_training.arg_types import non_negative_int, positive_int
from fvt_training.run_files import EVAL_PREFIX, summary_text, write_json

DEFAULT_PROVIDERS = ('cpu',)
QUANTIZED_OPS = frozenset({'QuantizeLinear', 'DequantizeLinear', 'QLinearConv', 'ConvInteger',
                           'MatMulInteger', 'QLinearMatMul', 'DynamicQuantizeLinear'})


class EvaluationError(RuntimeError):
    """A model or data set that cannot be evaluated; the message says what and why."""


class KerasRunModel:
    """A training run's Keras model, fed exactly as its exported ONNX file would be."""

    kind = 'keras'

    def __init__(self, run_dir: str | os.PathLike, weights: str = 'best',
                 prepared_dir: str | os.PathLike | None = None) -> None:
        import tensorflow as tf

        from fvt_training.run_contract import run_contract
        from fvt_training.train import load_run

        self.source = Path(run_dir)
        self.config, self.model = load_run(self.source, weights)
        self.contract: ModelContract = run_contract(self.source, self.config, prepared_dir)
        self.input_size: tuple[int, int] = tuple(self.config['model']['input_size'])
        self.name = self.source.name
        self.provider = 'tensorflow'
        self.max_batch: int | None = None
        # One compiled graph for every batch size: timings measure the network, not the
        # per-call set-up of predict_on_batch.
        self._forward = tf.function(
            lambda x: self.model(x, training=False),
            input_signature=[tf.TensorSpec((None, *self.input_size, 3), tf.float32)])

    @property
    def prepared_dir(self) -> str:
        """The prepared data folder the run was trained on."""
        return self.config['data']['prepared_dir']

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Return the probabilities ``[B, H, W, C]`` for a preprocessed batch."""
        return self._forward(batch).numpy()

    def describe(self) -> dict[str, Any]:
        """Return Keras' parameter count and the GFLOPs of the graph export would write."""
        from fvt_training import flops
        from fvt_training.keras_onnx import keras_to_onnx

        return {'params': int(self.model.count_params()),
                'gflops': flops.gflops(keras_to_onnx(self.model, self.input_size))}

    def report_paths(self, split: str) -> tuple[Path, Path]:
        """Return the default ``(JSON report, figures folder)``: inside the run folder."""
        name = f'{EVAL_PREFIX}{split}'
        return self.source / f'{name}.json', self.source / name


class OnnxFileModel:
    """An exported ONNX file loaded through the node's own loader."""

    kind = 'onnx'

    def __init__(self, path: str | os.PathLike,
                 providers: Sequence[str] = DEFAULT_PROVIDERS) -> None:
        from fvt_segmentation.core.inference import load_segmenter

        self.source = Path(path)
        # Several sessions share this process (export times float32 and int8 in turns);
        # spinning worker threads of one would steal the cores from the next one's run
        # (training/scripts/time_sessions.py: float32 45 ms in turns with int8, 19 ms without
        # spinning).
        self.segmenter = load_segmenter(self.source, providers=providers,
                                        intra_op_spinning=False)
        self.contract = self.segmenter.contract
        self.input_size = self.segmenter.input_size
        self.name = self.source.stem
        self.provider = self.segmenter.active_provider
        batch = self.segmenter.session.get_inputs()[0].shape[0]
        self.max_batch = batch if isinstance(batch, int) else None

    @property
    def prepared_dir(self) -> None:
        """An ONNX file does not know its data folder: pass ``--data``."""
        return None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Return the raw scores for a preprocessed batch."""
        return self.segmenter.infer(batch)

    def describe(self) -> dict[str, Any]:
        """Return parameters and GFLOPs: those export stored in the provenance, if any.

        ``fvt-train export`` stores Keras' parameter count and the float graph's GFLOPs in
        every variant it writes (a quantized graph does the float graph's work). Other files
        are counted on their graph; a quantized one without figures gives None.
        """
        import onnx

        from fvt_training import flops

        prov = self.contract.provenance
        if 'params' in prov and 'gflops' in prov:
            return {'params': prov['params'], 'gflops': prov['gflops']}
        graph = onnx.load(str(self.source))
        if any(node.op_type in QUANTIZED_OPS for node in graph.graph.node):
            return {'params': None, 'gflops': None}
        return flops.describe(graph)

    def report_paths(self, split: str) -> tuple[Path, Path]:
        """Return the default ``(JSON report, figures folder)``: next to the model file."""
        name = f'{self.source.stem}.{EVAL_PREFIX}{split}'
        return self.source.with_name(f'{name}.json'), self.source.with_name(name)


def open_model(source: str | os.PathLike, providers: Sequence[str] = DEFAULT_PROVIDERS,
               weights: str = 'best', prepared_dir: str | os.PathLike | None = None
               ) -> KerasRunModel | OnnxFileModel:
    """Open a run folder (Keras) or an ``.onnx`` file for evaluation."""
    path = Path(source)
    if path.is_dir():
        return KerasRunModel(path, weights, prepared_dir)
    if path.is_file() and path.suffix == '.onnx':
        return OnnxFileModel(path, providers)
    raise EvaluationError(f'{path}: expected a run folder (runs/<name>, holding config.yaml '
                          'and weights) or an exported .onnx file')


def preprocess_batch(model: KerasRunModel | OnnxFileModel,
                     images: Sequence[np.ndarray]) -> np.ndarray:
    """Stack RGB uint8 images into one input batch, preprocessed as the node does it."""
    return np.concatenate([preprocess_frame(image, 'RGB', model.input_size, model.contract)
                           for image in images])


def confusion_over_split(model: KerasRunModel | OnnxFileModel, manifest: Any, split: str,
                         batch_size: int = 8, limit: int | None = None,
                         keep: Sequence[str] = ()) -> tuple[np.ndarray, dict[str, tuple]]:
    """Run ``model`` over ``split`` and return its confusion matrix (rows = truth).

    Class maps are resized (nearest) to the label size when the model's output is smaller.
    ``keep`` lists sample ids whose ``(image, truth, prediction)`` are returned for figures.
    """
    from tqdm import tqdm

    from fvt_training.prepared import load_pair

    if tuple(model.contract.categories) != CATEGORIES:
        raise EvaluationError(f'{model.source}: the model predicts categories '
                              f'{list(model.contract.categories)}; the data uses '
                              f'{list(CATEGORIES)}')
    ids = manifest.ids(split)[:limit]
    if not ids:
        raise EvaluationError(f'{manifest.folder}: split {split!r} has no samples')
    if model.max_batch is not None:
        batch_size = min(batch_size, model.max_batch)
    num_classes = len(CATEGORIES)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    kept: dict[str, tuple] = {}
    wanted = set(keep)
    with tqdm(total=len(ids), desc=f'evaluate {model.name} on {split}', unit='img') as bar:
        for start in range(0, len(ids), batch_size):
            batch_ids = ids[start:start + batch_size]
            pairs = [load_pair(manifest, split, sample_id) for sample_id in batch_ids]
            scores = model.predict(preprocess_batch(model, [image for image, _ in pairs]))
            for sample_id, (image, truth), score in zip(batch_ids, pairs, scores, strict=True):
                classes, _ = scores_to_classes(score, model.contract.layout,
                                               model.contract.output)
                classes = resize_nearest(classes, truth.shape)
                cm += confusion_matrix(truth, classes, num_classes)
                if sample_id in wanted:
                    kept[sample_id] = (image, truth, classes)
            bar.update(len(batch_ids))
    return cm, kept


def time_inference(model: KerasRunModel | OnnxFileModel, images: Sequence[np.ndarray],
                   runs: int, warmup: int, batch: int) -> dict[str, dict]:
    """Time the network alone (preprocessing excluded) at batch 1 and at ``batch``."""
    from fvt_training.latency import time_calls

    single = preprocess_batch(model, images[:1])
    timings = {'batch_1': time_calls(lambda: model.predict(single), runs, warmup, 1)}
    if batch > 1 and model.max_batch is None:
        many = preprocess_batch(model, [images[i % len(images)] for i in range(batch)])
        timings[f'batch_{batch}'] = time_calls(lambda: model.predict(many), runs, warmup,
                                               batch)
    return timings


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


def pick_samples(ids: Sequence[str], count: int) -> list[str]:
    """Return ``count`` ids spread evenly over ``ids`` (all of them if there are fewer)."""
    if count <= 0 or not ids:
        return []
    positions = np.linspace(0, len(ids) - 1, min(count, len(ids))).round().astype(int)
    return [ids[i] for i in dict.fromkeys(positions.tolist())]


def evaluate(source: str | os.PathLike, data: str | os.PathLike | None = None,
             split: str | None = None, *, out_dir: str | os.PathLike | None = None,
             batch_size: int = 8, limit: int | None = None, samples: int = 4,
             timing_runs: int = 30, timing_warmup: int = 5, timing_batch: int = 8,
             providers: Sequence[str] = DEFAULT_PROVIDERS, weights: str = 'best') -> dict:
    """Evaluate a run folder or ONNX file on ``split`` of a prepared folder; return the report.

    Writes the JSON report and the figures (see ``report_paths`` of the model kinds, or
    ``out_dir`` for both). ``data`` defaults to a run's own prepared folder; ``split`` to
    ``test``, or ``val`` where the data has no test split (a prepared CamVid); ``timing_runs=0``
    skips the timing.
    """
    from fvt_training.prepared import load_pair, read_manifest, write_png_atomic

    model = open_model(source, providers, weights, data)
    data = data or model.prepared_dir
    if data is None:
        raise EvaluationError(f'{model.source}: an ONNX file does not name its data; pass '
                              '--data with a prepared folder (holding manifest.json)')
    manifest = read_manifest(data)
    if split is None:
        split = 'test' if 'test' in manifest.splits else 'val'
        if split != 'test':
            print(f'{manifest.folder} has no test split: scoring val, the split that picked '
                  'the best weights (so an optimistic score)')
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
             f'{report["input_size"][0]}x{report["input_size"][1]} (HxW)', '',
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
    parser.add_argument('--weights', choices=('best', 'last'), default='best',
                        help='which weights of a run (default: best)')
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
