"""Input pipeline: batches of a prepared dataset streamed from disk as a Keras ``Sequence``.

Each sample is read from ``<split>/images|labels/<id>.png``, augmented (image and mask
together), turned into the model input exactly as the node does it
(:func:`fvt_segmentation.core.frame_processing.preprocess_frame`) and paired with a one-hot mask.
Samples of a batch are decoded in parallel threads. With ``shuffle=True`` every epoch visits
every sample exactly once in a new order that depends only on ``seed`` and the epoch; with
``shuffle=False`` the order is the manifest's (sorted ids), so evaluation can match ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
import copy
import math
import os
import random
import threading
from typing import Any

import albumentations as A  # noqa: N812 - the library's own convention
import numpy as np
import tf_keras

from fvt_segmentation.core.contract import (
    CATEGORIES,
    COLOR_ORDERS,
    ModelContract,
    Normalization,
)
from fvt_segmentation.core.frame_processing import preprocess_frame
from fvt_training.augment import build_augmentation
from fvt_training.prepared import DataError, Manifest, load_pair, read_manifest

__all__ = ['DataError', 'SegmentationSequence', 'class_frequencies', 'list_ids', 'load_pair',
           'make_sequence', 'read_manifest', 'to_model_input']

PreparedSource = Manifest | str | os.PathLike[str]


def _manifest(prepared: PreparedSource) -> Manifest:
    return prepared if isinstance(prepared, Manifest) else read_manifest(prepared)


def list_ids(prepared: PreparedSource, split: str) -> tuple[str, ...]:
    """Return the sample ids of ``split`` of a prepared folder (or manifest), sorted."""
    return _manifest(prepared).ids(split)


def class_frequencies(prepared: PreparedSource, split: str) -> np.ndarray:
    """Return the per-category pixel fractions of ``split`` (8 float64 values summing to 1)."""
    return _manifest(prepared).class_frequencies(split)


def to_model_input(image: np.ndarray, normalization: Normalization,
                   color_order: str = 'RGB') -> np.ndarray:
    """Turn one RGB uint8 image into the float32 ``[H, W, 3]`` input the model (and node) uses.

    Delegates to the node's own preprocessing, so training, evaluation and the node apply
    exactly the same channel order and normalisation.
    """
    contract = ModelContract(color_order=color_order, normalization=normalization)
    return preprocess_frame(image, 'RGB', image.shape[:2], contract)[0]


class SegmentationSequence(tf_keras.utils.Sequence):
    """Batches ``(x float32 [B, H, W, 3], y one-hot float32 [B, H, W, 8])`` of one split.

    ``len()`` is the number of batches (the last one may be smaller). Keras calls
    :meth:`on_epoch_end` after every epoch, which moves to the next epoch's order. ``ids``
    (default: all of the split, in the manifest's order) takes part of a split.
    """

    def __init__(self, prepared: PreparedSource, split: str, *, batch_size: int = 8,
                 shuffle: bool = False, seed: int = 0,
                 augment: str | A.BaseCompose | None = None,
                 normalization: Normalization | None = None, color_order: str = 'RGB',
                 workers: int = 1, ids: Sequence[str] | None = None) -> None:
        super().__init__()
        if batch_size < 1:
            raise DataError(f'batch_size must be a positive integer; got {batch_size}')
        if workers < 1:
            raise DataError(f'workers must be a positive integer; got {workers}')
        if color_order not in COLOR_ORDERS:
            raise DataError(f'color_order must be one of {list(COLOR_ORDERS)}; '
                            f'got {color_order!r}')
        self.manifest = _manifest(prepared)
        self.split = split
        self.sample_ids = self.manifest.ids(split)
        if ids is not None:
            unknown = sorted(set(ids) - set(self.sample_ids))
            if unknown:
                more = f' and {len(unknown) - 5} more' if len(unknown) > 5 else ''
                raise DataError(f'{self.manifest.folder}: ids {unknown[:5]}{more} are not in '
                                f'split {split!r}; expected ids of that split')
            self.sample_ids = tuple(ids)
        if not self.sample_ids:
            raise DataError(f'{self.manifest.folder}: split {split!r} has no samples')
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.workers = workers
        self.augmentation = (build_augmentation(augment, self.manifest.height_width)
                             if augment is None or isinstance(augment, str) else augment)
        self.normalization = normalization or Normalization()
        self.color_order = color_order
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self.epoch = 0
        self._order = self._order_for(0)

    def _order_for(self, epoch: int) -> np.ndarray:
        count = len(self.sample_ids)
        if not self.shuffle:
            return np.arange(count)
        return np.random.default_rng([self.seed, epoch]).permutation(count)

    def set_epoch(self, epoch: int) -> None:
        """Jump to ``epoch``'s order (for resuming a run at that epoch)."""
        self.epoch = epoch
        self._order = self._order_for(epoch)

    def on_epoch_end(self) -> None:
        """Advance to the next epoch's order (Keras calls this after every epoch)."""
        self.set_epoch(self.epoch + 1)

    def __len__(self) -> int:
        return math.ceil(len(self.sample_ids) / self.batch_size)

    def _positions(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f'batch {index} out of range 0..{len(self) - 1}')
        return self._order[index * self.batch_size:(index + 1) * self.batch_size]

    def batch_ids(self, index: int) -> list[str]:
        """Return the sample ids of batch ``index`` in this epoch, in batch order."""
        return [self.sample_ids[p] for p in self._positions(index)]

    @property
    def ordered_ids(self) -> list[str]:
        """Return all sample ids in this epoch's order (batch after batch)."""
        return [self.sample_ids[p] for p in self._order]

    def _thread_augmentation(self) -> A.BaseCompose:
        # Transforms keep their random state on themselves: one copy per thread.
        pipeline = getattr(self._local, 'augmentation', None)
        if pipeline is None:
            pipeline = self._local.augmentation = copy.deepcopy(self.augmentation)
        return pipeline

    def _sample(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        sample_id = self.sample_ids[position]
        image, label = load_pair(self.manifest, self.split, sample_id)
        if self.augmentation is not None:
            pipeline = self._thread_augmentation()
            # A seed per (seed, epoch, sample): the same run augments the same way whatever
            # thread picks a sample up.
            rng = np.random.default_rng([self.seed, self.epoch, int(position)])
            pipeline.set_random_state(rng, random.Random(int(rng.integers(2**63))))
            out = pipeline(image=image, mask=label)
            image, label = out['image'], out['mask']
            if image.shape[:2] != self.manifest.height_width or label.shape != image.shape[:2]:
                raise DataError(f'augmentation changed the size of {sample_id} from '
                                f'{self.manifest.height_width} to {image.shape[:2]} (image) and '
                                f'{label.shape[:2]} (mask); pipelines must keep the size')
        x = to_model_input(image, self.normalization, self.color_order)
        y = np.eye(len(CATEGORIES), dtype=np.float32)[label]
        return x, y

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        positions = self._positions(index)
        if self.workers > 1 and len(positions) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers,
                                                thread_name_prefix='fvt-data')
            samples = list(self._pool.map(self._sample, positions))
        else:
            samples = [self._sample(p) for p in positions]
        xs, ys = zip(*samples, strict=True)
        return np.stack(xs), np.stack(ys)

    def __getstate__(self) -> dict[str, Any]:
        # Keras' multiprocessing workers pickle the sequence; pools and thread state stay here.
        state = self.__dict__.copy()
        state['_pool'] = None
        state['_local'] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def close(self) -> None:
        """Stop the decoding threads (they are also stopped when the sequence is collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def make_sequence(prepared: PreparedSource, split: str, *, batch_size: int = 8,
                  shuffle: bool = False, seed: int = 0,
                  augment: str | A.BaseCompose | None = None,
                  normalization: Normalization | None = None, color_order: str = 'RGB',
                  workers: int = 1, ids: Sequence[str] | None = None) -> SegmentationSequence:
    """Return the batches of ``split`` of a prepared folder (``OUT/<W>x<H>``) or manifest.

    ``augment`` is a preset name, a pipeline file (see :func:`build_augmentation`), a built
    albumentations pipeline or None; ``normalization`` and ``color_order`` are the model's
    (default: pixel / 255 in RGB); ``workers`` threads decode each batch; ``ids`` takes only
    those samples of the split, in that order (default: all).
    """
    return SegmentationSequence(prepared, split, batch_size=batch_size, shuffle=shuffle,
                                seed=seed, augment=augment, normalization=normalization,
                                color_order=color_order, workers=workers, ids=ids)
