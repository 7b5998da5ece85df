"""The frames a run trains and validates on, and its config resolved against the prepared data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fvt_training.data import pipeline
from fvt_training.data.prepared import (
    Manifest,
    holdout_split,
    label_frequencies,
    read_manifest,
)
from fvt_training.models.factories import check_input_size, model_normalization
from fvt_training.runs.run_files import RunError


@dataclass(frozen=True)
class RunFrames:
    """The frames a run trains on and validates (and is scored) on, by split and id."""

    manifest: Manifest
    train_split: str
    train_ids: tuple[str, ...]
    val_split: str
    val_ids: tuple[str, ...]
    holdout_sequence: str | None

    @property
    def scored(self) -> str:
        """Name the validation frames, as metrics.json and the progress bars do."""
        if self.holdout_sequence is None:
            return self.val_split
        return f'{self.train_split} sequence {self.holdout_sequence} (held out)'

    @property
    def trained_val_frames(self) -> int:
        """Count the validation frames that are trained on too (``train_split: train+val``)."""
        return len(set(self.val_ids) & set(self.train_ids))

    def train_frequencies(self) -> np.ndarray:
        """Return the fraction of pixels per category over the training frames."""
        if self.holdout_sequence is None:
            return self.manifest.class_frequencies(self.train_split)
        # The split's frequencies in the manifest would count the held-out labels too.
        return label_frequencies(self.manifest, self.train_split, self.train_ids)


def run_frames(config: Mapping, manifest: Manifest) -> RunFrames:
    """Return the frames a run trains and validates on.

    With ``data.holdout_sequence`` set: the training split without that sequence to train on,
    the sequence to validate on, and the validation split not read at all.
    """
    spec = config['data']
    train_split, sequence = spec['train_split'], spec['holdout_sequence']
    if sequence is None:
        return RunFrames(manifest, train_split, manifest.ids(train_split), spec['val_split'],
                         manifest.ids(spec['val_split']), None)
    train_ids, held_out = holdout_split(manifest, train_split, sequence)
    return RunFrames(manifest, train_split, train_ids, train_split, held_out, sequence)


def make_sequences(config: Mapping, frames: RunFrames) -> tuple[Any, Any]:
    """Return the training and validation batch sequences of ``frames``, as ``config`` asks."""
    normalization, color_order = model_normalization(config)
    spec = config['data']
    common = dict(batch_size=spec['batch_size'], normalization=normalization,
                  color_order=color_order, workers=spec['workers'], seed=config['seed'])
    train_seq = pipeline.make_sequence(frames.manifest, frames.train_split,
                                       ids=frames.train_ids, augment=spec['augment'],
                                       shuffle=True, **common)
    val_seq = pipeline.make_sequence(frames.manifest, frames.val_split, ids=frames.val_ids,
                                     augment='none', shuffle=False, **common)
    return train_seq, val_seq


def resolve_config(config: dict) -> tuple[dict, RunFrames]:
    """Fill ``model.input_size`` from the prepared data (or check it matches); return frames.

    Every check that needs the prepared data runs here, before a run folder is made.
    """
    manifest = read_manifest(config['data']['prepared_dir'])
    size = list(manifest.height_width)
    spec = config['model']
    if spec['input_size'] is None:
        spec['input_size'] = size
    elif list(spec['input_size']) != size:
        raise RunError(f'model.input_size is {spec["input_size"]} but the prepared data in '
                       f'{config["data"]["prepared_dir"]} is {size} ([height, width]); set '
                       'model.input_size: null or prepare the data at that size')
    check_input_size(spec['architecture'], spec['input_size'], spec['filters'])
    return config, run_frames(config, manifest)
