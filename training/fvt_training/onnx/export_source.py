"""What an export starts from: a training run's Keras model, or an earlier export's file.

Either way the export gets the float graph before the rewrites, the parity reference (Keras,
or the file itself), the prepared data and a maker of the contract each written file carries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
import os
from pathlib import Path
from typing import Any

from fvt_segmentation.core.contract import ModelContract
from fvt_training.models.keras_onnx import OPSET, keras_to_onnx
from fvt_training.onnx.contract_v2 import to_contract_v1
from fvt_training.onnx.model_file import ExportError
from fvt_training.onnx.parity import ProbabilitiesOf


@dataclass(frozen=True)
class ExportSource:
    """What an export starts from: a Keras run, or the float32 file of an earlier export."""

    name: str
    path: Path
    proto: Any  # the float graph before the rewrites
    reference: Any  # ``predict_on_batch(x)`` -> probabilities: what parity compares with
    reference_contract: ModelContract  # how frames are fed to ``reference``
    manifest: Any
    val_split: str
    train_split: str
    input_size: tuple[int, int]
    complexity: dict[str, Any]  # params and GFLOPs of the float graph
    output: str  # what ``proto`` outputs: probabilities or logits
    make_contract: Callable[[Mapping[str, Any], str], ModelContract]  # (provenance, output)
    run_dir: Path | None  # the run folder, for ``export.json`` (None for a file)


def keras_source(run_dir: Path, weights: str | None = None,
                 data: str | os.PathLike | None = None) -> ExportSource:
    """Load a run's Keras model and convert it with tf2onnx.

    ``weights`` is ``best`` or ``last``; None takes the run's ``train.select``.
    """
    from fvt_training.data.prepared import read_manifest
    from fvt_training.evaluation import flops
    from fvt_training.runs.run_contract import run_contract
    from fvt_training.runs.train import load_run, run_weights

    weights = run_weights(run_dir, weights)
    config, model = load_run(run_dir, weights)
    manifest = read_manifest(data or config['data']['prepared_dir'])
    input_size = tuple(int(v) for v in config['model']['input_size'])
    print(f'converting {run_dir.name} ({weights} weights) with tf2onnx, opset {OPSET}')
    proto = keras_to_onnx(model, input_size)
    complexity = {**flops.describe(proto), 'params': int(model.count_params())}

    def make_contract(extra: Mapping[str, Any], output: str) -> ModelContract:
        return run_contract(run_dir, config, manifest.folder,
                            {'weights': weights, **complexity, **extra}, output=output)

    return ExportSource(
        name=run_dir.name, path=run_dir, proto=proto, reference=model,
        reference_contract=make_contract({}, 'probabilities'), manifest=manifest,
        val_split=config['data']['val_split'], train_split=config['data']['train_split'],
        input_size=input_size, complexity=complexity, output='probabilities',
        make_contract=make_contract, run_dir=run_dir)


def onnx_source(path: Path, data: str | os.PathLike | None) -> ExportSource:
    """Start from a float32 file written by an earlier export (to apply today's rewrites).

    The file is the parity reference; its contract and provenance carry over, with
    ``reexported_from`` naming the file (and its SHA-256) it came from. A version 2 file is
    taken back to its version 1 graph first (:func:`to_contract_v1`); ``--contract 2`` writes
    version 2 again. Parity and scores use the ``val`` split of ``data``, int8 calibration its
    ``train`` split.
    """
    import onnx

    from fvt_segmentation.core.files import file_sha256
    from fvt_segmentation.core.inference import load_segmenter
    from fvt_training.data.prepared import read_manifest
    from fvt_training.evaluation import flops

    if data is None:
        raise ExportError(f'{path}: an ONNX file does not name its data folder; pass --data '
                          'PREPARED_DIR (the folder it was trained on, for parity and scores)')
    segmenter = load_segmenter(path, providers=['cpu'])
    provenance = dict(segmenter.contract.provenance)
    precision = provenance.get('precision', 'float32')
    if precision != 'float32':
        raise ExportError(f'{path}: re-export needs a float32 file; this one is {precision}')
    if segmenter.contract.layout != 'NHWC':
        raise ExportError(f'{path}: re-export takes what fvt-train export writes (NHWC); this '
                          f'file is {segmenter.contract.layout}')
    proto = onnx.load(str(path))
    contract = to_contract_v1(proto, segmenter.contract, path)
    complexity = flops.describe(proto)
    complexity.update({k: provenance[k] for k in ('params', 'gflops') if k in provenance})
    origin = {'file': path.name, 'sha256': file_sha256(path),
              'created': provenance.get('created')}

    def make_contract(extra: Mapping[str, Any], output: str) -> ModelContract:
        created = datetime.now(timezone.utc).isoformat(timespec='seconds')
        return replace(contract, output=output, provenance={
            **provenance, **extra, 'created': created, 'reexported_from': origin})

    return ExportSource(
        name=path.stem, path=path, proto=proto, reference=ProbabilitiesOf(segmenter),
        reference_contract=segmenter.contract, manifest=read_manifest(data), val_split='val',
        train_split='train', input_size=segmenter.input_size, complexity=complexity,
        output=contract.output, make_contract=make_contract, run_dir=None)
