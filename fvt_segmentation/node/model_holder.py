"""The node's model lifecycle: the first load in the background, reloads, the model serving.

:class:`ModelHolder` keeps the model apart from the rclpy node that owns it (no rclpy here):
the node hands it a parameter reader, its logger and :class:`Hooks` for what only the node
can do. The first load retries ``load_retries`` times and, failing, ends the start; a change
of ``precision`` loads the other file in a thread of its own while the running model keeps
serving. Either way the model goes in with one assignment (:class:`Serving`), so a frame
never pairs one model with another's output style or choice.
"""

from __future__ import annotations

from collections.abc import Callable
import threading
import time
from typing import Any, NamedTuple, Protocol

import numpy as np

from fvt_segmentation.core.contract import ModelLoadError
from fvt_segmentation.core.gpu_load import ProgressWarning
from fvt_segmentation.core.inference import check_model_file
from fvt_segmentation.core.model_choice import ModelChoice, choose_model, load_model
from fvt_segmentation.core.segmenter import Segmenter
from fvt_segmentation.node.outputs import OutputStyle

PARITY_FRAMES = 4
LOAD_RETRY_DELAY_S = 2.0
FAILURE_REPORT_S = 1.0
FAILURE_REPORT_INTERVAL_S = 0.25
"""A failed start repeats its ERROR status this often for this long, then the process ends."""


def parity_frames() -> list[np.ndarray]:
    """Frames of the bundled recording for the first-build TensorRT parity check.

    Empty when the install left the recording out (``FVT_WITHOUT_RECORDING=1``): no check.
    """
    from fvt_segmentation.bag.bundled_recording import default_recording, sample_frames

    if not default_recording().exists():
        return []
    return sample_frames(PARITY_FRAMES)


class Serving(NamedTuple):
    """The model the next frame runs through, the style of its outputs, its file and why."""

    segmenter: Segmenter
    style: OutputStyle
    choice: ModelChoice


class Logger(Protocol):
    """The logging calls the holder makes; an rclpy logger has them."""

    def info(self, message: str) -> Any:
        """Log ``message`` at INFO."""

    def warning(self, message: str) -> Any:
        """Log ``message`` at WARN."""

    def error(self, message: str) -> Any:
        """Log ``message`` at ERROR."""

    def fatal(self, message: str) -> Any:
        """Log ``message`` at FATAL."""


class Hooks(NamedTuple):
    """What only the node can do, called from the holder's threads."""

    installed: Callable[[Serving], None]
    """A model now serves, the first or a reload (under the lifecycle lock)."""
    started: Callable[[Serving], None]
    """The first model serves: start the pipeline, say so (under the lifecycle lock)."""
    report: Callable[[], None]
    """Publish the status; a failed start does it a few times (under the lifecycle lock)."""
    shut_down: Callable[[], None]
    """Stop spinning after a failed start, so that the process ends."""


