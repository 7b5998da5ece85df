"""``fvt-train prepare``: turn Cityscapes or CamVid into prepared datasets, one per size.

A source (:mod:`fvt_training.data.datasets`) lists the image/label pairs of each split and
the table from its label ids to our categories. :func:`prepare_dataset` decodes each pair
once, maps and resizes it to every requested size and writes ``OUT/<W>x<H>/`` in the layout
of :mod:`fvt_training.data.prepared`.

Re-running is cheap and safe: complete files are kept (every file is written to a temporary
name and renamed), partial work is finished, and ``manifest.json`` is written only once every
split of a size is complete.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
import os
from pathlib import Path
import sys
import time

import cv2
import numpy as np
from tqdm import tqdm

from fvt_segmentation.core.contract import CATEGORIES
from fvt_segmentation.core.conversions import resize_nearest
from fvt_segmentation.core.sizes import SizeError, parse_sizes
from fvt_training.common.arg_types import positive_int
from fvt_training.common.files import TMP_PREFIX, write_png_atomic
from fvt_training.data.datasets import (
    UNKNOWN_LABEL,
    Source,
    SourcePair,
    camvid_source,
    cityscapes_source,
    raise_problems,
)
from fvt_training.data.prepared import (
    IMAGES,
    LABEL_RESIZE,
    LABELS,
    MANIFEST_NAME,
    SPLITS,
    DataError,
    Manifest,
    SplitInfo,
    image_path,
    label_path,
    read_manifest,
    size_folder_name,
    write_manifest,
)


class _PairError(Exception):
    """A source or output file that cannot be used; collected and reported together."""


def _imread(path: Path, flags: int) -> np.ndarray | None:
    # Checking first keeps OpenCV from printing a warning for every file not built yet.
    return cv2.imread(str(path), flags) if path.is_file() else None


def _id_ranges(ids: Iterable[int]) -> str:
    """Format sorted ids compactly: ``[0, 1, 2, 5]`` -> ``'0..2, 5'``."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ', '.join(str(a) if a == b else f'{a}..{b}' for a, b in runs)


