"""The prepared-dataset folder: its layout and its manifest.

One prepared dataset is one folder ``OUT/<W>x<H>/`` holding ``<split>/images/<id>.png`` (RGB),
``<split>/labels/<id>.png`` (single-channel uint8 category ids) and ``manifest.json``. The
manifest is written last, so its presence means every file it lists is complete.
:mod:`fvt_training.data.prepare` writes this layout and :mod:`fvt_training.data.pipeline` reads
it; both go through this module, which never imports TensorFlow (so tools that only read
samples start fast). It also groups a split's frames by recording sequence, for training that
holds one sequence out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from fvt_segmentation.core.contract import CATEGORIES
from fvt_training.common.files import write_bytes_atomic

MANIFEST_NAME = 'manifest.json'
MANIFEST_FORMAT = 1
LABEL_RESIZE = 'nearest_exact'
"""How this version resizes labels (``manifest.json``'s ``label_resize``): OpenCV's
INTER_NEAREST_EXACT, aligned with the images' area resize. Manifests without the key were
written with INTER_NEAREST, whose labels sit up to a pixel off their image."""
SPLITS = ('train', 'val', 'test')
IMAGES = 'images'
LABELS = 'labels'
SPLIT_JOIN = '+'  # joins split names into their union: ``train+val``


class DataError(ValueError):
    """Bad input data or a bad prepared folder; the message names the file and the problem."""


def size_folder_name(size: tuple[int, int]) -> str:
    """Return the folder name ``<W>x<H>`` of a prepared size given as ``(width, height)``."""
    return f'{size[0]}x{size[1]}'


def image_path(folder: Path, split: str, sample_id: str) -> Path:
    """Return where the RGB image of ``sample_id`` lives in a prepared folder."""
    return Path(folder) / split / IMAGES / f'{sample_id}.png'


def label_path(folder: Path, split: str, sample_id: str) -> Path:
    """Return where the category-id label of ``sample_id`` lives in a prepared folder."""
    return Path(folder) / split / LABELS / f'{sample_id}.png'


@dataclass(frozen=True)
class SplitInfo:
    """One split of a prepared dataset as its manifest describes it."""

    ids: tuple[str, ...]
    class_frequencies: tuple[float, ...]
    source: str


@dataclass(frozen=True)
class Manifest:
    """A prepared dataset folder and what its ``manifest.json`` says about it."""

    folder: Path
    dataset: str
    source_root: str
    size: tuple[int, int]  # (width, height), as the folder name <W>x<H>
    categories: tuple[str, ...]
    splits: Mapping[str, SplitInfo]
    seed: int | None
    val_fraction: float | None
    licence: str
    notes: tuple[str, ...]
    created: str
    label_resize: str = LABEL_RESIZE

    @property
    def height_width(self) -> tuple[int, int]:
        """Return the image size as ``(height, width)``, the order arrays use."""
        return self.size[1], self.size[0]

    def split(self, split: str) -> SplitInfo:
        """Return one split, or the union of splits joined by ``+`` (``train+val``).

        A union lists its parts' ids in order and weighs their class frequencies by frame
        count (every frame of a prepared folder has the same size). A :class:`DataError`
        lists the splits there are, or names a frame two parts share.
        """
        parts = split.split(SPLIT_JOIN)
        infos = [self._one_split(part) for part in parts]
        if len(infos) == 1:
            return infos[0]
        if len(set(parts)) < len(parts):
            raise DataError(f'{self.folder / MANIFEST_NAME}: {split!r} names a split twice')
        ids = tuple(i for info in infos for i in info.ids)
        if len(set(ids)) < len(ids):
            shared = sorted(i for i, n in Counter(ids).items() if n > 1)
            raise DataError(f'{self.folder / MANIFEST_NAME}: the splits of {split!r} share '
                            f'frames {shared[:5]}; a union needs distinct frame ids')
        frequencies = sum(np.asarray(info.class_frequencies) * len(info.ids) for info in infos)
        return SplitInfo(ids, tuple(float(f) for f in frequencies / len(ids)),
                         ' + '.join(info.source for info in infos))

    def _one_split(self, split: str) -> SplitInfo:
        try:
            return self.splits[split]
        except KeyError:
            extra = ''.join(f' {note}' for note in self.notes)
            raise DataError(f'{self.folder / MANIFEST_NAME}: no split {split!r}; this '
                            f'{self.dataset} folder has {sorted(self.splits)}.{extra}') from None

    def folder_split(self, split: str, sample_id: str) -> str:
        """Return the split folder that holds ``sample_id`` of ``split`` (a part of a union)."""
        parts = split.split(SPLIT_JOIN)
        if len(parts) == 1:
            return split
        for part in parts:
            if sample_id in self._one_split(part).ids:
                return part
        raise DataError(f'{self.folder / MANIFEST_NAME}: no frame {sample_id!r} in {split!r}')

    def ids(self, split: str) -> tuple[str, ...]:
        """Return the sample ids of ``split`` in their fixed (sorted) order."""
        return self.split(split).ids

    def class_frequencies(self, split: str) -> np.ndarray:
        """Return the fraction of pixels per category in ``split`` (float64, sums to 1)."""
        return np.asarray(self.split(split).class_frequencies, dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        """Return the manifest as the JSON document written to ``manifest.json``."""
        return {
            'format': MANIFEST_FORMAT,
            'dataset': self.dataset,
            'source_root': self.source_root,
            'size': list(self.size),
            'categories': list(self.categories),
            'seed': self.seed,
            'val_fraction': self.val_fraction,
            'licence': self.licence,
            'notes': list(self.notes),
            'created': self.created,
            'label_resize': self.label_resize,
            'splits': {
                name: {
                    'count': len(info.ids),
                    'source': info.source,
                    'class_frequencies': list(info.class_frequencies),
                    'ids': list(info.ids),
                }
                for name, info in self.splits.items()
            },
        }


def write_manifest(manifest: Manifest) -> Path:
    """Write ``manifest.json`` into the manifest's folder atomically and return its path."""
    path = manifest.folder / MANIFEST_NAME
    text = json.dumps(manifest.to_json(), indent=1) + '\n'
    write_bytes_atomic(path, text.encode('utf-8'))
    return path


def _prepared_sizes(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / MANIFEST_NAME).is_file())


