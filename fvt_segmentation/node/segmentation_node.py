"""ROS 2 node ``segmentation_node``: camera frames in, masks, overlays and statistics out.

A thin shell around the rclpy-free core (:mod:`fvt_segmentation.core`) that reads like the
README's data flow: input, slot, inference, outputs, publish. The subscription callback only
stores the newest frame in a one-slot holder (:mod:`fvt_segmentation.node.latest_frame`); the
inference thread takes it, decodes and segments it and puts the result in a second one-slot
holder; the output thread builds the outputs somebody subscribes to
(:mod:`fvt_segmentation.node.outputs`) and publishes them while the next frame is being
inferred. A slow stage therefore drops frames instead of building a backlog. The model is
loaded, reloaded and held by :mod:`fvt_segmentation.node.model_holder`;
:mod:`fvt_segmentation.node.pipeline_stats` counts and times,
:mod:`fvt_segmentation.node.diagnostics` reports and :mod:`fvt_segmentation.node.log_text`
words the log lines. See README.md for topics and parameters.
"""

from __future__ import annotations

from dataclasses import replace
import sys
import threading
import time
from typing import Any, NamedTuple

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from fvt_segmentation.core.contract import ModelLoadError
from fvt_segmentation.core.conversions import (
    Frame,
    FrameError,
    compressed_to_frame,
    image_to_frame,
    stamp_ns,
)
from fvt_segmentation.core.frame_processing import Segmentation
from fvt_segmentation.node.diagnostics import (
    HealthSnapshot,
    build_status,
    loading_status,
    serving_values,
)
from fvt_segmentation.node.latest_frame import LatestSlot
from fvt_segmentation.node.log_text import model_text, qos_text, stamp_text
from fvt_segmentation.node.model_holder import Hooks, ModelHolder, Serving
from fvt_segmentation.node.outputs import (
    BUILDERS,
    MESSAGE_TYPES,
    OUTPUTS,
    FrameOutputs,
    OutputStyle,
)
from fvt_segmentation.node.params import PARAMETERS, RUNTIME_NAMES, RuntimeSettings, check_value
from fvt_segmentation.node.pipeline_stats import PipelineStats
from fvt_segmentation.node.ros_compat import add_post_set_parameters_callback, message_kwargs

NODE_NAME = 'segmentation_node'
LOG_THROTTLE_S = 5.0


class _Pending(NamedTuple):
    msg: Any
    received: float  # time.monotonic() in the subscription callback
    received_ns: int  # the node clock then, for the delivery time


class _Result(NamedTuple):
    pending: _Pending
    frame: Frame
    result: Segmentation
    style: OutputStyle  # of the model that made ``result`` (a reload may swap it meanwhile)
    wanted: frozenset[str]
    settings: RuntimeSettings
    ready: float  # time.monotonic() when the inference stage handed it over


def _qos(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=DurabilityPolicy.VOLATILE)


