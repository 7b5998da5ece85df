"""One reviewed image: the node's inference on a prepared photo, scored against its label.

:func:`review_image` runs the photo through :class:`fvt_segmentation.core.segmenter.Segmenter`
and colours it with :mod:`fvt_segmentation.core.conversions` exactly as the node does (segment at
the model's size, nearest-neighbour resize to the frame, palette of the model's contract),
then scores it with :mod:`fvt_segmentation.core.metrics`.
:class:`ReviewCache` keeps finished reviews so that revisiting an image costs nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
import math
import threading
from typing import Any

import cv2
import numpy as np

from fvt_segmentation.core.conversions import blend, colorize, resize_nearest
from fvt_segmentation.core.metrics import confusion_matrix, summarize
from fvt_segmentation.core.segmenter import Segmenter

PICTURES = ('photo', 'truth', 'prediction', 'overlay')
"""The pictures of a review, in the order the page shows them."""

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
OVERLAY_ALPHA = 0.5
"""Weight of the predicted colours in the overlay: the node's ``overlay_alpha`` default (its
parameter table imports ROS, which the training package does not need)."""


def encode_png(rgb: np.ndarray) -> bytes:
    """Encode an HxWx3 RGB uint8 image as PNG bytes."""
    ok, encoded = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f'OpenCV could not encode a {rgb.shape} {rgb.dtype} image as PNG')
    return encoded.tobytes()


@dataclass(frozen=True)
class ImageReview:
    """Everything the app shows about one image: PNG pictures, scores and inference times."""

    pngs: dict[str, bytes]
    metrics: dict[str, Any]
    timings_ms: dict[str, float]
    size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        """Approximate memory held by this review (its encoded pictures)."""
        return sum(len(png) for png in self.pngs.values())


def _finite_or_none(value: Any) -> Any:
    """Replace NaN (absent category, empty image) by None, recursively: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


def review_image(segmenter: Segmenter, photo: np.ndarray, label: np.ndarray) -> ImageReview:
    """Segment ``photo`` with the node's code, score it against ``label`` and render it."""
    contract = segmenter.contract
    result = segmenter.segment(photo, 'RGB')
    prediction = resize_nearest(result.classes, label.shape)
    cm = confusion_matrix(label, prediction, contract.num_classes)
    metrics = summarize(cm, contract.categories, contract.ignore_index)
    metrics['pixels_per_category'] = {
        'truth': dict(zip(contract.categories, cm.sum(1).tolist(), strict=True)),
        'predicted': dict(zip(contract.categories, cm.sum(0).tolist(), strict=True)),
    }
    palette = contract.palette_array()
    predicted_colours = colorize(result.classes, palette, label.shape)
    pngs = {
        'photo': encode_png(photo),
        'truth': encode_png(colorize(label, palette)),
        'prediction': encode_png(predicted_colours),
        'overlay': encode_png(blend(photo, predicted_colours, OVERLAY_ALPHA)),
    }
    return ImageReview(pngs=pngs, metrics=_finite_or_none(metrics),
                       timings_ms=dict(result.timings_ms), size=label.shape[:2])


class ReviewCache:
    """A thread-safe least-recently-used store of reviews, bounded by their encoded size."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, ImageReview] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_compute(self, key: Hashable,
                       compute: Callable[[], ImageReview]) -> tuple[ImageReview, bool]:
        """Return ``(review, was_cached)``, computing and storing the review on a miss.

        The computation runs outside the lock: two first requests for one image may both
        compute it, which is harmless, while requests for other images never wait.
        """
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key], True
        review = compute()
        with self._lock:
            if key not in self._entries:
                self._entries[key] = review
                self._bytes += review.nbytes
            # Always keep the newest entry, even when it alone is over the budget.
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.nbytes
        return review, False
