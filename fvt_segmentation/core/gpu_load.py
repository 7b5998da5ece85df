"""The GPU start: which GPU providers to ask for, the TensorRT engine folder, parity, fallbacks.

:func:`load_gpu` opens a GPU session beside the CPU session the loader
(:mod:`fvt_segmentation.core.inference`) validated: a TensorRT engine is built or loaded in
its folder under a lock, checked against the CPU (:mod:`fvt_segmentation.core.parity`), set
aside when it cannot be loaded, and replaced by an fp32 one when an fp16 engine fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import contextlib
from dataclasses import dataclass, field
import io
import os
from pathlib import Path
import time

import numpy as np

from fvt_segmentation.core.contract import ModelContract, ModelLoadError
from fvt_segmentation.core.files import file_sha256
from fvt_segmentation.core.parity import (
    PARITY_FILE,
    agreement_text,
    argmax_agreement,
    engine_files,
    read_parity,
    write_parity,
)
from fvt_segmentation.core.providers import (
    CPU,
    TENSORRT,
    default_trt_cache_dir,
    engine_key,
    engine_lock,
    prepare_cache_dir,
    provider_options,
    trt_precision,
)
from fvt_segmentation.core.segmenter import Segmenter
from fvt_segmentation.core.sessions import ORT_LAYER, ProviderLayer, first_line, open_session


class ProgressWarning(str):
    """A progress line about a degraded choice: a log shows it as a warning."""


Progress = Callable[[str], None]


def gpu_plan(wanted: list[str], layer: ProviderLayer = ORT_LAYER
             ) -> tuple[list[str], dict[str, str]]:
    """Return the non-CPU providers worth asking ONNX Runtime for, and why the others not."""
    available = set(layer.available())
    candidates: list[str] = []
    reasons: dict[str, str] = {}
    for provider in wanted:
        if provider == CPU:
            break  # ONNX Runtime never gets past the CPU provider
        if provider not in available:
            reasons[provider] = ('not in this onnxruntime build (available: '
                                 f'{", ".join(sorted(available))})')
            continue
        error = layer.library_error(provider)
        if error:
            reasons[provider] = f'its library does not load: {error}'
            continue
        candidates.append(provider)
    return candidates, reasons


@dataclass
class GpuTry:
    """One attempt at a GPU session: the segmenter (None if it failed), why, its engines."""

    segmenter: Segmenter | None
    reason: str
    engines: dict[str, list[int]] = field(default_factory=dict)
    cached: bool = False
    """An engine was in the folder before this attempt (loaded, not built)."""


def _open_gpu(path: Path, contract: ModelContract, cpu: Segmenter, candidates: list[str],
              precision: str, engine_dir: Path | None, threads: tuple[int, bool],
              progress: Progress, layer: ProviderLayer) -> GpuTry:
    """Open ``candidates`` (plus the CPU) and warm up, under the engine folder's lock.

    The reason is the 'EP Error' line ONNX Runtime printed when it fell back by itself, or
    the error that stopped the session from being created or warmed up (then no segmenter).
    """
    dynamic = not isinstance(cpu.session.get_inputs()[0].shape[0], int)
    options = [provider_options(p, precision, engine_dir, cpu.input_name, cpu.input_shape,
                                dynamic)
               for p in candidates]
    lock = engine_lock(engine_dir) if engine_dir is not None else contextlib.nullcontext()
    # When a provider fails to start, ONNX Runtime's Python layer prints an 'EP Error'
    # banner on stdout and retries with the next providers; the banner becomes the reason.
    banner = io.StringIO()
    with lock:
        cached = engine_dir is not None and any(engine_dir.glob('*.engine'))
        if engine_dir is not None:
            progress(f'loading the cached TensorRT engine ({precision}) from {engine_dir}'
                     if cached else
                     f'building TensorRT engine ({precision}) in {engine_dir}: a first build '
                     'can take minutes (more on a Jetson); later starts load it in seconds')
        step = 'creating the session'
        try:
            with contextlib.redirect_stdout(banner):
                session = open_session(path, [*candidates, CPU], [*options, {}],
                                       threads=threads[0], spinning=threads[1], layer=layer)
                segmenter = Segmenter(session, contract, path)
                step = 'warm-up'
                # TensorRT may build its engine at the first run, so that is under the lock.
                segmenter.warmup_ms = segmenter.warm_up(runs=1)
        except Exception as err:  # onnxruntime raises several unrelated exception types
            cause = err.__cause__ if isinstance(err, ModelLoadError) and err.__cause__ else err
            return GpuTry(None, f'{step} failed: {first_line(cause)}'[:300], cached=cached)
        engines = engine_files(engine_dir) if engine_dir is not None else {}
    on_trt = segmenter.active_provider == TENSORRT
    segmenter.engine_dir = engine_dir if on_trt else None
    segmenter.engine_cached = cached if on_trt else None
    segmenter.precision = precision if on_trt else 'fp32'
    reason = next((line.strip() for line in banner.getvalue().splitlines()
                   if line.startswith('EP Error')), '')
    return GpuTry(segmenter, reason[:300], engines, cached)


def _set_aside(folder: Path) -> Path:
    """Rename an engine folder that cannot be used; return its new name (kept for a look)."""
    aside = folder.with_name(f'{folder.name}.unusable-{time.strftime("%Y%m%dT%H%M%S")}')
    os.replace(folder, aside)
    return aside


def _check_engine(gpu: GpuTry, cpu: Segmenter,
                  parity_frames: Callable[[], Sequence[np.ndarray]] | None) -> dict | None:
    """Read back the parity record of a TensorRT engine, or check it against the CPU now."""
    segmenter = gpu.segmenter
    if segmenter is None or segmenter.engine_dir is None:
        return None
    record = read_parity(segmenter.engine_dir)
    if record is None and parity_frames is not None:
        frames = list(parity_frames())
        if frames:
            record = write_parity(segmenter.engine_dir, argmax_agreement(segmenter, cpu, frames),
                                  len(frames), gpu.engines)
    return record


def load_gpu(path: Path, cpu: Segmenter, candidates: list[str], fp16: bool,
             threads: tuple[int, bool], trt_cache_dir: str | os.PathLike | None,
             parity_frames: Callable[[], Sequence[np.ndarray]] | None, progress: Progress,
             layer: ProviderLayer) -> GpuTry:
    """Open the GPU session, check a TensorRT engine's parity, fall back to fp32 if fp16 fails.

    An fp16 engine whose recorded verdict (for the engine files now in its folder) is FAILED
    is not opened again: this start goes straight to fp32 and says so in one warning line.
    The returned segmenter carries ``parity`` and ``parity_failed``.
    """
    precision = trt_precision(fp16, cpu.contract.quantization == 'int8_symmetric_qdq')
    root = sha256 = platform = None
    if TENSORRT in candidates:
        root = prepare_cache_dir(trt_cache_dir or default_trt_cache_dir())
        sha256, platform = file_sha256(path), layer.platform()

    def folder(prec: str) -> Path | None:
        if root is None:
            return None
        return root / engine_key(sha256, prec, cpu.input_shape, platform)

    notes: list[str] = []
    failed = False
    earlier = read_parity(folder('fp16')) if precision == 'fp16' and root else None
    if earlier is not None and not earlier['passed']:
        line = (f'TensorRT fp16 engine FAILED parity at an earlier start: '
                f'{agreement_text(earlier)} (recorded in {folder("fp16") / PARITY_FILE}); '
                'running fp32 without opening it')
        progress(ProgressWarning(line))
        notes.append(line)
        precision = 'fp32'
    gpu = _open_gpu(path, cpu.contract, cpu, candidates, precision, folder(precision),
                    threads, progress, layer)
    if gpu.segmenter is None and gpu.cached:
        # A cached engine that TensorRT cannot load (a corrupt or truncated file, a driver
        # update the key does not see) would fail every start the same way: build anew.
        aside = _set_aside(folder(precision))
        line = (f'the cached TensorRT engine cannot be used ({gpu.reason}); its folder is '
                f'now {aside}, building a new one')
        progress(ProgressWarning(line))
        notes.append(line)
        gpu = _open_gpu(path, cpu.contract, cpu, candidates, precision, folder(precision),
                        threads, progress, layer)
    record = _check_engine(gpu, cpu, parity_frames)
    if record is not None and not record['passed'] and precision == 'fp16':
        line = (f'TensorRT fp16 engine FAILED parity: {agreement_text(record)}; '
                'running fp32 instead')
        progress(line)
        notes.append(line)
        failed = True
        gpu = _open_gpu(path, cpu.contract, cpu, candidates, 'fp32', folder('fp32'), threads,
                        progress, layer)
        record = _check_engine(gpu, cpu, parity_frames)
    if gpu.segmenter is not None:
        if record is not None:
            verdict = 'passed' if record['passed'] else 'FAILED'
            notes.append(f'{gpu.segmenter.precision} {verdict}: argmax agreement '
                         f'{record["argmax_agreement"]:.4%} on {record["frames"]} frames')
            failed |= not record['passed']
        gpu.segmenter.parity = '; '.join(notes)
        gpu.segmenter.parity_failed = failed
    return gpu
