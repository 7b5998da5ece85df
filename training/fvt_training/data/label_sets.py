"""Label sets of public segmentation models and the category each of their classes belongs to.

A label set is the list of a model's output classes in channel order, each with the category
of :data:`fvt_segmentation.core.contract.CATEGORIES` it counts towards (void when it has none).
Cityscapes sets come from the official ``cityscapesscripts`` label table, CamVid's 11 classes
from :data:`CAMVID_CLASSES` (the table the data set preparation maps with), any other
set from a YAML file::

    classes:                      # one entry per output channel, in channel order
      - {name: road, category: flat}
      - {name: background, category: void}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from fvt_segmentation.core.contract import CATEGORIES, VOID

CAMVID_CLASSES: tuple[tuple[str, str], ...] = (
    ('Sky', 'sky'), ('Building', 'construction'), ('Pole', 'object'), ('Road', 'flat'),
    ('Pavement', 'flat'), ('Tree', 'nature'), ('SignSymbol', 'object'),
    ('Fence', 'construction'), ('Car', 'vehicle'), ('Pedestrian', 'human'),
    ('Bicyclist', 'human'), ('Unlabelled', 'void'),
)
"""CamVid's 12 label ids (index = id in the label PNGs) and the category each belongs to."""

BUILT_IN = ('cityscapes-trainids', 'cityscapes-labelids', 'camvid11')
CITYSCAPES_LABEL_IDS = 34
"""Cityscapes label ids 0..33 (the licence plate's -1 never appears in an output)."""


class LabelSetError(ValueError):
    """A label set that cannot be used; the message says what was expected and what arrived."""


@dataclass(frozen=True)
class LabelSet:
    """A model's output classes (channel order) and the category id of each."""

    name: str
    classes: tuple[str, ...]
    category_ids: tuple[int, ...]
    source: str  # where the mapping comes from, shown in the provenance

    def __len__(self) -> int:
        return len(self.classes)

    def matrix(self) -> np.ndarray:
        """Return the ``[classes, categories]`` float32 0/1 matrix: class -> its category."""
        matrix = np.zeros((len(self.classes), len(CATEGORIES)), np.float32)
        matrix[np.arange(len(self.classes)), self.category_ids] = 1.0
        return matrix

    def lookup(self) -> np.ndarray:
        """Return the int64 table class id -> category id."""
        return np.asarray(self.category_ids, np.int64)

    def by_category(self) -> dict[str, list[str]]:
        """Return, per category that has any, the names of its classes (for provenance)."""
        grouped: dict[str, list[str]] = {}
        for name, category in zip(self.classes, self.category_ids, strict=True):
            grouped.setdefault(CATEGORIES[category], []).append(name)
        return {c: grouped[c] for c in CATEGORIES if c in grouped}


def cityscapes_labels() -> list[Any]:
    """Return ``cityscapesscripts``' label list, checked against our category names.

    Raises ``RuntimeError`` if a category id of the official table names another category
    than :data:`CATEGORIES` does (the two tables would disagree silently otherwise).
    """
    from cityscapesscripts.helpers.labels import labels

    for label in labels:
        if CATEGORIES[label.categoryId] != label.category:
            raise RuntimeError(f'cityscapesscripts category {label.categoryId} is '
                               f'{label.category!r}; fvt_segmentation calls it '
                               f'{CATEGORIES[label.categoryId]!r}')
    return list(labels)


def cityscapes_train_ids() -> LabelSet:
    """Return the 19 Cityscapes training classes (train ids 0..18), from the official table."""
    train = sorted((lab for lab in cityscapes_labels() if 0 <= lab.trainId < 255),
                   key=lambda lab: lab.trainId)
    if [lab.trainId for lab in train] != list(range(19)):
        raise RuntimeError(f'cityscapesscripts train ids are {[lab.trainId for lab in train]}; '
                           'expected 0..18')
    return LabelSet('cityscapes-trainids', tuple(lab.name for lab in train),
                    tuple(lab.categoryId for lab in train), 'cityscapesscripts.helpers.labels')


def cityscapes_label_ids() -> LabelSet:
    """Return the 34 Cityscapes label ids 0..33 (0..6 are void), from the official table."""
    by_id = {lab.id: lab for lab in cityscapes_labels()
             if 0 <= lab.id < CITYSCAPES_LABEL_IDS}
    if sorted(by_id) != list(range(CITYSCAPES_LABEL_IDS)):
        raise RuntimeError(f'cityscapesscripts defines label ids {sorted(by_id)}; expected '
                           f'0..{CITYSCAPES_LABEL_IDS - 1}')
    labels = [by_id[i] for i in range(CITYSCAPES_LABEL_IDS)]
    return LabelSet('cityscapes-labelids', tuple(lab.name for lab in labels),
                    tuple(lab.categoryId for lab in labels), 'cityscapesscripts.helpers.labels')


def camvid11() -> LabelSet:
    """Return CamVid's 11 classes (SegNet order, no 'Unlabelled'), as ``prepare`` maps them."""
    named = [(n, c) for n, c in CAMVID_CLASSES if c != CATEGORIES[VOID]]
    return LabelSet('camvid11', tuple(n for n, _ in named),
                    tuple(CATEGORIES.index(c) for _, c in named),
                    'fvt_training.data.label_sets.CAMVID_CLASSES')


def from_yaml(path: str | os.PathLike) -> LabelSet:
    """Read a label set from a YAML file (see the module doc); no category means void."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise LabelSetError(f'{path}: cannot read the label file ({err.strerror})') from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise LabelSetError(f'{path}: not valid YAML ({err})') from None
    example = 'classes: [{name: road, category: flat}, {name: background, category: void}]'
    entries = document.get('classes') if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise LabelSetError(f'{path}: expected a mapping with a non-empty list under '
                            f"'classes', e.g. {example}; got {str(document)[:120]!r}")
    names, categories = [], []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get('name'), str | int):
            raise LabelSetError(f'{path}: classes[{index}] must be a mapping with a name and '
                                f'a category, e.g. {{name: road, category: flat}}; got '
                                f'{entry!r}')
        unknown = set(entry) - {'name', 'category'}
        if unknown:
            raise LabelSetError(f'{path}: classes[{index}] ({entry["name"]}) has unknown keys '
                                f"{sorted(unknown)}; expected only 'name' and 'category'")
        category = entry.get('category') or CATEGORIES[VOID]
        if category not in CATEGORIES:
            raise LabelSetError(f'{path}: classes[{index}] ({entry["name"]}) has category '
                                f'{category!r}; expected one of {list(CATEGORIES)}')
        names.append(str(entry['name']))
        categories.append(CATEGORIES.index(category))
    digest = hashlib.sha256(text.encode()).hexdigest()
    return LabelSet(path.name, tuple(names), tuple(categories), f'{path.name} sha256 {digest}')


BUILDERS = {
    'cityscapes-trainids': cityscapes_train_ids,
    'cityscapes-labelids': cityscapes_label_ids,
    'camvid11': camvid11,
}


def load_label_set(name: str) -> LabelSet:
    """Return a built-in label set by name, or read ``name`` as a YAML file."""
    if name in BUILDERS:
        return BUILDERS[name]()
    if Path(name).suffix.lower() in ('.yaml', '.yml') or Path(name).is_file():
        return from_yaml(name)
    raise LabelSetError(f'--labels expects one of {list(BUILT_IN)} or a YAML file; got {name!r} '
                        '(no such file)')


def sets_with(count: int) -> Sequence[str]:
    """Return the built-in label sets that have ``count`` classes (for error hints)."""
    return [name for name in BUILT_IN if len(BUILDERS[name]()) == count]