def _read_source(pair: SourcePair, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = _imread(pair.image, cv2.IMREAD_COLOR)
    if image is None:
        raise _PairError(f'{pair.image}: cannot be decoded as an image (missing or corrupt)')
    label = _imread(pair.label, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise _PairError(f'{pair.label}: cannot be decoded as an image (missing or corrupt)')
    if label.ndim != 2 or label.dtype != np.uint8:
        channels = 1 if label.ndim == 2 else label.shape[2]
        raise _PairError(f'{pair.label}: expected a single-channel uint8 label image; found '
                         f'{channels} channel(s) of {label.dtype}')
    if label.shape != image.shape[:2]:
        raise _PairError(f'{pair.label}: size {label.shape[1]}x{label.shape[0]} does not match '
                         f'its image {pair.image} ({image.shape[1]}x{image.shape[0]})')
    categories = table[label]
    if (categories == UNKNOWN_LABEL).any():
        unknown = np.unique(label[categories == UNKNOWN_LABEL]).tolist()
        known = _id_ranges(np.flatnonzero(table != UNKNOWN_LABEL).tolist())
        raise _PairError(f'{pair.label}: label ids {unknown} are not in the table of this '
                         f'dataset (known ids: {known})')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), categories


def _counts(label: np.ndarray) -> np.ndarray:
    return np.bincount(label.ravel(), minlength=len(CATEGORIES)).astype(np.int64)


def _read_output(folder: Path, split: str, sample_id: str, size: tuple[int, int]) -> (
        np.ndarray | None):
    """Return the category counts of a complete output pair, or None when it must be built."""
    image = _imread(image_path(folder, split, sample_id), cv2.IMREAD_COLOR)
    label = _imread(label_path(folder, split, sample_id), cv2.IMREAD_UNCHANGED)
    expected = (size[1], size[0])
    if (image is None or label is None or image.shape[:2] != expected
            or label.shape != expected or label.dtype != np.uint8
            or int(label.max()) >= len(CATEGORIES)):
        return None
    return _counts(label)


@dataclass
class _SizeJob:
    """The work for one output size: its folder and the category counts gathered so far."""

    size: tuple[int, int]  # (width, height)
    folder: Path
    up_to_date: bool
    counts: dict[str, np.ndarray]


def _process_pair(source: Source, split: str, pair: SourcePair,
                  jobs: Sequence[_SizeJob]) -> dict[tuple[int, int], np.ndarray]:
    counts: dict[tuple[int, int], np.ndarray] = {}
    to_build = []
    for job in jobs:
        found = _read_output(job.folder, split, pair.sample_id, job.size)
        if found is None:
            to_build.append(job)
        else:
            counts[job.size] = found
    if not to_build:
        return counts
    image, label = _read_source(pair, source.label_table)
    for job in to_build:
        width, height = job.size
        small_image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        small_label = resize_nearest(label, (height, width))
        write_png_atomic(image_path(job.folder, split, pair.sample_id), small_image, rgb=True)
        write_png_atomic(label_path(job.folder, split, pair.sample_id), small_label, rgb=False)
        counts[job.size] = _counts(small_label)
    return counts


def _plan_splits(source: Source) -> dict[str, tuple[str, ...]]:
    return {name: tuple(p.sample_id for p in pairs) for name, pairs in source.splits.items()}


def _is_up_to_date(source: Source, folder: Path, size: tuple[int, int]) -> bool:
    """Check an existing manifest: same source, size and splits, and every file present."""
    if not (folder / MANIFEST_NAME).is_file():
        return False
    try:
        manifest = read_manifest(folder)
    except DataError:
        return False
    if manifest.dataset != source.name or manifest.source_root != str(source.root):
        raise DataError(
            f'{folder}: holds a prepared {manifest.dataset} dataset from '
            f'{manifest.source_root}; refusing to replace it with {source.name} from '
            f'{source.root}: choose another --out or delete that folder')
    same = (manifest.size == size and manifest.seed == source.seed
            and manifest.label_resize == LABEL_RESIZE
            and manifest.val_fraction == source.val_fraction
            and {k: v.ids for k, v in manifest.splits.items()} == _plan_splits(source))
    return same and all(
        image_path(folder, split, i).is_file() and label_path(folder, split, i).is_file()
        for split, ids in _plan_splits(source).items() for i in ids)


def _clean_folder(folder: Path, plan: dict[str, tuple[str, ...]]) -> int:
    """Remove temporary files and files of ids this plan does not hold; return how many."""
    removed = 0
    for split in SPLITS:
        wanted = set(plan.get(split, ()))
        for kind in (IMAGES, LABELS):
            directory = folder / split / kind
            if not directory.is_dir():
                continue
            for path in directory.iterdir():
                stale = path.suffix == '.png' and path.stem not in wanted
                if path.is_file() and (path.name.startswith(TMP_PREFIX) or stale):
                    path.unlink()
                    removed += 1
    return removed


def _remove_shifted_labels(folder: Path) -> int:
    """Delete the labels of a folder prepared with INTER_NEAREST; return how many."""
    try:
        if read_manifest(folder).label_resize == LABEL_RESIZE:
            return 0
    except DataError:
        return 0
    removed = 0
    for split in SPLITS:
        for path in (folder / split / LABELS).glob('*.png'):
            path.unlink()
            removed += 1
    return removed


def _make_job(source: Source, out: Path, size: tuple[int, int]) -> _SizeJob:
    folder = out / size_folder_name(size)
    up_to_date = _is_up_to_date(source, folder, size)
    if not up_to_date:
        shifted = _remove_shifted_labels(folder)
        if shifted:
            print(f'{folder}: rebuilding {shifted} labels resized with INTER_NEAREST, which '
                  'puts them up to a pixel off their image', file=sys.stderr)
        (folder / MANIFEST_NAME).unlink(missing_ok=True)
        plan = _plan_splits(source)
        removed = _clean_folder(folder, plan)
        if removed:
            print(f'{folder}: removed {removed} stale or temporary file(s)', file=sys.stderr)
        for split in plan:
            for kind in (IMAGES, LABELS):
                (folder / split / kind).mkdir(parents=True, exist_ok=True)
    counts = {split: np.zeros(len(CATEGORIES), np.int64) for split in source.splits}
    return _SizeJob(size, folder, up_to_date, counts)


def _manifest_for(source: Source, job: _SizeJob) -> Manifest:
    splits = {}
    for split, pairs in source.splits.items():
        counts = job.counts[split]
        splits[split] = SplitInfo(
            ids=tuple(p.sample_id for p in pairs),
            class_frequencies=tuple(float(c) for c in counts / counts.sum()),
            source=source.split_sources[split])
    return Manifest(
        folder=job.folder, dataset=source.name, source_root=str(source.root), size=job.size,
        categories=CATEGORIES, splits=splits, seed=source.seed, val_fraction=source.val_fraction,
        licence=source.licence, notes=source.notes,
        created=datetime.now(timezone.utc).isoformat(timespec='seconds'))


def prepare_dataset(source: Source, out: str | os.PathLike[str],
                    sizes: Iterable[tuple[int, int]], workers: int = 4,
                    progress: bool = True) -> list[Manifest]:
    """Write ``out/<W>x<H>/`` for every size in ``sizes`` and return their manifests.

    Sizes that are already complete are left alone. Each source pair is decoded once for all
    sizes that still need it. Every unusable file is collected; if there are any, a
    :class:`DataError` lists them and no manifest of an incomplete size is written.
    """
    out = Path(out)
    jobs = [_make_job(source, out, tuple(size)) for size in sizes]
    pending = [job for job in jobs if not job.up_to_date]
    for job in jobs:
        if job.up_to_date:
            print(f'{job.folder}: up to date, skipped', file=sys.stderr)
    if not pending:
        return [read_manifest(job.folder) for job in jobs]

    work = [(split, pair) for split, pairs in source.splits.items() for pair in pairs]
    problems: list[str] = []
    labels = ', '.join(size_folder_name(job.size) for job in pending)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(_process_pair, source, split, pair, pending)
                   for split, pair in work]
        try:
            bar = tqdm(zip(work, futures, strict=True), total=len(work), unit='frame',
                       desc=f'{source.name} {labels}', disable=not progress)
            for (split, _), future in bar:
                try:
                    counts = future.result()
                except _PairError as err:
                    problems.append(str(err))
                    continue
                for job in pending:
                    job.counts[split] += counts[job.size]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    raise_problems(problems, f'{source.name} at {source.root} (nothing was marked complete; '
                              'fix the files and run the same command again)')
    for job in pending:
        write_manifest(_manifest_for(source, job))
    return [read_manifest(job.folder) for job in jobs]


