"""The model contract a training run exports: normalisation, provenance, licence sentence.

Imports TensorFlow (through :mod:`fvt_training.models.factories`).

Evaluation of a Keras run preprocesses frames with exactly this contract, and export writes
it into the ONNX file, so a run and its exported file are always fed the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
import os
from pathlib import Path
from typing import Any

from fvt_segmentation.core.contract import ModelContract
from fvt_segmentation.core.sizes import format_size
from fvt_training.data.prepared import DataError, read_manifest
from fvt_training.models import efficientnet_lite
from fvt_training.models.factories import model_normalization, pretrained_encoder
from fvt_training.runs.run_files import COMMAND_FILE, CONFIG_FILE, METRICS_FILE, read_json

SUMMARY_KEYS = ('miou', 'miou_all', 'dice', 'pixel_accuracy', 'iou')


def val_metrics(run_dir: str | os.PathLike, weights: str = 'best') -> dict[str, Any]:
    """Return the validation scores of ``metrics.json`` for the ``best`` or ``last`` weights.

    The headline keys only; {} if the run has none (or, for ``last``, predates them).
    """
    payload = read_json(Path(run_dir) / METRICS_FILE) or {}
    if weights == 'last':
        payload = {**payload, 'metrics': payload.get('last_epoch', {}).get('metrics', {})}
    scores = payload.get('metrics', {})
    summary = {k: scores[k] for k in SUMMARY_KEYS if k in scores}
    if summary and 'split' in payload:
        summary['split'] = payload['split']
    return summary


def dataset_info(prepared_dir: str | os.PathLike | None) -> tuple[str, str]:
    """Return ``(dataset name, licence text)`` from a prepared folder's manifest.

    Falls back to ``('unknown', 'unknown')`` when the folder is not there (an export may run
    where the training data is not).
    """
    if prepared_dir is None:
        return 'unknown', 'unknown'
    try:
        manifest = read_manifest(prepared_dir)
    except DataError:
        return 'unknown', 'unknown'
    return manifest.dataset, manifest.licence


def run_contract(run_dir: str | os.PathLike, config: Mapping[str, Any],
                 prepared_dir: str | os.PathLike | None = None,
                 extra_provenance: Mapping[str, Any] | None = None,
                 output: str = 'probabilities') -> ModelContract:
    """Return the contract ``fvt-train export`` writes for the run in ``run_dir``.

    ``config`` is the run's resolved configuration; ``prepared_dir`` (default: the config's
    ``data.prepared_dir``) names the dataset and its licence in the provenance; ``output``
    is what the file outputs (``probabilities`` or ``logits``). The metrics are those of the
    weights ``extra_provenance['weights']`` names (``best`` when it names none).
    """
    run_dir = Path(run_dir)
    normalization, color_order = model_normalization(config)
    spec = config['model']
    dataset, licence = dataset_info(prepared_dir or config['data']['prepared_dir'])
    provenance: dict[str, Any] = {
        'dataset': dataset,
        'licence': licence,
        'architecture': spec['architecture'],
        'backbone': None if spec['architecture'] == 'unet_like' else spec['backbone'],
        'input_size': [int(v) for v in spec['input_size']],
        'metrics': val_metrics(run_dir, (extra_provenance or {}).get('weights', 'best')),
        'created': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'run': run_dir.name,
        'config_file': str(run_dir / CONFIG_FILE),
        'training_command': training_command(run_dir),
    }
    weights = pretrained_encoder(spec.get('encoder_weights'))
    if spec['architecture'] == 'light_fpn' and weights is not None:
        provenance['encoder_weights'] = efficientnet_lite.weights_provenance(
            spec['backbone'], None if weights == 'imagenet' else weights)
    provenance.update(extra_provenance or {})
    return ModelContract(layout='NHWC', color_order=color_order, normalization=normalization,
                         output=output, ignore_index=0, provenance=provenance)


def training_command(run_dir: Path) -> str:
    """Return the command line(s) that trained the run, or one that reproduces its config."""
    recorded = run_dir / COMMAND_FILE
    if recorded.is_file():
        return ' && '.join(line for line in recorded.read_text().splitlines() if line)
    return f'fvt-train train {run_dir / CONFIG_FILE}'


def doc_string(contract: ModelContract) -> str:
    """Return one human sentence about the model and its licence terms (ONNX doc_string)."""
    prov = contract.provenance
    model = '/'.join(str(prov[k]) for k in ('architecture', 'backbone') if prov.get(k))
    height, width = prov.get('input_size') or ('', '')
    size = format_size(width, height) if height else ''
    licence = str(prov.get('licence', 'unknown'))
    terms = licence
    if 'BY-NC' in licence and 'non-commercial' not in licence.lower():
        terms = f'{licence}: research and non-commercial use only'
    encoder = prov.get('encoder_weights') or {}
    if encoder.get('licence'):
        notice = f': {encoder["notice"]}' if encoder.get('notice') else ''
        terms += (f'; encoder initialised with {encoder.get("source", "pretrained")} weights '
                  f'({encoder["licence"]}{notice})')
    return (f'{model or "segmentation"} network ({size} input) labelling each pixel with one '
            f'of {contract.num_classes} categories ({", ".join(contract.categories)}), trained '
            f'on {prov.get("dataset", "unknown")} in run {prov.get("run", "?")}; licence: '
            f'{terms}.')
