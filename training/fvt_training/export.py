"""``fvt-train export``: a training run -> one contract-following ONNX file (plus variants).

The float32 file is converted with tf2onnx, carries the model contract in its metadata and
is loaded back through the node's own loader, whose output must match Keras on real frames
of the data set (max absolute probability difference <= 1e-3 and argmax agreement >= 99.9 %
of pixels). A file that fails never takes the output name: it is renamed ``*.failed`` and the
command exits non-zero with the measured numbers. ``--int8`` adds a statically quantized
file (calibrated on training frames), ``--fp16`` a float16 one (float32 input and output);
each is scored on the validation split against the float32 file. Every file is written to a
temporary name and renamed into place.

INT8 settings, measured on this project's 2-core AVX-512 VNNI CPU with ONNX Runtime 1.31
(Linknet/MobileNetV2 and FPN/EfficientNet-B0 at 192x256, batch 1): QDQ format with uint8
activations and int8 per-channel weights, after ``quant_pre_process``, ran 2.3-2.8x faster
than float32 and cost 0.2 points of CamVid val mIoU on a Linknet trained for 6 epochs; int8
activations (S8S8) gained only 1.2-1.8x; the QOperator format was as fast as QDQ (QDQ is kept:
TensorRT reads it too); reduce_range brought nothing.

Before anything is written, the graph goes through :mod:`fvt_training.onnx_rewrites`: exact
rewrites of what tf2onnx writes in a form ONNX Runtime runs slowly (stride-1 ConvTranspose ->
Conv, nearest Resize -> its asymmetric equivalent), and the final softmax is dropped, so the
file outputs logits (``fvt.output: logits``; the parity check compares Keras' probabilities
with the softmax of those logits).

``RUN`` may also be a float32 ``.onnx`` file of an earlier export, contract version 1 or 2
(with ``--data``): it gets today's rewrites and variants without its Keras run, and the file
itself is the parity reference. Its contract and provenance carry over, plus
``reexported_from`` (file, SHA-256).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
import os
from pathlib import Path
import tempfile
from typing import Any

import numpy as np

from fvt_segmentation.core.contract import CONTRACT_VERSION, MIN_ARGMAX_AGREEMENT, ModelContract
from fvt_training.arg_types import non_negative_int, positive_int
from fvt_training.keras_onnx import INPUT_NAME, OPSET, keras_to_onnx, rename_output
from fvt_training.onnx_rewrites import (
    consumers,
    output_source,
    simplify_for_cpu,
    strip_output_softmax,
)
from fvt_training.run_files import summary_text

LOGITS_NAME = 'logits'
PRODUCER = 'fvt-train'
MAX_ABS_DIFF = 1e-3
# uint8 steps: float32 sums in another order may round an x.5 the other way.
CONFIDENCE_TOLERANCE = 1
INT8_FORMATS = ('qdq', 'qoperator')
INT8_TARGET_MIOU_DROP = 0.01


class ExportError(RuntimeError):
    """An export that failed a check; the message holds the measured numbers."""


def attach_contract(proto: Any, contract: ModelContract, doc: str | None = None) -> None:
    """Write the contract metadata, producer, model version and doc string into ``proto``.

    ``doc`` is the one-sentence doc string; by default, the one a training run's contract
    gives (:func:`fvt_training.run_contract.doc_string`).
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
        from fvt_training.run_contract import doc_string

        doc = doc_string(contract)
    proto.doc_string = doc


def save_atomic(proto: Any, path: Path) -> None:
    """Save an ONNX model through a temporary file in the same folder and a rename."""
    from fvt_training.prepared import write_bytes_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, proto.SerializeToString())


def softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Return the numerically stable softmax of ``scores`` along ``axis``."""
    shifted = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def score_agreement(pairs: Iterable[tuple[np.ndarray, np.ndarray]],
                    axis: int) -> tuple[float, float]:
    """Compare ``(got, expected)`` score arrays of equal shape, classes on ``axis``.

    Returns the largest absolute difference over all pairs and the fraction of positions
    (all axes but ``axis``) whose argmax over the classes agrees.
    """
    worst, agree, total = 0.0, 0, 0
    for got, expected in pairs:
        worst = max(worst, float(np.abs(got - expected).max()))
        agree += int((got.argmax(axis) == expected.argmax(axis)).sum())
        total += got.size // got.shape[axis]
    return worst, agree / total


def check_parity(reference: Any, reference_contract: ModelContract, segmenter: Any,
                 frames: Sequence[np.ndarray]) -> dict[str, Any]:
    """Compare a reference (Keras, or the file re-exported) and ONNX Runtime on RGB frames.

    Each is fed by its own contract: the reference by the run's (or its file's), ONNX Runtime
    by the one read back from the new file, so a wrong normalisation in the metadata shows up
    here too. Returns the largest absolute probability difference, the fraction of pixels
    whose argmax agrees and ``passed``.
    """
    from fvt_segmentation.core.frame_processing import preprocess_frame

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for frame in frames:
            expected = np.asarray(reference.predict_on_batch(
                preprocess_frame(frame, 'RGB', segmenter.input_size, reference_contract)))
            got = segmenter.infer(segmenter.preprocess(frame, 'RGB'))
            if segmenter.contract.output == 'logits':
                got = softmax(got, axis=-1)
            if got.shape != expected.shape:
                raise ExportError(f'{segmenter.model_path}: ONNX output shape {got.shape} '
                                  f'differs from the reference {expected.shape}')
            yield got, expected

    worst, agreement = score_agreement(pairs(), axis=-1)
    return {'frames': len(frames), 'max_abs_diff': worst, 'argmax_agreement': agreement,
            'max_abs_diff_limit': MAX_ABS_DIFF, 'argmax_agreement_limit': MIN_ARGMAX_AGREEMENT,
            'passed': worst <= MAX_ABS_DIFF and agreement >= MIN_ARGMAX_AGREEMENT}


class FrameCalibrationReader:
    """Feeds quantization calibration with frames preprocessed exactly as the node does."""

    def __init__(self, frames: Iterator[np.ndarray], contract: ModelContract,
                 size: tuple[int, int], input_name: str = INPUT_NAME) -> None:
        self.frames = frames
        self.contract = contract
        self.size = size
        self.input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        """Return the next ``{input name: tensor}``, or None when the frames are used up."""
        from fvt_segmentation.core.frame_processing import preprocess_frame

        frame = next(self.frames, None)
        if frame is None:
            return None
        return {self.input_name: preprocess_frame(frame, 'RGB', self.size, self.contract)}


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


def write_contract_v2(path: Path, contract: ModelContract, uint8_input: bool,
                      frames: Sequence[np.ndarray]) -> ModelContract:
    """Rewrite the version 1 file ``path`` as version 2; return its contract.

    On ``frames`` (RGB), the classes the new file computes must equal the version 1 file's
    and its confidence the node's version 1 confidence
    (:func:`~fvt_segmentation.core.frame_processing.scores_to_confidence` of the version 1 scores)
    within ``CONFIDENCE_TOLERANCE``, or :class:`ExportError` names the frame and the pixels
    that differ.
    """
    import onnx

    from fvt_segmentation.core.inference import load_segmenter
    from fvt_training.contract_v2 import to_contract_v2

    before = load_segmenter(path, providers=['cpu'], intra_op_spinning=False)
    expected = [before.segment(frame, 'RGB', want_confidence=True) for frame in frames]
    proto = onnx.load(str(path))
    v2 = to_contract_v2(proto, contract, uint8_input=uint8_input)
    attach_contract(proto, v2)
    tmp = path.with_name(f'.tmp-v2-{os.getpid()}-{path.name}')
    save_atomic(proto, tmp)
    try:
        after = load_segmenter(tmp, providers=['cpu'], intra_op_spinning=False)
        for i, (frame, want) in enumerate(zip(frames, expected, strict=True)):
            got = after.segment(frame, 'RGB', want_confidence=True)
            if not np.array_equal(got.classes, want.classes):
                raise ExportError(f'{path}: the version 2 classes differ from version 1 on '
                                  f'frame {i}: {int((got.classes != want.classes).sum())} of '
                                  f'{want.classes.size} pixels')
            off = np.abs(got.confidence.astype(np.int16) - want.confidence)
            if off.max() > CONFIDENCE_TOLERANCE:
                raise ExportError(
                    f'{path}: the version 2 confidence differs from version 1 on frame {i} '
                    f'by up to {int(off.max())}/255 (expected at most {CONFIDENCE_TOLERANCE}) '
                    f'on {int((off > CONFIDENCE_TOLERANCE).sum())} of {off.size} pixels')
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return v2


def _variant_path(out: Path, tag: str) -> Path:
    return out.with_name(f'{out.stem}.{tag}.onnx')


def score_variants(paths: Mapping[str, Path], manifest: Any, split: str, runs: int,
                   warmup: int) -> dict[str, dict]:
    """Score each file (tag ``float32`` the reference) on ``split`` and time them in turns.

    Returns, per tag: mIoU and per-category IoU, file size, provider and latency, and for
    every tag but ``float32`` the mIoU change in points and the speed-up against it.
    """
    from fvt_segmentation.core.contract import CATEGORIES, VOID
    from fvt_segmentation.core.metrics import summarize
    from fvt_training.evaluate import OnnxFileModel, confusion_over_split, preprocess_batch
    from fvt_training.latency import time_interleaved
    from fvt_training.prepared import load_pair

    models = {tag: OnnxFileModel(path) for tag, path in paths.items()}
    scores: dict[str, dict] = {}
    for tag, model in models.items():
        cm, _ = confusion_over_split(model, manifest, split)
        summary = summarize(cm, CATEGORIES, VOID)
        scores[tag] = {'path': str(paths[tag]), 'size_mb': paths[tag].stat().st_size / 1e6,
                       'provider': model.provider, 'split': split, 'miou': summary['miou'],
                       'miou_all': summary['miou_all'], 'iou': summary['iou']}
    if runs > 0:
        frame = load_pair(manifest, split, manifest.ids(split)[0])[0]
        inputs = {tag: preprocess_batch(model, [frame]) for tag, model in models.items()}
        timings = time_interleaved(
            {tag: (lambda m=model, x=inputs[tag]: m.predict(x)) for tag, model in models.items()},
            runs, warmup)
        for tag, stats in timings.items():
            scores[tag]['latency_ms'] = stats
    base = scores['float32']
    for tag, entry in scores.items():
        if tag == 'float32':
            continue
        entry['miou_change_points'] = (entry['miou'] - base['miou']) * 100.0
        if 'latency_ms' in entry:
            entry['speedup'] = base['latency_ms']['median_ms'] / entry['latency_ms']['median_ms']
    return scores


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
    size: dict[str, Any]  # params and GFLOPs of the float graph
    output: str  # what ``proto`` outputs: probabilities or logits
    make_contract: Callable[[Mapping[str, Any], str], ModelContract]  # (provenance, output)
    run_dir: Path | None  # the run folder, for ``export.json`` (None for a file)


def keras_source(run_dir: Path, weights: str = 'best',
                 data: str | os.PathLike | None = None) -> ExportSource:
    """Load a run's Keras model and convert it with tf2onnx."""
    from fvt_training import flops
    from fvt_training.prepared import read_manifest
    from fvt_training.run_contract import run_contract
    from fvt_training.train import load_run

    config, model = load_run(run_dir, weights)
    manifest = read_manifest(data or config['data']['prepared_dir'])
    input_size = tuple(int(v) for v in config['model']['input_size'])
    print(f'converting {run_dir.name} ({weights} weights) with tf2onnx, opset {OPSET}')
    proto = keras_to_onnx(model, input_size)
    size = {**flops.describe(proto), 'params': int(model.count_params())}

    def make_contract(extra: Mapping[str, Any], output: str) -> ModelContract:
        return run_contract(run_dir, config, manifest.folder,
                            {'weights': weights, **size, **extra}, output=output)

    return ExportSource(
        name=run_dir.name, path=run_dir, proto=proto, reference=model,
        reference_contract=make_contract({}, 'probabilities'), manifest=manifest,
        val_split=config['data']['val_split'], train_split=config['data']['train_split'],
        input_size=input_size, size=size, output='probabilities',
        make_contract=make_contract, run_dir=run_dir)