def main_prepare(args: argparse.Namespace) -> int:
    """Run ``fvt-train prepare <dataset>`` from parsed arguments; return the exit code."""
    started = time.monotonic()
    try:
        try:
            sizes = parse_sizes(args.size)
        except SizeError as err:
            raise DataError(f'--size {err}') from None
        if args.dataset == 'cityscapes':
            source = cityscapes_source(args.root, args.val_fraction, args.seed)
        else:
            source = camvid_source(args.root)
        for width, height in sizes:
            if width % 32 or height % 32:
                print(f'note: {width}x{height} is not a multiple of 32; segmentation-models '
                      'networks need multiples of 32', file=sys.stderr)
        manifests = prepare_dataset(source, args.out, sizes, workers=args.workers)
    except KeyboardInterrupt:
        print('fvt-train prepare: interrupted; run the same command again to finish',
              file=sys.stderr)
        return 130
    for manifest in manifests:
        counts = ', '.join(f'{name} {len(info.ids)}' for name, info in manifest.splits.items())
        print(f'{manifest.folder}: {manifest.dataset} {size_folder_name(manifest.size)} '
              f'({counts})')
    print(f'done in {time.monotonic() - started:.1f} s', file=sys.stderr)
    return 0


def add_prepare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``prepare`` with its ``cityscapes`` and ``camvid`` subcommands."""
    parser = subparsers.add_parser(
        'prepare', help='convert a dataset into prepared folders OUT/<W>x<H>/',
        description='Convert a dataset into prepared folders OUT/<W>x<H>/ (RGB images, '
                    'category-id labels, manifest.json). Re-running finishes or skips work.')
    datasets = parser.add_subparsers(dest='dataset', required=True, metavar='DATASET')
    default_workers = min(8, os.cpu_count() or 1)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument('--root', required=True, help='dataset root folder')
        sub.add_argument('--out', required=True, help='output folder (one subfolder per size)')
        sub.add_argument('--size', required=True, action='append', metavar='WxH',
                         help='output size, e.g. 512x256; repeat or comma-separate for several')
        sub.add_argument('--workers', type=positive_int, default=default_workers,
                         help=f'parallel decode/encode threads (default {default_workers})')
        sub.set_defaults(func=main_prepare)

    cityscapes = datasets.add_parser(
        'cityscapes', help='Cityscapes fine annotations (leftImg8bit/, gtFine/)',
        description='Official val -> our test; official train -> train/val by --val-fraction.')
    common(cityscapes)
    cityscapes.add_argument('--val-fraction', type=float, default=0.1,
                            help='share of official train used as val (default 0.1)')
    cityscapes.add_argument('--seed', type=int, default=42,
                            help='seed of the train/val split (default 42)')
    camvid = datasets.add_parser(
        'camvid', help='CamVid (<split>/images/*.jpg, <split>/labels/*.png)',
        description='CamVid train -> train, val -> val (split by sequence); no test split.')
    common(camvid)
    return parser
