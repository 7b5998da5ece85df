"""``fvt-train compare``: one markdown table of many runs, sortable by any column.

Each row reads what a run folder holds: ``config.yaml`` (model, loss, augmentation),
``metrics.json`` (validation scores of the best weights and of the last epoch, or a held-out
sequence's at the last epoch; parameters, training time), any ``eval_<split>.json``
(``fvt-train evaluate``) and ``export.json`` (``fvt-train export``: GFLOPs, median CPU time of
the float32 and INT8 files, INT8 mIoU change). A value a run does not have shows as '—'.

An exported ``.onnx`` file can stand for a run whose folder is gone (a shipped model): its
contract's provenance gives the model and validation scores, and the ``<stem>.eval_<split>.json``
and ``<stem>.export.json`` beside it the rest.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
import math
import os
from pathlib import Path
import sys
from typing import Any

import yaml

from fvt_segmentation.core.contract import CATEGORIES, VOID
from fvt_training.data.prepared import read_manifest
from fvt_training.runs.run_files import (
    CONFIG_FILE,
    EVAL_PREFIX,
    EXPORT_FILE,
    METRICS_FILE,
    read_json,
)

MISSING = '—'
JUDGED_CATEGORIES = ('object', 'human')
"""Categories shown at the last epoch and on a held-out sequence too: the weakest on CamVid
(``models/README.md``), where a gain picked on val is most likely."""


class CompareError(ValueError):
    """Bad arguments to compare (no runs, unknown column)."""


@dataclass(frozen=True)
class Column:
    """One table column: a key for ``--sort``, its header and how to read and show a value."""

    key: str
    header: str
    read: Callable[[dict], Any]
    show: Callable[[Any], str]


def _dig(tree: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(tree, dict):
            tree = tree.get(key)
        else:
            return None
    return tree


def _num(digits: int) -> Callable[[Any], str]:
    return lambda v: f'{v:.{digits}f}'


def _signed(v: float) -> str:
    return f'{v:+.2f}'


def _params(v: float) -> str:
    return f'{v / 1e6:.2f}M'


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f'{minutes // 60}h{minutes % 60:02d}m' if minutes >= 60 else f'{seconds / 60:.1f}m'


def _model_name(run: dict) -> str | None:
    spec = _dig(run, 'config', 'model') or {}
    arch = spec.get('architecture')
    if arch is None:
        return None
    backbone = spec.get('backbone')
    name = arch if arch == 'unet_like' or not backbone else f'{arch}/{backbone}'
    fine = spec.get('fine_channels') if arch == 'light_fpn' else None
    return f'{name} + stride-2 stage ({fine} ch)' if fine else name


def _input_size(run: dict) -> str | None:
    size = _dig(run, 'config', 'model', 'input_size')
    if size:
        height, width = size
        return f'{width}x{height}'
    prepared = _dig(run, 'config', 'data', 'prepared_dir')
    try:  # a null input_size means the prepared data's size
        width, height = read_manifest(prepared).size
    except (OSError, TypeError, ValueError):
        return None
    return f'{width}x{height}'


def _loss(run: dict) -> str | None:
    spec = _dig(run, 'config', 'loss') or {}
    name = spec.get('name')
    if name is None:
        return None
    notes = [] if spec.get('class_weights') is None else ['class-weighted']
    hard = spec.get('hard_pixel_fraction', 1.0)
    if name in ('cce', 'cce_dice') and hard < 1.0:
        notes.append(f'CE on the hardest {hard:.0%} of pixels')
    edge = spec.get('edge_weight', 0.0)
    if name in ('cce', 'cce_dice') and edge:
        notes.append(f'CE x{1 + edge:g} within {spec.get("edge_width", 2)} px of an edge')
    return f'{name} ({", ".join(notes)})' if notes else name


def _encoder_init(run: dict) -> str | None:
    spec = _dig(run, 'config', 'model') or {}
    weights = spec.get('encoder_weights')
    if spec.get('architecture') in (None, 'unet_like') or weights is None:
        return None
    return {'imagenet': 'ImageNet', 'none': 'scratch'}.get(weights, Path(weights).name)


def _warm_start(run: dict) -> str | None:
    source = _dig(run, 'config', 'train', 'init_weights')
    return Path(source).name if source else None


def _val(run: dict, *path: str) -> Any:
    """Read ``metrics.json`` of a run validated on the validation split (not a held-out one)."""
    if _dig(run, 'metrics', 'holdout_sequence'):
        return None
    return _dig(run, 'metrics', *path)


def _held_out(run: dict, *path: str) -> Any:
    """Read the held-out sequence's scores at the last epoch (a fixed schedule's)."""
    if not _dig(run, 'metrics', 'holdout_sequence'):
        return None
    return _dig(run, 'metrics', 'last_epoch', 'metrics', *path)


def _eval(run: dict, split: str) -> dict:
    return run['evals'].get(split) or {}


def _first_eval(run: dict) -> dict:
    evals = run['evals']
    return evals.get('test') or next(iter(evals.values()), {})


def _eval_latency(run: dict) -> float | None:
    timing = _first_eval(run).get('inference_ms') or {}
    return _dig(timing, 'batch_1', 'median_ms')


def columns(eval_splits: Sequence[str] = ()) -> list[Column]:
    """Return the table's columns; one ``<split> mIoU`` column per evaluated split."""
    text = str
    cols = [
        Column('run', 'run', lambda r: r['name'], text),
        Column('model', 'model', _model_name, text),
        Column('input', 'input', _input_size, text),
        Column('loss', 'loss', _loss, text),
        Column('augment', 'augmentation', lambda r: _dig(r, 'config', 'data', 'augment'), text),
        Column('encoder_init', 'encoder init', _encoder_init, text),
        Column('warm_start', 'warm start from', _warm_start, text),
        Column('epochs', 'epochs', lambda r: _dig(r, 'metrics', 'epochs'), str),
        Column('val_miou', 'val mIoU', lambda r: _val(r, 'metrics', 'miou'), _num(4)),
        Column('val_miou_all', 'val 8-class mean', lambda r: _val(r, 'metrics', 'miou_all'),
               _num(4)),
        Column('val_dice', 'val Dice', lambda r: _val(r, 'metrics', 'dice'), _num(4)),
    ]
    for index, name in enumerate(CATEGORIES):
        if index == VOID:
            continue
        cols.append(Column(f'iou_{name}', f'IoU {name}',
                           lambda r, n=name: _val(r, 'metrics', 'iou', n), _num(3)))
    cols.append(Column('val_miou_last', 'val mIoU (last epoch)',
                       lambda r: _val(r, 'last_epoch', 'metrics', 'miou'), _num(4)))
    cols += [Column(f'iou_{name}_last', f'IoU {name} (last epoch)',
                    lambda r, n=name: _val(r, 'last_epoch', 'metrics', 'iou', n), _num(3))
             for name in JUDGED_CATEGORIES]
    cols += [
        Column('holdout', 'held-out sequence',
               lambda r: _dig(r, 'metrics', 'holdout_sequence'), text),
        Column('holdout_miou', 'held-out sequence mIoU', lambda r: _held_out(r, 'miou'),
               _num(4)),
        *(Column(f'holdout_iou_{name}', f'held-out IoU {name}',
                 lambda r, n=name: _held_out(r, 'iou', n), _num(3))
          for name in JUDGED_CATEGORIES),
    ]
    for split in eval_splits:
        # `fvt-train evaluate` on the validation split would share the training scores' names.
        key, header = ((f'eval_{split}', f'{split} (evaluate)')
                       if split == 'val' else (split, split))
        cols.append(Column(f'{key}_miou', f'{header} mIoU',
                           lambda r, s=split: _dig(_eval(r, s), 'metrics', 'miou'), _num(4)))
        cols.append(Column(f'{key}_dice', f'{header} Dice',
                           lambda r, s=split: _dig(_eval(r, s), 'metrics', 'dice'), _num(4)))
    cols += [
        Column('params', 'params',
               lambda r: _dig(r, 'metrics', 'params') or _first_eval(r).get('params'), _params),
        Column('gflops', 'GFLOPs',
               lambda r: _dig(r, 'export', 'gflops') or _first_eval(r).get('gflops'), _num(2)),
        Column('train_time', 'training time',
               lambda r: _dig(r, 'metrics', 'training_time_s'), _duration),
        Column('infer_ms', 'inference ms (eval)', _eval_latency, _num(1)),
        Column('onnx_ms', 'ONNX fp32 CPU ms',
               lambda r: _dig(r, 'export', 'variants', 'float32', 'latency_ms', 'median_ms'),
               _num(1)),
        Column('int8_ms', 'ONNX int8 CPU ms',
               lambda r: _dig(r, 'export', 'variants', 'int8', 'latency_ms', 'median_ms'),
               _num(1)),
        Column('int8_miou_change', 'int8 ΔmIoU (points)',
               lambda r: _dig(r, 'export', 'variants', 'int8', 'miou_change_points'), _signed),
    ]
    return cols