def to_contract_v1(proto: Any, contract: ModelContract, source: Path) -> ModelContract:
    """Take the graph of a file following ``contract`` back to version 1, in place.

    For version 2: keeps only the ``scores`` output and the nodes and initializers it needs
    (the argmax, softmax and confidence nodes go), and a uint8 input prologue
    (``Cast<float>``, ``Mul``, ``Add``, see :mod:`fvt_training.contract_v2`) gives way to a
    float32 input again. Returns the version 1 contract; a version 1 contract comes back as
    it is.
    """
    from onnx import TensorProto

    if contract.version == CONTRACT_VERSION:
        return contract
    graph = proto.graph
    scores = contract.outputs.get('scores')
    if scores is None:
        raise ExportError(f'{source}: re-export needs the float scores output; its '
                          f'fvt.outputs has {sorted(contract.outputs)}')
    kept = [o for o in graph.output if o.name == scores]
    del graph.output[:]
    graph.output.extend(kept)
    if contract.input_type == 'uint8':
        image = graph.input[0]
        normalized = _uint8_prologue_output(graph, image.name, source)
        for node in graph.node:
            node.input[:] = [image.name if i == normalized else i for i in node.input]
        image.type.tensor_type.elem_type = TensorProto.FLOAT
    _drop_unused(graph)
    return replace(contract, version=CONTRACT_VERSION, outputs={}, input_type='float32')


