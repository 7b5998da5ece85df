"""Provider decisions without a GPU: cache folder and keys, options per precision, threads."""

from __future__ import annotations

from contextlib import contextmanager
import os
from pathlib import Path
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from fvt_segmentation.core.files import file_sha256
from fvt_segmentation.core.providers import (
    CPU,
    CUDA,
    GPU_INTRA_OP_THREADS,
    TENSORRT,
    CacheDirError,
    decode_trt_version,
    default_trt_cache_dir,
    engine_key,
    engine_lock,
    engine_platform,
    gpu_name,
    prepare_cache_dir,
    provider_library_error,
    provider_options,
    tensorrt_version,
    thread_settings,
    trt_precision,
)

SHA = 'ab' * 32


def test_default_cache_dir_follows_ros_home_then_home():
    assert default_trt_cache_dir({'ROS_HOME': '/data/ros', 'HOME': '/home/u'}) == Path(
        '/data/ros/fvt_segmentation/trt')
    assert default_trt_cache_dir({'HOME': '/home/u'}) == Path(
        '/home/u/.ros/fvt_segmentation/trt')
    assert default_trt_cache_dir({'ROS_HOME': '', 'HOME': '/home/u'}) == Path(
        '/home/u/.ros/fvt_segmentation/trt')


def test_cache_dir_is_created_with_parents_and_left_clean(tmp_path):
    folder = prepare_cache_dir(tmp_path / 'a' / 'b')
    assert folder.is_dir() and list(folder.iterdir()) == []


