#!/usr/bin/env python3
"""Int8 probes: what each quantization choice does to one model's speed and mIoU on this CPU.

    fvt-train export runs/lite0_fpn_480 --out /tmp/probe/model.onnx   # contract v1 float32
    python training/scripts/int8_probes.py /tmp/probe/model.onnx --data data/camvid/480x352

Every variant is written by the export's own ``quantize_int8`` (settings varied from
``int8_settings``), then scored on the val split and timed in turns with the float32 file,
network alone and batch 1, as ``fvt-train export`` does. A microbenchmark then times a uint8
nearest x2 ``Resize`` in the two layouts ONNX Runtime may run it in.

    PYTHONPATH=. python training/scripts/int8_probes.py FLOAT32.onnx --openvino INT8.onnx

times both files on the OpenVINO plugin execution provider instead. It needs only
``onnxruntime`` (the CPU wheel) and ``onnxruntime-ep-openvino`` in a venv of their own (the
plugin does not load into ``onnxruntime-gpu``), and the checkout on the path for
``fvt_segmentation.core.sessions``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
import tempfile
import time
from typing import Any

import numpy as np

FRAME_SIZE = (352, 480)  # light_fpn at 480x352: its largest x2 nearest upsampling is 44x60x96
RESIZE_INPUT_NHWC = (1, 44, 60, 96)


def depthwise_convs(graph: Any) -> list[str]:
    """Return the depthwise convolutions' names (one input channel per group)."""
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    names = []
    for node in graph.node:
        group = next((a.i for a in node.attribute if a.name == 'group'), 1)
        if node.op_type == 'Conv' and group > 1 and shapes[node.input[1]][1] == 1:
            names.append(node.name)
    return names


def variant_settings(float_path: Path) -> dict[str, dict]:
    """Return the quantization settings probed, by tag (``int8``: what the export ships)."""
    import onnx

    from fvt_training.export import int8_settings

    graph = onnx.load(str(float_path)).graph
    base = int8_settings()
    stem = next(n.name for n in graph.node if n.op_type == 'Conv')
    return {
        'int8': base,
        'per_tensor_weights': {**base, 'per_channel': False},
        'int8_activations_symmetric': {**base, 'activations': 'int8', 'symmetric': True},
        'int8_activations_asymmetric': {**base, 'activations': 'int8'},
        'depthwise_in_float': {**base, 'float_nodes': depthwise_convs(graph)},
        'stem_in_float': {**base, 'float_nodes': [stem]},
    }


def probe_quantization(float_path: Path, data: Path, frames: int, runs: int) -> None:
    """Write, score and time every variant of :func:`variant_settings`."""
    from tqdm import tqdm

    from fvt_segmentation.core.inference import load_segmenter
    from fvt_training.evaluate import pick_samples
    from fvt_training.export import FrameCalibrationReader, quantize_int8, score_variants
    from fvt_training.prepared import load_pair, read_manifest

    manifest = read_manifest(data)
    contract = load_segmenter(float_path, providers=['cpu']).contract
    if contract.version != '1':
        raise SystemExit(f'{float_path}: expected a contract version 1 float32 file (fvt-train '
                         f'export RUN --out FILE, without --contract 2); got version '
                         f'{contract.version}')
    ids = pick_samples(manifest.ids('train'), frames)
    with tempfile.TemporaryDirectory(prefix='int8-probes-') as tmp:
        paths = {'float32': float_path}
        for tag, settings in tqdm(variant_settings(float_path).items(), desc='quantizing'):
            reader = FrameCalibrationReader(
                (load_pair(manifest, 'train', i)[0] for i in ids), contract, FRAME_SIZE)
            paths[tag] = Path(tmp) / f'{tag}.onnx'
            quantize_int8(float_path, paths[tag], reader, contract, settings)
        scores = score_variants(paths, manifest, 'val', runs, warmup=5)
    print(f'{float_path.name}: val mIoU and median ms in turns ({runs} runs, batch 1)')
    for tag, entry in scores.items():
        change = entry.get('miou_change_points', 0.0)
        print(f'  {tag:28s} mIoU {entry["miou"]:.4f} ({change:+.2f} points)  '
              f'{entry["latency_ms"]["median_ms"]:6.2f} ms  x{entry.get("speedup", 1.0):.2f}')


