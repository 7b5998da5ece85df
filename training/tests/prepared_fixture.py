"""Prepared datasets (the layout `fvt-train prepare` writes) made in memory for the tests.

:func:`write_prepared` writes any samples as a complete prepared folder. :func:`make_prepared`
writes synthetic street-like scenes: sky on top, road below, a building block and a car box at
random places, plus pixel noise, so a small network can lower its loss within a few epochs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fvt_segmentation.core.contract import CATEGORIES, PALETTE, VOID
from fvt_training.common.files import write_png_atomic
from fvt_training.data.prepared import (
    IMAGES,
    LABELS,
    Manifest,
    SplitInfo,
    image_path,
    label_path,
    size_folder_name,
    write_manifest,
)

SKY, FLAT, CONSTRUCTION, VEHICLE = (CATEGORIES.index(name)
                                    for name in ('sky', 'flat', 'construction', 'vehicle'))


def synthetic_frame(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray,
                                                                                np.ndarray]:
    """Return ``(rgb uint8 [H, W, 3], labels uint8 [H, W])`` of one random scene."""
    labels = np.full((height, width), SKY, np.uint8)
    horizon = int(rng.integers(height // 3, height // 2))
    labels[horizon:] = FLAT
    x0 = int(rng.integers(0, width // 2))
    labels[height // 6:horizon, x0:x0 + width // 3] = CONSTRUCTION
    cy, cx = int(rng.integers(horizon, height - height // 6)), int(rng.integers(0, width - 12))
    labels[cy:cy + height // 6, cx:cx + width // 4] = VEHICLE
    labels[-2:] = VOID
    palette = np.asarray(PALETTE, np.int16)
    rgb = palette[labels] + rng.integers(-20, 21, (height, width, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8), labels


def write_prepared(root: Path,
                   samples: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
                   dataset: str, source: str, seed: int | None = None) -> Path:
    """Write ``{split: {id: (RGB image, category ids uint8)}}`` as ``root/<W>x<H>``; return it.

    The manifest, written last as ``fvt-train prepare`` does, lists the ids in the given order
    with each split's class frequencies; ``source`` describes every split.
    """
    height, width = next(iter(next(iter(samples.values())).values()))[1].shape
    folder = Path(root) / size_folder_name((width, height))
    splits = {}
    for split, pairs in samples.items():
        (folder / split / IMAGES).mkdir(parents=True, exist_ok=True)
        (folder / split / LABELS).mkdir(parents=True, exist_ok=True)
        counts = np.zeros(len(CATEGORIES), np.float64)
        for sample_id, (image, label) in pairs.items():
            write_png_atomic(image_path(folder, split, sample_id), image, rgb=True)
            write_png_atomic(label_path(folder, split, sample_id), label, rgb=False)
            counts += np.bincount(label.ravel(), minlength=len(CATEGORIES))
        splits[split] = SplitInfo(ids=tuple(pairs), class_frequencies=tuple(counts / counts.sum()),
                                  source=source)
    write_manifest(Manifest(
        folder=folder, dataset=dataset, source_root='<generated>', size=(width, height),
        categories=CATEGORIES, splits=splits, seed=seed, val_fraction=None,
        licence='generated test data', notes=(),
        created=datetime.now(timezone.utc).isoformat()))
    return folder


def make_prepared(root: Path, size_hw: tuple[int, int] = (64, 64), counts: dict | None = None,
                  seed: int = 0) -> Path:
    """Write a prepared folder ``root/<W>x<H>`` with synthetic frames and return its path."""
    counts = counts or {'train': 8, 'val': 4}
    rng = np.random.default_rng(seed)
    samples = {split: {f'{split}_{i:03d}': synthetic_frame(rng, *size_hw) for i in range(count)}
               for split, count in counts.items()}
    return write_prepared(root, samples, 'synthetic', 'synthetic', seed)
