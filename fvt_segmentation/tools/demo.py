"""The main job: run the node on a recording and show what it does.

Starts ``segmentation_node`` as its own process (as on the car, with the shipped DDS
profiles), replays the recording's camera topic into it, and collects what comes back:
overlay frames (PNG files and an animated GIF), the mask topic recorded to a rosbag2 bag, and
a summary (frames in and out, drops, end-to-end latency, mIoU of the node's masks against the
recording's ground truth). Ctrl-C stops everything and keeps what was written.

An evaluation must see every frame: the replay and the node's input are reliable, the first
frame goes out once the model is loaded and the node's subscription matched, and each frame
waits until the node answered the one before (at the recorded pace while the node keeps up,
slower when it does not), so its newest-frame-only input never replaces one. A frame without a
mask all the same, or a write that fails (disk full), ends the demo with one error line and
exit code 1, keeping what was written.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import cv2
from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import String
from tqdm import tqdm

from fvt_segmentation.bag.bundled_recording import (
    CAMERA_BASE_TOPIC,
    CAMERA_TOPIC,
    default_recording,
    read_truth,
)
from fvt_segmentation.bag.record import BagRecorder
from fvt_segmentation.bag.replay import BagPlayer, BagPublisher
from fvt_segmentation.core.conversions import stamp_ns
from fvt_segmentation.core.metrics import confusion_matrix, summarize
from fvt_segmentation.core.model_choice import add_model_options, choose_model
from fvt_segmentation.node.segmentation_node import NODE_NAME as NODE
from fvt_segmentation.tools.dds_profiles import apply_transport_environment

READY_TIMEOUT_S = 120.0
ANSWER_TIMEOUT_S = 30.0  # per frame: generous for a first inference on a loaded machine
REPLAY_DEPTH = 5  # publisher and node input alike; one frame is in flight at a time
NOT_PROCESSED = ('dropped', 'stale', 'rejected', 'failed')
OUTCOMES = ('processed', *NOT_PROCESSED)
"""The node's counters that together account for every frame it received."""
MASK_TOPIC = f'/{NODE}/mask'


@dataclass
class Collected:
    """What came back from the node; filled by subscription callbacks."""

    published_at: dict[int, float] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    masks: int = 0
    overlays: int = 0
    unmatched: int = 0
    confusion: np.ndarray | None = None
    categories: list[str] | None = None
    diagnostics: dict[str, str] = field(default_factory=dict)
    diagnostics_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='demo', description='Run segmentation_node on a recording (default: the bundled '
        'CamVid recording and model) and report what it produced.')
    parser.add_argument('--bag', type=Path, default=None,
                        help='rosbag2 recording with camera frames on '
                        f'{CAMERA_TOPIC} (default: the bundled one)')
    add_model_options(parser)
    parser.add_argument('--out', type=Path, default=Path('output/demo'),
                        help='output folder (default: %(default)s)')
    parser.add_argument('--rate', type=float, default=5.0,
                        help='replay speed factor; the bundled frames are 1 s apart '
                        '(default: %(default)s, i.e. 5 frames per second)')
    parser.add_argument('--frames', type=int, default=0, help='stop after N frames (0: all)')
    parser.add_argument('--providers', default='tensorrt,cuda,cpu',
                        help='ONNX Runtime providers, preferred first (default: %(default)s)')
    parser.add_argument('--no-gif', action='store_true', help='skip the animated GIF')
    return parser.parse_args(argv)


def _node_command(model: str, precision: str, providers: list[str]) -> list[str]:
    provider_list = '[' + ','.join(providers) + ']'
    command = [sys.executable, '-m', 'fvt_segmentation.node.segmentation_node', '--ros-args',
               '-r', f'__node:={NODE}', '-r', f'image:={CAMERA_BASE_TOPIC}',
               '-p', 'input_transport:=compressed', '-p', 'input_reliability:=reliable',
               '-p', f'input_depth:={REPLAY_DEPTH}', '-p', f'precision:={precision}',
               '-p', f'providers:={provider_list}', '-p', 'mask_resolution:=input']
    return command + (['-p', f'model_path:={model}'] if model else [])


