"""The source datasets: Cityscapes and CamVid found in their own layouts, split and labelled.

A source adapter (:func:`cityscapes_source`, :func:`camvid_source`) finds the image/label
pairs of a dataset in its own layout, assigns them to our splits and gives the table from its
label ids to the 8 categories of :data:`fvt_segmentation.core.contract.CATEGORIES`;
:func:`fvt_training.data.prepare.prepare_dataset` turns a source into prepared folders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
import hashlib
import os
from pathlib import Path

import numpy as np

from fvt_segmentation.core.contract import CATEGORIES
from fvt_training.data.label_sets import CAMVID_CLASSES, cityscapes_labels
from fvt_training.data.prepared import DataError

UNKNOWN_LABEL = 255
"""Entry of a label table for ids the dataset does not define (an error when found)."""

MAX_LISTED_PROBLEMS = 20

CAMVID_IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')
CITYSCAPES_IMAGE_SUFFIX = '_leftImg8bit.png'
CITYSCAPES_LABEL_SUFFIX = '_gtFine_labelIds.png'

CITYSCAPES_LICENCE = ('Cityscapes dataset terms of use (non-commercial research and teaching '
                      'only; cite Cordts et al., CVPR 2016); models trained on it inherit them')
CAMVID_LICENCE = ('CamVid (Brostow, Fauqueur, Cipolla, Pattern Recognition Letters 2009), '
                  'CC BY-NC 4.0 via the SegNet tutorial; models trained on it inherit those terms')


@dataclass(frozen=True)
class SourcePair:
    """One image and its label file in the source dataset's own layout."""

    sample_id: str
    image: Path
    label: Path


@dataclass(frozen=True)
class Source:
    """A source dataset: its pairs per split of ours and how its label ids map to categories."""

    name: str
    root: Path
    splits: dict[str, tuple[SourcePair, ...]]
    split_sources: dict[str, str]
    label_table: np.ndarray
    seed: int | None
    val_fraction: float | None
    licence: str
    notes: tuple[str, ...]


def raise_problems(problems: list[str], what: str) -> None:
    """Raise one :class:`DataError` listing ``problems`` (the first few) about ``what``."""
    if not problems:
        return
    listed = problems[:MAX_LISTED_PROBLEMS]
    more = len(problems) - len(listed)
    tail = f'\n  ... and {more} more' if more else ''
    raise DataError(f'{what}: {len(problems)} problem(s):\n  ' + '\n  '.join(listed) + tail)


def _existing_root(root: str | os.PathLike[str], dataset: str) -> Path:
    path = Path(root).resolve()
    if not path.is_dir():
        raise DataError(f'{path}: {dataset} root folder not found')
    return path


def cityscapes_label_table() -> np.ndarray:
    """Return the 256-entry table from Cityscapes label ids to category ids.

    Built from the official ``cityscapesscripts`` label list (each label's ``categoryId``);
    ids 0..6 (unlabeled, ego vehicle, ... ground) are void there. Id -1 (licence plate) never
    appears in the uint8 ``labelIds`` files. Ids the list does not define stay
    :data:`UNKNOWN_LABEL`.
    """
    table = np.full(256, UNKNOWN_LABEL, dtype=np.uint8)
    for label in cityscapes_labels():
        if 0 <= label.id < 256:
            table[label.id] = label.categoryId
    return table


def camvid_label_table() -> np.ndarray:
    """Return the 256-entry table from CamVid label ids (0..11) to category ids."""
    table = np.full(256, UNKNOWN_LABEL, dtype=np.uint8)
    for camvid_id, (_, category) in enumerate(CAMVID_CLASSES):
        table[camvid_id] = CATEGORIES.index(category)
    return table


