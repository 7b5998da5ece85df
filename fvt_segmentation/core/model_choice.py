"""Which model file runs: the shipped float32 or int8 file, chosen by precision and provider.

The shipped default comes as two files: ``models/default.onnx`` (float32) and
``models/default.int8.onnx`` (int8, quantized from it; its provenance names the float file).
TensorRT and CUDA take the float32 file (TensorRT builds its own fp16 or int8 engine from
it), while ONNX Runtime's CPU provider runs the int8 file about 1.5 times faster: on a CPU it
is what keeps a 30 Hz camera served. ``precision: auto`` therefore follows the provider that
really runs, also when a GPU provider fails at startup and ONNX Runtime falls back to the CPU.
A ``model_path`` set by the user is opened as it is: its precision is the file's.

No rclpy here: the node asks :func:`load_model`, and the tests check every choice on a CPU.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fvt_segmentation.core.gpu_load import gpu_plan
from fvt_segmentation.core.inference import load_segmenter
from fvt_segmentation.core.providers import CPU, GPU_PROVIDERS
from fvt_segmentation.core.resources import resolve_model_path
from fvt_segmentation.core.segmenter import Segmenter
from fvt_segmentation.core.sessions import ORT_LAYER, resolve_providers

PRECISIONS = ('auto', 'float32', 'int8')
INT8_SUFFIX = '.int8.onnx'


@dataclass(frozen=True)
class ModelChoice:
    """The file to open and why; ``warning`` is set when the wish could not be met."""

    path: Path
    precision: str
    """'float32' or 'int8' for the shipped files, 'file' for a user's ``model_path``."""
    reason: str
    warning: str = ''


def int8_path(float_path: Path) -> Path:
    """Return where the int8 file made from ``float_path`` is shipped (``X.int8.onnx``)."""
    return float_path.with_name(float_path.name.removesuffix('.onnx') + INT8_SUFFIX)


def choose_model(model_path: str, precision: str, gpu_may_run: bool,
                 default_path: Path | None = None) -> ModelChoice:
    """Decide which file to open, before any session exists.

    ``model_path`` is the parameter ('' = the shipped default, ``default_path`` or
    :func:`resolve_model_path`); ``precision`` one of :data:`PRECISIONS`; ``gpu_may_run``
    whether a GPU provider is requested and its library loads. A missing int8 file falls
    back to float32 with a ``warning``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {list(PRECISIONS)}; got {precision!r}')
    if model_path.strip():
        return ModelChoice(resolve_model_path(model_path), 'file',
                           f'model_path is set: the file runs as it is (precision {precision} '
                           'applies to the shipped model only)')
    float_path = default_path or resolve_model_path('')
    if precision == 'float32':
        return ModelChoice(float_path, 'float32', 'precision float32')
    if precision == 'auto' and gpu_may_run:
        return ModelChoice(float_path, 'float32',
                           'auto: a GPU provider is requested and can load; it takes the '
                           'float32 file (TensorRT makes its own fp16/int8 engine from it)')
    why = ('precision int8' if precision == 'int8'
           else 'auto: the CPU provider runs the model; int8 is faster there')
    quantized = int8_path(float_path)
    if not quantized.is_file():
        return ModelChoice(float_path, 'float32', f'{why}, but there is no int8 file',
                           warning=f'{why}, but {quantized} is missing: running the float32 '
                                   f'file {float_path} instead')
    return ModelChoice(quantized, 'int8', why)


def load_model(model_path: str, precision: str, providers: Sequence[str],
               **load_options: Any) -> tuple[Segmenter, ModelChoice]:
    """Choose the file (:func:`choose_model`), open it; switch to int8 if the GPU fails.

    With ``precision: auto`` and a GPU provider that could load, the float32 file is opened
    for it; if ONNX Runtime then runs it on the CPU after all (the GPU failed at startup,
    see ``fallback_reason``), the int8 file is opened on the CPU instead. ``load_options``
    go to :func:`~fvt_segmentation.core.inference.load_segmenter`, whose errors propagate.
    """
    candidates, _ = gpu_plan(resolve_providers(providers),
                             load_options.get('layer', ORT_LAYER))
    choice = choose_model(model_path, precision, bool(candidates))
    segmenter = load_segmenter(choice.path, providers=providers, **load_options)
    if (precision == 'auto' and choice.precision == 'float32' and candidates
            and segmenter.active_provider not in GPU_PROVIDERS):
        fallback = choose_model('', 'int8', False)
        if fallback.precision == 'int8':
            why = segmenter.fallback_reason or f'{", ".join(candidates)} did not start'
            cpu_options = {k: v for k, v in load_options.items() if k != 'parity_frames'}
            int8 = load_segmenter(fallback.path, providers=[CPU], **cpu_options)
            # The provider wish and its fallback stay what the user asked for and got.
            int8.requested_providers = segmenter.requested_providers
            int8.fallback_reason = segmenter.fallback_reason
            segmenter = int8
            choice = ModelChoice(fallback.path, 'int8',
                                 f'auto: no GPU provider started ({why}); int8 on the CPU')
    return segmenter, choice


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--model`` and ``--precision`` to a tool that starts the node (demo, bench)."""
    parser.add_argument('--model', default='',
                        help='ONNX model, run as it is (default: the shipped model, its file '
                             'chosen by --precision)')
    parser.add_argument('--precision', default='auto', choices=PRECISIONS,
                        help="the node's precision parameter: which shipped file runs "
                             '(default: %(default)s: int8 on the CPU, float32 on a GPU)')
