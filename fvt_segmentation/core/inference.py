"""ONNX Runtime inference core: load a contract-following model, segment frames.

No rclpy here: the node, the training package (export checks, review app) and the tests all
run frames through exactly this code. Pre- and post-processing are plain functions on numpy
arrays; :class:`Segmenter` is a thin shell that owns the session and times each stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import contextlib
from dataclasses import dataclass, field
import io
import json
import os
from pathlib import Path
import time

import cv2
import numpy as np
import onnxruntime as ort

from fvt_segmentation.core.contract import (
    CONTRACT_V2,
    MIN_ARGMAX_AGREEMENT,
    ContractError,
    ModelContract,
    ModelLoadError,
    parse_contract,
)
from fvt_segmentation.core.providers import (
    CPU,
    CUDA,
    GPU_PROVIDERS,
    TENSORRT,
    default_trt_cache_dir,
    engine_key,
    engine_lock,
    file_sha256,
    prepare_cache_dir,
    probe_platform,
    provider_library_error,
    provider_options,
    thread_settings,
    trt_precision,
)

PROVIDER_ALIASES = {
    'tensorrt': TENSORRT,
    'cuda': CUDA,
    'cpu': CPU,
}
DEFAULT_PROVIDERS = ('tensorrt', 'cuda', 'cpu')
PARITY_FILE = 'parity.json'


def resolve_providers(requested: Sequence[str]) -> list[str]:
    """Map short names (tensorrt, cuda, cpu) or full ONNX Runtime names to full names.

    Raises ``ValueError`` for a name ONNX Runtime does not know at all.
    """
    known = set(ort.get_all_providers())
    resolved = []
    for name in requested:
        full = PROVIDER_ALIASES.get(name.strip().lower(), name.strip())
        if full not in known:
            raise ValueError(f'unknown execution provider {name!r}; expected one of '
                             f'{sorted(PROVIDER_ALIASES)} or a full name such as '
                             f'CPUExecutionProvider')
        if full not in resolved:
            resolved.append(full)
    if not resolved:
        raise ValueError('the provider list is empty; expected e.g. [tensorrt, cuda, cpu]')
    return resolved


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


class Segmenter:
    """An ONNX Runtime session plus its contract; use :func:`load_segmenter` to build one.

    Besides the session, it keeps what the loader resolved, for the startup log and
    /diagnostics: the provider requested and why a preferred one is not running
    (``fallback_reason``), the TensorRT precision and engine folder, the parity check
    (``parity_failed``: an engine failed it at this start, or the engine that runs failed it;
    not set when an earlier start's fp16 verdict only sent this one to fp32).
    """

    def __init__(self, session: ort.InferenceSession, contract: ModelContract,
                 model_path: Path) -> None:
        self.session = session
        self.requested_providers: list[str] = []
        self.fallback_reason = ''
        self.contract = contract
        self.model_path = model_path
        self.precision = 'fp32'
        self.engine_dir: Path | None = None
        self.engine_cached: bool | None = None
        self.parity = ''
        self.parity_failed = False
        self.load_seconds = 0.0
        self.threads: tuple[int, bool] = (0, True)
        self.warmup_ms = 0.0
        self.input_name = session.get_inputs()[0].name
        names = contract.outputs or {'scores': session.get_outputs()[0].name}
        self.scores_name: str | None = names.get('scores')
        self.classes_name: str | None = names.get('classes')
        self.confidence_name: str | None = names.get('confidence')
        # Where a version 2 file's confidence comes from: its own output, else its scores.
        self._confidence_source = self.confidence_name or self.scores_name
        self._bindings: dict[tuple[str, ...], ort.IOBinding] = {}
        self._bound: dict[str, ort.OrtValue] = {}
        self._binding_device = ''
        shape = session.get_inputs()[0].shape
        self.input_size: tuple[int, int] = (
            (int(shape[1]), int(shape[2])) if contract.layout == 'NHWC'
            else (int(shape[2]), int(shape[3])))

    @property
    def active_provider(self) -> str:
        """The provider that really runs the model (ONNX Runtime falls back silently)."""
        return self.session.get_providers()[0]

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """The batch-1 input shape the node feeds."""
        height, width = self.input_size
        return (1, height, width, 3) if self.contract.layout == 'NHWC' else (1, 3, height, width)

    @property
    def name(self) -> str:
        """A short human name: file stem plus architecture/backbone from the provenance."""
        prov = self.contract.provenance
        arch = '/'.join(str(prov[k]) for k in ('architecture', 'backbone') if prov.get(k))
        return f'{self.model_path.stem} ({arch})' if arch else self.model_path.stem

    def preprocess(self, frame: np.ndarray, frame_order: str = 'RGB') -> np.ndarray:
        """See :func:`preprocess_frame`."""
        return preprocess_frame(frame, frame_order, self.input_size, self.contract)

    @property
    def io_binding(self) -> str:
        """The device the outputs are bound to ('cuda', 'cpu'), or '' without IO binding."""
        return self._binding_device

    def enable_io_binding(self, device: str = 'cuda') -> bool:
        """Fetch outputs through IO binding, into buffers allocated once on ``device``.

        Each run then writes the outputs it needs into the same device buffers (no
        allocation per frame) and copies only those to fresh host arrays, so a result stays
        valid while the next frame runs. Returns False (and changes nothing) when an output
        has no fixed batch-1 shape to allocate.
        """
        shapes = {}
        for output in self.session.get_outputs():
            shape = [1, *output.shape[1:]]
            if not all(isinstance(d, int) and d > 0 for d in shape):
                return False
            shapes[output.name] = (shape, np.uint8 if output.type == 'tensor(uint8)'
                                   else np.float32)
        names = [n for n in (self.classes_name, self.confidence_name, self.scores_name) if n]
        self._bound = {name: ort.OrtValue.ortvalue_from_shape_and_type(*shapes[name], device, 0)
                       for name in names}
        self._bindings = {}
        self._binding_device = device
        return True

    def _run(self, names: list[str], tensor: np.ndarray) -> list[np.ndarray]:
        if not self._binding_device:
            return self.session.run(names, {self.input_name: tensor})
        key = tuple(names)
        binding = self._bindings.get(key)
        if binding is None:
            binding = self.session.io_binding()
            for name in names:
                binding.bind_ortvalue_output(name, self._bound[name])
            self._bindings[key] = binding
        binding.bind_cpu_input(self.input_name, tensor)
        self.session.run_with_iobinding(binding)
        outputs = [self._bound[name].numpy() for name in names]
        # A CPU OrtValue hands out a view of its buffer, which the next frame overwrites.
        return [o.copy() for o in outputs] if self._binding_device == 'cpu' else outputs

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Run the network on a preprocessed tensor; return its raw float scores."""
        if self.scores_name is None:
            raise ContractError(f'{self.model_path}: this file has no scores output (its '
                                f'fvt.outputs: {dict(self.contract.outputs)})')
        return self._run([self.scores_name], tensor)[0]

    def postprocess(self, scores: np.ndarray,
                    want_confidence: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """See :func:`scores_to_classes`."""
        return scores_to_classes(scores, self.contract.layout, self.contract.output,
                                 want_confidence)

    def _run_in_graph(self, tensor: np.ndarray, want_confidence: bool
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        # A version 2 file computes the uint8 class ids (and confidence) itself: only those
        # come back from the provider, never the float scores.
        want_confidence = want_confidence and self._confidence_source is not None
        names = [self.classes_name]
        if want_confidence:
            names.append(self._confidence_source)
        outputs = self._run(names, tensor)
        classes = outputs[0].reshape(outputs[0].shape[-2:])  # [1, H, W] or [1, 1, H, W]
        if not want_confidence:
            return classes, None
        if self.confidence_name is not None:
            return classes, outputs[1].reshape(classes.shape)
        return classes, scores_to_confidence(outputs[1][0], self.contract.layout,
                                             self.contract.output)

    def segment(self, frame: np.ndarray, frame_order: str = 'RGB',
                want_confidence: bool = False) -> Segmentation:
        """Segment one uint8 frame; the result stays at the model's output resolution."""
        t0 = time.perf_counter()
        tensor = self.preprocess(frame, frame_order)
        t1 = time.perf_counter()
        if self.classes_name is not None:
            classes, confidence = self._run_in_graph(tensor, want_confidence)
            t2 = t3 = time.perf_counter()
        else:
            scores = self.infer(tensor)
            t2 = time.perf_counter()
            classes, confidence = self.postprocess(scores, want_confidence)
            t3 = time.perf_counter()
        return Segmentation(classes, confidence, {
            'preprocess': (t1 - t0) * 1e3, 'inference': (t2 - t1) * 1e3,
            'postprocess': (t3 - t2) * 1e3})

    def warm_up(self, runs: int = 2) -> float:
        """Run a black frame through the model; return the last run's time in ms.

        Raises :class:`ModelLoadError` when the model loads but cannot run (an operator that
        fails on real data, a device that cannot allocate): a load that ends here is a
        failed load, never a node that waits for ever.
        """
        frame = np.zeros((*self.input_size, 3), np.uint8)
        elapsed = 0.0
        for _ in range(max(1, runs)):
            t0 = time.perf_counter()
            try:
                self.segment(frame, want_confidence=True)
            except Exception as err:  # onnxruntime raises several unrelated exception types
                raise ModelLoadError(
                    f'{self.model_path}: the model loads but fails on its first run on '
                    f'{self.active_provider} ({type(err).__name__}: {_first_line(err)[:300]})'
                ) from err
            elapsed = (time.perf_counter() - t0) * 1e3
        return elapsed


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


def _agreement_text(record: dict) -> str:
    return (f'argmax agreement {record["argmax_agreement"]:.4%} < {MIN_ARGMAX_AGREEMENT:.1%} '
            f'on {record["frames"]} frames')


def _check_graph(session: ort.InferenceSession, contract: ModelContract, source: str) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if contract.version != CONTRACT_V2 and (len(inputs) != 1 or len(outputs) != 1):
        raise ContractError(f'{source}: expected one image input and one score output; got '
                            f'{len(inputs)} inputs and {len(outputs)} outputs')
    if len(inputs) != 1:
        raise ContractError(f'{source}: expected one image input; got {len(inputs)}')
    shape = inputs[0].shape
    channel_axis = 3 if contract.layout == 'NHWC' else 1
    spatial = (1, 2) if contract.layout == 'NHWC' else (2, 3)
    if (len(shape) != 4 or shape[channel_axis] != 3
            or not all(isinstance(shape[a], int) and shape[a] > 0 for a in spatial)):
        raise ContractError(f'{source}: expected a {contract.layout} image input with 3 channels '
                            f'and fixed height and width; got shape {shape}')
    want_input = 'tensor(uint8)' if contract.input_type == 'uint8' else 'tensor(float)'
    if inputs[0].type != want_input:
        raise ContractError(f'{source}: expected a {contract.input_type} input; got '
                            f'{inputs[0].type}')
    by_name = {o.name: o for o in outputs}
    roles = contract.outputs or {'scores': outputs[0].name}
    for role, name in roles.items():
        if name not in by_name:
            raise ContractError(f'{source}: fvt.outputs names {name!r} for {role}, but the '
                                f'graph outputs are {sorted(by_name)}')
        want = 'tensor(float)' if role == 'scores' else 'tensor(uint8)'
        if by_name[name].type != want:
            raise ContractError(f'{source}: the {role} output {name!r} must be {want}; got '
                                f'{by_name[name].type}')
    if 'scores' in roles:
        out_shape = by_name[roles['scores']].shape
        out_channels = out_shape[channel_axis] if len(out_shape) == 4 else None
        if isinstance(out_channels, int) and out_channels != contract.num_classes:
            raise ContractError(f'{source}: the output has {out_channels} channels but '
                                f'fvt.categories names {contract.num_classes} categories')


@dataclass(frozen=True)
class ProviderLayer:
    """Everything the loader asks of ONNX Runtime and the GPU, in one place.

    ``session`` creates a session (``ort.InferenceSession``'s signature), ``available`` lists
    the providers of this onnxruntime build, ``library_error`` says why a provider's library
    does not load (:func:`provider_library_error`), ``platform`` names TensorRT, ONNX Runtime
    and the GPU for the engine key (:func:`fvt_segmentation.core.providers.probe_platform`)
    and ``binding_device`` is where a GPU session's outputs are bound. Tests pass fakes that
    fail the way CUDA and TensorRT fail, so the real fallback, engine cache and parity code
    runs on a machine without a GPU.
    """

    session: Callable[..., ort.InferenceSession] = ort.InferenceSession
    available: Callable[[], list[str]] = ort.get_available_providers
    library_error: Callable[[str], str | None] = provider_library_error
    platform: Callable[[], str] = probe_platform
    binding_device: str = 'cuda'


ORT_LAYER = ProviderLayer()


class ProgressWarning(str):
    """A progress line about a degraded choice: a log shows it as a warning."""


def _session_options(threads: tuple[int, bool]) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads[0]
    if not threads[1]:
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    # Session-scoped only: the process-wide default logger is left as the user set it.
    options.log_severity_level = 3
    return options


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _open_cpu_session(path: Path, threads: tuple[int, bool],
                      layer: ProviderLayer) -> ort.InferenceSession:
    """Create the CPU session; a file ONNX Runtime cannot open is a :class:`ModelLoadError`."""
    try:
        return layer.session(str(path), sess_options=_session_options(threads),
                             providers=[CPU], provider_options=[{}])
    except Exception as err:  # onnxruntime raises several unrelated exception types
        raise ModelLoadError(f'{path}: not a loadable ONNX model ({_first_line(err)[:200]})'
                             ) from None


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


def _format_reasons(wanted: list[str], active: str, reasons: dict[str, str]) -> str:
    ahead = wanted[:wanted.index(active)] if active in wanted else wanted
    return '; '.join(f'{p}: {reasons.get(p, "ONNX Runtime could not start it")}'
                     for p in ahead)


Progress = Callable[[str], None]


@dataclass
class _GpuTry:
    """One attempt at a GPU session: the segmenter (None if it failed), why, its engines."""

    segmenter: Segmenter | None
    reason: str
    engines: dict[str, list[int]] = field(default_factory=dict)
    cached: bool = False
    """An engine was in the folder before this attempt (loaded, not built)."""


def _open_gpu(path: Path, contract: ModelContract, cpu: Segmenter, candidates: list[str],
              precision: str, engine_dir: Path | None, threads: tuple[int, bool],
              progress: Progress, layer: ProviderLayer) -> _GpuTry:
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
                session = layer.session(str(path), sess_options=_session_options(threads),
                                        providers=[*candidates, CPU],
                                        provider_options=[*options, {}])
                segmenter = Segmenter(session, contract, path)
                step = 'warm-up'
                # TensorRT may build its engine at the first run, so that is under the lock.
                segmenter.warmup_ms = segmenter.warm_up(runs=1)
        except Exception as err:  # onnxruntime raises several unrelated exception types
            cause = err.__cause__ if isinstance(err, ModelLoadError) and err.__cause__ else err
            return _GpuTry(None, f'{step} failed: {_first_line(cause)}'[:300], cached=cached)
        engines = engine_files(engine_dir) if engine_dir is not None else {}
    on_trt = segmenter.active_provider == TENSORRT
    segmenter.engine_dir = engine_dir if on_trt else None
    segmenter.engine_cached = cached if on_trt else None
    segmenter.precision = precision if on_trt else 'fp32'
    reason = next((line.strip() for line in banner.getvalue().splitlines()
                   if line.startswith('EP Error')), '')
    return _GpuTry(segmenter, reason[:300], engines, cached)


def _set_aside(folder: Path) -> Path:
    """Rename an engine folder that cannot be used; return its new name (kept for a look)."""
    aside = folder.with_name(f'{folder.name}.unusable-{time.strftime("%Y%m%dT%H%M%S")}')
    os.replace(folder, aside)
    return aside


def _check_engine(gpu: _GpuTry, cpu: Segmenter,
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


def _load_gpu(path: Path, cpu: Segmenter, candidates: list[str], fp16: bool,
              threads: tuple[int, bool], trt_cache_dir: str | os.PathLike | None,
              parity_frames: Callable[[], Sequence[np.ndarray]] | None, progress: Progress,
              layer: ProviderLayer) -> _GpuTry:
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
                f'{_agreement_text(earlier)} (recorded in {folder("fp16") / PARITY_FILE}); '
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
        line = (f'TensorRT fp16 engine FAILED parity: {_agreement_text(record)}; '
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


def check_model_file(model_path: str | os.PathLike, providers: Sequence[str]) -> list[str]:
    """Fail fast on what needs no loading: the file is there and readable, providers exist.

    Returns the providers' full names; raises :class:`ModelLoadError` naming the file.
    """
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f'{path}: no such model file')
    if not os.access(path, os.R_OK):
        raise ModelLoadError(f'{path}: the model file is not readable (permissions)')
    try:
        return resolve_providers(providers)
    except ValueError as err:
        raise ModelLoadError(f'{path}: {err}') from None


def load_segmenter(model_path: str | os.PathLike, providers: Sequence[str] = DEFAULT_PROVIDERS,
                   require_gpu: bool = False, intra_op_threads: int = 0,
                   trt_cache_dir: str | os.PathLike | None = None,
                   intra_op_spinning: bool = False, trt_fp16: bool = True,
                   parity_frames: Callable[[], Sequence[np.ndarray]] | None = None,
                   progress: Progress | None = None,
                   layer: ProviderLayer = ORT_LAYER) -> Segmenter:
    """Open ``model_path``, validate its contract, start the first provider that really runs.

    ``providers`` is an ordered preference list. A GPU provider whose library cannot load is
    not even asked for (its reason is kept: ``fallback_reason`` names every preferred
    provider that is not running, and why). The file is first opened on the CPU: that
    validates the contract and is the reference of the parity check. A GPU session is then
    created and warmed up (a TensorRT engine builds in ``trt_cache_dir``, one folder per
    model hash, precision, shape and platform, see :mod:`fvt_segmentation.core.providers`); a
    GPU session that cannot be created or fails its warm-up (e.g. CUDA out of memory) leaves
    the CPU running, with the error as the reason. A new TensorRT engine is compared with
    the CPU on ``parity_frames()`` (RGB frames) and the verdict kept beside it; below
    :data:`MIN_ARGMAX_AGREEMENT` an fp16 engine is replaced by an fp32 one, and later starts
    go straight to fp32; ``parity`` says so. ``require_gpu`` is checked after the warm-up: a
    CPU result is then an error. ``progress`` gets one line before each long step
    (a :class:`ProgressWarning` for a degraded choice). Threads: see
    :func:`fvt_segmentation.core.providers.thread_settings`. ``layer`` is what is asked of
    ONNX Runtime and the GPU (tests pass fakes). Raises :class:`ModelLoadError`
    (:class:`ContractError` for metadata problems) with one clear sentence naming the file.
    """
    started = time.monotonic()
    progress = progress or (lambda _line: None)
    path = Path(model_path).expanduser()
    wanted = check_model_file(path, providers)
    candidates, reasons = gpu_plan(wanted, layer)
    if not candidates and CPU not in wanted:
        raise ModelLoadError(f'{path}: none of the requested providers {wanted} can run here: '
                             + '; '.join(f'{p}: {r}' for p, r in reasons.items()))
    progress('loading model')
    cpu_threads = thread_settings(False, intra_op_threads, intra_op_spinning)
    session = _open_cpu_session(path, cpu_threads, layer)
    contract = parse_contract(session.get_modelmeta().custom_metadata_map, str(path))
    _check_graph(session, contract, str(path))
    cpu = Segmenter(session, contract, path)
    cpu.threads = cpu_threads
    result = cpu
    gpu_threads = thread_settings(True, intra_op_threads, intra_op_spinning)
    # A session that cannot be created or warmed up is the first provider's failure: the
    # next ones get their own try (TensorRT's engine build fails, CUDA may still run).
    for first in range(len(candidates)):
        tried = candidates[first:]
        gpu = _load_gpu(path, cpu, tried, trt_fp16, gpu_threads, trt_cache_dir,
                        parity_frames, progress, layer)
        if gpu.segmenter is None:
            reasons[tried[0]] = gpu.reason
            continue
        active = gpu.segmenter.active_provider
        # Providers ahead of the one that runs: ONNX Runtime's 'EP Error' banner says why.
        ahead = tried[:tried.index(active)] if active in tried else tried
        reasons.update({p: gpu.reason or 'ONNX Runtime could not start it (no usable GPU?)'
                        for p in ahead})
        if active in GPU_PROVIDERS:
            result = gpu.segmenter
            result.threads = gpu_threads
            result.enable_io_binding(layer.binding_device)
        break
    active = result.active_provider
    result.requested_providers = wanted
    result.fallback_reason = _format_reasons(wanted, active, reasons)[:600]
    if require_gpu and active not in GPU_PROVIDERS:
        raise ModelLoadError(f'{path}: require_gpu is set but no GPU provider runs the model '
                             f'after warm-up (requested {wanted}; active: {active}; '
                             f'{result.fallback_reason}). Check the CUDA/TensorRT libraries, '
                             'or set require_gpu: false to accept the CPU.')
    if result is cpu:
        cpu.warmup_ms = cpu.warm_up(runs=1)
    result.load_seconds = time.monotonic() - started
    return result
