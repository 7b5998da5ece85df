"""GPU branches of load_segmenter without a GPU: the fake provider layer of fake_providers.py.

Each test lets CUDA or TensorRT fail the way they do and checks what the real loader makes
of it: the provider that runs, ``fallback_reason``, precision, the engine folder and its
parity verdict, and what /diagnostics report (``model_values``).
"""

from __future__ import annotations

import json
from pathlib import Path
import threading

from fake_providers import BUILD_FAILURE, ENGINE, MISSING, OUT_OF_MEMORY, PLATFORM, FakeGpu
import numpy as np
import pytest

from fvt_segmentation.core.contract import ModelLoadError
from fvt_segmentation.core.files import file_sha256
from fvt_segmentation.core.gpu_load import ProgressWarning
from fvt_segmentation.core.inference import load_segmenter
from fvt_segmentation.core.parity import PARITY_FILE
from fvt_segmentation.core.providers import CPU, CUDA, TENSORRT
from fvt_segmentation.core.segmenter import Segmenter
from fvt_segmentation.node.diagnostics import model_values

PASSED = 'fp32 passed: argmax agreement 100.0000% on 4 frames'
FP16_FAILED = 'argmax agreement 75.0000% < 99.9% on 4 frames'  # the top quarter disagrees


class ParityFrames:
    """The ``parity_frames`` callable; counts how often a check asked for frames."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> list[np.ndarray]:
        self.calls += 1
        rng = np.random.default_rng(3)
        return [rng.integers(0, 256, (32, 64, 3), dtype=np.uint8) for _ in range(4)]


def load(model: Path, gpu: FakeGpu, cache: Path, **kwargs) -> Segmenter:
    return load_segmenter(model, trt_cache_dir=cache, layer=gpu.layer(), **kwargs)


def test_an_engine_is_checked_once_and_again_when_rebuilt(tiny_model, tmp_path):
    gpu, frames = FakeGpu(), ParityFrames()
    first = load(tiny_model, gpu, tmp_path / 'trt', parity_frames=frames)
    assert first.active_provider == TENSORRT and first.precision == 'fp16'
    assert first.fallback_reason == '' and not first.parity_failed
    assert first.parity == 'fp16 passed: argmax agreement 100.0000% on 4 frames'
    folder = first.engine_dir
    assert folder == tmp_path / 'trt' / (f'{file_sha256(tiny_model)[:16]}-fp16-1x32x64x3-'
                                         f'{PLATFORM}')
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        '.lock', PARITY_FILE, ENGINE, 'TensorrtExecutionProvider_cache_sm90.timing'])
    engine = (folder / ENGINE).stat()
    record = json.loads((folder / PARITY_FILE).read_text())
    assert record['passed'] and record['engines'] == {
        ENGINE: [engine.st_size, engine.st_mtime_ns]}
    values = model_values(first)
    assert (values['precision'], values['trt_engine'], values['trt_engine_dir'],
            values['trt_parity'], values['provider_fallback'], values['io_binding']) == (
        'fp16', 'built at this start', str(folder), first.parity, '', 'cpu')

    again = load(tiny_model, gpu, tmp_path / 'trt', parity_frames=frames)
    assert frames.calls == 1 and gpu.built == ['fp16']  # the verdict was read back
    assert model_values(again)['trt_engine'] == 'loaded from cache'
    assert again.parity == first.parity

    # The engine is rebuilt in the same folder, and this build disagrees with the CPU: the
    # old verdict does not carry over.
    (folder / ENGINE).unlink()
    gpu.fp16_disagrees = True
    rebuilt = load(tiny_model, gpu, tmp_path / 'trt', parity_frames=frames)
    assert frames.calls == 3 and gpu.built == ['fp16', 'fp16', 'fp32']
    assert rebuilt.precision == 'fp32' and rebuilt.parity_failed
    assert rebuilt.parity == (f'TensorRT fp16 engine FAILED parity: {FP16_FAILED}; '
                              f'running fp32 instead; {PASSED}')


def test_an_fp16_failure_sends_later_starts_straight_to_fp32(tiny_model, tmp_path):
    gpu, frames, lines = FakeGpu(fp16_disagrees=True), ParityFrames(), []
    first = load(tiny_model, gpu, tmp_path, parity_frames=frames, progress=lines.append)
    assert gpu.opened == [(TENSORRT, 'fp16'), (TENSORRT, 'fp32')]
    assert first.active_provider == TENSORRT and first.precision == 'fp32'
    assert first.parity_failed  # found at this start: worth an error line
    assert first.parity == (f'TensorRT fp16 engine FAILED parity: {FP16_FAILED}; '
                            f'running fp32 instead; {PASSED}')
    assert not any(isinstance(line, ProgressWarning) for line in lines)
    fp16_dir = first.engine_dir.with_name(first.engine_dir.name.replace('-fp32-', '-fp16-'))
    assert not json.loads((fp16_dir / PARITY_FILE).read_text())['passed']

    gpu.opened.clear()
    lines.clear()
    later = load(tiny_model, gpu, tmp_path, parity_frames=frames, progress=lines.append)
    assert gpu.opened == [(TENSORRT, 'fp32')]  # the fp16 engine is not even opened
    assert frames.calls == 2 and gpu.built == ['fp16', 'fp32']
    warning = (f'TensorRT fp16 engine FAILED parity at an earlier start: {FP16_FAILED} '
               f'(recorded in {fp16_dir / PARITY_FILE}); running fp32 without opening it')
    assert [line for line in lines if isinstance(line, ProgressWarning)] == [warning]
    assert later.precision == 'fp32' and not later.parity_failed
    assert later.parity == f'{warning}; {PASSED}'
    values = model_values(later)
    assert (values['precision'], values['trt_engine'], values['trt_parity']) == (
        'fp32', 'loaded from cache', later.parity)
    # No parity frames (a tool's restart): the recorded verdict still applies.
    assert load(tiny_model, gpu, tmp_path).precision == 'fp32'
    assert gpu.opened == [(TENSORRT, 'fp32')] * 2


def test_a_failed_engine_build_leaves_cuda_running(tiny_model, tmp_path):
    gpu = FakeGpu(build_error=BUILD_FAILURE)
    seg = load(tiny_model, gpu, tmp_path / 'trt', parity_frames=ParityFrames())
    assert gpu.opened == [(CUDA, 'fp32')]
    assert seg.active_provider == CUDA and seg.precision == 'fp32'
    assert seg.fallback_reason == f'{TENSORRT}: creating the session failed: {BUILD_FAILURE}'
    assert seg.engine_dir is None and seg.parity == ''
    values = model_values(seg)
    assert (values['provider_fallback'], values['trt_engine'], values['trt_engine_dir'],
            values['trt_parity']) == (seg.fallback_reason, 'none', '', '')
    [folder] = (tmp_path / 'trt').iterdir()
    assert [p.name for p in folder.iterdir()] == ['.lock']  # no engine, no verdict


def test_onnx_runtimes_own_fallback_banner_becomes_the_reason(tiny_model, tmp_path, capfd):
    error = 'TensorRT EP could not deserialize engine from cache'
    gpu = FakeGpu(banner_error=error)
    seg = load(tiny_model, gpu, tmp_path / 'trt')
    assert gpu.opened == [(CUDA, 'fp32')]
    assert seg.active_provider == CUDA and seg.engine_dir is None
    assert seg.fallback_reason == (f"{TENSORRT}: EP Error {error} when using ['{TENSORRT}', "
                                   f"'{CUDA}', '{CPU}']")
    assert capfd.readouterr().out == ''  # the banner is the reason, not noise on stdout
    only_trt = load(tiny_model, gpu, tmp_path / 'trt', providers=['tensorrt', 'cpu'])
    assert only_trt.active_provider == CPU
    assert only_trt.fallback_reason == (f"{TENSORRT}: EP Error {error} when using "
                                        f"['{TENSORRT}', '{CPU}']")


def test_out_of_memory_at_warm_up_leaves_the_cpu_running(tiny_model, tmp_path):
    gpu = FakeGpu(run_error=OUT_OF_MEMORY)
    seg = load(tiny_model, gpu, tmp_path / 'trt', parity_frames=ParityFrames())
    assert gpu.opened == [(TENSORRT, 'fp16'), (CUDA, 'fp32')]  # each provider had its try
    assert seg.active_provider == CPU and seg.precision == 'fp32'
    reason = seg.fallback_reason
    head = 'warm-up failed: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION'
    assert reason.startswith(f'{TENSORRT}: {head}') and f'; {CUDA}: {head}' in reason
    assert reason.count('CUDA failure 2: out of memory') == 2
    values = model_values(seg)
    assert (values['provider_fallback'], values['precision'], values['trt_engine'],
            values['io_binding']) == (reason, 'fp32', 'none', 'off')
    [folder] = (tmp_path / 'trt').iterdir()
    assert not (folder / PARITY_FILE).exists()
    with pytest.raises(ModelLoadError, match='require_gpu is set but no GPU provider') as err:
        load(tiny_model, gpu, tmp_path / 'trt', require_gpu=True)
    assert 'CUDA failure 2: out of memory' in str(err.value)


def test_providers_whose_libraries_do_not_load_are_never_asked_for(tiny_model, tmp_path):
    gpu = FakeGpu(missing=MISSING)
    seg = load(tiny_model, gpu, tmp_path / 'trt')
    assert seg.requested_providers == [TENSORRT, CUDA, CPU]
    assert gpu.opened == [] and seg.active_provider == CPU
    assert seg.fallback_reason == (
        f'{TENSORRT}: its library does not load: {MISSING[TENSORRT]}; '
        f'{CUDA}: its library does not load: {MISSING[CUDA]}')
    assert model_values(seg)['provider_fallback'] == seg.fallback_reason
    assert not (tmp_path / 'trt').exists()  # no engine folder for a TensorRT that cannot load
    with pytest.raises(ModelLoadError, match=r'none of the requested providers \[.*\] can run '
                                             r'here: TensorrtExecutionProvider: its library'):
        load(tiny_model, gpu, tmp_path / 'trt', providers=['tensorrt', 'cuda'])


def test_a_slow_engine_build_is_announced_before_it_starts(tiny_model, tmp_path):
    gpu = FakeGpu(build_gate=threading.Event())
    lines: list[str] = []
    loaded: list[Segmenter] = []
    loader = threading.Thread(target=lambda: loaded.append(
        load(tiny_model, gpu, tmp_path, progress=lines.append)))
    loader.start()
    try:
        assert gpu.building.wait(30)
        assert loader.is_alive() and not loaded
        assert lines[-1].startswith('building TensorRT engine (fp16) in ')
    finally:
        gpu.build_gate.set()
        loader.join(30)
    assert loaded[0].precision == 'fp16' and loaded[0].engine_cached is False


def test_a_corrupt_cached_engine_is_set_aside_and_built_again(tiny_model, tmp_path):
    gpu, frames = FakeGpu(), ParityFrames()
    first = load(tiny_model, gpu, tmp_path / 'trt', parity_frames=frames)
    folder = first.engine_dir
    (folder / ENGINE).write_bytes(b'\x00' * 64)  # a truncated or overwritten engine file
    lines: list[str] = []
    again = load(tiny_model, gpu, tmp_path / 'trt', parity_frames=frames, progress=lines.append)
    assert again.active_provider == TENSORRT and again.fallback_reason == ''
    assert gpu.built == ['fp16', 'fp16'] and again.engine_cached is False
    [aside] = [p for p in (tmp_path / 'trt').iterdir() if p.name.startswith(
        f'{folder.name}.unusable-')]
    assert (aside / ENGINE).read_bytes() == b'\x00' * 64  # kept for a look, not deleted
    [warning] = [line for line in lines if isinstance(line, ProgressWarning)]
    assert 'could not deserialize engine from cache' in warning and str(aside) in warning
    assert again.parity.startswith('the cached TensorRT engine cannot be used')
    assert again.parity.endswith('fp16 passed: argmax agreement 100.0000% on 4 frames')
    assert frames.calls == 2  # the new engine is checked against the CPU again
