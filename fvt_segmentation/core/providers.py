"""Execution-provider decisions, as pure functions: options, engine cache keys, threads.

No rclpy and no session here: :mod:`fvt_segmentation.core.gpu_load` asks these functions what
to do and the tests check every answer on a CPU. What each ONNX Runtime option means is in
ONNX Runtime's TensorRT execution provider documentation; why we set it is said below.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
import ctypes
import fcntl
import os
from pathlib import Path
import re
import tempfile

from fvt_segmentation.core.contract import ModelLoadError

TENSORRT = 'TensorrtExecutionProvider'
CUDA = 'CUDAExecutionProvider'
CPU = 'CPUExecutionProvider'
GPU_PROVIDERS = frozenset({TENSORRT, CUDA})
PRECISIONS = ('fp32', 'fp16', 'int8')
GPU_INTRA_OP_THREADS = 2
"""CPU threads per session when a GPU provider runs the model: the CPU only runs the few
operators the GPU provider does not take, and a thread per core would compete with the rest
of the robot (a Jetson has 6 to 12 cores for everything)."""
CACHE_SUBDIR = ('fvt_segmentation', 'trt')
_LIBRARIES = {TENSORRT: 'libonnxruntime_providers_tensorrt.so',
              CUDA: 'libonnxruntime_providers_cuda.so'}
TENSORRT_LIBRARIES = ('libnvinfer.so.10', 'libnvinfer.so.8')
"""Where :func:`tensorrt_version` looks: the TensorRT 10 and 8 libraries ONNX Runtime links."""


class CacheDirError(ModelLoadError):
    """The TensorRT cache folder cannot be created or written; the message says which."""


def default_trt_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Return ``$ROS_HOME/fvt_segmentation/trt``, or ``~/.ros/fvt_segmentation/trt``.

    Like ROS 2 itself (logs under ``$ROS_HOME/log``): a per-user, writable place, never the
    install tree, which is read-only under ``/opt/ros``.
    """
    env = os.environ if environ is None else environ
    home = env.get('ROS_HOME') or str(Path(env.get('HOME') or Path.home()) / '.ros')
    return Path(home).expanduser().joinpath(*CACHE_SUBDIR)


