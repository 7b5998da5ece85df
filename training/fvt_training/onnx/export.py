"""``fvt-train export``: a training run -> one contract-following ONNX file (plus variants).

The float32 file is converted with tf2onnx, carries the model contract in its metadata and
is loaded back through the node's own loader, whose output must match Keras on real frames
of the data set (:mod:`fvt_training.onnx.parity`: max absolute probability difference
<= 1e-3 and argmax agreement >= 99.9 % of pixels). A file that fails never takes the output
name: it is renamed ``*.failed`` and the command exits non-zero with the measured numbers.
``--int8`` adds a statically quantized file (calibrated on training frames), ``--fp16`` a
float16 one (float32 input and output), see :mod:`fvt_training.onnx.quantize`; each is
scored on the validation split against the float32 file. Every file is written to a
temporary name and renamed into place.

Before anything is written, the graph goes through :mod:`fvt_training.onnx.rewrites`: four
exact rewrites of what tf2onnx writes in a form ONNX Runtime runs slowly (stride-1
ConvTranspose -> Conv, nearest Resize -> its asymmetric equivalent, upsampling moved after
an Add, the 1x1 classifier moved before the upsampling), and the final softmax is dropped, so
the file outputs logits (``fvt.output: logits``; the parity check compares Keras'
probabilities with the softmax of those logits).

``RUN`` may also be a float32 ``.onnx`` file of an earlier export, contract version 1 or 2
(with ``--data``, :mod:`fvt_training.onnx.export_source`): it gets today's rewrites and
variants without its Keras run, and the file itself is the parity reference. Its contract and
provenance carry over, plus ``reexported_from`` (file, SHA-256).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
import os
from pathlib import Path
from typing import Any

import numpy as np

from fvt_segmentation.core.contract import ModelContract
from fvt_training.common.arg_types import non_negative_int, positive_int
from fvt_training.models.keras_onnx import OPSET, rename_output
from fvt_training.onnx.contract_v2 import CONFIDENCE_TOLERANCE, write_contract_v2
from fvt_training.onnx.export_source import ExportSource, keras_source, onnx_source
from fvt_training.onnx.model_file import ExportError, attach_contract, save_atomic
from fvt_training.onnx.parity import check_parity
from fvt_training.onnx.quantize import (
    INT8_FORMATS,
    FrameCalibrationReader,
    convert_fp16,
    int8_settings,
    int8_trt_settings,
    quantize_int8,
)
from fvt_training.onnx.rewrites import simplify_for_cpu, strip_output_softmax
from fvt_training.runs.run_files import summary_text

LOGITS_NAME = 'logits'
INT8_TARGET_MIOU_DROP = 0.01


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
    from fvt_training.data.prepared import load_pair
    from fvt_training.evaluation.latency import time_interleaved
    from fvt_training.evaluation.scoring import (
        OnnxFileModel,
        confusion_over_split,
        preprocess_batch,
    )

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
               data: str | os.PathLike | None = None, weights: str | None = None,
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
    normalisation too): see :mod:`fvt_training.onnx.contract_v2`; each must give the version 1
    classes exactly. Returns the report written beside ``out``. Raises :class:`ExportError`
    when the float32 file fails the parity check (the file is then left as
    ``<out>.failed``).
    """
    from fvt_training.data.prepared import load_pair
    from fvt_training.evaluation.scoring import pick_samples

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
                f'{parity["max_abs_diff"]:.3g} (limit {parity["max_abs_diff_limit"]}), argmax '
                f'agreement {parity["argmax_agreement"]:.4%} (limit '
                f'{parity["argmax_agreement_limit"]:.1%}); the file was kept as '
                f'{out}.failed for inspection')
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
    from fvt_training.data.prepared import load_pair
    from fvt_training.evaluation.scoring import pick_samples

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
    from fvt_training.runs.run_files import EXPORT_FILE, write_json

    provenance = contract.provenance
    report = {
        'source': str(source),
        'run': provenance.get('run', src.name),
        'run_dir': None if src.run_dir is None else str(src.run_dir),
        'weights': provenance.get('weights', weights),
        'data': str(src.manifest.folder),
        'input_size': list(src.input_size),
        **src.complexity,
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
    parser.add_argument('--weights', choices=('best', 'last'),
                        help="a run's best or last-epoch weights (default: those its "
                             'train.select judged it by)')
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