class ModelHolder:
    """Loads, reloads and holds the node's model; see the module docstring."""

    def __init__(self, param: Callable[[str], Any], logger: Logger,
                 image_kwargs: dict[str, bool], hooks: Hooks) -> None:
        self._param, self._log, self._hooks = param, logger, hooks
        self._image_kwargs = image_kwargs
        self.requested = list(param('providers'))
        # A wrong model_path or provider name fails right here, before any thread starts.
        check_model_file(choose_model(param('model_path'), 'float32', False).path,
                         self.requested)
        self.serving: Serving | None = None
        self.load_error: ModelLoadError | None = None
        self.stage = 'loading model'
        """What the first load is doing, for /diagnostics meanwhile."""
        self.reload_state = ''
        """The latest reload: running, failed or done, for /diagnostics."""
        self._ready = threading.Event()
        self._closing = threading.Event()
        # Held while the pipeline starts or a reloaded model is installed, and by close():
        # a load that ends after shutdown began then changes nothing.
        self._lifecycle = threading.Lock()
        self._reloads = threading.Lock()  # one reload at a time, in the order asked
        self.loader = threading.Thread(target=self._load, name='segmentation_load',
                                       daemon=True)

    @property
    def segmenter(self) -> Segmenter | None:
        """The model the next frame runs through; None until the first load ends."""
        return None if self.serving is None else self.serving.segmenter

    @property
    def choice(self) -> ModelChoice | None:
        """Which file that model is and why; None until the first load ends."""
        return None if self.serving is None else self.serving.choice

    def start(self) -> None:
        """Start the first load in the background (a TensorRT engine may build for minutes)."""
        self.loader.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the model is loaded (True) or loading failed or timed out (False)."""
        self._ready.wait(timeout)
        return self.segmenter is not None

    def precision_changed(self, precision: str) -> None:
        """Reload for a new ``precision`` value, unless ``model_path`` names the file."""
        if not self._ready.is_set():
            return  # before the first load ends, the loader looks itself
        if self._param('model_path').strip():
            self._log.info(f'precision {precision}: no effect, model_path is set and runs as '
                           'it is')
        else:
            self._start_reload(precision)

    def close(self) -> None:
        """Let no load that ends from now on install its model or start anything."""
        with self._lifecycle:
            self._closing.set()

    def _on_progress(self, line: str) -> None:
        self.stage = line
        if isinstance(line, ProgressWarning):
            self._log.warning(line)
        elif 'TensorRT' in line:
            self._log.info(line)

    def _open_model(self, precision: str) -> tuple[Segmenter, ModelChoice]:
        """Choose and load the model file; any failure becomes one :class:`ModelLoadError`."""
        try:
            return load_model(
                self._param('model_path'), precision, self.requested,
                require_gpu=self._param('require_gpu'),
                intra_op_threads=self._param('intra_op_threads'),
                intra_op_spinning=self._param('intra_op_spinning'),
                trt_cache_dir=self._param('trt_cache_dir') or None,
                trt_fp16=self._param('trt_fp16'), parity_frames=parity_frames,
                progress=self._on_progress)
        except ModelLoadError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever breaks, the node must say what
            raise ModelLoadError(f'loading the model failed: {type(err).__name__}: '
                                 f'{err}'.strip()[:600]) from err

    def _load(self) -> None:
        """Loader thread: open the model (retrying by ``load_retries``), start the pipeline."""
        retries, precision = int(self._param('load_retries')), self._param('precision')
        for attempt in range(retries + 1):
            try:
                segmenter, choice = self._open_model(precision)
                break
            except ModelLoadError as err:
                if attempt == retries or self._closing.is_set():
                    self._fail(err)
                    return
                self._log.error(
                    f'model load failed (try {attempt + 1} of {retries + 1}), trying again in '
                    f'{LOAD_RETRY_DELAY_S:.0f} s: {err}')
                self.stage = f'retrying after: {err}'
                if self._closing.wait(LOAD_RETRY_DELAY_S):
                    return
        with self._lifecycle:
            if self._closing.is_set():
                return  # the node was destroyed while the model loaded
            self._hooks.started(self._install(segmenter, choice))
        if choice.warning:
            self._log.warning(choice.warning)
        self._ready.set()
        if self._param('precision') != precision:  # changed while the first model loaded
            self._start_reload(self._param('precision'))

    def _fail(self, err: ModelLoadError) -> None:
        """End a start that cannot load: ERROR status and one fatal line, then exit."""
        self.load_error = err
        self._log.fatal(f'cannot start: {err}')
        self._ready.set()
        # The ERROR status goes out a few times, for monitors still discovering the node;
        # then main() exits with status 1 once spinning stops.
        deadline = time.monotonic() + FAILURE_REPORT_S
        while time.monotonic() < deadline:
            with self._lifecycle:
                if self._closing.is_set():
                    return
                self._hooks.report()
            self._closing.wait(FAILURE_REPORT_INTERVAL_S)
        self._hooks.shut_down()

    def _install(self, segmenter: Segmenter, choice: ModelChoice) -> Serving:
        """Make ``segmenter`` the one the next frame runs through (the first or a reload)."""
        # One assignment: a frame never pairs one model with another's style or choice.
        self.serving = Serving(segmenter, OutputStyle.of(segmenter.contract,
                                                         self._image_kwargs), choice)
        self._hooks.installed(self.serving)
        return self.serving

    def _start_reload(self, precision: str) -> None:
        threading.Thread(target=self._reload, args=(precision,), name='segmentation_reload',
                         daemon=True).start()

    def _reload(self, precision: str) -> None:
        """Reload thread: open the model ``precision`` asks for; the old one serves meanwhile."""
        with self._reloads:
            if self._closing.is_set():
                return
            self.reload_state = f'loading precision {precision}'
            try:
                segmenter, choice = self._open_model(precision)
            except ModelLoadError as err:
                self.reload_state = f'precision {precision} FAILED: {err}'
                self._log.error(f'precision {precision}: the reload failed, the running model '
                                f'keeps serving: {err}')
                return
            with self._lifecycle:
                if self._closing.is_set():
                    return
                self.reload_state = (f'precision {precision}: {choice.path.name} since '
                                     f'{time.strftime("%H:%M:%S")}')
                self._install(segmenter, choice)
            self._log.info(
                f'precision {precision}: now running {choice.path} ({choice.precision}; '
                f'{choice.reason}) on {segmenter.active_provider}')
            if choice.warning:
                self._log.warning(choice.warning)