def _uint8_prologue_output(graph: Any, image: str, source: Path) -> str:
    """Return the output of the ``Cast -> Mul -> Add`` chain that normalises ``image``."""
    readers = consumers(graph)
    tensor, ops = image, []
    for op in ('Cast', 'Mul', 'Add'):
        nodes = readers.get(tensor, [])
        ops.append('/'.join(n.op_type for n in nodes) or 'nothing')
        if len(nodes) != 1 or nodes[0].op_type != op:
            raise ExportError(f'{source}: expected the uint8 input {image!r} to go through '
                              f'Cast -> Mul -> Add (the version 2 normalisation); found '
                              f'{" -> ".join(ops)}')
        tensor = nodes[0].output[0]
    return tensor


def _drop_unused(graph: Any) -> None:
    """Remove the nodes, initializers and value infos no graph output depends on."""
    producers = {out: node for node in graph.node for out in node.output}
    needed, todo = set(), [o.name for o in graph.output]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producers.get(name)
        if node is not None:
            todo.extend(i for i in node.input if i)
    nodes = [n for n in graph.node if any(o in needed for o in n.output)]
    del graph.node[:]
    graph.node.extend(nodes)
    for field_name in ('initializer', 'value_info'):
        entries = [e for e in getattr(graph, field_name) if e.name in needed]
        del getattr(graph, field_name)[:]
        getattr(graph, field_name).extend(entries)


