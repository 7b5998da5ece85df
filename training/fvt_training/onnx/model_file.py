"""An ONNX file as ``fvt-train`` writes it: contract metadata, producer and version, atomic save.

Export and adopt both write their files through here; :class:`ExportError` is the error of an
export whose file fails a check.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fvt_segmentation.core.contract import ModelContract
from fvt_training.common.files import write_bytes_atomic

PRODUCER = 'fvt-train'


class ExportError(RuntimeError):
    """An export that failed a check; the message holds the measured numbers."""


def attach_contract(proto: Any, contract: ModelContract, doc: str | None = None) -> None:
    """Write the contract metadata, producer, model version and doc string into ``proto``.

    ``doc`` is the one-sentence doc string; by default, the one a training run's contract
    gives (:func:`fvt_training.runs.run_contract.doc_string`).
    """
    import onnx

    from fvt_training import __version__

    onnx.helper.set_model_props(proto, contract.to_metadata())
    proto.producer_name = PRODUCER
    proto.producer_version = __version__
    created = str(contract.provenance.get('created', ''))
    try:
        stamp = datetime.fromisoformat(created)
    except ValueError:
        stamp = datetime.now(timezone.utc)
    # The export time as the integer YYYYMMDDHHMM: it grows with every export.
    proto.model_version = int(stamp.strftime('%Y%m%d%H%M'))
    if doc is None:
        from fvt_training.runs.run_contract import doc_string

        doc = doc_string(contract)
    proto.doc_string = doc


def save_atomic(proto: Any, path: Path) -> None:
    """Save an ONNX model through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, proto.SerializeToString())
