"""The TensorRT engine parity check: argmax agreement with the CPU, recorded beside the engine.

A new engine's class maps are compared with the CPU session's on a few frames; the verdict
(:data:`MIN_ARGMAX_AGREEMENT`) is written into the engine folder and names the engine files
it judged, so a later start reads it back instead of checking again, and a rebuilt engine is
checked anew.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import os
from pathlib import Path

import numpy as np

from fvt_segmentation.core.contract import MIN_ARGMAX_AGREEMENT
from fvt_segmentation.core.segmenter import Segmenter

PARITY_FILE = 'parity.json'


def argmax_agreement(candidate: Segmenter, reference: Segmenter,
                     frames: Sequence[np.ndarray]) -> float:
    """Return the fraction of pixels whose class ``candidate`` and ``reference`` agree on.

    ``frames`` are RGB uint8 images; each segmenter preprocesses them by its own contract.
    """
    agree = total = 0
    for frame in frames:
        got = candidate.segment(frame, 'RGB').classes
        want = reference.segment(frame, 'RGB').classes
        agree += int((got == want).sum())
        total += want.size
    if total == 0:
        raise ValueError('argmax_agreement needs at least one frame')
    return agree / total


def engine_files(engine_dir: Path) -> dict[str, list[int]]:
    """Return ``{file name: [size, mtime_ns]}`` of the TensorRT engines in ``engine_dir``."""
    return {path.name: [path.stat().st_size, path.stat().st_mtime_ns]
            for path in sorted(engine_dir.glob('*.engine'))}


def read_parity(engine_dir: Path) -> dict | None:
    """Return the parity record of the engines now in ``engine_dir``, or None.

    None when no check finished there, or when the engines changed since (a rebuilt engine
    is checked again): the record names each engine file with its size and mtime.
    """
    try:
        record = json.loads((engine_dir / PARITY_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or 'passed' not in record:
        return None
    engines = engine_files(engine_dir)
    return record if engines and record.get('engines') == engines else None


def write_parity(engine_dir: Path, agreement: float, frames: int,
                 engines: dict[str, list[int]]) -> dict:
    """Record a parity check of ``engines`` (see :func:`engine_files`) in ``engine_dir``.

    The verdict is :data:`MIN_ARGMAX_AGREEMENT` applied to ``agreement``.
    """
    record = {'argmax_agreement': agreement, 'frames': frames,
              'limit': MIN_ARGMAX_AGREEMENT, 'passed': agreement >= MIN_ARGMAX_AGREEMENT,
              'engines': engines}
    tmp = engine_dir / f'.{PARITY_FILE}.{os.getpid()}'
    tmp.write_text(json.dumps(record))
    os.replace(tmp, engine_dir / PARITY_FILE)
    return record


def agreement_text(record: dict) -> str:
    """Say a failed verdict in words: the agreement, the limit and the number of frames."""
    return (f'argmax agreement {record["argmax_agreement"]:.4%} < {MIN_ARGMAX_AGREEMENT:.1%} '
            f'on {record["frames"]} frames')
