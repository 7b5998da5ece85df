"""A tiny synthetic prepared dataset (the layout `fvt-train prepare` writes) for training tests.

Each frame is a street-like scene: sky on top, road below, a building block and a car box at
random places, plus pixel noise, so a small network can lower its loss within a few epochs.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fvt_segmentation.contract import CATEGORIES, PALETTE
from fvt_training.prepared import (
    Manifest,
    SplitInfo,
    image_path,
    label_path,
    size_folder_name,
    write_manifest,
    write_png_atomic,
)

SKY, FLAT, CONSTRUCTION, VEHICLE, VOID = 5, 1, 2, 7, 0


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


def make_prepared(root: Path, size_hw: tuple[int, int] = (64, 64), counts: dict | None = None,
                  seed: int = 0) -> Path:
    """Write a prepared folder ``root/<W>x<H>`` with synthetic frames and return its path."""
    counts = counts or {'train': 8, 'val': 4}
    height, width = size_hw
    folder = Path(root) / size_folder_name((width, height))
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in counts.items():
        (folder / split / 'images').mkdir(parents=True, exist_ok=True)
        (folder / split / 'labels').mkdir(parents=True, exist_ok=True)
        hist = np.zeros(len(CATEGORIES), np.float64)
        ids = tuple(f'{split}_{i:03d}' for i in range(count))
        for sample_id in ids:
            rgb, labels = synthetic_frame(rng, height, width)
            write_png_atomic(image_path(folder, split, sample_id), rgb, rgb=True)
            write_png_atomic(label_path(folder, split, sample_id), labels, rgb=False)
            hist += np.bincount(labels.ravel(), minlength=len(CATEGORIES))
        splits[split] = SplitInfo(ids=ids, class_frequencies=tuple(hist / hist.sum()),
                                  source='synthetic')
    write_manifest(Manifest(
        folder=folder, dataset='synthetic', source_root='<generated>', size=(width, height),
        categories=CATEGORIES, splits=splits, seed=seed, val_fraction=None,
        licence='generated test data', notes=(),
        created=datetime.now(timezone.utc).isoformat()))
    return folder
