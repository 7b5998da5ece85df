"""A tiny prepared dataset and ONNX model whose predictions are known exactly (review tests).

Photos are 64x32 mosaics of 8x8 blocks. Each block has one colour that the tiny affine model
of ``test/onnx_models.py`` (with the normalisation below) maps to a chosen category by a
clear score margin, so the expected class map of every photo is known without running ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import sys

import numpy as np
from prepared_fixture import write_prepared

from fvt_segmentation.core.contract import CATEGORIES, VOID, ModelContract, Normalization

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'test'))

from onnx_models import build_model, default_weights, expected_scores  # noqa: E402

HEIGHT, WIDTH, BLOCK = 32, 64, 8
MODEL_SIZE = (16, 32)
"""Half the photo size: the app must resize the class map back, as the node does."""
NORMALIZATION = Normalization(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
MIN_MARGIN = 0.5
HUMAN = CATEGORIES.index('human')


def review_contract(**changes) -> ModelContract:
    """The contract of the review test models (any field can be changed)."""
    return ModelContract(**{'normalization': NORMALIZATION, **changes})


def build_review_model(path: Path, **changes) -> Path:
    """Write the tiny review model (16x32 input) to ``path``; ``changes`` edit its contract."""
    return build_model(path, size=MODEL_SIZE, contract=review_contract(**changes))


def class_colours() -> dict[int, np.ndarray]:
    """Return, per category the tiny model can output, a colour it predicts by a clear margin."""
    grid = np.arange(0, 256, 17)
    colours = np.stack(np.meshgrid(grid, grid, grid, indexing='ij'), -1).reshape(-1, 3)
    gain, offset = NORMALIZATION.as_affine()
    scores = expected_scores(colours * gain + offset, default_weights(len(CATEGORIES)))
    ordered = np.sort(scores, axis=1)
    margin = ordered[:, -1] - ordered[:, -2]
    winners = scores.argmax(1)
    chosen = {}
    for category in range(len(CATEGORIES)):
        mine = np.flatnonzero((winners == category) & (margin > MIN_MARGIN))
        if mine.size:
            chosen[category] = colours[mine[margin[mine].argmax()]].astype(np.uint8)
    return chosen


@dataclass(frozen=True)
class ReviewData:
    """The prepared folder plus what each image is, holds and must be predicted as."""

    folder: Path
    photos: dict[tuple[str, str], np.ndarray]
    labels: dict[tuple[str, str], np.ndarray]
    predictions: dict[tuple[str, str], np.ndarray]

    def ids(self, split: str) -> list[str]:
        """Return the sorted ids of one split."""
        return sorted(i for s, i in self.photos if s == split)


def _mosaic(rng: np.random.Generator, colours: dict[int, np.ndarray]) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    categories = np.array(sorted(colours))
    blocks = rng.choice(categories, size=(HEIGHT // BLOCK, WIDTH // BLOCK))
    classes = np.kron(blocks, np.ones((BLOCK, BLOCK), np.int64)).astype(np.uint8)
    palette = np.zeros((len(CATEGORIES), 3), np.uint8)
    for category, colour in colours.items():
        palette[category] = colour
    return palette[classes], classes


def make_review_data(root: Path, seed: int = 3) -> ReviewData:
    """Write the prepared folder ``root/64x32`` and return it with the expected results.

    val: ``street_000`` labelled exactly as predicted, ``street_001`` with a void strip and a
    strip of 'human' (which the model never predicts), ``street_002`` all void.
    train: two more images labelled as predicted.
    """
    rng = np.random.default_rng(seed)
    colours = class_colours()
    assert HUMAN not in colours, 'the tests rely on the tiny model never predicting human'
    photos, labels, predictions = {}, {}, {}
    samples: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for split, ids in (('val', ('street_000', 'street_001', 'street_002')),
                       ('train', ('street_100', 'street_101'))):
        samples[split] = {}
        for sample_id in ids:
            photo, predicted = _mosaic(rng, colours)
            label = predicted.copy()
            if sample_id == 'street_001':
                label[:, :BLOCK] = VOID
                label[:, BLOCK:2 * BLOCK] = HUMAN
            elif sample_id == 'street_002':
                label[:] = VOID
            samples[split][sample_id] = (photo, label)
            photos[split, sample_id] = photo
            labels[split, sample_id] = label
            predictions[split, sample_id] = predicted
    folder = write_prepared(root, samples, 'mosaics', 'generated mosaics', seed)
    return ReviewData(folder, photos, labels, predictions)