def _stop_node(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _write_gif(frames: list[Path], path: Path, fps: float) -> bool:
    from PIL import Image

    if not frames:
        return False
    images = [Image.open(f).convert('RGB') for f in frames]
    images = [im.resize((im.width // 2, im.height // 2)) for im in images]
    tmp = path.with_suffix('.tmp.gif')
    images[0].save(tmp, save_all=True, append_images=images[1:],
                   duration=int(1000 / max(fps, 1.0)), loop=0, optimize=True)
    os.replace(tmp, path)
    return True


class DemoClient:
    """The in-process side: publishes the recording, subscribes to the node's outputs."""

    def __init__(self, bag: Path, out: Path, truth: dict[int, np.ndarray], rate: float,
                 frames: int) -> None:
        self.out = out
        self.truth = truth
        self.limit = frames
        self.data = Collected()
        (out / 'overlays').mkdir(parents=True, exist_ok=True)
        self.node = rclpy.create_node('fvt_demo')
        self.player = BagPlayer(bag, topics=[CAMERA_TOPIC], rate=rate)
        self.publisher = BagPublisher(self.node, self.player, reliable=True,
                                      depth=REPLAY_DEPTH)
        self.overlay_failure: str | None = None
        self.close_failure: str | None = None
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                              reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(Image, MASK_TOPIC, self._on_mask, reliable)
        self.node.create_subscription(Image, f'/{NODE}/overlay', self._on_overlay, reliable)
        self.node.create_subscription(String, f'/{NODE}/categories', self._on_categories,
                                      latched)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                      reliable)
        # The mask callback writes the bag itself, so the bag holds exactly the masks counted.
        self.recorder = BagRecorder(self.node, out / 'masks_bag')
        self.recorder.declare_topic(MASK_TOPIC, 'sensor_msgs/msg/Image')
        self.executor = MultiThreadedExecutor(num_threads=3)
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    # --- callbacks (executor threads) ------------------------------------------------------
    def _on_mask(self, msg: Any) -> None:
        now = time.monotonic()
        if not self.recorder.write(MASK_TOPIC, msg):
            return  # after close: too late for the summary too
        stamp = stamp_ns(msg.header)
        mask = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :msg.width]
        with self.data.lock:
            self.data.masks += 1
            sent = self.data.published_at.get(stamp)
            if sent is None:
                self.data.unmatched += 1
                return
            self.data.latencies_ms.append((now - sent) * 1e3)
            truth = self.truth.get(stamp)
            if truth is not None and truth.shape == mask.shape:
                n = len(self.data.categories or []) or int(max(mask.max(), truth.max())) + 1
                cm = confusion_matrix(truth, mask, n)
                self.data.confusion = cm if self.data.confusion is None else (
                    self.data.confusion + cm)

    def _on_overlay(self, msg: Any) -> None:
        rgb = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :msg.width * 3]
        bgr = cv2.cvtColor(rgb.reshape(msg.height, msg.width, 3), cv2.COLOR_RGB2BGR)
        with self.data.lock:
            index = self.data.overlays
            self.data.overlays += 1
        path = self.out / 'overlays' / f'frame_{index:04d}.png'
        if not cv2.imwrite(str(path), bgr):  # False, not an exception, on a full disk
            self.overlay_failure = self.overlay_failure or (
                f'{path}: expected to write the overlay PNG, cv2.imwrite failed (disk full?)')

    def _on_categories(self, msg: Any) -> None:
        doc = json.loads(msg.data)
        with self.data.lock:
            self.data.categories = [c['name'] for c in doc['categories']]

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.endswith('segmentation'):
                with self.data.lock:
                    self.data.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.data.diagnostics_at = time.monotonic()

    # --- main thread -----------------------------------------------------------------------
    @property
    def failure(self) -> str | None:
        """The first output that could not be written (one line), or None."""
        return self.recorder.failure or self.overlay_failure or self.close_failure

    def wait_ready(self, proc: subprocess.Popen, timeout: float,
                   stop: threading.Event) -> None:
        """Wait until the node is up (categories received, subscriptions matched) or stop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if stop.is_set():
                return
            if proc.poll() is not None:
                raise RuntimeError(f'the node exited with code {proc.returncode} at startup')
            with self.data.lock:
                have_categories = self.data.categories is not None
            if have_categories and not self.publisher.wait_for_subscribers(1, 0.2,
                                                                           reliable=True):
                return
            time.sleep(0.1)
        raise RuntimeError(f'the node was not ready within {timeout:g} s (expected its '
                           f'categories and a reliable subscription on {CAMERA_TOPIC})')

    def _node_settled(self, since: float) -> bool:
        """Tell whether diagnostics newer than ``since`` account for every frame and mask."""
        with self.data.lock:
            if self.data.diagnostics_at < since:
                return False
            diag, masks = self.data.diagnostics, self.data.masks
        try:
            received = int(diag['frames_received'])
            done = sum(int(diag[f'frames_{k}']) for k in OUTCOMES)
            return received == done and masks == int(diag['frames_processed'])
        except (KeyError, ValueError):
            return False

    def _answered(self, sent: int) -> bool:
        """Tell whether the node answered ``sent`` frames: a mask, or a counter saying why not.

        A processed frame counts once its mask is here (and in the bag), not by the counter.
        """
        with self.data.lock:
            masks, diag = self.data.masks, self.data.diagnostics
        try:
            return masks + sum(int(diag.get(f'frames_{k}', 0)) for k in NOT_PROCESSED) >= sent
        except ValueError:
            return False

    def _wait_answered(self, sent: int, cancelled: Callable[[], bool]) -> None:
        """Wait until the node answered ``sent`` frames, an output failed or ``cancelled()``.

        A frame that never reached the node ends the wait too, once a status sent a second
        after the last frame shows the node idle (the summary then counts it as lost).
        Raises RuntimeError when the node leaves a frame unanswered for ANSWER_TIMEOUT_S.
        """
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        with self.data.lock:
            idle_after = max(self.data.published_at.values(), default=0.0) + 1.0
        while not self._answered(sent) and not self._node_settled(idle_after):
            if cancelled() or self.failure is not None:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f'expected the node to answer frame {sent} of the replay (a mask, or a '
                    f'counter saying why not) within {ANSWER_TIMEOUT_S:g} s; it did not')
            time.sleep(0.005)

    def play(self, stop: threading.Event) -> int:
        """Replay the camera topic; returns the number of frames published."""
        total = self.player.message_count
        if self.limit:
            total = min(total, self.limit)
        bar = tqdm(total=total, unit='frame', desc='frames in -> masks out')
        sent = 0

        def publish(item: Any) -> None:
            nonlocal sent
            self._wait_answered(sent, stop.is_set)
            if self.failure is not None:
                stop.set()
            if stop.is_set():
                return
            with self.data.lock:
                self.data.published_at[stamp_ns(item.message.header)] = time.monotonic()
            self.publisher.publish(item)
            sent += 1
            bar.set_postfix(masks=self.data.masks)
            bar.update()
            if self.limit and sent >= self.limit:
                stop.set()

        try:
            self.player.play(publish, stop=stop)
            self._wait_answered(sent, lambda: stop.is_set() and sent < total)
            bar.set_postfix(masks=self.data.masks)
            # The node's counters arrive about once a second: wait for a fresh set that counts
            # every mask received (a status sent while the last mask was being published shows
            # one frame fewer processed, and may arrive after that mask).
            done = time.monotonic()
            while not self._node_settled(done) and time.monotonic() < done + 2.5:
                time.sleep(0.05)
        finally:
            bar.close()
        return sent

    def close(self) -> Path:
        """Finish the mask bag and stop spinning; a bag that cannot be finished is a failure."""
        try:
            bag = self.recorder.close()
        except OSError as err:  # no room even for the metadata: the error names the folder
            bag = self.recorder.partial
            self.close_failure = str(err)
        self.executor.shutdown(timeout_sec=2.0)
        self.spinner.join(timeout=2.0)
        self.player.close()
        # Destroying the node under a spin thread that is still waiting on it can leave that
        # thread looping; the process exit frees it instead.
        if not self.spinner.is_alive():
            self.node.destroy_node()
        return bag


def summary_lines(data: Collected, sent: int, bag: Path) -> tuple[list[str], dict]:
    """Return the printed summary and the same figures as a JSON-ready dict."""
    lat = np.asarray(data.latencies_ms)
    scores = (summarize(data.confusion, data.categories or [str(i) for i in
                                                           range(len(data.confusion))])
              if data.confusion is not None else None)
    node_counts = {k: data.diagnostics.get(f'frames_{k}') for k in ('received', *OUTCOMES)}
    figures = {
        'recording': str(bag), 'model': data.diagnostics.get('model_file'),
        'model_precision': data.diagnostics.get('model_precision'),
        'provider': data.diagnostics.get('provider'),
        'frames_in': sent, 'masks_out': data.masks, 'overlays_out': data.overlays,
        'lost_or_dropped': sent - data.masks,
        'node_counters': node_counts,
        'latency_ms_p50': float(np.percentile(lat, 50)) if lat.size else None,
        'latency_ms_p99': float(np.percentile(lat, 99)) if lat.size else None,
        'metrics': scores,
    }
    lines = [
        f'recording   {bag}',
        f'model       {figures["model"]} ({figures["model_precision"]}, provider '
        f'{figures["provider"]})',
        f'frames in   {sent}    masks out {data.masks}    overlays out {data.overlays}    '
        f'dropped/lost {sent - data.masks}',
        'node        ' + '  '.join(f'{k} {v}' for k, v in node_counts.items() if v is not None),
    ]
    if lat.size:
        lines.append(f'latency     end to end (frame published -> mask received, across '
                     f'processes): p50 {figures["latency_ms_p50"]:.1f} ms, '
                     f'p99 {figures["latency_ms_p99"]:.1f} ms')
    if scores:
        lines.append(f'accuracy    mIoU {scores["miou"]:.3f} (7 categories, void ignored), '
                     f'8-class mean {scores["miou_all"]:.3f}, pixel accuracy '
                     f'{scores["pixel_accuracy"]:.3f} over {data.masks} frames')
        lines.append('            ' + '  '.join(
            f'{k} {v:.2f}' if v is not None else f'{k} -' for k, v in scores['iou'].items()))
    return lines, figures


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``demo`` command."""
    args = _parse_args(argv)
    added = apply_transport_environment()
    bag = args.bag or default_recording()
    model = choose_model(args.model, args.precision, gpu_may_run=False).path
    for what, path in (('recording', bag), ('model', model)):
        if not path.exists():
            print(f'error: {what} {path} not found', file=sys.stderr)
            return 2
    try:
        truth = read_truth(bag)
    except ValueError as err:
        print(f'warning: {err}; no accuracy will be reported', file=sys.stderr)
        truth = {}
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in (args.out / 'overlays').glob('frame_*.png'):
        stale.unlink()
    if (args.out / 'masks_bag').exists():
        import shutil

        shutil.rmtree(args.out / 'masks_bag')
    shown = args.model or f'the shipped one, precision {args.precision}'
    print(f'recording {bag}\nmodel     {shown}\noutput    {args.out}\n'
          f'transport {", ".join(f"{k}={v}" for k, v in added.items()) or "as already set"}')

    log_path = args.out / 'node.log'
    with open(log_path, 'w') as log:
        command = _node_command(args.model, args.precision, args.providers.split(','))
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    # Ctrl-C is ours to handle: rclpy's own handler would shut the context down under the
    # spinning executor thread (a traceback from that thread) before the cleanup below runs.
    # And it only asks to stop: the loops below look at `stop` between steps, so no lock,
    # bag write or rclpy call is cut in half by a KeyboardInterrupt raised inside it.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    client = None
    stop = threading.Event()
    interrupted = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted.set()
        stop.set()

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    sent = 0
    error = None
    try:
        client = DemoClient(bag, args.out, truth, args.rate, args.frames)
        print('waiting for the node (model load and warm-up) ...', flush=True)
        client.wait_ready(proc, READY_TIMEOUT_S, stop)
        if not stop.is_set():
            sent = client.play(stop)
        if interrupted.is_set():
            print('\ninterrupted: stopping and keeping what was written', file=sys.stderr)
    except RuntimeError as err:
        error = err
    finally:
        sent = sent or (len(client.data.published_at) if client else 0)
        bag_out = client.close() if client else None
        code = _stop_node(proc)
        rclpy.try_shutdown()
        signal.signal(signal.SIGINT, previous_handler)
    if error is not None:
        print(f'error: {error}; node log {log_path}:', file=sys.stderr)
        print(log_path.read_text()[-3000:], file=sys.stderr)
        return 1
    frames = sorted((args.out / 'overlays').glob('frame_*.png'))
    gif = args.out / 'overlay.gif'
    lines, figures = summary_lines(client.data, sent, bag)
    recorded = client.recorder.message_count
    figures.update({'mask_bag': str(bag_out), 'masks_recorded': recorded,
                    'overlays': str(args.out / 'overlays'),
                    'node_exit_code': code, 'interrupted': interrupted.is_set()})
    failure = client.failure
    try:
        if not args.no_gif and _write_gif(frames, gif, args.rate):
            print(f'wrote {gif} ({len(frames)} frames)')
        (args.out / 'summary.json').write_text(json.dumps(figures, indent=1) + '\n')
    except OSError as err:
        failure = failure or f'expected to write the GIF and summary.json, got {err} (disk full?)'
    print('\n'.join(['', '== summary', *lines,
                     f'outputs     {args.out}/overlays/*.png, '
                     + ('' if args.no_gif else f'{gif.name}, ') + 'masks_bag/ '
                     f'(rosbag2, {recorded} masks), summary.json, node.log']))
    if failure is not None:
        print(f'error: {failure}', file=sys.stderr)
        return 1
    if interrupted.is_set():
        return 130
    if client.data.masks < sent:
        print(f'error: {sent - client.data.masks} of {sent} frames got no mask (node counters: '
              + ', '.join(f'{k} {v}' for k, v in figures['node_counters'].items())
              + f'); expected one mask per frame; node log {log_path}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
