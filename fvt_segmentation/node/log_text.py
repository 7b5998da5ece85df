"""What the node's log lines say: the model it runs, a frame's stamp, a QoS profile in words.

Pure functions of plain values and messages (no rclpy calls), so the startup line can be
read without starting a node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fvt_segmentation.core.providers import TENSORRT
from fvt_segmentation.node.diagnostics import model_values

if TYPE_CHECKING:
    from rclpy.qos import QoSProfile

    from fvt_segmentation.node.model_holder import Serving

LOG_LIST_ITEMS = 12
"""A longer list in the model's provenance is logged as its length only."""


def compact(value: Any) -> Any:
    """``value`` for one log line: long lists (e.g. calibration frame ids) only counted."""
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items()}
    if isinstance(value, list) and len(value) > LOG_LIST_ITEMS:
        return f'({len(value)} entries)'
    return value


def stamp_text(msg: Any) -> str:
    """Name a frame by its header: stamp and frame id."""
    stamp = msg.header.stamp
    return f'stamp {stamp.sec}.{stamp.nanosec:09d} frame_id {msg.header.frame_id!r}'


def qos_text(qos: QoSProfile) -> str:
    """Say a topic's QoS profile as the startup line does: reliability and depth."""
    return f'{qos.reliability.name.lower()}, keep last {qos.depth}'


def model_text(serving: Serving, requested: Sequence[str], precision: str) -> str:
    """Describe the model that serves: file, contract, precision, provider, engine.

    The start of the node's startup line, after ``ready:``; ``requested`` is the
    ``providers`` parameter and ``precision`` the ``precision`` parameter.
    """
    segmenter, choice = serving.segmenter, serving.choice
    contract = segmenter.contract
    height, width = segmenter.input_size
    provenance = ', '.join(f'{k}={compact(v)}' for k, v in sorted(contract.provenance.items()))
    values = model_values(segmenter)
    engine = ''
    if segmenter.engine_dir is not None and segmenter.engine_cached is not None:
        engine = (f'\n  TensorRT engine: {values["trt_engine"]} in {segmenter.engine_dir}'
                  + (f'; parity vs CPU: {segmenter.parity}' if segmenter.parity else ''))
    return (
        f'model {segmenter.name} from {choice.path} (input {width}x{height}, '
        f'{contract.layout} {contract.color_order}, {contract.num_classes} classes, contract '
        f'v{contract.version}; provenance: {provenance or "none"})\n'
        f'  model precision: {choice.precision} ({choice.reason}; parameter precision '
        f'{precision})\n'
        f'  provider: {segmenter.active_provider} (requested {list(requested)}), '
        + (f'TensorRT precision {segmenter.precision}, '
           if segmenter.active_provider == TENSORRT else '')
        + f'threads {values["intra_op_threads"]}, IO binding {values["io_binding"]}; loaded in '
        f'{segmenter.load_seconds:.1f} s, warm-up run {segmenter.warmup_ms:.1f} ms'
        + (f'\n  provider fallback: {segmenter.fallback_reason}'
           if segmenter.fallback_reason else '') + engine)