def prepare_cache_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (with parents) and prove a file can be written there; return it.

    Raises :class:`CacheDirError` naming the folder, what failed and what to do.
    """
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix='.write-check-'):
            pass
    except OSError as err:
        raise CacheDirError(
            f'trt_cache_dir {folder}: expected a writable folder for TensorRT engines, but '
            f'{type(err).__name__}: {err.strerror or err}. Set the parameter trt_cache_dir to '
            f'a writable folder (default: {default_trt_cache_dir()})') from None
    return folder


def engine_key(sha256: str, precision: str, input_shape: Sequence[int], platform: str) -> str:
    """Name the engine folder of one model file, precision, input shape and platform.

    The weights are part of the key (ONNX Runtime's own engine names hash the graph's
    structure and names, not its weights), so a retrained file never meets an old engine;
    ``platform`` (see :func:`engine_platform`) names the TensorRT and ONNX Runtime versions
    and the GPU, since an engine only runs where it was built.
    """
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {list(PRECISIONS)}; got {precision!r}')
    if len(sha256) != 64:
        raise ValueError(f'expected a 64-digit hex SHA-256; got {sha256!r}')
    if not platform or '/' in platform:
        raise ValueError(f'expected a platform name without "/"; got {platform!r}')
    return f'{sha256[:16]}-{precision}-{"x".join(str(int(d)) for d in input_shape)}-{platform}'


def engine_platform(tensorrt: str | None, onnxruntime: str, gpu: str | None) -> str:
    """Return the platform part of :func:`engine_key`, e.g. ``trt10.9.0-ort1.22.0-NVIDIA_H200``.

    An unknown TensorRT version or GPU name reads ``trt_unknown`` / ``gpu_unknown``: the key
    then says what it could not tell apart instead of guessing.
    """
    gpu_part = re.sub(r'[^A-Za-z0-9.]+', '_', gpu or '').strip('_') or 'gpu_unknown'
    return f'trt{tensorrt or "_unknown"}-ort{onnxruntime}-{gpu_part}'


def decode_trt_version(number: int) -> str:
    """Turn ``getInferLibVersion()`` into ``major.minor.patch``.

    TensorRT 10 encodes major * 10000 + minor * 100 + patch; earlier releases major * 1000.
    """
    major, rest = divmod(number, 10000 if number >= 100000 else 1000)
    return f'{major}.{rest // 100}.{rest % 100}'



def tensorrt_version(libraries: Sequence[str] = TENSORRT_LIBRARIES) -> str | None:
    """Return the version of the first TensorRT library in ``libraries`` that loads, or None."""
    for name in libraries:
        try:
            return decode_trt_version(int(ctypes.CDLL(name).getInferLibVersion()))
        except (OSError, AttributeError):
            continue
    return None


def gpu_name(library: str = 'libcuda.so.1') -> str | None:
    """Return the name of CUDA device 0 (the one ONNX Runtime uses), or None if unknown.

    Asks the CUDA driver (``cuDeviceGetName``): no CUDA runtime or nvidia-smi needed.
    """
    try:
        driver = ctypes.CDLL(library)
        device = ctypes.c_int()
        name = ctypes.create_string_buffer(256)
        if (driver.cuInit(0) != 0 or driver.cuDeviceGet(ctypes.byref(device), 0) != 0
                or driver.cuDeviceGetName(name, len(name), device) != 0):
            return None
    except (OSError, AttributeError):
        return None
    return name.value.decode(errors='replace') or None


def probe_platform() -> str:
    """Return :func:`engine_platform` for this process: TensorRT, ONNX Runtime and GPU."""
    import onnxruntime

    return engine_platform(tensorrt_version(), onnxruntime.__version__, gpu_name())


def trt_precision(fp16: bool, int8_model: bool) -> str:
    """Return the TensorRT precision: ``int8`` for a TensorRT int8 file, else fp16 or fp32."""
    if int8_model:
        return 'int8'
    return 'fp16' if fp16 else 'fp32'


def provider_options(provider: str, precision: str, engine_dir: Path | None,
                     input_name: str, input_shape: Sequence[int],
                     dynamic_batch: bool = True) -> dict[str, str]:
    """Return the ONNX Runtime options of ``provider`` for one model (strings only).

    TensorRT: engine and timing cache in ``engine_dir`` (one folder per :func:`engine_key`);
    for a dynamic batch, a single shape profile at the batch-1 input shape the node feeds
    (min = opt = max), so one engine is built, once (a static input needs none, and trtexec
    refuses shapes for one); fp16 for ``fp16``; int8 for
    ``int8`` (a symmetric QDQ file: TensorRT takes the scales from the graph, no calibration
    table), with fp16 allowed for the layers the file left in float. CUDA and CPU: defaults.
    """
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {list(PRECISIONS)}; got {precision!r}')
    if provider != TENSORRT:
        return {}
    if engine_dir is None:
        raise ValueError('TensorRT needs an engine folder (see engine_key)')
    options = {
        'trt_engine_cache_enable': 'True',
        'trt_engine_cache_path': str(engine_dir),
        'trt_timing_cache_enable': 'True',
        'trt_timing_cache_path': str(engine_dir),
        'trt_fp16_enable': 'True' if precision in ('fp16', 'int8') else 'False',
        'trt_int8_enable': 'True' if precision == 'int8' else 'False',
    }
    if dynamic_batch:
        shape = f'{input_name}:{"x".join(str(int(d)) for d in input_shape)}'
        for bound in ('min', 'opt', 'max'):
            options[f'trt_profile_{bound}_shapes'] = shape
    return options


def thread_settings(gpu: bool, intra_op_threads: int,
                    intra_op_spinning: bool) -> tuple[int, bool]:
    """Return ``(intra_op_num_threads, allow_spinning)`` for a session.

    On the CPU the parameters apply as given (0 = ONNX Runtime's default, a thread per core).
    With a GPU provider, ``intra_op_threads`` 0 means :data:`GPU_INTRA_OP_THREADS` threads
    that sleep between runs; a positive ``intra_op_threads`` says otherwise, and then
    ``intra_op_spinning`` applies as given too.
    """
    if not gpu or intra_op_threads > 0:
        return intra_op_threads, intra_op_spinning
    return GPU_INTRA_OP_THREADS, False


def provider_library_error(provider: str, capi_dir: Path | None = None) -> str | None:
    """Return why ONNX Runtime's library for ``provider`` cannot load here, or None.

    Loads the provider library the way ONNX Runtime would, so the dynamic linker names the
    first missing dependency (e.g. ``libcublas.so.13``). Checked before a session is created,
    ONNX Runtime is never asked for a provider that cannot load and logs no error wall.
    ``capi_dir`` is where the provider libraries are (default: onnxruntime's ``capi``).
    """
    library = _LIBRARIES.get(provider)
    if library is None:
        return None
    if capi_dir is None:
        import onnxruntime

        capi_dir = Path(onnxruntime.__file__).parent / 'capi'
    path = capi_dir / library
    if not path.is_file():
        return f'{library} is not part of this onnxruntime build'
    try:
        ctypes.CDLL(str(path))
    except OSError as err:
        text = str(err)
        return text.split(': ', 1)[1] if text.startswith(str(path)) else text
    return None


@contextmanager
def engine_lock(engine_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``engine_dir`` while an engine is built or loaded.

    Two nodes starting with the same model and precision share one folder: the second waits
    for the first to finish its build, then loads the cached engine instead of writing the
    same files at the same time.
    """
    engine_dir.mkdir(parents=True, exist_ok=True)
    with open(engine_dir / '.lock', 'a') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