def read_run(folder: Path) -> dict | None:
    """Return what a run folder holds, or None when ``folder`` is not a run folder."""
    config_path = folder / CONFIG_FILE
    if not folder.is_dir() or not (config_path.is_file() or (folder / METRICS_FILE).is_file()):
        return None
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    evals = {}
    for path in sorted(folder.glob(f'{EVAL_PREFIX}*.json')):
        evals[path.stem.removeprefix(EVAL_PREFIX)] = read_json(path)
    return {'name': folder.name, 'folder': str(folder), 'config': config or {},
            'metrics': read_json(folder / METRICS_FILE) or {},
            'export': read_json(folder / EXPORT_FILE) or {}, 'evals': evals}


def read_model_file(path: Path) -> dict:
    """Return a row for an exported ``.onnx`` file from its contract and the reports beside it."""
    import onnx

    from fvt_segmentation.core.contract import parse_contract

    proto = onnx.load(str(path), load_external_data=False)
    prov = parse_contract({p.key: p.value for p in proto.metadata_props}, str(path)).provenance
    model = {k: prov.get(k) for k in ('architecture', 'backbone', 'input_size')}
    encoder = prov.get('encoder_weights')
    model['encoder_weights'] = 'imagenet' if encoder else (
        'none' if prov.get('architecture') not in (None, 'unet_like') else None)
    metrics = {'metrics': prov.get('metrics') or {}, 'params': prov.get('params')}
    evals = {}
    for report in sorted(path.parent.glob(f'{path.stem}.{EVAL_PREFIX}*.json')):
        evals[report.stem.removeprefix(f'{path.stem}.{EVAL_PREFIX}')] = read_json(report)
    return {'name': path.name, 'folder': str(path.parent), 'config': {'model': model},
            'metrics': metrics, 'export': read_json(path.with_suffix('.export.json')) or {},
            'evals': evals}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def render_table(runs: Sequence[dict], sort: str | None = None, desc: bool = False) -> str:
    """Return the markdown table of ``runs``, sorted by column key ``sort`` (missing last)."""
    splits = sorted({split for run in runs for split in run['evals']})
    cols = columns(splits)
    by_key = {c.key: c for c in cols}
    rows = list(runs)
    if sort is not None:
        column = by_key.get(sort) or next(
            (c for c in cols if c.header.lower() == sort.lower()), None)
        if column is None:
            raise CompareError(f'unknown sort column {sort!r}; expected one of '
                               f'{", ".join(by_key)}')
        present = [r for r in rows if not _missing(column.read(r))]
        absent = [r for r in rows if _missing(column.read(r))]
        rows = sorted(present, key=column.read, reverse=desc) + absent
    lines = ['| ' + ' | '.join(c.header for c in cols) + ' |',
             '| ' + ' | '.join('---' for _ in cols) + ' |']
    for run in rows:
        cells = []
        for column in cols:
            value = column.read(run)
            cells.append(MISSING if _missing(value) else column.show(value))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def compare(folders: Sequence[str | os.PathLike], sort: str | None = None,
            desc: bool = False) -> str:
    """Read every run folder or ``.onnx`` file among ``folders`` (others are skipped)."""
    runs = []
    for folder in folders:
        path = Path(folder)
        run = read_model_file(path) if path.suffix == '.onnx' and path.is_file() else (
            read_run(path))
        if run is None:
            print(f'compare: skipping {folder}: not a run folder (no config.yaml or '
                  'metrics.json) nor an exported .onnx file', file=sys.stderr)
            continue
        runs.append(run)
    if not runs:
        raise CompareError(f'no run folders among {[str(f) for f in folders]}')
    return render_table(runs, sort, desc)


