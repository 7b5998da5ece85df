"""The errors whose message is the whole story for a user: one line, no traceback.

``fvt-train`` (:mod:`fvt_training.cli`) and a supervised training worker
(:mod:`fvt_training.runs.cluster`) both print them as one line; this module sits below both.
"""

from __future__ import annotations

import sys

USER_ERRORS = {
    'fvt_training.runs.config': ('ConfigError',),
    'fvt_training.data.prepared': ('DataError',),
    'fvt_training.runs.run_files': ('RunError',),
    'fvt_training.models.factories': ('ModelConfigError', 'EncoderWeightsUnavailableError'),
    'fvt_segmentation.core.contract': ('ModelLoadError',),
    'fvt_training.evaluation.scoring': ('EvaluationError',),
    'fvt_training.onnx.model_file': ('ExportError',),
    'fvt_training.evaluation.compare': ('CompareError',),
    'fvt_training.review.app': ('ReviewSetupError',),
    'fvt_training.adopt.inspection': ('AdoptError',),
    'fvt_training.data.label_sets': ('LabelSetError',),
    'fvt_training.models.torch_checkpoint': ('CheckpointError',),
}
"""Errors whose message is the whole story for a user (no traceback), by module. A module's
errors count once it is loaded: none can be raised before, and looking them up this way
keeps TensorFlow and Flask unloaded until a command needs them."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Return the :data:`USER_ERRORS` classes of the modules loaded so far, and FileNotFoundError.

    A module not imported yet cannot have raised its error, so it is not imported here.
    """
    errors: list[type[BaseException]] = [FileNotFoundError]
    for module, names in USER_ERRORS.items():
        loaded = sys.modules.get(module)
        errors.extend(getattr(loaded, n) for n in names if loaded is not None)
    return tuple(errors)
