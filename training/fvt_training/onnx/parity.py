"""Parity of an ONNX file with its reference: softmax, score agreement and the export's check.

A written file passes when, on real frames fed by each side's own contract, its probabilities
are within :data:`MAX_ABS_DIFF` of the reference's and their argmax agrees on at least
``MIN_ARGMAX_AGREEMENT`` of the pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from fvt_segmentation.core.contract import MIN_ARGMAX_AGREEMENT, ModelContract
from fvt_training.onnx.model_file import ExportError

MAX_ABS_DIFF = 1e-3


def softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Return the numerically stable softmax of ``scores`` along ``axis``."""
    shifted = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def score_agreement(pairs: Iterable[tuple[np.ndarray, np.ndarray]],
                    axis: int) -> tuple[float, float]:
    """Compare ``(got, expected)`` score arrays of equal shape, classes on ``axis``.

    Returns the largest absolute difference over all pairs and the fraction of positions
    (all axes but ``axis``) whose argmax over the classes agrees.
    """
    worst, agree, total = 0.0, 0, 0
    for got, expected in pairs:
        worst = max(worst, float(np.abs(got - expected).max()))
        agree += int((got.argmax(axis) == expected.argmax(axis)).sum())
        total += got.size // got.shape[axis]
    return worst, agree / total


def check_parity(reference: Any, reference_contract: ModelContract, segmenter: Any,
                 frames: Sequence[np.ndarray]) -> dict[str, Any]:
    """Compare a reference (Keras, or the file re-exported) and ONNX Runtime on RGB frames.

    Each is fed by its own contract: the reference by the run's (or its file's), ONNX Runtime
    by the one read back from the new file, so a wrong normalisation in the metadata shows up
    here too. Returns the largest absolute probability difference, the fraction of pixels
    whose argmax agrees and ``passed``.
    """
    from fvt_segmentation.core.frame_processing import preprocess_frame

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for frame in frames:
            expected = np.asarray(reference.predict_on_batch(
                preprocess_frame(frame, 'RGB', segmenter.input_size, reference_contract)))
            got = segmenter.infer(segmenter.preprocess(frame, 'RGB'))
            if segmenter.contract.output == 'logits':
                got = softmax(got, axis=-1)
            if got.shape != expected.shape:
                raise ExportError(f'{segmenter.model_path}: ONNX output shape {got.shape} '
                                  f'differs from the reference {expected.shape}')
            yield got, expected

    worst, agreement = score_agreement(pairs(), axis=-1)
    return {'frames': len(frames), 'max_abs_diff': worst, 'argmax_agreement': agreement,
            'max_abs_diff_limit': MAX_ABS_DIFF, 'argmax_agreement_limit': MIN_ARGMAX_AGREEMENT,
            'passed': worst <= MAX_ABS_DIFF and agreement >= MIN_ARGMAX_AGREEMENT}


class ProbabilitiesOf:
    """An ONNX file as parity reference: ``predict_on_batch`` returns probabilities."""

    def __init__(self, segmenter: Any) -> None:
        self.segmenter = segmenter

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        """Return the file's probabilities for a preprocessed batch."""
        scores = self.segmenter.infer(batch)
        return softmax(scores) if self.segmenter.contract.output == 'logits' else scores
