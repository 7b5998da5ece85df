"""Lower-precision copies of a float32 file: static int8 (and TensorRT's form) and float16.

INT8 settings, measured on this project's 2-core AVX-512 VNNI CPU with ONNX Runtime 1.31
(Linknet/MobileNetV2 and FPN/EfficientNet-B0 at 256x192, batch 1): QDQ format with uint8
activations and int8 per-channel weights, after ``quant_pre_process``, ran 2.3-2.8x faster
than float32 and cost 0.2 points of CamVid val mIoU on a Linknet trained for 6 epochs; int8
activations (S8S8) gained only 1.2-1.8x; the QOperator format was as fast as QDQ (QDQ is kept:
TensorRT reads it too); reduce_range brought nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
import tempfile
from typing import Any

import numpy as np

from fvt_segmentation.core.contract import ModelContract
from fvt_training.models.keras_onnx import INPUT_NAME
from fvt_training.onnx.model_file import ExportError, attach_contract, save_atomic
from fvt_training.onnx.rewrites import output_source

INT8_FORMATS = ('qdq', 'qoperator')


class FrameCalibrationReader:
    """Feeds quantization calibration with frames preprocessed exactly as the node does."""

    def __init__(self, frames: Iterator[np.ndarray], contract: ModelContract,
                 input_size: tuple[int, int], input_name: str = INPUT_NAME) -> None:
        self.frames = frames
        self.contract = contract
        self.input_size = input_size
        self.input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        """Return the next ``{input name: tensor}``, or None when the frames are used up."""
        from fvt_segmentation.core.frame_processing import preprocess_frame

        frame = next(self.frames, None)
        if frame is None:
            return None
        return {self.input_name: preprocess_frame(frame, 'RGB', self.input_size, self.contract)}


def int8_settings(int8_format: str = 'qdq') -> dict[str, Any]:
    """Return the quantization settings :func:`quantize_int8` applies (see the module doc)."""
    if int8_format not in INT8_FORMATS:
        raise ExportError(f'int8 format must be one of {list(INT8_FORMATS)}; got {int8_format!r}')
    return {'format': int8_format, 'activations': 'uint8', 'weights': 'int8',
            'per_channel': True, 'reduce_range': False, 'calibration': 'minmax',
            'float_ops': ['Softmax'], 'float_output_resize': True, 'pre_process': True,
            'symmetric': False}


def int8_trt_settings() -> dict[str, Any]:
    """Return the settings of the TensorRT int8 file: symmetric int8 QDQ.

    TensorRT's explicit quantization takes only symmetric scales (zero point 0) for
    activations and weights, int8 both; weights per output channel. The file carries
    ``fvt.quantization: int8_symmetric_qdq``, so the node sets ``trt_int8_enable``. Biases
    stay float: TensorRT folds them into its int8 convolutions itself, while an int32 bias
    DequantizeLinear is one more thing for its parser to refuse.
    """
    return {**int8_settings('qdq'), 'activations': 'int8', 'symmetric': True,
            'quantize_bias': False, 'target': 'tensorrt'}


def output_resize(graph: Any) -> str | None:
    """Return the name of a ``Resize`` whose output reaches the graph output unchanged.

    ONNX Runtime's uint8 Resize is slower than its float one, and a float output needs no
    dequantization of the full-size map, so int8 keeps this node (light_fpn's x4 upsampling
    of the class scores) in float.
    """
    node, _ = output_source(graph)
    return node.name if node is not None and node.op_type == 'Resize' else None


def quantize_int8(float_path: Path, out_path: Path, reader: FrameCalibrationReader,
                  contract: ModelContract, settings: Mapping[str, Any]) -> None:
    """Write a statically quantized copy of ``float_path`` carrying ``contract``.

    ``settings`` come from :func:`int8_settings`: the graph format, per-channel weights,
    reduce_range and the operator types left in float; activations are uint8 and weights
    int8, calibrated with MinMax on ``reader``'s frames after ``quant_pre_process``. An
    optional ``float_nodes`` lists node names to leave in float too (probes use it).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):
        def get_next(self) -> dict | None:
            return reader.get_next()

    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix='.tmp-int8-') as tmp:
        pre = Path(tmp) / 'pre.onnx'
        quantized = Path(tmp) / 'int8.onnx'
        # Symbolic shape inference needs sympy; the spatial size is fixed, ONNX's suffices.
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre))
        # Nodes are excluded by name: an unnamed Softmax would exclude every unnamed node.
        taken = {n.name for n in graph.graph.node}
        for i, node in enumerate(graph.graph.node):
            if not node.name:
                node.name = next(name for k in range(len(taken) + 1)
                                 if (name := f'{node.op_type}_{i}_{k}') not in taken)
                taken.add(node.name)
        onnx.save(graph, str(pre))
        float_nodes = [n.name for n in graph.graph.node if n.op_type in settings['float_ops']]
        resize = output_resize(graph.graph) if settings.get('float_output_resize') else None
        if resize:
            float_nodes.append(resize)
        named = set(settings.get('float_nodes', ()))
        missing = named - {n.name for n in graph.graph.node}
        if missing:
            raise ExportError(f'{float_path}: float_nodes names nodes the graph lacks: '
                              f'{sorted(missing)}')
        float_nodes.extend(sorted(named))
        quantize_static(
            str(pre), str(quantized), _Reader(),
            quant_format=(QuantFormat.QDQ if settings['format'] == 'qdq'
                          else QuantFormat.QOperator),
            per_channel=settings['per_channel'], reduce_range=settings['reduce_range'],
            activation_type=(QuantType.QInt8 if settings['activations'] == 'int8'
                             else QuantType.QUInt8),
            weight_type=QuantType.QInt8,
            nodes_to_exclude=float_nodes,
            extra_options={'ActivationSymmetric': settings.get('symmetric', False),
                           'WeightSymmetric': True,
                           'QuantizeBias': settings.get('quantize_bias', True)},
            # MinMax keeps only a min and max per tensor and frame, so memory stays small.
            # (CalibMaxIntermediateOutputs would not help: ONNX Runtime 1.31 drops each full
            # chunk without merging its ranges.)
            calibrate_method=CalibrationMethod.MinMax)
        proto = onnx.load(str(quantized))
        attach_contract(proto, contract)
        save_atomic(proto, out_path)


def convert_fp16(float_path: Path, out_path: Path, contract: ModelContract) -> None:
    """Write a float16 copy of ``float_path`` (float32 input and output) carrying ``contract``."""
    import warnings

    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ExportError('--fp16 needs the onnxconverter-common package '
                          '(pip install onnxconverter-common)') from None
    with warnings.catch_warnings():
        # One warning per weight below float16's range, which is flushed as intended.
        warnings.filterwarnings('ignore', message='the float32 number', category=UserWarning)
        proto = float16.convert_float_to_float16(onnx.load(str(float_path)),
                                                 keep_io_types=True)
    attach_contract(proto, contract)
    save_atomic(proto, out_path)
