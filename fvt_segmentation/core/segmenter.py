"""The segmenter: one ONNX Runtime session plus its contract, segmenting frames.

:class:`Segmenter` owns the session and times each stage; the pre- and post-processing are
the plain functions of :mod:`fvt_segmentation.core.frame_processing`. Build one with
:func:`fvt_segmentation.core.inference.load_segmenter`.
"""

from __future__ import annotations

from pathlib import Path
import time

import numpy as np
import onnxruntime as ort

from fvt_segmentation.core.contract import ContractError, ModelContract, ModelLoadError
from fvt_segmentation.core.frame_processing import (
    Segmentation,
    preprocess_frame,
    scores_to_classes,
    scores_to_confidence,
)
from fvt_segmentation.core.sessions import first_line


class Segmenter:
    """An ONNX Runtime session plus its contract; use :func:`load_segmenter` to build one.

    Besides the session, it keeps what the loader resolved, for the startup log and
    /diagnostics: the provider requested and why a preferred one is not running
    (``fallback_reason``), the TensorRT precision and engine folder, the parity check
    (``parity_failed``: an engine failed it at this start, or the engine that runs failed it;
    not set when an earlier start's fp16 verdict only sent this one to fp32).
    """

    def __init__(self, session: ort.InferenceSession, contract: ModelContract,
                 model_path: Path) -> None:
        self.session = session
        self.requested_providers: list[str] = []
        self.fallback_reason = ''
        self.contract = contract
        self.model_path = model_path
        self.precision = 'fp32'
        self.engine_dir: Path | None = None
        self.engine_cached: bool | None = None
        self.parity = ''
        self.parity_failed = False
        self.load_seconds = 0.0
        self.threads: tuple[int, bool] = (0, True)
        self.warmup_ms = 0.0
        self.input_name = session.get_inputs()[0].name
        names = contract.outputs or {'scores': session.get_outputs()[0].name}
        self.scores_name: str | None = names.get('scores')
        self.classes_name: str | None = names.get('classes')
        self.confidence_name: str | None = names.get('confidence')
        # Where a version 2 file's confidence comes from: its own output, else its scores.
        self._confidence_source = self.confidence_name or self.scores_name
        self._bindings: dict[tuple[str, ...], ort.IOBinding] = {}
        self._bound: dict[str, ort.OrtValue] = {}
        self._binding_device = ''
        shape = session.get_inputs()[0].shape
        self.input_size: tuple[int, int] = (
            (int(shape[1]), int(shape[2])) if contract.layout == 'NHWC'
            else (int(shape[2]), int(shape[3])))

    @property
    def active_provider(self) -> str:
        """The provider that really runs the model (ONNX Runtime falls back silently)."""
        return self.session.get_providers()[0]

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """The batch-1 input shape the node feeds."""
        height, width = self.input_size
        return (1, height, width, 3) if self.contract.layout == 'NHWC' else (1, 3, height, width)

    @property
    def name(self) -> str:
        """A short human name: file stem plus architecture/backbone from the provenance."""
        prov = self.contract.provenance
        arch = '/'.join(str(prov[k]) for k in ('architecture', 'backbone') if prov.get(k))
        return f'{self.model_path.stem} ({arch})' if arch else self.model_path.stem

    def preprocess(self, frame: np.ndarray, frame_order: str = 'RGB') -> np.ndarray:
        """See :func:`preprocess_frame`."""
        return preprocess_frame(frame, frame_order, self.input_size, self.contract)

    @property
    def io_binding(self) -> str:
        """The device the outputs are bound to ('cuda', 'cpu'), or '' without IO binding."""
        return self._binding_device

    def enable_io_binding(self, device: str = 'cuda') -> bool:
        """Fetch outputs through IO binding, into buffers allocated once on ``device``.

        Each run then writes the outputs it needs into the same device buffers (no
        allocation per frame) and copies only those to fresh host arrays, so a result stays
        valid while the next frame runs. Returns False (and changes nothing) when an output
        has no fixed batch-1 shape to allocate.
        """
        shapes = {}
        for output in self.session.get_outputs():
            shape = [1, *output.shape[1:]]
            if not all(isinstance(d, int) and d > 0 for d in shape):
                return False
            shapes[output.name] = (shape, np.uint8 if output.type == 'tensor(uint8)'
                                   else np.float32)
        names = [n for n in (self.classes_name, self.confidence_name, self.scores_name) if n]
        self._bound = {name: ort.OrtValue.ortvalue_from_shape_and_type(*shapes[name], device, 0)
                       for name in names}
        self._bindings = {}
        self._binding_device = device
        return True

    def _run(self, names: list[str], tensor: np.ndarray) -> list[np.ndarray]:
        if not self._binding_device:
            return self.session.run(names, {self.input_name: tensor})
        key = tuple(names)
        binding = self._bindings.get(key)
        if binding is None:
            binding = self.session.io_binding()
            for name in names:
                binding.bind_ortvalue_output(name, self._bound[name])
            self._bindings[key] = binding
        binding.bind_cpu_input(self.input_name, tensor)
        self.session.run_with_iobinding(binding)
        outputs = [self._bound[name].numpy() for name in names]
        # A CPU OrtValue hands out a view of its buffer, which the next frame overwrites.
        return [o.copy() for o in outputs] if self._binding_device == 'cpu' else outputs

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Run the network on a preprocessed tensor; return its raw float scores."""
        if self.scores_name is None:
            raise ContractError(f'{self.model_path}: this file has no scores output (its '
                                f'fvt.outputs: {dict(self.contract.outputs)})')
        return self._run([self.scores_name], tensor)[0]

    def postprocess(self, scores: np.ndarray,
                    want_confidence: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """See :func:`scores_to_classes`."""
        return scores_to_classes(scores, self.contract.layout, self.contract.output,
                                 want_confidence)

    def _run_in_graph(self, tensor: np.ndarray, want_confidence: bool
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        # A version 2 file computes the uint8 class ids (and confidence) itself: only those
        # come back from the provider, never the float scores.
        want_confidence = want_confidence and self._confidence_source is not None
        names = [self.classes_name]
        if want_confidence:
            names.append(self._confidence_source)
        outputs = self._run(names, tensor)
        classes = outputs[0].reshape(outputs[0].shape[-2:])  # [1, H, W] or [1, 1, H, W]
        if not want_confidence:
            return classes, None
        if self.confidence_name is not None:
            return classes, outputs[1].reshape(classes.shape)
        return classes, scores_to_confidence(outputs[1][0], self.contract.layout,
                                             self.contract.output)

    def segment(self, frame: np.ndarray, frame_order: str = 'RGB',
                want_confidence: bool = False) -> Segmentation:
        """Segment one uint8 frame; the result stays at the model's output resolution."""
        t0 = time.perf_counter()
        tensor = self.preprocess(frame, frame_order)
        t1 = time.perf_counter()
        if self.classes_name is not None:
            classes, confidence = self._run_in_graph(tensor, want_confidence)
            t2 = t3 = time.perf_counter()
        else:
            scores = self.infer(tensor)
            t2 = time.perf_counter()
            classes, confidence = self.postprocess(scores, want_confidence)
            t3 = time.perf_counter()
        return Segmentation(classes, confidence, {
            'preprocess': (t1 - t0) * 1e3, 'inference': (t2 - t1) * 1e3,
            'postprocess': (t3 - t2) * 1e3})

    def warm_up(self, runs: int = 2) -> float:
        """Run a black frame through the model; return the last run's time in ms.

        Raises :class:`ModelLoadError` when the model loads but cannot run (an operator that
        fails on real data, a device that cannot allocate): a load that ends here is a
        failed load, never a node that waits for ever.
        """
        frame = np.zeros((*self.input_size, 3), np.uint8)
        elapsed = 0.0
        for _ in range(max(1, runs)):
            t0 = time.perf_counter()
            try:
                self.segment(frame, want_confidence=True)
            except Exception as err:  # onnxruntime raises several unrelated exception types
                raise ModelLoadError(
                    f'{self.model_path}: the model loads but fails on its first run on '
                    f'{self.active_provider} ({type(err).__name__}: {first_line(err)[:300]})'
                ) from err
            elapsed = (time.perf_counter() - t0) * 1e3
        return elapsed