class _ProbabilitiesOf:
    """An ONNX file as parity reference: ``predict_on_batch`` returns probabilities."""

    def __init__(self, segmenter: Any) -> None:
        self.segmenter = segmenter

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        """Return the file's probabilities for a preprocessed batch."""
        scores = self.segmenter.infer(batch)
        return softmax(scores) if self.segmenter.contract.output == 'logits' else scores


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
    from fvt_training import flops
    from fvt_training.prepared import read_manifest

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
    size = flops.describe(proto)
    size.update({k: provenance[k] for k in ('params', 'gflops') if k in provenance})
    origin = {'file': path.name, 'sha256': file_sha256(path),
              'created': provenance.get('created')}

    def make_contract(extra: Mapping[str, Any], output: str) -> ModelContract:
        created = datetime.now(timezone.utc).isoformat(timespec='seconds')
        return replace(contract, output=output, provenance={
            **provenance, **extra, 'created': created, 'reexported_from': origin})

    return ExportSource(
        name=path.stem, path=path, proto=proto, reference=_ProbabilitiesOf(segmenter),
        reference_contract=segmenter.contract, manifest=read_manifest(data), val_split='val',
        train_split='train', input_size=segmenter.input_size, size=size,
        output=contract.output, make_contract=make_contract, run_dir=None)


@dataclass(frozen=True)
class VariantOptions:
    """Which files besides the float32 one an export writes, and how it scores them."""

    fp16: bool = False
    int8: bool = False
    int8_format: str = 'qdq'
    int8_trt: bool = False
    calibration_frames: int = 32
    contract_version: int = 1
    uint8_input: bool = False
    timing_runs: int = 30
    timing_warmup: int = 5


@dataclass
class _Variants:
    """The files written so far, by tag: path, contract and the settings they were made with."""

    paths: dict[str, Path]
    contracts: dict[str, ModelContract]
    settings: dict[str, dict] = field(default_factory=dict)


def export_run(source: str | os.PathLike, out: str | os.PathLike, *,
               data: str | os.PathLike | None = None, weights: str = 'best',
               fp16: bool = False, int8: bool = False, int8_format: str = 'qdq',
               parity_frames: int = 8, calibration_frames: int = 32, timing_runs: int = 30,
               timing_warmup: int = 5, int8_trt: bool = False, contract_version: int = 1,
               uint8_input: bool = False) -> dict[str, Any]:
    """Export a run folder, or re-export an ``.onnx`` file, to ``out`` (and variants).

    The steps: open the source, rewrite its graph (:func:`rewrite_graph`), write the float32
    file once it passes the parity check (:func:`write_float32`), write the variants
    asked for (:func:`write_variants`), score every file and write the report
    (:func:`write_report`). ``int8_trt`` adds ``OUT-stem.int8trt.onnx``
    (:func:`int8_trt_settings`). ``contract_version`` 2 writes every file with the
    class ids and confidence computed in the graph (and, with ``uint8_input``, the
    normalisation too): see :mod:`fvt_training.contract_v2`; each must give the version 1
    classes exactly. Returns the report written beside ``out``. Raises :class:`ExportError`
    when the float32 file fails the parity check (the file is then left as
    ``<out>.failed``).
    """
    from fvt_training.evaluate import pick_samples
    from fvt_training.prepared import load_pair

    options = VariantOptions(
        fp16=fp16, int8=int8, int8_format=int8_format, int8_trt=int8_trt,
        calibration_frames=calibration_frames, contract_version=contract_version,
        uint8_input=uint8_input, timing_runs=timing_runs, timing_warmup=timing_warmup)
    if options.contract_version not in (1, 2):
        raise ExportError(f'--contract must be 1 or 2; got {options.contract_version}')
    if options.uint8_input and options.contract_version != 2:
        raise ExportError('--uint8-input needs --contract 2')
    source, out = Path(source), Path(out)
    if out.suffix != '.onnx':
        raise ExportError(f'--out must name an .onnx file; got {out}')
    src = (onnx_source(source, data) if source.suffix == '.onnx'
           else keras_source(source, weights, data))
    rewrites, output = rewrite_graph(src.proto, src.output)
    contract = src.make_contract({'precision': 'float32'}, output)
    attach_contract(src.proto, contract)
    frames = [load_pair(src.manifest, src.val_split, i)[0]
              for i in pick_samples(src.manifest.ids(src.val_split), parity_frames)]
    parity = write_float32(src, contract, out, frames)
    variants = write_variants(src, out, contract, output, frames, options)
    scores = score_variants(variants.paths, src.manifest, src.val_split,
                            options.timing_runs, options.timing_warmup)
    for tag, entry in variants.settings.items():
        scores[tag]['settings'] = entry
    return write_report(src, source, out, contract, weights, {
        'opset': OPSET, 'graph_rewrites': rewrites, 'output': output, 'parity': parity,
        'variants': scores})


