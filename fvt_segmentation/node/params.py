"""The node's parameters: one table of name, default, description, range and mutability.

``config/segmentation.yaml`` lists every parameter of :data:`PARAMETERS` (a test checks it).
Only the parameters marked ``runtime=True`` may change after startup; every other one is
declared read-only. Values are validated by :func:`check_value`, both for the startup
values and for ``ros2 param set``, so a bad value is rejected with the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from fvt_segmentation.core.model_choice import PRECISIONS

RELIABILITIES = ('best_effort', 'reliable')


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: default value (its type is the parameter's type), limits, help."""

    name: str
    default: Any
    description: str
    runtime: bool = False
    choices: tuple[str, ...] = ()
    limits: tuple[float, float] | None = None

    def descriptor(self) -> ParameterDescriptor:
        """Return the ROS descriptor (description, read-only flag, range, choices)."""
        descriptor = ParameterDescriptor(description=self.description,
                                         read_only=not self.runtime)
        if self.choices:
            descriptor.additional_constraints = f'one of {list(self.choices)}'
        if self.limits is not None:
            low, high = self.limits
            if isinstance(self.default, float):
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
            else:
                descriptor.integer_range = [
                    IntegerRange(from_value=int(low), to_value=int(high), step=1)]
        return descriptor


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec('model_path', '',
                  'ONNX model file, run as it is; empty = the shipped model, its float32 or '
                  'int8 file as precision says'),
    ParameterSpec('precision', 'auto',
                  "which shipped file runs (model_path empty): 'auto' = int8 on the CPU "
                  "provider, float32 for TensorRT and CUDA; 'float32'; 'int8'. A change "
                  'reloads the model while the running one keeps serving',
                  runtime=True, choices=PRECISIONS),
    ParameterSpec('load_retries', 0,
                  'tries again this many times, 2 s apart, when the model fails to load; then '
                  'the node logs the cause, reports ERROR on /diagnostics and exits with 1',
                  limits=(0, 1000)),
    ParameterSpec('providers', ['tensorrt', 'cuda', 'cpu'],
                  'ONNX Runtime execution providers in order of preference'),
    ParameterSpec('require_gpu', False,
                  'fail at startup instead of falling back to the CPU provider'),
    ParameterSpec('intra_op_threads', 0,
                  'ONNX Runtime CPU threads; 0 = ONNX Runtime default on the CPU, 2 sleeping '
                  'threads with a GPU provider; > 0 = exactly this many (with '
                  'intra_op_spinning as set)', limits=(0, 256)),
    ParameterSpec('intra_op_spinning', False,
                  'ONNX Runtime CPU threads spin between runs: a little less latency, but on a '
                  'shared CPU the spinning takes the cores the camera driver and the ROS '
                  'middleware need (at 30 Hz on 2 cores it doubled the CPU time per frame); '
                  'false (default) = they sleep. With a GPU provider only used when '
                  'intra_op_threads > 0'),
    ParameterSpec('trt_cache_dir', '',
                  'folder for TensorRT engines (one subfolder per model SHA-256, precision and '
                  "input shape); '' = $ROS_HOME/fvt_segmentation/trt (~/.ros/...)"),
    ParameterSpec('trt_fp16', True,
                  'TensorRT builds an fp16 engine (checked against the CPU at its first build; '
                  'fp32 if it disagrees); false = fp32'),
    ParameterSpec('input_transport', 'raw',
                  "'raw': subscribe to image (sensor_msgs/Image); 'compressed': to "
                  'image/compressed (sensor_msgs/CompressedImage, JPEG or PNG)',
                  choices=('raw', 'compressed')),
    ParameterSpec('input_reliability', 'best_effort',
                  'input QoS reliability; best_effort also connects to reliable publishers',
                  choices=RELIABILITIES),
    ParameterSpec('input_depth', 1, 'input QoS history depth (keep last)', limits=(1, 100)),
    ParameterSpec('output_reliability', 'reliable', 'QoS reliability of the outputs',
                  choices=RELIABILITIES),
    ParameterSpec('output_depth', 1, 'QoS history depth of the outputs (keep last)',
                  limits=(1, 100)),
    ParameterSpec('max_input_pixels', 4096 * 4096,
                  'frames with more pixels (width*height) are rejected', limits=(1, 1 << 30)),
    ParameterSpec('expected_rate', 0.0,
                  'expected input and output rate in Hz; diagnostics WARN when a rate is more '
                  'than 10 % below it; 0 = no rate check', limits=(0.0, 1000.0)),
    ParameterSpec('stale_timeout', 2.0,
                  'diagnostics ERROR when no frame arrived for this many seconds',
                  limits=(0.1, 3600.0)),
    ParameterSpec('diagnostics_period', 1.0, 'seconds between /diagnostics messages',
                  limits=(0.1, 60.0)),
    ParameterSpec('stats_window', 5.0,
                  'seconds of history behind the rates and latency percentiles',
                  limits=(1.0, 600.0)),
    ParameterSpec('overlay_alpha', 0.5,
                  'weight of the colour mask in ~/overlay (0 = frame only, 1 = mask only)',
                  runtime=True, limits=(0.0, 1.0)),
    ParameterSpec('mask_resolution', 'input',
                  "resolution of every image output: 'input' (camera) or 'model' (network)",
                  runtime=True, choices=('input', 'model')),
    ParameterSpec('publish_colored_mask', True, 'compute and publish ~/colored_mask',
                  runtime=True),
    ParameterSpec('publish_overlay', True, 'compute and publish ~/overlay', runtime=True),
    ParameterSpec('publish_confidence', True, 'compute and publish ~/confidence',
                  runtime=True),
    ParameterSpec('publish_class_fractions', True, 'compute and publish ~/class_fractions',
                  runtime=True),
    ParameterSpec('max_frame_age_ms', 0,
                  'skip frames whose header stamp is older than this (node clock); '
                  '0 = never skip. Needs synchronised clocks', runtime=True,
                  limits=(0, 60000)),
)

SPECS = {spec.name: spec for spec in PARAMETERS}


def check_value(name: str, value: Any) -> str | None:
    """Return why ``value`` is not acceptable for parameter ``name``, or None if it is.

    Parameters outside :data:`PARAMETERS` (``use_sim_time``, QoS overrides) are not ours to
    judge and always pass. Types are enforced by rclpy itself.
    """
    spec = SPECS.get(name)
    if spec is None:
        return None
    if spec.choices and value not in spec.choices:
        return f'{name} must be one of {list(spec.choices)}; got {value!r}'
    if spec.limits is not None and isinstance(value, (int, float)) and not isinstance(
            value, bool):
        low, high = spec.limits
        if not low <= value <= high:
            return f'{name} must be in [{low}, {high}]; got {value!r}'
    if name == 'providers' and not [p for p in value if p.strip()]:
        return "providers must name at least one provider, e.g. ['tensorrt', 'cuda', 'cpu']"
    return None


@dataclass(frozen=True)
class RuntimeSettings:
    """The parameters that may change while running; replaced as a whole on change."""

    overlay_alpha: float
    mask_resolution: str
    publish_colored_mask: bool
    publish_overlay: bool
    publish_confidence: bool
    publish_class_fractions: bool
    max_frame_age_ms: int

    def enabled(self, output: str) -> bool:
        """Whether the parameter toggle of ``output`` allows it (the mask has none)."""
        return output == 'mask' or bool(getattr(self, f'publish_{output}'))


RUNTIME_NAMES = frozenset(f.name for f in fields(RuntimeSettings))
"""The names of the parameters :class:`RuntimeSettings` holds."""
