"""A fake GPU for :func:`load_segmenter`: TensorRT and CUDA sessions on a machine without one.

Pass ``FakeGpu(...).layer()`` as ``load_segmenter(..., layer=...)``. Its sessions run the
model with the real ONNX Runtime on the CPU and report the GPU providers ONNX Runtime would;
a TensorRT session writes an engine file into its cache folder the first time, as TensorRT
does. They fail the way CUDA and TensorRT fail, with onnxruntime's own exception types and
texts: a provider library that does not load, an engine build that fails, CUDA out of
memory at the first run, an fp16 engine whose classes disagree with the CPU. So the real
fallback, engine cache, parity and diagnostics code runs in CI. ``build_gate`` makes an
engine build wait (a slow build), for tests of what happens meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import threading
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import EPFail, RuntimeException

from fvt_segmentation.core.providers import CPU, CUDA, TENSORRT
from fvt_segmentation.core.sessions import ProviderLayer

OUT_OF_MEMORY = (
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running "
    "MatMul node. Name:'mm' Status Message: CUDA failure 2: out of memory ; GPU=0 ; "
    'hostname=robot ; file=/onnxruntime_src/onnxruntime/core/providers/cuda/'
    'cuda_allocator.cc ; line=49 ; expr=cudaMalloc((void**)&p, size);')
"""What the CUDA provider raises when a buffer cannot be allocated."""
BUILD_FAILURE = (
    '[ONNXRuntimeError] : 11 : EP_FAIL : TensorRT EP failed to create engine from network '
    'for fused node: TensorrtExecutionProvider_TRTKernel_graph_tiny_segmenter_1_0_0')
"""What the TensorRT provider raises when its engine build fails."""
UNREADABLE_ENGINE = ('[ONNXRuntimeError] : 11 : EP_FAIL : TensorRT EP could not deserialize '
                     'engine from cache: {path}')
"""What the TensorRT provider raises when a cached engine file is corrupt."""
MISSING = {
    TENSORRT: 'libnvinfer.so.10: cannot open shared object file: No such file or directory',
    CUDA: 'libcublasLt.so.13: cannot open shared object file: No such file or directory'}
"""What the dynamic linker says for provider libraries whose dependencies are missing."""
PLATFORM = 'trt10.9.0-ort1.31.1-Fake_GPU_80GB'
ENGINE = 'TensorrtExecutionProvider_TRTKernel_graph_tiny_segmenter_1_0_0_sm90.engine'


@dataclass
class FakeGpu:
    """A fake GPU whose failures are chosen per test; it records what it was asked for."""

    missing: dict[str, str] = field(default_factory=dict)
    """Provider -> the library error :func:`provider_library_error` would give."""
    build_error: str = ''
    """Raised (as ``EPFail``) when a TensorRT session is created: a failed engine build."""
    banner_error: str = ''
    """A TensorRT start that fails with a RuntimeError: ONNX Runtime's Python layer then
    prints its 'EP Error' banner and retries with CUDA and the CPU."""
    run_error: str = ''
    """Raised (as ``RuntimeException``) by every run of a GPU session, e.g. OUT_OF_MEMORY."""
    fp16_disagrees: bool = False
    """An fp16 engine gives another class on the top quarter of each frame."""
    build_gate: threading.Event | None = None
    """An engine build waits until this is set; ``building`` is set when one starts."""
    platform: str = PLATFORM
    building: threading.Event = field(default_factory=threading.Event)
    opened: list[tuple[str, str]] = field(default_factory=list)
    """(first provider, precision) of each GPU session created."""
    built: list[str] = field(default_factory=list)
    """Precision of each engine built (not loaded from the cache folder)."""

    def layer(self) -> ProviderLayer:
        """The provider layer to pass to ``load_segmenter(..., layer=...)``."""
        return ProviderLayer(session=self.session, available=lambda: [TENSORRT, CUDA, CPU],
                             library_error=self.missing.get, platform=lambda: self.platform,
                             binding_device='cpu')

    def session(self, path: str, sess_options: ort.SessionOptions | None = None,
                providers: list[str] | None = None,
                provider_options: list[dict[str, str]] | None = None) -> Any:
        """Create a session as ``ort.InferenceSession`` would, with this GPU's behaviour."""
        providers = list(providers or [CPU])
        inner = ort.InferenceSession(path, sess_options=sess_options, providers=[CPU])
        if providers == [CPU]:
            return inner
        options = dict(zip(providers, provider_options or [{}] * len(providers), strict=True))
        if TENSORRT in options and self.banner_error:
            retry = [CUDA, CPU] if CUDA in options else [CPU]
            # The banner of onnxruntime_inference_collection.py, word for word.
            print('*************** EP Error ***************')
            print(f'EP Error {self.banner_error} when using {providers}')
            print(f'Falling back to {retry} and retrying.')
            print('****************************************')
            if retry == [CPU]:
                return inner
            providers, options = retry, {CUDA: {}, CPU: {}}
        precision = 'fp32'
        if TENSORRT in options:
            if self.build_error:
                raise EPFail(self.build_error)
            trt = options[TENSORRT]
            precision = ('int8' if trt['trt_int8_enable'] == 'True'
                         else 'fp16' if trt['trt_fp16_enable'] == 'True' else 'fp32')
            self._engine(Path(trt['trt_engine_cache_path']), precision)
        self.opened.append((providers[0], precision))
        return FakeGpuSession(inner, providers, precision, self)

    def _engine(self, folder: Path, precision: str) -> None:
        cached = list(folder.glob('*.engine'))
        if cached:
            if not cached[0].read_bytes().startswith(b'fake '):
                raise EPFail(UNREADABLE_ENGINE.format(path=cached[0]))
            return
        self.building.set()
        if self.build_gate is not None:
            self.build_gate.wait()
        (folder / ENGINE).write_bytes(f'fake {precision} engine {len(self.built)}'.encode())
        (folder / 'TensorrtExecutionProvider_cache_sm90.timing').write_bytes(b'timing')
        self.built.append(precision)


class FakeGpuSession:
    """A CPU session that reports GPU providers and fails as its :class:`FakeGpu` says."""

    def __init__(self, inner: ort.InferenceSession, providers: list[str], precision: str,
                 gpu: FakeGpu) -> None:
        self._inner = inner
        self._providers = providers
        self._precision = precision
        self._gpu = gpu

    def get_providers(self) -> list[str]:
        """The providers ONNX Runtime would report, the first one running."""
        return list(self._providers)

    def run(self, output_names: list[str], input_feed: dict[str, np.ndarray],
            run_options: ort.RunOptions | None = None) -> list[np.ndarray]:
        """Run on the CPU; raise the GPU's error or disagree in fp16 as configured."""
        if self._gpu.run_error:
            raise RuntimeException(self._gpu.run_error)
        outputs = self._inner.run(output_names, input_feed, run_options)
        if self._precision == 'fp16' and self._gpu.fp16_disagrees:
            # NHWC scores: rotating the class axis moves each top class one further.
            for scores in outputs:
                rows = scores.shape[1] // 4
                scores[:, :rows] = np.roll(scores[:, :rows], 1, axis=-1)
        return outputs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
