"""Load a contract-following model: validate it on the CPU, start the provider that really runs.

No rclpy here: the node, the training package (export checks, review app) and the tests all
load models through :func:`load_segmenter`. It puts together the session
(:mod:`fvt_segmentation.core.sessions`), the segmenter that runs frames
(:mod:`fvt_segmentation.core.segmenter`) and the GPU start with its TensorRT parity check
(:mod:`fvt_segmentation.core.gpu_load`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import os
from pathlib import Path
import time

import numpy as np
import onnxruntime as ort

from fvt_segmentation.core.contract import (
    CONTRACT_V2,
    ContractError,
    ModelContract,
    ModelLoadError,
    parse_contract,
)
from fvt_segmentation.core.gpu_load import Progress, gpu_plan, load_gpu
from fvt_segmentation.core.providers import CPU, GPU_PROVIDERS, thread_settings
from fvt_segmentation.core.segmenter import Segmenter
from fvt_segmentation.core.sessions import (
    ORT_LAYER,
    ProviderLayer,
    open_session,
    resolve_providers,
)

DEFAULT_PROVIDERS = ('tensorrt', 'cuda', 'cpu')


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


def _format_reasons(wanted: list[str], active: str, reasons: dict[str, str]) -> str:
    ahead = wanted[:wanted.index(active)] if active in wanted else wanted
    return '; '.join(f'{p}: {reasons.get(p, "ONNX Runtime could not start it")}'
                     for p in ahead)


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
    :data:`~fvt_segmentation.core.contract.MIN_ARGMAX_AGREEMENT` an fp16 engine is replaced
    by an fp32 one, and later starts go straight to fp32; ``parity`` says so. ``require_gpu``
    is checked after the warm-up: a CPU result is then an error. ``progress`` gets one line
    before each long step (a :class:`~fvt_segmentation.core.gpu_load.ProgressWarning` for a
    degraded choice). Threads: see
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
    session = open_session(path, [CPU], threads=cpu_threads[0], spinning=cpu_threads[1],
                           layer=layer)
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
        gpu = load_gpu(path, cpu, tried, trt_fp16, gpu_threads, trt_cache_dir,
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