class SegmentationNode(Node):
    """Segments every frame it can keep up with; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._declare_parameters()
        # A wrong model_path or provider name fails right here, before any thread starts.
        self.model = ModelHolder(self._param, self.get_logger(), self._image_kwargs, Hooks(
            installed=self._publish_categories, started=self._start_pipeline,
            report=self._publish_diagnostics, shut_down=self.context.try_shutdown))
        self._max_pixels = int(self._param('max_input_pixels'))
        self.stats = PipelineStats(float(self._param('stats_window')), OUTPUTS)
        self.counters, self.published = self.stats.counters, self.stats.published
        self._frames: LatestSlot[_Pending] = LatestSlot()
        self._results: LatestSlot[_Result] = LatestSlot()
        self._threads: list[threading.Thread] = []
        self._create_outputs()
        self._create_input()
        self._diagnostics_timer = self.create_timer(
            float(self._param('diagnostics_period')), self._publish_diagnostics)
        # The model loads (and a TensorRT engine builds) in the background: meanwhile the
        # node answers parameter services and /diagnostics says what it is doing.
        self.model.start()

    # ---- setup ------------------------------------------------------------------------

    def _declare_parameters(self) -> None:
        self.add_on_set_parameters_callback(self._validate_parameters)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self.settings = RuntimeSettings(**{name: self._param(name) for name in RUNTIME_NAMES})
        post_set = add_post_set_parameters_callback(
            self, self._validate_parameters, self._apply_parameters)
        self._image_kwargs, check_fields = message_kwargs(Image)
        # What this rclpy lacks and the node does instead (Humble); logged at startup.
        self.fallbacks = [note for note in (post_set, check_fields) if note is not None]

    def _create_outputs(self) -> None:
        self._output_qos = _qos(self._param('output_reliability'), self._param('output_depth'))
        self._outputs = {name: self.create_publisher(type_, f'~/{name}', self._output_qos)
                         for name, type_ in MESSAGE_TYPES.items()}
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._categories_pub = self.create_publisher(String, '~/categories', latched)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

    def _create_input(self) -> None:
        # Like image_transport: 'image' is the base name (remappable), the compressed
        # stream lives under '<base>/compressed'.
        self._compressed = self._param('input_transport') == 'compressed'
        base = self.resolve_topic_name('image')
        self.input_topic = f'{base}/compressed' if self._compressed else base
        input_qos = _qos(self._param('input_reliability'), self._param('input_depth'))
        # Frames that arrive while the model loads wait in the one-slot holder (newest only).
        self._subscription = self.create_subscription(
            CompressedImage if self._compressed else Image, self.input_topic, self._on_frame,
            input_qos, qos_overriding_options=QoSOverridingOptions.with_default_policies())

    def _publish_categories(self, serving: Serving) -> None:
        self._categories_pub.publish(String(data=serving.segmenter.contract.categories_json()))

    def _start_pipeline(self, serving: Serving) -> None:
        """Start the inference and output threads once the first model serves; log it."""
        self._threads = [
            threading.Thread(target=self._drain, args=(self._frames, self._infer),
                             name='segmentation_inference', daemon=True),
            threading.Thread(target=self._drain, args=(self._results, self._publish),
                             name='segmentation_outputs', daemon=True)]
        for thread in self._threads:
            thread.start()
        self._log_startup(serving)

    # ---- parameters -------------------------------------------------------------------

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _validate_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        for parameter in parameters:
            reason = check_value(parameter.name, parameter.value)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        changes = {p.name: p.value for p in parameters if p.name in RUNTIME_NAMES}
        if changes:
            self.settings = replace(self.settings, **changes)
            self.get_logger().info(f'parameters changed: {changes}')
        for parameter in parameters:
            if parameter.name == 'precision':
                self.model.precision_changed(parameter.value)

    # ---- input and slot ---------------------------------------------------------------

    def _on_frame(self, msg: Any) -> None:
        now = time.monotonic()
        self.stats.received(now)
        pending = _Pending(msg, now, self.get_clock().now().nanoseconds)
        if self._frames.put(pending) is not None:
            self.counters.add('dropped')

    def _drain(self, slot: LatestSlot, handle: Any) -> None:
        """Thread body: hand the newest item of ``slot`` to ``handle`` until shutdown."""
        while not slot.closed:
            item = slot.take(timeout=0.2)
            if item is None:
                continue
            try:
                handle(item)
            except Exception as err:  # noqa: BLE001 - one bad frame must not stop the node
                reason = f'{type(err).__name__}: {err}'.strip()[:300]
                self.stats.failed(reason)
                msg = item.msg if isinstance(item, _Pending) else item.pending.msg
                self.get_logger().error(
                    f'processing failed for {stamp_text(msg)} on {self.input_topic}: '
                    f'{reason}', throttle_duration_sec=LOG_THROTTLE_S)

    # ---- inference --------------------------------------------------------------------

    def _too_old(self, msg: Any, settings: RuntimeSettings) -> float | None:
        """Return the frame's age in ms if it exceeds ``max_frame_age_ms``, else None."""
        stamp = msg.header.stamp
        if settings.max_frame_age_ms <= 0 or (stamp.sec == 0 and stamp.nanosec == 0):
            return None  # disabled, or an unstamped frame: its age is unknown
        age_ms = (self.get_clock().now() - Time.from_msg(stamp)).nanoseconds / 1e6
        return age_ms if age_ms > settings.max_frame_age_ms else None

    def _decode(self, msg: Any) -> Frame:
        if self._compressed:
            return compressed_to_frame(msg, self._max_pixels)
        return image_to_frame(msg, self._max_pixels)

    def _infer(self, pending: _Pending) -> None:
        """Inference stage: check and decode the frame, run the model, pass the result on."""
        self.stats.stage('queue', (time.monotonic() - pending.received) * 1e3)
        msg, settings = pending.msg, self.settings
        stamp = stamp_ns(msg.header)
        if stamp:
            self.stats.stage('delivery', (pending.received_ns - stamp) / 1e6)
        age_ms = self._too_old(msg, settings)
        if age_ms is not None:
            self.counters.add('stale')
            self.get_logger().warning(
                f'skipped {stamp_text(msg)} on {self.input_topic}: {age_ms:.0f} ms old > '
                f'max_frame_age_ms {settings.max_frame_age_ms}',
                throttle_duration_sec=LOG_THROTTLE_S)
            return
        start = time.perf_counter()
        try:
            frame = self._decode(msg)
        except FrameError as err:
            self.counters.add('rejected')
            self.get_logger().error(f'rejected {stamp_text(msg)} on {self.input_topic}: {err}',
                                    throttle_duration_sec=LOG_THROTTLE_S)
            return
        self.stats.stage('conversion', (time.perf_counter() - start) * 1e3)
        wanted = frozenset(name for name in OUTPUTS if settings.enabled(name)
                           and self._outputs[name].get_subscription_count() > 0)
        segmenter, style, _ = self.model.serving  # a reload may swap it meanwhile
        result = segmenter.segment(frame.pixels, frame.color_order,
                                   want_confidence='confidence' in wanted)
        self.stats.segmented(result.timings_ms)
        # The output stage builds and publishes while the next frame is being inferred; if
        # it falls behind, its unpublished result is replaced (and counted as dropped).
        ready = _Result(pending, frame, result, style, wanted, settings, time.monotonic())
        if self._results.put(ready) is not None:
            self.counters.add('dropped')

    # ---- outputs and publish ----------------------------------------------------------

    def _publish(self, item: _Result) -> None:
        """Output stage: build each wanted output straight into its message, publish it."""
        self.stats.stage('handoff', (time.monotonic() - item.ready) * 1e3)
        start = time.perf_counter()
        publishing = 0.0  # seconds spent in publish(), the rest is building the outputs
        outputs = FrameOutputs(item.style, item.pending.msg.header, item.frame, item.result,
                               item.settings.mask_resolution, item.settings.overlay_alpha)
        for name, build in BUILDERS.items():
            msg = build(outputs) if name in item.wanted else None
            if msg is not None:
                sent = time.perf_counter()
                self._outputs[name].publish(msg)
                publishing += time.perf_counter() - sent
                self.published.add(name)
        self.stats.stage('outputs', (time.perf_counter() - start - publishing) * 1e3)
        self.stats.stage('publish', publishing * 1e3)
        self.stats.processed(item.pending.received, time.monotonic())

    # ---- diagnostics and logging ------------------------------------------------------

    def health(self) -> HealthSnapshot:
        """Sample rates, latencies and counters now (the model must be loaded)."""
        serving = self.model.serving
        assert serving is not None, 'health() before the model was loaded'
        return self.stats.snapshot(
            serving.segmenter.active_provider, serving.segmenter.name,
            serving_values(serving, self.input_topic, self.settings, self._param('precision'),
                           self.model.reload_state))

    def _publish_diagnostics(self) -> None:
        name = f'{self.get_fully_qualified_name()}: segmentation'
        model = self.model
        if model.serving is None:
            status = loading_status(
                name, model.stage, time.monotonic() - self.stats.started,
                self._param('model_path') or 'the shipped model',
                error='' if model.load_error is None else str(model.load_error))
        else:
            status = build_status(self.health(), name, float(self._param('expected_rate')),
                                  float(self._param('stale_timeout')))
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(msg)

    def _log_startup(self, serving: Serving) -> None:
        outputs = ', '.join(self.resolve_topic_name(f'~/{n}') for n in (*OUTPUTS, 'categories'))
        # The subscription's profile includes any qos_overrides.<topic>.subscription.* values.
        self.get_logger().info(
            f'ready: {model_text(serving, self.model.requested, self._param("precision"))}\n'
            f'  input: {self.input_topic} ({"CompressedImage" if self._compressed else "Image"}'
            f'; {qos_text(self._subscription.qos_profile)})\n'
            f'  outputs: {outputs} ({qos_text(self._output_qos)}; categories transient local)\n'
            f'  mask_resolution {self.settings.mask_resolution}, max_frame_age_ms '
            f'{self.settings.max_frame_age_ms}, max_input_pixels {self._max_pixels}')
        if serving.segmenter.parity_failed:
            self.get_logger().error(f'TensorRT parity check: {serving.segmenter.parity}')
        for note in self.fallbacks:
            self.get_logger().info(f'compatibility fallback: {note}')

    def destroy_node(self) -> None:
        """Stop the pipeline threads, then destroy the node's entities.

        A load or TensorRT build still running cannot be interrupted: it is left to end on
        its own (its thread is a daemon) and, finding the node closing, starts nothing and
        publishes nothing.
        """
        model = getattr(self, 'model', None)
        if model is not None:
            model.close()
        for slot in (getattr(self, '_frames', None), getattr(self, '_results', None)):
            if slot is not None:
                slot.close()
        for thread in getattr(self, '_threads', []):
            thread.join(timeout=10.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the node until shutdown; return 1 after one fatal line if it cannot start."""
    rclpy.init(args=args)
    node = None
    try:
        node = SegmentationNode()
        rclpy.spin(node)
        if node.model.load_error is not None:
            return 1  # the loader thread logged the fatal line and stopped spinning
    except (ModelLoadError, ParameterException) as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(f'cannot start: {err}')
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
