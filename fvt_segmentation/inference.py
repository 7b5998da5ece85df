"""ONNX Runtime inference core: load a contract-following model, segment frames.

No rclpy here: the node, the training package (export checks, review app) and the tests all
run frames through exactly this code. Pre- and post-processing are plain functions on numpy
arrays; :class:`Segmenter` is a thin shell that owns the session and times each stage.
"""

from __future__ import annotations

from collections.abc import Sequence
import contextlib
from dataclasses import dataclass, field
import io
import os
from pathlib import Path
import time

import cv2
import numpy as np
import onnxruntime as ort

from fvt_segmentation.contract import ContractError, ModelContract, ModelLoadError, parse_contract

PROVIDER_ALIASES = {
    'tensorrt': 'TensorrtExecutionProvider',
    'cuda': 'CUDAExecutionProvider',
    'cpu': 'CPUExecutionProvider',
}
DEFAULT_PROVIDERS = ('tensorrt', 'cuda', 'cpu')
GPU_PROVIDERS = frozenset({'TensorrtExecutionProvider', 'CUDAExecutionProvider'})


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


def _provider_options(name: str, cache_dir: Path | None) -> dict[str, str]:
    if name == 'TensorrtExecutionProvider' and cache_dir is not None:
        # Building a TensorRT engine takes minutes; the cache makes the second start fast.
        return {'trt_engine_cache_enable': 'True', 'trt_engine_cache_path': str(cache_dir),
                'trt_fp16_enable': 'True'}
    return {}


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
    small image.
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
    axis = 2 if layout == 'NHWC' else 0
    classes = np.argmax(scores, axis=axis).astype(np.uint8)
    if not want_confidence:
        return classes, None
    top = np.max(scores, axis=axis)
    if output == 'logits':
        top = 1.0 / np.sum(np.exp(scores - np.expand_dims(top, axis)), axis=axis)
    confidence = np.clip(top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return classes, confidence


def resize_classes(class_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a class (or confidence) map to ``size`` = (height, width), nearest neighbour."""
    if class_map.shape[:2] == tuple(size):
        return class_map
    return cv2.resize(class_map, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


@dataclass
class Segmentation:
    """One frame's result at the model's output resolution, with per-stage times in ms."""

    classes: np.ndarray
    confidence: np.ndarray | None
    timings_ms: dict[str, float] = field(default_factory=dict)


class Segmenter:
    """An ONNX Runtime session plus its contract; use :func:`load_segmenter` to build one."""

    def __init__(self, session: ort.InferenceSession, contract: ModelContract,
                 model_path: Path, requested_providers: Sequence[str] = (),
                 fallback_reason: str = '') -> None:
        self.session = session
        self.requested_providers = list(requested_providers)
        self.fallback_reason = fallback_reason
        self.contract = contract
        self.model_path = model_path
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        shape = session.get_inputs()[0].shape
        self.input_size: tuple[int, int] = (
            (int(shape[1]), int(shape[2])) if contract.layout == 'NHWC'
            else (int(shape[2]), int(shape[3])))

    @property
    def active_provider(self) -> str:
        """The provider that really runs the model (ONNX Runtime falls back silently)."""
        return self.session.get_providers()[0]

    @property
    def name(self) -> str:
        """A short human name: file stem plus architecture/backbone from the provenance."""
        prov = self.contract.provenance
        arch = '/'.join(str(prov[k]) for k in ('architecture', 'backbone') if prov.get(k))
        return f'{self.model_path.stem} ({arch})' if arch else self.model_path.stem

    def preprocess(self, frame: np.ndarray, frame_order: str = 'RGB') -> np.ndarray:
        """See :func:`preprocess_frame`."""
        return preprocess_frame(frame, frame_order, self.input_size, self.contract)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Run the network on a preprocessed tensor; return its raw scores."""
        return self.session.run([self.output_name], {self.input_name: tensor})[0]

    def postprocess(self, scores: np.ndarray,
                    want_confidence: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """See :func:`scores_to_classes`."""
        return scores_to_classes(scores, self.contract.layout, self.contract.output,
                                 want_confidence)

    def segment(self, frame: np.ndarray, frame_order: str = 'RGB',
                want_confidence: bool = False) -> Segmentation:
        """Segment one uint8 frame; the result stays at the model's output resolution."""
        t0 = time.perf_counter()
        tensor = self.preprocess(frame, frame_order)
        t1 = time.perf_counter()
        scores = self.infer(tensor)
        t2 = time.perf_counter()
        classes, confidence = self.postprocess(scores, want_confidence)
        t3 = time.perf_counter()
        return Segmentation(classes, confidence, {
            'preprocess': (t1 - t0) * 1e3, 'inference': (t2 - t1) * 1e3,
            'postprocess': (t3 - t2) * 1e3})

    def warm_up(self, runs: int = 2) -> float:
        """Run a black frame through the model; return the last run's time in ms."""
        frame = np.zeros((*self.input_size, 3), np.uint8)
        elapsed = 0.0
        for _ in range(max(1, runs)):
            t0 = time.perf_counter()
            self.segment(frame)
            elapsed = (time.perf_counter() - t0) * 1e3
        return elapsed


def _check_graph(session: ort.InferenceSession, contract: ModelContract, source: str) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ContractError(f'{source}: expected one image input and one score output; got '
                            f'{len(inputs)} inputs and {len(outputs)} outputs')
    shape = inputs[0].shape
    channel_axis = 3 if contract.layout == 'NHWC' else 1
    spatial = (1, 2) if contract.layout == 'NHWC' else (2, 3)
    if (len(shape) != 4 or shape[channel_axis] != 3
            or not all(isinstance(shape[a], int) and shape[a] > 0 for a in spatial)):
        raise ContractError(f'{source}: expected a {contract.layout} image input with 3 channels '
                            f'and fixed height and width; got shape {shape}')
    if inputs[0].type != 'tensor(float)':
        raise ContractError(f'{source}: expected a float32 input; got {inputs[0].type}')
    out_shape = outputs[0].shape
    out_channels = out_shape[channel_axis] if len(out_shape) == 4 else None
    if isinstance(out_channels, int) and out_channels != contract.num_classes:
        raise ContractError(f'{source}: the output has {out_channels} channels but '
                            f'fvt.categories names {contract.num_classes} categories')


def load_segmenter(model_path: str | os.PathLike, providers: Sequence[str] = DEFAULT_PROVIDERS,
                   require_gpu: bool = False, intra_op_threads: int = 0,
                   trt_cache_dir: str | os.PathLike | None = None,
                   intra_op_spinning: bool = True) -> Segmenter:
    """Open ``model_path``, validate its contract and pick the first available provider.

    ``providers`` is an ordered preference list; the first one ONNX Runtime can really use
    runs the model. With ``require_gpu`` a CPU-only result is an error instead of a silent
    fallback. ``intra_op_spinning=False`` makes ONNX Runtime's CPU worker threads sleep
    between runs instead of spinning: slower by a little, but they leave the cores to other
    threads and to other sessions in the process. Raises :class:`ModelLoadError`
    (:class:`ContractError` for metadata problems) with one clear sentence naming the file.
    """
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f'{path}: no such model file')
    if not os.access(path, os.R_OK):
        raise ModelLoadError(f'{path}: the model file is not readable (permissions)')
    try:
        wanted = resolve_providers(providers)
    except ValueError as err:
        raise ModelLoadError(f'{path}: {err}') from None
    available = set(ort.get_available_providers())
    usable = [p for p in wanted if p in available]
    if not usable:
        raise ModelLoadError(f'{path}: none of the requested providers {wanted} is available '
                             f'in this onnxruntime build (available: {sorted(available)})')
    cache = Path(trt_cache_dir) if trt_cache_dir else path.parent / '.trt_cache'
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    if not intra_op_spinning:
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    # A GPU provider whose CUDA libraries are missing makes ONNX Runtime log an error wall and
    # print an 'EP Error' banner before it falls back to the CPU; we keep the reason and report
    # the provider that really runs instead.
    options.log_severity_level = 3
    ort.set_default_logger_severity(4)
    banner = io.StringIO()
    try:
        with contextlib.redirect_stdout(banner):
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=usable,
                provider_options=[_provider_options(p, cache) for p in usable])
    except Exception as err:  # onnxruntime raises several unrelated exception types
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f'{path}: not a loadable ONNX model ({first_line[:200]})') from None
    finally:
        ort.set_default_logger_severity(3)
    meta = session.get_modelmeta().custom_metadata_map
    contract = parse_contract(meta, str(path))
    _check_graph(session, contract, str(path))
    active = session.get_providers()[0]
    if require_gpu and active not in GPU_PROVIDERS:
        raise ModelLoadError(f'{path}: require_gpu is set but no GPU provider could start '
                             f'(requested {wanted}; active: {active}). Check the CUDA/TensorRT '
                             'libraries, or set require_gpu: false to accept the CPU.')
    reason = next((line.strip() for line in banner.getvalue().splitlines()
                   if line.startswith('EP Error')), '')
    return Segmenter(session, contract, path, wanted, reason[:300])
