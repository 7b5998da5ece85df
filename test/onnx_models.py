"""Tiny contract-following ONNX models built with onnx.helper, for tests and benchmarks.

Scores are an affine map of the normalised pixel, ``scores = x @ W + b`` per pixel, so a test
can compute the exact expected class map with numpy (:func:`expected_scores`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fvt_segmentation.core.contract import ModelContract, Normalization

RNG_SEED = 7


def default_weights(num_classes: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Fixed ``(W [3, C], b [C])`` that give every class a region of colour space."""
    rng = np.random.default_rng(RNG_SEED)
    return (rng.normal(size=(3, num_classes)).astype(np.float32),
            rng.normal(scale=0.1, size=num_classes).astype(np.float32))


def expected_scores(x: np.ndarray, weights: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Scores of the tiny model for an NHWC float input (before any softmax)."""
    w, b = weights
    return x @ w + b


def build_model(path: Path, size: tuple[int, int] = (32, 64), layout: str = 'NHWC',
                output: str = 'probabilities', num_classes: int = 8,
                contract: ModelContract | None = None,
                metadata: dict[str, str] | None = None, drop_keys: tuple[str, ...] = (),
                slow_repeats: int = 0, dynamic_batch: bool = True,
                opset: int = 17, fails_at_run: bool = False,
                fails_on_bright: bool = False) -> Path:
    """Write a tiny segmentation model to ``path`` and return ``path``.

    ``metadata`` entries override the contract's; ``drop_keys`` removes keys (for contract
    error tests). ``slow_repeats`` > 0 adds that many 3x3 convolutions of 32 channels on a
    side branch whose result is multiplied by zero and added, which makes inference slow
    without changing the scores (ONNX Runtime cannot fold it away: it depends on the input).
    ``fails_at_run`` adds a Gather of the input with an index past its width: the file loads
    and follows the contract, and every run fails (as a car's GPU that cannot allocate).
    ``fails_on_bright`` gathers at ``100 * max(normalised pixel)`` instead: the black warm-up
    frame passes (index 0), a bright frame fails (with the default normalisation).
    """
    contract = contract or ModelContract(layout=layout, output=output,
                                         normalization=Normalization())
    h, w = size
    batch: Any = 'N' if dynamic_batch else 1
    in_shape = [batch, h, w, 3] if contract.layout == 'NHWC' else [batch, 3, h, w]
    out_shape = ([batch, h, w, num_classes] if contract.layout == 'NHWC'
                 else [batch, num_classes, h, w])
    weights, bias = default_weights(num_classes)
    inits = [numpy_helper.from_array(weights, 'W'), numpy_helper.from_array(bias, 'B')]
    nodes = []
    x = 'image'
    if contract.layout == 'NCHW':
        nodes.append(helper.make_node('Transpose', [x], ['x_nhwc'], perm=[0, 2, 3, 1]))
        x = 'x_nhwc'
    nodes += [helper.make_node('MatMul', [x, 'W'], ['mm']),
              helper.make_node('Add', ['mm', 'B'], ['scores_nhwc'])]
    scores = 'scores_nhwc'
    if slow_repeats:
        rng = np.random.default_rng(1)
        inits.append(numpy_helper.from_array(
            rng.normal(size=(32, 3, 3, 3)).astype(np.float32), 'K0'))
        inits.append(numpy_helper.from_array(
            rng.normal(scale=0.05, size=(32, 32, 3, 3)).astype(np.float32), 'K'))
        inits.append(numpy_helper.from_array(np.zeros(1, np.float32), 'ZERO'))
        src = 'image' if contract.layout == 'NCHW' else 'slow_in'
        if contract.layout == 'NHWC':
            nodes.append(helper.make_node('Transpose', ['image'], ['slow_in'], perm=[0, 3, 1, 2]))
        nodes.append(helper.make_node('Conv', [src, 'K0'], ['slow0'], pads=[1, 1, 1, 1]))
        for i in range(slow_repeats):
            nodes.append(helper.make_node('Conv', [f'slow{i}', 'K'], [f'slow{i + 1}'],
                                          pads=[1, 1, 1, 1]))
        nodes += [
            helper.make_node('ReduceMean', [f'slow{slow_repeats}'], ['slow_mean'], keepdims=0),
            helper.make_node('Mul', ['slow_mean', 'ZERO'], ['slow_zero']),
            helper.make_node('Add', [scores, 'slow_zero'], ['scores_slow']),
        ]
        scores = 'scores_slow'
    if fails_at_run:
        inits += [numpy_helper.from_array(np.array([w + 100], np.int64), 'PAST_END'),
                  numpy_helper.from_array(np.zeros(1, np.float32), 'NOTHING')]
        nodes += [
            helper.make_node('Gather', ['image', 'PAST_END'], ['gathered'], axis=2),
            helper.make_node('ReduceMean', ['gathered'], ['gathered_mean'], keepdims=0),
            helper.make_node('Mul', ['gathered_mean', 'NOTHING'], ['gathered_zero']),
            helper.make_node('Add', [scores, 'gathered_zero'], ['scores_gathered']),
        ]
        scores = 'scores_gathered'
    if fails_on_bright:
        inits += [numpy_helper.from_array(np.array(100.0, np.float32), 'HUNDRED'),
                  numpy_helper.from_array(np.zeros(1, np.float32), 'NOTHING_BRIGHT')]
        nodes += [
            helper.make_node('ReduceMax', ['image'], ['brightest'], keepdims=0),
            helper.make_node('Mul', ['brightest', 'HUNDRED'], ['index_float']),
            helper.make_node('Cast', ['index_float'], ['index'], to=TensorProto.INT64),
            helper.make_node('Gather', ['image', 'index'], ['bright_gathered'], axis=2),
            helper.make_node('ReduceMean', ['bright_gathered'], ['bright_mean'], keepdims=0),
            helper.make_node('Mul', ['bright_mean', 'NOTHING_BRIGHT'], ['bright_zero']),
            helper.make_node('Add', [scores, 'bright_zero'], ['scores_bright']),
        ]
        scores = 'scores_bright'
    if contract.output == 'probabilities':
        nodes.append(helper.make_node('Softmax', [scores], ['probs'], axis=-1))
        scores = 'probs'
    if contract.layout == 'NCHW':
        nodes.append(helper.make_node('Transpose', [scores], ['scores'], perm=[0, 3, 1, 2]))
    else:
        nodes.append(helper.make_node('Identity', [scores], ['scores']))
    graph = helper.make_graph(
        nodes, 'tiny_segmenter',
        [helper.make_tensor_value_info('image', TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info('scores', TensorProto.FLOAT, out_shape)],
        inits)
    model = helper.make_model(graph, producer_name='fvt-tests',
                              opset_imports=[helper.make_opsetid('', opset)])
    model.ir_version = 9
    meta = contract.to_metadata()
    meta.update(metadata or {})
    for key in drop_keys:
        meta.pop(key, None)
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def to_v2(v1_path: Path, out: Path, uint8_input: bool = False,
          confidence: bool = True) -> Path:
    """Write a contract version 2 copy of a version 1 file, as ``fvt-train export`` does.

    Skips the calling test where the training package is not installed (the Jazzy leg of CI
    installs the node package only; the Kilted leg runs these tests); where it is installed,
    an import error inside it fails the test.
    """
    if importlib.util.find_spec('fvt_training') is None:
        import pytest

        pytest.skip('contract version 2 files are written by the training package, not '
                    'installed here (the Kilted leg of CI runs this test)')
    from fvt_training.onnx import contract_v2

    contract_v2.write_v2_copy(v1_path, out, uint8_input, confidence)
    onnx.checker.check_model(str(out))
    return Path(out)
