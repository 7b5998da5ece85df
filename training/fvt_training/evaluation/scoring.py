"""The models evaluation scores, and scoring them on a prepared split the node's way.

A training run's Keras model (:class:`KerasRunModel`, fed with the contract its export would
carry) and an ONNX file (:class:`OnnxFileModel`, loaded through the node's own loader) offer
the same ``predict``. Frames are preprocessed by the node's
:func:`~fvt_segmentation.core.frame_processing.preprocess_frame`, scores become class maps with the
node's post-processing, and a split's score is one dataset-level confusion matrix
(:mod:`fvt_segmentation.core.metrics`). Export and adopt score their files here too.
"""

from __future__ import annotations

from collections.abc import Sequence
import os
from pathlib import Path
from typing import Any

import numpy as np

from fvt_segmentation.core.contract import CATEGORIES, ModelContract
from fvt_segmentation.core.conversions import resize_nearest
from fvt_segmentation.core.frame_processing import preprocess_frame, scores_to_classes
from fvt_segmentation.core.metrics import confusion_matrix
from fvt_training.runs.run_files import EVAL_PREFIX

DEFAULT_PROVIDERS = ('cpu',)
QUANTIZED_OPS = frozenset({'QuantizeLinear', 'DequantizeLinear', 'QLinearConv', 'ConvInteger',
                           'MatMulInteger', 'QLinearMatMul', 'DynamicQuantizeLinear'})


class EvaluationError(RuntimeError):
    """A model or data set that cannot be evaluated; the message says what and why."""


class KerasRunModel:
    """A training run's Keras model, fed exactly as its exported ONNX file would be."""

    kind = 'keras'

    def __init__(self, run_dir: str | os.PathLike, weights: str | None = None,
                 prepared_dir: str | os.PathLike | None = None) -> None:
        import tensorflow as tf

        from fvt_training.runs.run_contract import run_contract
        from fvt_training.runs.train import load_run, run_weights

        self.source = Path(run_dir)
        self.weights = run_weights(self.source, weights)
        self.config, self.model = load_run(self.source, self.weights)
        self.contract: ModelContract = run_contract(self.source, self.config, prepared_dir,
                                                    {'weights': self.weights})
        self.input_size: tuple[int, int] = tuple(self.config['model']['input_size'])
        self.name = self.source.name
        self.provider = 'tensorflow'
        self.max_batch: int | None = None
        # One compiled graph for every batch size: timings measure the network, not the
        # per-call set-up of predict_on_batch.
        self._forward = tf.function(
            lambda x: self.model(x, training=False),
            input_signature=[tf.TensorSpec((None, *self.input_size, 3), tf.float32)])

    @property
    def prepared_dir(self) -> str:
        """The prepared data folder the run was trained on."""
        return self.config['data']['prepared_dir']

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Return the probabilities ``[B, H, W, C]`` for a preprocessed batch."""
        return self._forward(batch).numpy()

    def describe(self) -> dict[str, Any]:
        """Return Keras' parameter count and the GFLOPs of the graph export would write."""
        from fvt_training.evaluation import flops
        from fvt_training.models.keras_onnx import keras_to_onnx

        return {'params': int(self.model.count_params()),
                'gflops': flops.gflops(keras_to_onnx(self.model, self.input_size))}

    def report_paths(self, split: str) -> tuple[Path, Path]:
        """Return the default ``(JSON report, figures folder)``: inside the run folder."""
        name = f'{EVAL_PREFIX}{split}'
        return self.source / f'{name}.json', self.source / name


