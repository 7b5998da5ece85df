"""ONNX Runtime sessions: the one way both packages open one, and the loader's provider seam.

:func:`open_session` builds every session's options the same way (all graph
optimisations, the thread count, spinning or not, a session-scoped quiet log) for the node,
the training package and its scripts. :class:`ProviderLayer` is everything the loader asks of
ONNX Runtime and the GPU; tests pass fakes (``test/fake_providers.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
import os
from typing import Any

import onnxruntime as ort

from fvt_segmentation.core.contract import ModelLoadError
from fvt_segmentation.core.providers import (
    CPU,
    CUDA,
    TENSORRT,
    probe_platform,
    provider_library_error,
)

PROVIDER_ALIASES = {
    'tensorrt': TENSORRT,
    'cuda': CUDA,
    'cpu': CPU,
}


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


def first_line(err: BaseException) -> str:
    """Return the first line of an error's text, or its type name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def open_session(model: str | os.PathLike | bytes, providers: Sequence[str] | None = (CPU,),
                 provider_options: Sequence[Mapping[str, str]] | None = None, *,
                 threads: int = 0, spinning: bool = True,
                 profile_prefix: str | os.PathLike | None = None,
                 plugin_devices: Sequence[Any] = (),
                 plugin_options: Mapping[str, str] | None = None,
                 layer: ProviderLayer = ORT_LAYER) -> ort.InferenceSession:
    """Open ``model`` (a path or a serialized ModelProto) in an ONNX Runtime session.

    ``providers`` and ``provider_options`` go to ONNX Runtime as given (None: the providers
    come from ``plugin_devices``). ``threads`` is the intra-op thread count (0: ONNX
    Runtime's default, a thread per core); ``spinning`` False makes idle threads sleep.
    ``profile_prefix`` turns on ONNX Runtime's profiler, writing there;
    ``plugin_devices`` (``ort.get_ep_devices()`` entries) are added with
    ``plugin_options``. Every session runs all graph optimisations and logs only errors
    (session-scoped: the process-wide logger is left as the user set it). ``layer`` creates
    the session (tests pass fakes). Raises :class:`ModelLoadError` naming the model, the
    error ONNX Runtime raised as its ``__cause__``.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    if plugin_devices:
        options.add_provider_for_devices(list(plugin_devices), dict(plugin_options or {}))
    source = model if isinstance(model, bytes) else os.fspath(model)
    try:
        return layer.session(source, sess_options=options,
                             providers=None if providers is None else list(providers),
                             provider_options=(None if provider_options is None
                                               else [dict(o) for o in provider_options]))
    except Exception as err:  # onnxruntime raises several unrelated exception types
        name = 'the serialized model' if isinstance(model, bytes) else source
        raise ModelLoadError(f'{name}: not a loadable ONNX model ({first_line(err)[:200]})'
                             ) from err