def split_train_val(ids: Sequence[str], val_fraction: float,
                    seed: int) -> tuple[list[str], list[str]]:
    """Split ``ids`` into sorted ``(train, val)`` lists, ``val`` about ``val_fraction`` of them.

    The order comes from a SHA-256 of ``seed`` and each id, so the same ids and seed give the
    same split on every machine and library version.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f'--val-fraction must be between 0 and 1 (exclusive); got {val_fraction}')
    n_val = round(len(ids) * val_fraction)
    if not 0 < n_val < len(ids):
        raise DataError(f'--val-fraction {val_fraction} of {len(ids)} frames gives {n_val} '
                        'validation frames; both train and val need at least one')
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f'{seed}:{i}'.encode()).hexdigest())
    return sorted(ranked[n_val:]), sorted(ranked[:n_val])


def _folders_found(folders: Iterable[Path], layout: str, problems: list[str]) -> bool:
    """Return whether every folder exists; add a problem naming ``layout`` for each missing."""
    missing = [f'{folder}: folder not found; expected {layout}'
               for folder in folders if not folder.is_dir()]
    problems.extend(missing)
    return not missing


def _pair_up(images: dict[str, Path], labels: dict[str, Path], expected_label: Callable[
        [Path], Path], expected_image: Callable[[Path], Path],
        problems: list[str]) -> tuple[SourcePair, ...]:
    for sample_id in sorted(images.keys() - labels.keys()):
        problems.append(f'{images[sample_id]}: no label; expected '
                        f'{expected_label(images[sample_id])}')
    for sample_id in sorted(labels.keys() - images.keys()):
        problems.append(f'{labels[sample_id]}: label without image; expected '
                        f'{expected_image(labels[sample_id])}')
    return tuple(SourcePair(i, images[i], labels[i]) for i in sorted(images.keys() & labels))


def _scan_cityscapes_split(root: Path, split: str,
                           problems: list[str]) -> tuple[SourcePair, ...]:
    image_dir = root / 'leftImg8bit' / split
    label_dir = root / 'gtFine' / split
    if not _folders_found((image_dir, label_dir), 'the official Cityscapes layout '
                          'leftImg8bit/<split>/<city>/ and gtFine/<split>/<city>/', problems):
        return ()
    images = {p.name[:-len(CITYSCAPES_IMAGE_SUFFIX)]: p
              for p in image_dir.glob(f'*/*{CITYSCAPES_IMAGE_SUFFIX}')}
    labels = {p.name[:-len(CITYSCAPES_LABEL_SUFFIX)]: p
              for p in label_dir.glob(f'*/*{CITYSCAPES_LABEL_SUFFIX}')}
    if not images:
        problems.append(f'{image_dir}: no <city>/*{CITYSCAPES_IMAGE_SUFFIX} files')
    return _pair_up(
        images, labels,
        lambda p: label_dir / p.parent.name / p.name.replace(CITYSCAPES_IMAGE_SUFFIX,
                                                             CITYSCAPES_LABEL_SUFFIX),
        lambda p: image_dir / p.parent.name / p.name.replace(CITYSCAPES_LABEL_SUFFIX,
                                                             CITYSCAPES_IMAGE_SUFFIX),
        problems)


def cityscapes_source(root: str | os.PathLike[str], val_fraction: float = 0.1,
                      seed: int = 42) -> Source:
    """Find the Cityscapes fine annotations under ``root`` and assign our splits.

    The official val set becomes our test set; the official train set is split into train and
    val by :func:`split_train_val`. The official test set (no public labels) is not used.
    """
    root = _existing_root(root, 'Cityscapes')
    problems: list[str] = []
    official_train = _scan_cityscapes_split(root, 'train', problems)
    official_val = _scan_cityscapes_split(root, 'val', problems)
    raise_problems(problems, f'Cityscapes at {root}')
    by_id = {pair.sample_id: pair for pair in official_train}
    train_ids, val_ids = split_train_val(list(by_id), val_fraction, seed)
    return Source(
        name='cityscapes', root=root,
        splits={'train': tuple(by_id[i] for i in train_ids),
                'val': tuple(by_id[i] for i in val_ids),
                'test': official_val},
        split_sources={
            'train': f'official train minus val ({1 - val_fraction:.0%}, seed {seed})',
            'val': f'official train, {val_fraction:.0%} by seed {seed}',
            'test': 'official val',
        },
        label_table=cityscapes_label_table(), seed=seed, val_fraction=val_fraction,
        licence=CITYSCAPES_LICENCE,
        notes=('The official val set is our test set; the official test set has no public '
               'labels and is not used.',))


def _scan_camvid_split(root: Path, split: str, problems: list[str]) -> tuple[SourcePair, ...]:
    image_dir, label_dir = root / split / 'images', root / split / 'labels'
    if not _folders_found((image_dir, label_dir), 'the CamVid layout <split>/images/<stem>.jpg '
                          'and <split>/labels/<stem>.png', problems):
        return ()
    images = {p.stem: p for p in image_dir.iterdir()
              if p.suffix.lower() in CAMVID_IMAGE_SUFFIXES}
    labels = {p.stem: p for p in label_dir.glob('*.png')}
    if not images:
        problems.append(f'{image_dir}: no images ({", ".join(CAMVID_IMAGE_SUFFIXES)})')
    return _pair_up(images, labels, lambda p: label_dir / f'{p.stem}.png',
                    lambda p: image_dir / f'{p.stem}.jpg', problems)


def camvid_source(root: str | os.PathLike[str]) -> Source:
    """Find CamVid (``<split>/images/*.jpg``, ``<split>/labels/*.png``) under ``root``.

    Its train and val splits (divided by sequence already) are kept as they are; there is no
    test split, which the manifest records.
    """
    root = _existing_root(root, 'CamVid')
    problems: list[str] = []
    splits = {name: _scan_camvid_split(root, name, problems) for name in ('train', 'val')}
    raise_problems(problems, f'CamVid at {root}')
    return Source(
        name='camvid', root=root, splits=splits,
        split_sources={'train': 'CamVid train (SegNet tutorial split)',
                       'val': 'CamVid val (SegNet tutorial split)'},
        label_table=camvid_label_table(), seed=None, val_fraction=None,
        licence=CAMVID_LICENCE,
        notes=('No test split: the CamVid test split is kept back for independent evaluation '
               'and is not part of this source.',))