class OnnxFileModel:
    """An exported ONNX file loaded through the node's own loader."""

    kind = 'onnx'
    weights = None  # a file holds one set of weights, not a run's best and last

    def __init__(self, path: str | os.PathLike,
                 providers: Sequence[str] = DEFAULT_PROVIDERS) -> None:
        from fvt_segmentation.core.inference import load_segmenter

        self.source = Path(path)
        # Several sessions share this process (export times float32 and int8 in turns);
        # spinning worker threads of one would steal the cores from the next one's run
        # (training/scripts/time_sessions.py: float32 45 ms in turns with int8, 19 ms without
        # spinning).
        self.segmenter = load_segmenter(self.source, providers=providers,
                                        intra_op_spinning=False)
        self.contract = self.segmenter.contract
        self.input_size = self.segmenter.input_size
        self.name = self.source.stem
        self.provider = self.segmenter.active_provider
        batch = self.segmenter.session.get_inputs()[0].shape[0]
        self.max_batch = batch if isinstance(batch, int) else None

    @property
    def prepared_dir(self) -> None:
        """An ONNX file does not know its data folder: pass ``--data``."""
        return None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Return the raw scores for a preprocessed batch."""
        return self.segmenter.infer(batch)

    def describe(self) -> dict[str, Any]:
        """Return parameters and GFLOPs: those export stored in the provenance, if any.

        ``fvt-train export`` stores Keras' parameter count and the float graph's GFLOPs in
        every variant it writes (a quantized graph does the float graph's work). Other files
        are counted on their graph; a quantized one without figures gives None.
        """
        import onnx

        from fvt_training.evaluation import flops

        prov = self.contract.provenance
        if 'params' in prov and 'gflops' in prov:
            return {'params': prov['params'], 'gflops': prov['gflops']}
        graph = onnx.load(str(self.source))
        if any(node.op_type in QUANTIZED_OPS for node in graph.graph.node):
            return {'params': None, 'gflops': None}
        return flops.describe(graph)

    def report_paths(self, split: str) -> tuple[Path, Path]:
        """Return the default ``(JSON report, figures folder)``: next to the model file."""
        name = f'{self.source.stem}.{EVAL_PREFIX}{split}'
        return self.source.with_name(f'{name}.json'), self.source.with_name(name)


def open_model(source: str | os.PathLike, providers: Sequence[str] = DEFAULT_PROVIDERS,
               weights: str | None = None, prepared_dir: str | os.PathLike | None = None
               ) -> KerasRunModel | OnnxFileModel:
    """Open a run folder (Keras; ``weights`` None: its ``train.select``) or an ``.onnx`` file."""
    path = Path(source)
    if path.is_dir():
        return KerasRunModel(path, weights, prepared_dir)
    if path.is_file() and path.suffix == '.onnx':
        return OnnxFileModel(path, providers)
    raise EvaluationError(f'{path}: expected a run folder (runs/<name>, holding config.yaml '
                          'and weights) or an exported .onnx file')


def preprocess_batch(model: KerasRunModel | OnnxFileModel,
                     images: Sequence[np.ndarray]) -> np.ndarray:
    """Stack RGB uint8 images into one input batch, preprocessed as the node does it."""
    return np.concatenate([preprocess_frame(image, 'RGB', model.input_size, model.contract)
                           for image in images])


def confusion_over_split(model: KerasRunModel | OnnxFileModel, manifest: Any, split: str,
                         batch_size: int = 8, limit: int | None = None,
                         keep: Sequence[str] = ()) -> tuple[np.ndarray, dict[str, tuple]]:
    """Run ``model`` over ``split`` and return its confusion matrix (rows = truth).

    Class maps are resized (nearest) to the label size when the model's output is smaller.
    ``keep`` lists sample ids whose ``(image, truth, prediction)`` are returned for figures.
    """
    from tqdm import tqdm

    from fvt_training.data.prepared import load_pair

    if tuple(model.contract.categories) != CATEGORIES:
        raise EvaluationError(f'{model.source}: the model predicts categories '
                              f'{list(model.contract.categories)}; the data uses '
                              f'{list(CATEGORIES)}')
    ids = manifest.ids(split)[:limit]
    if not ids:
        raise EvaluationError(f'{manifest.folder}: split {split!r} has no samples')
    if model.max_batch is not None:
        batch_size = min(batch_size, model.max_batch)
    num_classes = len(CATEGORIES)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    kept: dict[str, tuple] = {}
    wanted = set(keep)
    with tqdm(total=len(ids), desc=f'evaluate {model.name} on {split}', unit='img') as bar:
        for start in range(0, len(ids), batch_size):
            batch_ids = ids[start:start + batch_size]
            pairs = [load_pair(manifest, split, sample_id) for sample_id in batch_ids]
            scores = model.predict(preprocess_batch(model, [image for image, _ in pairs]))
            for sample_id, (image, truth), score in zip(batch_ids, pairs, scores, strict=True):
                classes, _ = scores_to_classes(score, model.contract.layout,
                                               model.contract.output)
                classes = resize_nearest(classes, truth.shape)
                cm += confusion_matrix(truth, classes, num_classes)
                if sample_id in wanted:
                    kept[sample_id] = (image, truth, classes)
            bar.update(len(batch_ids))
    return cm, kept


def time_inference(model: KerasRunModel | OnnxFileModel, images: Sequence[np.ndarray],
                   runs: int, warmup: int, batch: int) -> dict[str, dict]:
    """Time the network alone (preprocessing excluded) at batch 1 and at ``batch``."""
    from fvt_training.evaluation.latency import time_calls

    single = preprocess_batch(model, images[:1])
    timings = {'batch_1': time_calls(lambda: model.predict(single), runs, warmup, 1)}
    if batch > 1 and model.max_batch is None:
        many = preprocess_batch(model, [images[i % len(images)] for i in range(batch)])
        timings[f'batch_{batch}'] = time_calls(lambda: model.predict(many), runs, warmup,
                                               batch)
    return timings


def pick_samples(ids: Sequence[str], count: int) -> list[str]:
    """Return ``count`` ids spread evenly over ``ids`` (all of them if there are fewer)."""
    if count <= 0 or not ids:
        return []
    positions = np.linspace(0, len(ids) - 1, min(count, len(ids))).round().astype(int)
    return [ids[i] for i in dict.fromkeys(positions.tolist())]