@contextmanager
def unprivileged():
    """Run the block without root's right to write anywhere (a no-op for other users)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_read_only_cache_dir_gives_a_clear_message():
    root = Path(tempfile.mkdtemp(prefix='fvt-ro-'))
    try:
        root.chmod(0o555)
        with unprivileged(), pytest.raises(CacheDirError) as caught:
            prepare_cache_dir(root / 'trt')
        message = str(caught.value)
        assert f'trt_cache_dir {root / "trt"}' in message
        assert 'expected a writable folder' in message and 'PermissionError' in message
        assert 'Set the parameter trt_cache_dir' in message
        (root / 'full').mkdir(mode=0o555)  # exists, but not writable
        with unprivileged(), pytest.raises(CacheDirError, match='full: expected a writable'):
            prepare_cache_dir(root / 'full')
    finally:
        root.chmod(0o755)
        (root / 'full').chmod(0o755)
        shutil.rmtree(root)


def test_engine_key_separates_weights_precision_shape_and_platform(tmp_path):
    a, b = tmp_path / 'a.onnx', tmp_path / 'b.onnx'
    a.write_bytes(b'weights 1')
    b.write_bytes(b'weights 2')
    sha_a, sha_b = file_sha256(a), file_sha256(b)
    assert len(sha_a) == 64 and sha_a != sha_b
    here = 'trt10.9.0-ort1.31.1-NVIDIA_H200'
    key = engine_key(sha_a, 'fp16', (1, 352, 480, 3), here)
    assert key == f'{sha_a[:16]}-fp16-1x352x480x3-{here}'
    others = {engine_key(sha_b, 'fp16', (1, 352, 480, 3), here),
              engine_key(sha_a, 'fp32', (1, 352, 480, 3), here),
              engine_key(sha_a, 'fp16', (1, 192, 256, 3), here),
              engine_key(sha_a, 'fp16', (1, 352, 480, 3), 'trt10.13.0-ort1.31.1-NVIDIA_H200')}
    assert key not in others and len(others) == 4
    with pytest.raises(ValueError, match='precision must be one of'):
        engine_key(sha_a, 'bf16', (1, 2, 3, 3), here)
    with pytest.raises(ValueError, match='expected a platform name without "/"; got \'a/b\''):
        engine_key(sha_a, 'fp16', (1, 2, 3, 3), 'a/b')


def test_engine_platform_names_what_it_knows_and_says_what_it_does_not():
    assert engine_platform('10.9.0', '1.31.1', 'NVIDIA GeForce RTX 4090') == (
        'trt10.9.0-ort1.31.1-NVIDIA_GeForce_RTX_4090')
    assert engine_platform('8.6.1', '1.18.0', 'Orin (nvgpu)') == 'trt8.6.1-ort1.18.0-Orin_nvgpu'
    assert engine_platform(None, '1.31.1', None) == 'trt_unknown-ort1.31.1-gpu_unknown'
    assert decode_trt_version(100900) == '10.9.0' and decode_trt_version(101302) == '10.13.2'
    assert decode_trt_version(8601) == '8.6.1'


@pytest.mark.parametrize('precision, fp16, int8', [
    ('fp32', 'False', 'False'), ('fp16', 'True', 'False'), ('int8', 'True', 'True')])
def test_tensorrt_options_per_precision(tmp_path, precision, fp16, int8):
    options = provider_options(TENSORRT, precision, tmp_path, 'image', (1, 352, 480, 3))
    assert options == {
        'trt_engine_cache_enable': 'True', 'trt_engine_cache_path': str(tmp_path),
        'trt_timing_cache_enable': 'True', 'trt_timing_cache_path': str(tmp_path),
        'trt_fp16_enable': fp16, 'trt_int8_enable': int8,
        'trt_profile_min_shapes': 'image:1x352x480x3',
        'trt_profile_opt_shapes': 'image:1x352x480x3',
        'trt_profile_max_shapes': 'image:1x352x480x3'}
    static = provider_options(TENSORRT, precision, tmp_path, 'image', (1, 352, 480, 3),
                              dynamic_batch=False)
    assert static == {k: v for k, v in options.items() if 'profile' not in k}
    assert provider_options(CUDA, precision, None, 'image', (1, 2, 2, 3)) == {}
    assert provider_options(CPU, precision, None, 'image', (1, 2, 2, 3)) == {}


def test_precision_follows_the_parameter_and_the_file():
    assert trt_precision(True, False) == 'fp16'
    assert trt_precision(False, False) == 'fp32'
    assert trt_precision(False, True) == trt_precision(True, True) == 'int8'
    with pytest.raises(ValueError, match='TensorRT needs an engine folder'):
        provider_options(TENSORRT, 'fp16', None, 'image', (1, 2, 2, 3))


def test_thread_defaults_with_and_without_a_gpu():
    assert thread_settings(False, 0, True) == (0, True)  # CPU: ONNX Runtime's default
    assert thread_settings(False, 3, False) == (3, False)
    assert thread_settings(True, 0, True) == (GPU_INTRA_OP_THREADS, False)
    assert 1 <= GPU_INTRA_OP_THREADS <= 2
    assert thread_settings(True, 4, True) == (4, True)  # the parameters say otherwise


def test_provider_library_error_says_why_a_library_does_not_load(tmp_path):
    assert provider_library_error(CPU, tmp_path) is None  # no library of its own
    assert provider_library_error(TENSORRT, tmp_path) == (
        'libonnxruntime_providers_tensorrt.so is not part of this onnxruntime build')
    (tmp_path / 'libonnxruntime_providers_cuda.so').write_bytes(b'not a library')
    # the linker's message, without the path in front
    assert provider_library_error(CUDA, tmp_path) == 'file too short'
    # A provider library that needs a library the linker cannot find: the missing one is named.
    build_library(tmp_path, 'libfvtdep.so', 'int fvt_dep(void) { return 1; }\n')
    build_library(tmp_path, 'libonnxruntime_providers_tensorrt.so',
                  'int fvt_dep(void);\nint probe(void) { return fvt_dep(); }\n',
                  f'-L{tmp_path}', '-lfvtdep')
    (tmp_path / 'libfvtdep.so').unlink()
    assert provider_library_error(TENSORRT, tmp_path) == (
        'libfvtdep.so: cannot open shared object file: No such file or directory')


def build_library(folder: Path, name: str, source: str, *flags: str) -> str:
    """Compile ``source`` into ``folder/name`` with gcc; return its path (skip without gcc)."""
    gcc = shutil.which('gcc')
    if gcc is None:
        pytest.skip('gcc is needed to build a stand-in library')
    (folder / f'{name}.c').write_text(source)
    subprocess.run([gcc, '-shared', '-fPIC', '-o', folder / name, folder / f'{name}.c', *flags],
                   check=True)
    return str(folder / name)


def test_tensorrt_version_from_the_library_that_loads(tmp_path):
    nvinfer = build_library(tmp_path, 'libnvinfer.so.10',
                            'int getInferLibVersion(void) { return 100900; }\n')
    assert tensorrt_version([str(tmp_path / 'libnvinfer.so.missing'), nvinfer]) == '10.9.0'
    assert tensorrt_version([str(tmp_path / 'libnvinfer.so.missing')]) is None
    # a library without the function (not TensorRT) says nothing either
    other = build_library(tmp_path, 'libother.so', 'int other(void) { return 0; }\n')
    assert tensorrt_version([other]) is None


def test_gpu_name_from_the_cuda_driver(tmp_path):
    driver = build_library(tmp_path, 'libcuda.so.1', """
#include <string.h>
static int ready = 0;
int cuInit(unsigned int flags) { ready = 1; return flags; }
int cuDeviceGet(int *device, int ordinal) { *device = ordinal; return ready ? 0 : 3; }
int cuDeviceGetName(char *name, int len, int device) {
    strncpy(name, device == 0 ? "NVIDIA H200" : "other", len); return 0; }
""")
    assert gpu_name(driver) == 'NVIDIA H200'
    assert gpu_name(str(tmp_path / 'libcuda.so.missing')) is None
    failing = build_library(tmp_path, 'libcuda_nodevice.so', """
int cuInit(unsigned int flags) { return 100; }  /* CUDA_ERROR_NO_DEVICE */
int cuDeviceGet(int *device, int ordinal) { return 0; }
int cuDeviceGetName(char *name, int len, int device) { return 0; }
""")
    assert gpu_name(failing) is None


def test_engine_lock_makes_a_second_builder_wait(tmp_path):
    events = []
    inside = threading.Event()

    def second() -> None:
        inside.wait(5)
        with engine_lock(tmp_path / 'key'):
            events.append('second')

    thread = threading.Thread(target=second)
    thread.start()
    with engine_lock(tmp_path / 'key'):
        inside.set()
        time.sleep(0.3)
        events.append('first')
    thread.join(5)
    assert events == ['first', 'second']