def rewrite_graph(proto: Any, output: str) -> tuple[dict[str, int], str]:
    """Apply the CPU rewrites and drop a final softmax, in place; return counts and output.

    The output becomes ``logits`` when the softmax was dropped, else stays ``output``.
    """
    rewrites = simplify_for_cpu(proto)
    dropped = strip_output_softmax(proto)
    if dropped:
        rename_output(proto, LOGITS_NAME)
    rewrites['softmax_dropped'] = int(dropped)
    print('graph rewrites: ' + ', '.join(f'{k} {v}' for k, v in rewrites.items()))
    return rewrites, 'logits' if dropped else output


def write_float32(src: ExportSource, contract: ModelContract, out: Path,
                  frames: Sequence[np.ndarray]) -> dict[str, Any]:
    """Write ``src.proto`` to ``out`` if it reads back right and matches its reference.

    Returns the parity record; a file that fails is left as ``<out>.failed`` and
    :class:`ExportError` says by how much.
    """
    from fvt_segmentation.core.inference import load_segmenter

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f'.tmp-{os.getpid()}-{out.name}')
    save_atomic(src.proto, tmp)
    reference = 'Keras' if src.run_dir is not None else src.path.name
    try:
        segmenter = load_segmenter(tmp, providers=['cpu'])
        if segmenter.contract.to_metadata() != contract.to_metadata():
            raise ExportError(f'{out}: the contract read back differs from the one written')
        parity = check_parity(src.reference, src.reference_contract, segmenter, frames)
        parity.update(split=src.val_split, reference=reference)
        if not parity['passed']:
            raise ExportError(
                f'{out}: ONNX Runtime disagrees with {reference} on {len(frames)} '
                f'{src.val_split} frames: max |p_onnx - p_reference| = '
                f'{parity["max_abs_diff"]:.3g} (limit {MAX_ABS_DIFF}), argmax agreement '
                f'{parity["argmax_agreement"]:.4%} (limit {MIN_ARGMAX_AGREEMENT:.1%}); the '
                f'file was kept as {out}.failed for inspection')
    except Exception:
        os.replace(tmp, out.with_name(out.name + '.failed'))
        raise
    os.replace(tmp, out)
    print(f'wrote {out}: parity with {reference} on {len(frames)} {src.val_split} frames, '
          f'max abs diff {parity["max_abs_diff"]:.2e}, argmax agreement '
          f'{parity["argmax_agreement"]:.4%}')
    return parity


