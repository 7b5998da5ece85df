"""A run's epoch history: ``history.csv`` read and trimmed, and drawn into ``plot.png``."""

from __future__ import annotations

import csv
import os
from pathlib import Path


def read_history(path: Path) -> dict[str, list[float]]:
    """Return the CSV history as ``{column: values}`` (empty when the file is missing)."""
    if not path.is_file():
        return {}
    with path.open(newline='') as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(float(value) if value not in ('', None)
                                               else float('nan'))
    return columns


def truncate_history(path: Path, epochs: int) -> None:
    """Drop rows of epochs that ``state.json`` does not count (a crash between the two)."""
    if not path.is_file():
        return
    with path.open(newline='') as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) < epochs]
    if len(kept) != len(rows):
        tmp = path.with_name(path.name + '.tmp')
        with tmp.open('w', newline='') as f:
            csv.writer(f).writerows(kept)
        os.replace(tmp, path)


def plot_history(history_csv: Path, out_png: Path) -> None:
    """Draw loss and mIoU (train and validation) per epoch into ``out_png`` atomically."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    history = read_history(history_csv)
    if not history.get('epoch'):
        return
    epochs = [int(e) + 1 for e in history['epoch']]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], 'loss', 'loss'), (axes[1], 'miou', 'mIoU (void ignored)')):
        for prefix, label in (('', 'train'), ('val_', 'val')):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], marker='o', label=label)
        ax.set_xlabel('epoch')
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = out_png.with_name(out_png.stem + '.tmp.png')
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, out_png)
