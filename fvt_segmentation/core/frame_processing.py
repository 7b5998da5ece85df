"""A camera frame in, the model's input tensor; the model's scores out, class and confidence maps.

Plain functions on numpy arrays, no session: the node, the training package (data pipeline,
evaluation, exports) and the tests prepare frames and read scores with exactly this code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from fvt_segmentation.core.contract import ModelContract


def _shrink(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    # OpenCV's area interpolation is an exact, fast box filter for integer factors and a slow
    # general resampler otherwise (6 ms for 2048x1024 -> 256x192 here): first shrink by the
    # largest power of two that divides both sides and keeps the frame at least as large as
    # the target (2048x1024 -> 512x256), then resample the small rest (1.8 ms in all).
    rows, cols = frame.shape[:2]
    factor = 1
    while (rows % (2 * factor) == 0 and cols % (2 * factor) == 0
           and rows // (2 * factor) >= height and cols // (2 * factor) >= width):
        factor *= 2
    if factor > 1:
        frame = cv2.resize(frame, (cols // factor, rows // factor), interpolation=cv2.INTER_AREA)
    if frame.shape[:2] != (height, width):
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    return frame


def preprocess_frame(frame: np.ndarray, frame_order: str, size: tuple[int, int],
                     contract: ModelContract) -> np.ndarray:
    """Turn a uint8 camera frame into the model's input tensor (batch of 1).

    ``frame`` is HxW (mono), HxWx3 or HxWx4 uint8 in ``frame_order`` ('RGB' or 'BGR', alpha
    last); ``size`` is the model's (height, width). The full-resolution frame is only read
    once, by the uint8 resize: channel reordering and the float conversion happen on the
    small image. A version 2 file with a uint8 input gets the uint8 pixels: it normalises in
    its graph.
    """
    height, width = size
    if frame.shape[:2] != (height, width):
        if frame.shape[0] >= height and frame.shape[1] >= width:
            frame = _shrink(frame, height, width)
        else:
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    elif frame.shape[2] == 4:
        frame = frame[:, :, :3]
    if frame_order != contract.color_order:
        frame = frame[:, :, ::-1]
    tensor = frame
    if contract.input_type != 'uint8':
        gain, offset = contract.normalization.as_affine()
        tensor = frame.astype(np.float32)
        tensor *= gain
        tensor += offset
    if contract.layout == 'NCHW':
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor[np.newaxis])


def scores_to_classes(scores: np.ndarray, layout: str, output: str,
                      want_confidence: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Return the class map (HxW uint8) and optionally a confidence map (HxW uint8, 0..255).

    ``scores`` is the model output for one image (``[1, H, W, C]`` for NHWC, ``[1, C, H, W]``
    for NCHW, batch dimension optional). Confidence is the top probability; for logits it is
    computed with a numerically stable softmax.
    """
    if scores.ndim == 4:
        scores = scores[0]
    if scores.ndim != 3:
        raise ValueError(f'expected scores of rank 3 or 4, got shape {scores.shape}')
    classes = np.argmax(scores, axis=2 if layout == 'NHWC' else 0).astype(np.uint8)
    if not want_confidence:
        return classes, None
    return classes, scores_to_confidence(scores, layout, output)


def scores_to_confidence(scores: np.ndarray, layout: str, output: str) -> np.ndarray:
    """Return the top probability of one image's scores as HxW uint8 (0..255).

    ``scores`` is ``[H, W, C]`` (NHWC) or ``[C, H, W]`` (NCHW); for logits the probability
    comes from a numerically stable softmax.
    """
    axis = 2 if layout == 'NHWC' else 0
    top = np.max(scores, axis=axis)
    if output == 'logits':
        top = 1.0 / np.sum(np.exp(scores - np.expand_dims(top, axis)), axis=axis)
    return np.clip(top * 255.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass
class Segmentation:
    """One frame's result at the model's output resolution, with per-stage times in ms."""

    classes: np.ndarray
    confidence: np.ndarray | None
    timings_ms: dict[str, float] = field(default_factory=dict)