def read_manifest(folder: str | os.PathLike[str]) -> Manifest:
    """Read and check the manifest of a prepared folder (``OUT/<W>x<H>``).

    Raises :class:`DataError` naming the file when it is missing, malformed, or was prepared
    with a category list other than :data:`fvt_segmentation.core.contract.CATEGORIES`.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        sizes = _prepared_sizes(folder)
        if sizes:
            hint = f'it holds prepared sizes {sizes}: pass one of those folders'
        else:
            hint = ('prepare it with `fvt-train prepare` (a folder without a manifest is an '
                    'unfinished preparation: run the same command again)')
        raise DataError(f'{path}: not found; expected a prepared dataset folder; {hint}')
    try:
        raw = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f'{path}: unreadable manifest ({err})') from None
    if not isinstance(raw, dict) or raw.get('format') != MANIFEST_FORMAT:
        found = raw.get('format') if isinstance(raw, dict) else type(raw).__name__
        raise DataError(f'{path}: expected manifest format {MANIFEST_FORMAT}; found {found!r}')
    try:
        categories = tuple(raw['categories'])
        size = (int(raw['size'][0]), int(raw['size'][1]))
        splits = {
            name: SplitInfo(
                ids=tuple(str(i) for i in entry['ids']),
                class_frequencies=tuple(float(v) for v in entry['class_frequencies']),
                source=str(entry['source']),
            )
            for name, entry in raw['splits'].items()
        }
        manifest = Manifest(
            folder=folder, dataset=str(raw['dataset']), source_root=str(raw['source_root']),
            size=size, categories=categories, splits=splits, seed=raw['seed'],
            val_fraction=raw['val_fraction'], licence=str(raw['licence']),
            notes=tuple(str(n) for n in raw['notes']), created=str(raw['created']),
            label_resize=str(raw.get('label_resize', 'nearest')))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise DataError(f'{path}: malformed manifest ({type(err).__name__}: {err})') from None
    if categories != CATEGORIES:
        raise DataError(f'{path}: prepared with categories {list(categories)}; this package '
                        f'uses {list(CATEGORIES)}: prepare the dataset again')
    for name, info in splits.items():
        if len(info.class_frequencies) != len(CATEGORIES):
            raise DataError(f'{path}: split {name!r} has {len(info.class_frequencies)} class '
                            f'frequencies; expected {len(CATEGORIES)}')
    return manifest


def load_pair(manifest: Manifest, split: str, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one sample: ``(RGB image uint8 [H, W, 3], category ids uint8 [H, W])``.

    Raises :class:`DataError` naming the file when it is missing, unreadable, of the wrong
    size or holds ids outside the category list.
    """
    expected = manifest.height_width
    split = manifest.folder_split(split, sample_id)
    paths = (image_path(manifest.folder, split, sample_id),
             label_path(manifest.folder, split, sample_id))
    image = cv2.imread(str(paths[0]), cv2.IMREAD_COLOR) if paths[0].is_file() else None
    label = cv2.imread(str(paths[1]), cv2.IMREAD_UNCHANGED) if paths[1].is_file() else None
    for path, array in zip(paths, (image, label), strict=True):
        if array is None:
            raise DataError(f'{path}: missing or not a readable PNG; the manifest of '
                            f'{manifest.folder} lists it: prepare the dataset again')
        if array.shape[:2] != expected:
            raise DataError(f'{path}: size {array.shape[1]}x{array.shape[0]}; the manifest '
                            f'says {manifest.size[0]}x{manifest.size[1]}')
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DataError(f'{paths[1]}: expected a single-channel uint8 label; found shape '
                        f'{label.shape} of {label.dtype}')
    if int(label.max()) >= len(CATEGORIES):
        raise DataError(f'{paths[1]}: expected category ids 0..{len(CATEGORIES) - 1}; found '
                        f'{int(label.max())}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), label


def sequence_of(sample_id: str) -> str:
    """Return the recording sequence of a frame id: the id up to its first ``_``.

    CamVid names frames ``<sequence>_<frame>`` (``0006R0_f03780``); a Cityscapes id
    (``<city>_<sequence>_<frame>``) gives its city. Raises :class:`DataError` for an id
    without that form.
    """
    sequence, separator, frame = sample_id.partition('_')
    if not sequence or not separator or not frame:
        raise DataError(f'frame id {sample_id!r} names no sequence: expected '
                        '<sequence>_<frame>, as CamVid names its frames (0006R0_f03780)')
    return sequence


def sequence_folds(ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Group frame ids by :func:`sequence_of`: ``{sequence: its ids}``, sequences sorted.

    Each entry is one fold of a leave-one-sequence-out check; ids keep their given order.
    """
    folds: dict[str, list[str]] = {}
    for sample_id in ids:
        folds.setdefault(sequence_of(sample_id), []).append(sample_id)
    return {sequence: tuple(folds[sequence]) for sequence in sorted(folds)}


def holdout_split(manifest: Manifest, split: str,
                  sequence: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return ``(training ids, held-out ids)`` of ``split``, holding ``sequence`` out.

    The held-out ids are the frames of ``sequence`` (by file name, :func:`sequence_of`), the
    training ids every other frame of the split, both in the manifest's order. Raises
    :class:`DataError` naming the sequences found when ``sequence`` is not one of them or is
    the only one.
    """
    try:
        folds = sequence_folds(manifest.ids(split))
    except DataError as err:
        raise DataError(f'{manifest.folder}: split {split!r}: {err}') from None
    found = ', '.join(f'{name} ({len(ids)} frames)' for name, ids in folds.items())
    if sequence not in folds:
        raise DataError(f'{manifest.folder}: split {split!r} has no sequence {sequence!r}; '
                        f'expected one of the sequences its frame ids start with: {found}')
    if len(folds) == 1:
        raise DataError(f'{manifest.folder}: split {split!r} holds only sequence {sequence!r} '
                        f'({found}); holding it out leaves no frame to train on')
    held_out = folds[sequence]
    return tuple(i for i in manifest.ids(split) if sequence_of(i) != sequence), held_out


def label_frequencies(manifest: Manifest, split: str, ids: Sequence[str]) -> np.ndarray:
    """Return the fraction of pixels per category over the labels of ``ids`` of ``split``.

    For a part of a split, whose frequencies the manifest does not hold: every label is read.
    """
    counts = np.zeros(len(CATEGORIES), np.float64)
    for sample_id in tqdm(ids, desc=f'{split} class frequencies', unit='frame'):
        counts += np.bincount(load_pair(manifest, split, sample_id)[1].ravel(),
                              minlength=len(CATEGORIES))
    return counts / counts.sum()
