"""Real files for the evaluate/export/compare tests: run folders, coded models, coded data.

* :func:`make_run` writes a run folder exactly as ``fvt-train train`` leaves it (config.yaml,
  best.weights.h5, metrics.json, state.json) for a tiny unet_like network, without training.
* :func:`make_class_coded_model` writes a contract-following ONNX file whose prediction for a
  pixel is ``round(red / CODE_STEP)``, so a test can paint the exact class map it wants.
* :func:`make_coded_prepared` writes a prepared folder whose images paint chosen predictions
  and whose labels hold chosen truths, so the confusion matrix is known by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from prepared_fixture import write_prepared

from fvt_segmentation.core.contract import CATEGORIES, ModelContract
from fvt_segmentation.core.metrics import summarize
from fvt_training.runs.config import load_config, write_config
from fvt_training.runs.run_files import BEST_WEIGHTS, CONFIG_FILE, METRICS_FILE, STATE_FILE

CODE_STEP = 30
"""Red value per class id in the coded images (class c is painted with red = 30 * c)."""

TINY_FILTERS = [8, 16]


def make_run(runs_dir: Path, prepared: Path, name: str = 'tiny', seed: int = 0,
             extra: tuple[str, ...] = ()) -> Path:
    """Write a finished-looking run folder for a tiny unet_like model and return it."""
    import tensorflow as tf

    from fvt_training.data.prepared import read_manifest
    from fvt_training.models.factories import build_model

    manifest = read_manifest(prepared)
    config = load_config(None, [
        f'name={name}', f'runs_dir={runs_dir}', f'data.prepared_dir={prepared}',
        'model.architecture=unet_like', f'model.filters={TINY_FILTERS}',
        f'model.input_size={list(manifest.height_width)}', f'seed={seed}', *extra])
    folder = Path(runs_dir) / name
    folder.mkdir(parents=True)
    write_config(config, folder / CONFIG_FILE, header=f'Resolved configuration of {name}.')
    tf.keras.utils.set_random_seed(seed)
    model = build_model(config)
    model.save_weights(str(folder / BEST_WEIGHTS))
    cm = np.diag(np.arange(1, len(CATEGORIES) + 1)) * 100
    cm[1, 2] = 50
    (folder / METRICS_FILE).write_text(json.dumps({
        'split': 'val', 'metrics': summarize(cm, CATEGORIES, 0), 'confusion_matrix': cm.tolist(),
        'epochs': 3, 'best_epoch': 2, 'training_time_s': 95.0,
        'params': int(model.count_params())}))
    (folder / STATE_FILE).write_text(json.dumps({'epoch': 3, 'finished': True,
                                                   'training_time_s': 95.0}))
    return folder


def make_class_coded_model(path: Path, size: tuple[int, int]) -> Path:
    """Write an ONNX model predicting class ``round(red / CODE_STEP)`` at every pixel.

    Scores are ``-(x_red - c * step)^2`` per class ``c`` (``x`` = pixel / 255, the default
    contract normalisation) followed by a softmax, so the closest code wins.
    """
    height, width = size
    num_classes = len(CATEGORIES)
    centers = (np.arange(num_classes) * CODE_STEP / 255.0).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array([0, 0, 0, 0], np.int64), 'starts'),
        numpy_helper.from_array(np.array([2**31, 2**31, 2**31, 1], np.int64), 'ends'),
        numpy_helper.from_array(centers, 'centers'),
        numpy_helper.from_array(np.array(400.0, np.float32), 'sharpness'),
    ]
    nodes = [
        helper.make_node('Slice', ['image', 'starts', 'ends'], ['red']),
        helper.make_node('Sub', ['red', 'centers'], ['delta']),
        helper.make_node('Mul', ['delta', 'delta'], ['square']),
        helper.make_node('Mul', ['square', 'sharpness'], ['scaled']),
        helper.make_node('Neg', ['scaled'], ['logits']),
        helper.make_node('Softmax', ['logits'], ['probabilities'], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, 'class_coded',
        [helper.make_tensor_value_info('image', TensorProto.FLOAT, ['N', height, width, 3])],
        [helper.make_tensor_value_info('probabilities', TensorProto.FLOAT,
                                       ['N', height, width, num_classes])],
        inits)
    model = helper.make_model(graph, producer_name='fvt-tests',
                              opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 9
    contract = ModelContract(provenance={'architecture': 'class_coded', 'params': 0,
                                         'gflops': 0.0})
    helper.set_model_props(model, contract.to_metadata())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def coded_image(prediction: np.ndarray) -> np.ndarray:
    """Return the RGB image that makes the coded model predict ``prediction``."""
    image = np.zeros((*prediction.shape, 3), np.uint8)
    image[..., 0] = prediction.astype(np.uint8) * CODE_STEP
    image[..., 1] = 90  # green and blue are ignored by the model
    return image


def make_coded_prepared(root: Path, samples: dict[str, list[tuple[np.ndarray, np.ndarray]]]
                        ) -> Path:
    """Write a prepared folder from ``{split: [(prediction, truth), ...]}`` class maps."""
    return write_prepared(root, {
        split: {f'{split}_{i:02d}': (coded_image(prediction), truth.astype(np.uint8))
                for i, (prediction, truth) in enumerate(pairs)}
        for split, pairs in samples.items()}, 'coded', 'hand-made')