def _resize_model(layout: str) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    n, h, w, c = RESIZE_INPUT_NHWC
    shape, scales = (([n, h, w, c], [1, 2, 2, 1]) if layout == 'NHWC'
                     else ([n, c, h, w], [1, 1, 2, 2]))
    graph = helper.make_graph(
        [helper.make_node('Resize', ['x', '', 'scales'], ['y'], mode='nearest',
                          coordinate_transformation_mode='asymmetric', nearest_mode='floor')],
        'resize', [helper.make_tensor_value_info('x', TensorProto.UINT8, shape)],
        [helper.make_tensor_value_info('y', TensorProto.UINT8, None)],
        [numpy_helper.from_array(np.array(scales, np.float32), 'scales')])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], ir_version=9)


def probe_resize(runs: int = 200) -> None:
    """Time a uint8 nearest x2 Resize laid out NHWC (as in the int8 file) and NCHW."""
    from fvt_segmentation.core.sessions import open_session
    from fvt_training.latency import time_calls

    print(f'uint8 nearest x2 Resize of {RESIZE_INPUT_NHWC} (NHWC), median of {runs} runs')
    for layout in ('NHWC', 'NCHW'):
        model = _resize_model(layout)
        session = open_session(model.SerializeToString())
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        x = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
        stats = time_calls(lambda s=session, x=x: s.run(None, {'x': x}), runs, warmup=10)
        print(f'  {layout}: {stats["median_ms"]:.3f} ms')


def probe_openvino(float_path: Path, int8_path: Path, runs: int) -> None:
    """Time both files in turns on the OpenVINO plugin EP (CPU device) and the CPU EP."""
    import onnxruntime as ort
    import onnxruntime_ep_openvino as openvino

    from fvt_segmentation.core.sessions import open_session

    ort.register_execution_provider_library(openvino.get_ep_name(), openvino.get_library_path())
    devices = [d for d in ort.get_ep_devices() if d.ep_name == openvino.get_ep_name()
               and d.device.type == ort.OrtHardwareDeviceType.CPU]
    if not devices:
        raise SystemExit('the OpenVINO execution provider offers no CPU device here')

    def session(path: Path, provider: str) -> ort.InferenceSession:
        if provider == 'openvino':
            return open_session(path, None, spinning=False, plugin_devices=devices,
                                plugin_options={'precision': 'ACCURACY'})
        return open_session(path, spinning=False)

    sessions = {f'{provider} {tag}': session(path, provider)
                for provider in ('cpu', 'openvino')
                for tag, path in (('float32', float_path), ('int8', int8_path))}
    first = next(iter(sessions.values())).get_inputs()[0]
    x = np.random.default_rng(0).random([1, *first.shape[1:]], dtype=np.float32)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for round_ in range(runs + 5):  # in turns; the first 5 rounds warm up
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, {s.get_inputs()[0].name: x})
            if round_ >= 5:
                times[name].append(time.perf_counter() - start)
    median = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
    print(f'median ms in turns ({runs} runs), onnxruntime {ort.__version__}')
    for provider in ('cpu', 'openvino'):
        f32, i8 = median[f'{provider} float32'], median[f'{provider} int8']
        print(f'  {provider:9s} float32 {f32:6.2f}  int8 {i8:6.2f}  x{f32 / i8:.2f}')


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('float32', type=Path, help='contract version 1 float32 file')
    parser.add_argument('--data', type=Path, help='prepared folder (train: calibration, '
                        'val: scores)')
    parser.add_argument('--frames', type=int, default=32, help='calibration frames')
    parser.add_argument('--runs', type=int, default=40)
    parser.add_argument('--openvino', type=Path, metavar='INT8',
                        help='only time FLOAT32 and this int8 file on OpenVINO and the CPU EP')
    args = parser.parse_args(argv)
    if args.openvino:
        probe_openvino(args.float32, args.openvino, args.runs)
        return 0
    if args.data is None:
        parser.error('--data is required (unless --openvino)')
    probe_quantization(args.float32, args.data, args.frames, args.runs)
    probe_resize()
    return 0


if __name__ == '__main__':
    sys.exit(main())