def _quantize_variant(src: ExportSource, out: Path, output: str, variants: _Variants,
                      tag: str, settings: dict[str, Any], frame_count: int,
                      description: str) -> None:
    """Write the int8 file ``tag`` with ``settings``, calibrated on training frames.

    Its provenance's ``quantization`` holds the settings and the calibration frames (data
    folder, split, count and ids); a re-export's ``reexported_from`` names the float file.
    """
    from fvt_training.evaluate import pick_samples
    from fvt_training.prepared import load_pair

    manifest = src.manifest
    ids = pick_samples(manifest.ids(src.train_split), frame_count)
    reader = FrameCalibrationReader((load_pair(manifest, src.train_split, i)[0] for i in ids),
                                    variants.contracts['float32'], src.input_size)
    variants.settings[tag] = {**settings, 'calibration_data': str(manifest.folder),
                              'calibration_split': src.train_split,
                              'calibration_frames': len(ids), 'calibration_ids': ids}
    variants.paths[tag] = _variant_path(out, tag)
    written = src.make_contract({'precision': 'int8', 'quantization': variants.settings[tag]},
                                output)
    if tag == 'int8trt':
        written = replace(written, quantization='int8_symmetric_qdq')
    variants.contracts[tag] = written
    print(f'quantizing to {description}, calibrated on {len(ids)} {src.train_split} frames')
    quantize_int8(out, variants.paths[tag], reader, written, variants.settings[tag])


def write_variants(src: ExportSource, out: Path, contract: ModelContract, output: str,
                   frames: Sequence[np.ndarray], options: VariantOptions) -> _Variants:
    """Write the int8, int8trt and fp16 files ``options`` asks for beside ``out``.

    With contract version 2, every file (float32 included) is then rewritten with the class
    ids in the graph. Each file's contract is read back and must equal the one written.
    """
    from fvt_segmentation.core.inference import load_segmenter

    variants = _Variants({'float32': out}, {'float32': contract})
    if options.int8:
        _quantize_variant(src, out, output, variants, 'int8',
                          int8_settings(options.int8_format), options.calibration_frames,
                          f'int8 ({options.int8_format})')
    if options.int8_trt:
        _quantize_variant(src, out, output, variants, 'int8trt', int8_trt_settings(),
                          options.calibration_frames, 'symmetric int8 for TensorRT')
    if options.fp16:
        variants.paths['float16'] = _variant_path(out, 'fp16')
        variants.contracts['float16'] = src.make_contract({'precision': 'float16'}, output)
        convert_fp16(out, variants.paths['float16'], variants.contracts['float16'])
        variants.settings['float16'] = {'keep_io_types': True}
    if options.contract_version == 2:
        for tag, path in variants.paths.items():
            variants.contracts[tag] = write_contract_v2(
                path, variants.contracts[tag], options.uint8_input, frames)
        print(f'contract version 2: class ids and confidence in the graph'
              f'{", uint8 input" if options.uint8_input else ""}; classes equal to version 1 '
              f'and confidence within {CONFIDENCE_TOLERANCE}/255 on {len(frames)} '
              f'{src.val_split} frames')
    for tag, path in variants.paths.items():
        loaded = load_segmenter(path, providers=['cpu']).contract
        if loaded.to_metadata() != variants.contracts[tag].to_metadata():
            raise ExportError(f'{path}: the contract read back differs from the one written')
    return variants


