"""``fvt-train adopt``: a public ONNX segmentation model -> one file under our model contract.

The source file is inspected first (input and output shapes, class count against the label
set: :mod:`fvt_training.adopt_source`), and anything it cannot tell (layout, colour order,
normalisation, size) must come from a flag: an ambiguity is refused with a message naming
the flag to add. Then a small head is appended to the source graph
(:mod:`fvt_training.category_head`), so the file outputs the probabilities of the 8
categories of :mod:`fvt_segmentation.core.contract` (for each, the sum of its classes'
probabilities; classes without a category count as void) and the node, the review app,
``evaluate`` and ``replay`` run it unchanged. An argmax-only model gets a class-id lookup
instead; it states no uncertainty, so its ``~/confidence`` is 255 everywhere.

An output at a fraction of the input size (1/4, 1/8) stays so: the contract allows a fixed
fraction and the node resizes the class map. A dynamic input height and width become the
``--size`` chosen (the node needs a fixed size). The source's ``(pixel - mean) / std`` is the
contract's normalisation with scale 1, so the network's input is not touched. The provenance
holds the source's name and SHA-256, the licence and the mapping. Before the file takes its
name it is loaded through the node's own loader and compared, on the probe frames, with the
source's output mapped in numpy.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
import os
from pathlib import Path
import sys
from typing import Any

import numpy as np

from fvt_segmentation.core.contract import CATEGORIES, VOID, ModelContract, Normalization
from fvt_segmentation.core.files import file_sha256
from fvt_segmentation.core.sizes import SizeError, parse_size
from fvt_training.adopt_source import (
    AdoptError,
    AdoptOptions,
    Inspection,
    cpu_session,
    fix_input_size,
    inspect_source,
    shape_text,
)
from fvt_training.arg_types import non_negative_int, positive_int
from fvt_training.category_head import add_category_head, map_to_categories
from fvt_training.label_sets import LabelSet, load_label_set

LAYOUTS = ('NCHW', 'NHWC')
COLOR_ORDERS = ('RGB', 'BGR')
SOURCE_OUTPUTS = ('logits', 'probabilities', 'class-ids')
MAX_ABS_DIFF = 1e-4
IMAGENET_HINT = ('ImageNet statistics in RGB order: --mean 123.675,116.28,103.53 '
                 '--std 58.395,57.12,57.375; raw 0..255 pixels: --mean 0,0,0 --std 1,1,1')


def parse_triple(text: str) -> tuple[float, float, float]:
    """Parse ``A,B,C`` into three floats (argparse ``type`` of --mean and --std)."""
    try:
        values = tuple(float(v) for v in text.split(','))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f'expected three numbers A,B,C; got {text!r}')
    return values  # type: ignore[return-value]


def _normalization(options: AdoptOptions, source: str) -> Normalization:
    if options.mean is None and options.std is None:
        raise AdoptError(f'{source}: the file cannot tell the normalisation its network '
                         'expects; add --mean A,B,C --std A,B,C (0..255 pixel units, in the '
                         f'model colour order; the model sees (pixel - mean) / std). '
                         f'{IMAGENET_HINT}')
    if options.mean is None or options.std is None:
        given, missing = ('--mean', '--std') if options.std is None else ('--std', '--mean')
        raise AdoptError(f'{given} needs {missing} too (the model sees (pixel - mean) / std)')
    if any(s == 0 for s in options.std):
        raise AdoptError(f'--std must be three nonzero numbers; got {list(options.std)}')
    return Normalization(scale=1.0, mean=tuple(float(v) for v in options.mean),
                         std=tuple(float(v) for v in options.std))


def adopted_contract(inspection: Inspection, normalization: Normalization, color_order: str,
                     label_set: LabelSet, source: Path, digest: str,
                     licence: str) -> ModelContract:
    """Return the contract of the adopted file, provenance included."""
    provenance = {
        'adopted_from': {'file': source.name, 'sha256': digest},
        'licence': licence,
        'labels': label_set.name,
        'label_table': label_set.source,
        'mapping': label_set.by_category(),
        'source_output': inspection.output,
        'source_classes': len(label_set),
        'input_size': list(inspection.size),
        'output_stride': inspection.stride(),
        'created': datetime.now(timezone.utc).isoformat(timespec='seconds'),
    }
    if inspection.output == 'class-ids':
        provenance['confidence'] = 'none: the source outputs class ids only (always 255)'
    return ModelContract(layout=inspection.layout, color_order=color_order,
                         normalization=normalization, output='probabilities',
                         ignore_index=VOID, provenance=provenance)


def adopted_doc_string(contract: ModelContract, label_set: LabelSet) -> str:
    """Return the one human sentence of the adopted file (ONNX doc_string)."""
    prov = contract.provenance
    how = ('the category of its predicted class' if prov['source_output'] == 'class-ids'
           else "the sum of its classes' softmax probabilities")
    return (f'Public segmentation model {prov["adopted_from"]["file"]} (sha256 '
            f'{prov["adopted_from"]["sha256"][:16]}...) with the {len(label_set)} classes of '
            f'{label_set.name}, adopted by fvt-train adopt: each of the {contract.num_classes} '
            f'categories ({", ".join(contract.categories)}) scores {how}; classes without a '
            f'category count as void; licence: {prov["licence"]}.')


def _parity(segmenter: Any, frames: Sequence[np.ndarray], source_outputs: Sequence[np.ndarray],
            inspection: Inspection, label_set: LabelSet) -> dict[str, Any]:
    from fvt_training.export import score_agreement

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for frame, raw in zip(frames, source_outputs, strict=True):
            expected = map_to_categories(raw, inspection.output, inspection.class_axis,
                                         label_set)
            got = segmenter.infer(segmenter.preprocess(frame, 'RGB'))
            if got.shape != expected.shape:
                raise AdoptError(f'{segmenter.model_path}: the adopted output has shape '
                                 f'{got.shape}; the mapped source output has {expected.shape}')
            yield got, expected

    worst, agreement = score_agreement(pairs(), inspection.class_axis)
    return {'frames': len(frames), 'max_abs_diff': worst, 'argmax_agreement': agreement}


def adopt(source: str | os.PathLike, out: str | os.PathLike,
          options: AdoptOptions) -> dict[str, Any]:
    """Adopt ``source`` into ``out`` (see the module doc); return what was found and done.

    Raises :class:`AdoptError` (or :class:`~fvt_training.label_sets.LabelSetError`) before
    anything is written when the file or the options do not fit.
    """
    import onnx

    from fvt_segmentation.core.inference import load_segmenter
    from fvt_training.export import attach_contract, save_atomic

    source, out = Path(source), Path(out)
    if out.suffix != '.onnx':
        raise AdoptError(f'--out must name an .onnx file; got {out}')
    if not source.is_file():
        raise AdoptError(f'{source}: no such file')
    if out.resolve() == source.resolve():
        raise AdoptError(f'--out {out} is the source file; choose another name')
    label_set = load_label_set(options.labels)
    if options.color_order is None:
        raise AdoptError(f'{source}: the file cannot tell the colour order its network '
                         'expects; add --color-order RGB (mmsegmentation, torchvision, timm '
                         'models) or --color-order BGR (models trained on OpenCV frames as read)')
    normalization = _normalization(options, str(source))
    if not options.licence.strip():
        raise AdoptError('--licence must say under which terms the model may be used; got an '
                         'empty text')
    try:
        proto = onnx.load(str(source))
    except Exception as err:  # onnx raises DecodeError, OSError, ...
        raise AdoptError(f'{source}: not an ONNX model ({str(err)[:200]})') from None
    feed = ModelContract(color_order=options.color_order, normalization=normalization)
    inspection, frames, raw = inspect_source(proto, str(source), options, label_set, feed)
    digest = file_sha256(source)
    contract = adopted_contract(inspection, normalization, options.color_order, label_set,
                                source, digest, options.licence.strip())

    fix_input_size(proto, inspection.layout, inspection.size)
    output_name = add_category_head(proto, inspection, label_set)
    attach_contract(proto, contract, adopted_doc_string(contract, label_set))
    tmp = out.with_name(f'.tmp-{os.getpid()}-{out.name}')
    save_atomic(proto, tmp)
    try:
        segmenter = load_segmenter(tmp, providers=['cpu'], intra_op_spinning=False)
        if segmenter.contract.to_metadata() != contract.to_metadata():
            raise AdoptError(f'{out}: the contract read back differs from the one written')
        parity = _parity(segmenter, frames, raw, inspection, label_set)
        if parity['max_abs_diff'] > MAX_ABS_DIFF or parity['argmax_agreement'] < 1.0:
            raise AdoptError(
                f'{out}: the adopted file disagrees with the source mapped in numpy on '
                f'{len(frames)} frames: max abs diff {parity["max_abs_diff"]:.3g} (limit '
                f'{MAX_ABS_DIFF}), argmax agreement {parity["argmax_agreement"]:.4%} '
                '(expected 100 %)')
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return {'source': str(source), 'out': str(out), 'sha256': digest,
            'labels': label_set.name, 'inspection': inspection, 'output_name': output_name,
            'contract': contract, 'parity': parity}


def describe(result: dict[str, Any]) -> str:
    """Return a human summary of what :func:`adopt` found and wrote."""
    ins: Inspection = result['inspection']
    height, width = ins.size
    oh, ow = ins.output_size
    stride = ins.stride()
    fraction = ('the input size' if stride == 1 else f'1/{stride} of the input'
                if isinstance(stride, int) else f'{ow}x{oh} (ratios {stride})')
    classes = (f'{ins.num_classes} classes' if ins.num_classes is not None
               else 'classes not countable in the graph (no ArgMax found)')
    mapping = result['contract'].provenance['mapping']
    parity = result['parity']
    lines = [
        f'source: {Path(result["source"]).name} (sha256 {result["sha256"][:16]}...)',
        f'  input {ins.input_name!r} {shape_text(ins.input_shape)} float32 {ins.layout}, run '
        f'at {width}x{height} (from {ins.size_from})',
        f'  output {ins.output_name!r} {shape_text(ins.output_shape)} {ins.output_dtype}: '
        f'{ins.output}, {classes}, at {fraction}',
        f'wrote {result["out"]}: output {result["output_name"]!r} = probabilities of '
        f'{len(CATEGORIES)} categories ({result["labels"]}):',
        *(f'  {category}: {", ".join(names)}' for category, names in mapping.items()),
        f'  checked against the source mapped in numpy on {parity["frames"]} frames: max abs '
        f'diff {parity["max_abs_diff"]:.1e}, argmax agreement {parity["argmax_agreement"]:.2%}',
    ]
    if ins.output == 'class-ids':
        lines.append('  note: class ids only, so ~/confidence is 255 everywhere; for a real '
                     'confidence export the model without its final ArgMax')
    return '\n'.join(lines)


def check_adopted(adopted: str | os.PathLike, source: str | os.PathLike,
                  data: str | os.PathLike, split: str = 'val', runs: int = 20,
                  warmup: int = 3, limit: int | None = None) -> dict[str, Any]:
    """Score the adopted file on a prepared split and time it against the source.

    mIoU comes from :func:`fvt_training.evaluate.confusion_over_split` (the node's pre- and
    post-processing); both files are timed on the CPU, batch 1, in turns, on the same
    preprocessed frame (the network alone). ``runs=0`` skips the timing.
    """
    import onnx

    from fvt_segmentation.core.metrics import summarize
    from fvt_training.evaluate import OnnxFileModel, confusion_over_split, preprocess_batch
    from fvt_training.latency import time_interleaved
    from fvt_training.prepared import load_pair, read_manifest

    manifest = read_manifest(data)
    model = OnnxFileModel(adopted)
    cm, _ = confusion_over_split(model, manifest, split, limit=limit)
    report: dict[str, Any] = {
        'data': str(manifest.folder), 'split': split,
        'images': len(manifest.ids(split)[:limit]),
        'metrics': summarize(cm, CATEGORIES, VOID)}
    if runs > 0:
        proto = onnx.load(str(source))
        source_session = cpu_session(proto)
        frame = load_pair(manifest, split, manifest.ids(split)[0])[0]
        batch = preprocess_batch(model, [frame])
        input_name = source_session.get_inputs()[0].name
        print(f'timing source and adopted files: {runs} runs each after {warmup} warm-up',
              file=sys.stderr)
        report['latency_ms'] = time_interleaved(
            {'source': lambda: source_session.run(None, {input_name: batch}),
             'adopted': lambda: model.predict(batch)}, runs, warmup)
    return report


def format_check(check: dict[str, Any]) -> str:
    """Return the human lines of :func:`check_adopted`'s report."""
    metrics = check['metrics']
    lines = [f'check on {check["data"]} {check["split"]} ({check["images"]} images): mIoU '
             f'{metrics["miou"]:.4f} (7 categories, void ignored), 8-class mean '
             f'{metrics["miou_all"]:.4f}',
             '  IoU: ' + ', '.join('{} {}'.format(k, '-' if v is None or v != v else f'{v:.3f}')
                                   for k, v in metrics['iou'].items())]
    latency = check.get('latency_ms')
    if latency:
        src, new = latency['source'], latency['adopted']
        lines.append(f'  speed (CPU, batch 1, median of {new["runs"]} runs): adopted '
                     f'{new["median_ms"]:.2f} ms, source {src["median_ms"]:.2f} ms '
                     f'({new["median_ms"] - src["median_ms"]:+.2f} ms for the category head)')
    return '\n'.join(lines)