def add_compare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fvt-train compare``."""
    keys = ', '.join(c.key for c in columns(['<split>']))
    parser = subparsers.add_parser(
        'compare', help='markdown table of runs (scores, size, speed), sortable',
        description='Print one markdown row per run folder: model, loss, augmentation, '
                    'validation mIoU (void ignored), 8-class mean, Dice, per-category IoU '
                    '(best weights), mIoU and object/human IoU at the last epoch, the '
                    'held-out sequence and its mIoU (data.holdout_sequence runs), scores of '
                    'fvt-train evaluate, parameters, GFLOPs, training time and inference '
                    'times (eval and exported ONNX float32/int8 on the CPU).')
    parser.add_argument('runs', nargs='+', metavar='RUN',
                        help='run folders (e.g. runs/*) or exported .onnx files')
    parser.add_argument('--sort', metavar='COLUMN', help=f'column to sort by: {keys}')
    parser.add_argument('--desc', action='store_true', help='sort in descending order')
    parser.add_argument('--out', metavar='FILE.md', help='also write the table to this file')
    parser.set_defaults(func=run_compare_command)
    return parser


def run_compare_command(args: argparse.Namespace) -> int:
    """Run ``fvt-train compare`` from parsed arguments."""
    table = compare(args.runs, args.sort, args.desc)
    sys.stdout.write(table)
    if args.out:
        from fvt_training.common.files import write_bytes_atomic

        write_bytes_atomic(Path(args.out), table.encode('utf-8'))
    return 0
