"""Time the node's per-frame work outside inference at camera resolution; print a table.

    python scripts/bench_node_outputs.py [--width 2048 --height 1024 --runs 20]

Measures the ways of filling ``Image.data`` from numpy, the input view, every output built
straight into its message, and ``publish()`` of each with one subscriber (serialisation),
so the cost the worker pays between two inferences is known. No model is needed: a random
class map at 512x256 stands in for the network output.
"""

from __future__ import annotations

import argparse
import array
from collections.abc import Callable
import statistics
import time

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.node import Node
from sensor_msgs.msg import Image

from fvt_segmentation.core.contract import PALETTE
from fvt_segmentation.core.conversions import (
    alloc_image,
    blend,
    class_fractions,
    colorize,
    frame_to_rgb,
    image_to_frame,
    resize_nearest,
)


def timed(runs: int, function: Callable[[], object]) -> float:
    """Median wall time of ``function`` in ms over ``runs`` calls (after one warm-up)."""
    function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    """Run the measurements and print one line per step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--width', type=int, default=2048)
    parser.add_argument('--height', type=int, default=1024)
    parser.add_argument('--runs', type=int, default=20)
    args = parser.parse_args()
    size = (args.height, args.width)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    classes = rng.integers(0, 8, (256, 512), dtype=np.uint8)
    palette = np.asarray(PALETTE, np.uint8)
    source = Image(height=size[0], width=size[1], encoding='bgr8', step=size[1] * 3)
    source.data = array.array('B', pixels.tobytes())
    frame = image_to_frame(source, 1 << 30)
    results: list[tuple[str, float]] = []

    def fill_bytes() -> None:
        Image().data = pixels.tobytes()

    def fill_array_default() -> None:
        buffer = array.array('B')
        buffer.frombytes(pixels)
        Image().data = buffer

    def fill_array_checked() -> None:
        buffer = array.array('B')
        buffer.frombytes(pixels)
        Image(check_fields=True).data = buffer

    results += [
        ('Image.data = ndarray.tobytes()', timed(args.runs, fill_bytes)),
        ('Image.data = array.array (frombytes)', timed(args.runs, fill_array_default)),
        ('same, message built with check_fields=True', timed(args.runs, fill_array_checked)),
        ('input: image_to_frame (view, no copy)',
         timed(args.runs, lambda: image_to_frame(source, 1 << 30))),
    ]

    def new(encoding: str) -> tuple[Image, np.ndarray]:
        msg = Image(check_fields=True)
        return msg, alloc_image(msg, source.header, size, encoding)

    def mask() -> Image:
        msg, out = new('mono8')
        resize_nearest(classes, size, out=out)
        return msg

    def colored() -> Image:
        msg, out = new('rgb8')
        colorize(classes, palette, out=out)
        return msg

    colors = colorize(classes, palette, size)

    def overlay() -> Image:
        msg, out = new('rgb8')
        blend(frame_to_rgb(frame, size), colors, 0.5, out=out)
        return msg

    results += [
        ('mask (mono8) into its message', timed(args.runs, mask)),
        ('colored_mask (rgb8) into its message', timed(args.runs, colored)),
        ('overlay (bgr->rgb + blend) into its message', timed(args.runs, overlay)),
        ('class_fractions (model resolution)',
         timed(args.runs, lambda: class_fractions(classes, 8))),
    ]

    context = Context()
    rclpy.init(context=context)
    try:
        node = Node('bench_outputs', context=context)
        publisher = node.create_publisher(Image, 'bench_image', 1)
        node.create_subscription(Image, 'bench_image', lambda msg: None, 1)
        deadline = time.monotonic() + 5
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        mask_msg, colored_msg = mask(), colored()
        results += [
            ('publish mask (1 subscriber)', timed(args.runs, lambda: publisher.publish(mask_msg))),
            ('publish rgb8 output (1 subscriber)',
             timed(args.runs, lambda: publisher.publish(colored_msg))),
        ]
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)

    print(f'per-frame costs at {size[1]}x{size[0]}, median of {args.runs} runs')
    for label, ms in results:
        print(f'  {label:48s} {ms:8.2f} ms')


if __name__ == '__main__':
    main()