def add_adopt_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fvt-train adopt``."""
    parser = subparsers.add_parser(
        'adopt', help='adopt a public ONNX segmentation model into the 8-category contract',
        description='Append a head to SOURCE.onnx that turns its class scores (or ids) into '
                    'the probabilities of the 8 categories, write the model contract with the '
                    "source's SHA-256, the licence and the mapping, and check the result "
                    "through the node's loader. A YAML label file lists one entry per output "
                    'channel, in order: "classes: [{name: road, category: flat}, {name: '
                    'background, category: void}]" (no category: void).')
    parser.add_argument('source', metavar='SOURCE.onnx', help='the public model file')
    parser.add_argument('--labels', required=True, metavar='LABELS',
                        help='cityscapes-trainids (19), cityscapes-labelids (34), camvid11, or '
                             'a YAML label file')
    parser.add_argument('--out', required=True, metavar='ADOPTED.onnx', help='output file')
    parser.add_argument('--licence', required=True, metavar='TEXT',
                        help="the model's licence terms (and its training data's), shown "
                             'wherever the model is')
    parser.add_argument('--input-layout', choices=LAYOUTS,
                        help='when the input shape cannot tell (default: from the shape)')
    parser.add_argument('--color-order', choices=COLOR_ORDERS,
                        help='colour order the network expects (required)')
    parser.add_argument('--mean', type=parse_triple, metavar='A,B,C',
                        help='per-channel mean in 0..255 units, model colour order (required)')
    parser.add_argument('--std', type=parse_triple, metavar='A,B,C',
                        help='per-channel std in 0..255 units, model colour order (required)')
    parser.add_argument('--size', metavar='WxH',
                        help='input size to run at (required when the input size is dynamic)')
    parser.add_argument('--output', choices=SOURCE_OUTPUTS,
                        help='what the output holds (default: scores are told apart by '
                             'whether they sum to 1, integers are class ids)')
    parser.add_argument('--check', metavar='DATA',
                        help='prepared folder: print the adopted mIoU and both speeds')
    parser.add_argument('--split', default='val', help='split of --check (default: val)')
    parser.add_argument('--limit', type=positive_int, help='score only the first N images')
    parser.add_argument('--timing-runs', type=non_negative_int, default=20,
                        help='timed runs per file for --check (default: 20; 0 skips timing)')
    parser.set_defaults(func=run_adopt_command)
    return parser


def run_adopt_command(args: argparse.Namespace) -> int:
    """Run ``fvt-train adopt`` from parsed arguments."""
    size = None
    if args.size is not None:
        try:
            size = parse_size(args.size)
        except SizeError as err:
            raise AdoptError(f'--size {err}') from None
    options = AdoptOptions(labels=args.labels, licence=args.licence,
                           input_layout=args.input_layout, color_order=args.color_order,
                           mean=args.mean, std=args.std, size=size, output=args.output)
    result = adopt(args.source, args.out, options)
    print(describe(result))
    if args.check:
        check = check_adopted(args.out, args.source, args.check, args.split,
                              runs=args.timing_runs, limit=args.limit)
        print(format_check(check))
    return 0
