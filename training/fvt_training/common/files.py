"""Atomic file writes: a temporary file in the same folder, then a rename (never half-written).

Prepared folders, run folders, reports and ONNX files are all written this way, so a reader
sees either the old file or the complete new one.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

TMP_PREFIX = '.tmp-'
"""The name prefix of a temporary file before its rename (left behind only by a crash)."""


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half-written)."""
    path = Path(path)
    tmp = path.with_name(f'{TMP_PREFIX}{os.getpid()}-{path.name}')
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_png_atomic(path: Path, array: np.ndarray, rgb: bool) -> None:
    """Encode ``array`` as PNG and write it atomically; ``rgb`` says it is an RGB image."""
    pixels = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if rgb else array
    ok, encoded = cv2.imencode('.png', pixels)
    if not ok:
        raise OSError(f'{path}: OpenCV could not encode a {array.shape} {array.dtype} PNG')
    write_bytes_atomic(path, encoded.tobytes())