def write_report(src: ExportSource, source: Path, out: Path, contract: ModelContract,
                 weights: str, results: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``OUT-stem.export.json`` (and the run's ``export.json``); return the report."""
    from fvt_training.run_files import EXPORT_FILE, write_json

    provenance = contract.provenance
    report = {
        'source': str(source),
        'run': provenance.get('run', src.name),
        'run_dir': None if src.run_dir is None else str(src.run_dir),
        'weights': provenance.get('weights', weights),
        'data': str(src.manifest.folder),
        'input_size': list(src.input_size),
        **src.size,
        **results,
        'created': provenance['created'],
    }
    if 'reexported_from' in provenance:
        report['reexported_from'] = provenance['reexported_from']
    report_path = out.with_name(f'{out.stem}.export.json')
    write_json(report_path, report)
    if src.run_dir is not None:
        write_json(src.run_dir / EXPORT_FILE, {**report, 'report_path': str(report_path)})
    report['report_path'] = str(report_path)
    return report


def format_export(report: Mapping[str, Any]) -> str:
    """Return a human summary of an export report."""
    lines = []
    for tag, entry in report['variants'].items():
        text = f'{tag:8s} {entry["path"]}  {entry["size_mb"]:.1f} MB  {entry["split"]} mIoU ' \
               f'{entry["miou"]:.4f}'
        if 'miou_change_points' in entry:
            text += f' ({entry["miou_change_points"]:+.2f} points)'
        if 'latency_ms' in entry:
            text += f'  median {entry["latency_ms"]["median_ms"]:.2f} ms/image'
        if 'speedup' in entry:
            text += f' ({entry["speedup"]:.2f}x float32)'
        lines.append(text)
    int8 = report['variants'].get('int8')
    if int8 is not None and -int8['miou_change_points'] > INT8_TARGET_MIOU_DROP * 100:
        lines.append(f'WARNING: int8 costs {-int8["miou_change_points"]:.2f} points of mIoU '
                     f'(target: at most {INT8_TARGET_MIOU_DROP * 100:.0f})')
    return summary_text(lines, report)


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fvt-train export``."""
    parser = subparsers.add_parser(
        'export', help='export a run to a contract-following ONNX file (plus int8/fp16)',
        description='Convert a run with tf2onnx, write the model contract into the file, '
                    "load it back through the node's loader and check it matches Keras (or the "
                    're-exported file) on real frames. Writes OUT, optional '
                    'OUT-stem.int8.onnx / .fp16.onnx and OUT-stem.export.json (parity, mIoU '
                    'and latency of each file).')
    parser.add_argument('run', metavar='RUN',
                        help='run folder (runs/<name>), or a float32 .onnx file of an earlier '
                             'export to re-export with the current rewrites (needs --data)')
    parser.add_argument('--out', required=True, help='output file, e.g. models/NAME.onnx')
    parser.add_argument('--data', help="prepared folder (default: the run's "
                                       'data.prepared_dir; required for an .onnx RUN)')
    parser.add_argument('--weights', choices=('best', 'last'), default='best')
    parser.add_argument('--int8', action='store_true',
                        help='also write a statically quantized int8 file')
    parser.add_argument('--int8-format', choices=INT8_FORMATS, default='qdq',
                        help='int8 graph form (default: qdq; qoperator ran as fast here)')
    parser.add_argument('--int8-trt', action='store_true',
                        help='also write OUT-stem.int8trt.onnx: symmetric int8 QDQ that '
                             'TensorRT runs in int8 (the node sets trt_int8_enable from it)')
    parser.add_argument('--contract', type=int, choices=(1, 2), default=1,
                        help='model contract version of the files (default: 1); 2 adds uint8 '
                             'class ids and confidence computed in the graph')
    parser.add_argument('--uint8-input', action='store_true',
                        help='with --contract 2: uint8 input, normalisation in the graph')
    parser.add_argument('--fp16', action='store_true',
                        help='also write a float16 file (float32 input and output; meant '
                             'for GPUs: no faster on the CPU)')
    parser.add_argument('--parity-frames', type=positive_int, default=8,
                        help='validation frames for the Keras/ONNX check (default: 8)')
    parser.add_argument('--calibration-frames', type=positive_int, default=32,
                        help='training frames for int8 calibration (default: 32)')
    parser.add_argument('--timing-runs', type=non_negative_int, default=30,
                        help='timed runs per file, batch 1 (default: 30; 0 skips timing)')
    parser.set_defaults(func=run_export_command)
    return parser


def run_export_command(args: argparse.Namespace) -> int:
    """Run ``fvt-train export`` from parsed arguments."""
    report = export_run(args.run, args.out, data=args.data, weights=args.weights,
                        fp16=args.fp16, int8=args.int8, int8_format=args.int8_format,
                        parity_frames=args.parity_frames,
                        calibration_frames=args.calibration_frames,
                        timing_runs=args.timing_runs, int8_trt=args.int8_trt,
                        contract_version=args.contract, uint8_input=args.uint8_input)
    print(format_export(report))
    return 0

