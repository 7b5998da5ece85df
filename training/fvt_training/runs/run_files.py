"""The files of a run folder: their names, and reading and writing its JSON files.

Kept apart from :mod:`fvt_training.runs.train` so that tools that only read runs
(``fvt-train compare``) do not import TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
import json
import os
from pathlib import Path
from typing import Any

from fvt_training.common.files import write_bytes_atomic

CONFIG_FILE = 'config.yaml'
STATE_FILE = 'state.json'
BEST_WEIGHTS = 'best.weights.h5'
LAST_WEIGHTS = 'last.weights.h5'
HISTORY_FILE = 'history.csv'
PLOT_FILE = 'plot.png'
METRICS_FILE = 'metrics.json'
COMMAND_FILE = 'command.txt'
TENSORBOARD_DIR = 'tensorboard'
EXPORT_FILE = 'export.json'
EVAL_PREFIX = 'eval_'
"""``fvt-train evaluate`` writes ``eval_<split>.json`` and the figures folder ``eval_<split>``."""


class RunError(RuntimeError):
    """A run folder that cannot be created, resumed or loaded; the message says why."""


def read_json(path: str | os.PathLike) -> dict | None:
    """Return a JSON file's object, or None when the file is missing.

    Raises :class:`RunError` naming the file when it is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as err:
        raise RunError(f'{path}: not valid JSON ({err.msg} at line {err.lineno})') from None
    if not isinstance(value, dict):
        raise RunError(f'{path}: expected a JSON object; got {type(value).__name__}')
    return value


def write_json(path: str | os.PathLike, payload: Any, sort_keys: bool = False) -> None:
    """Write ``payload`` as indented JSON through a temporary file and a rename."""
    text = json.dumps(payload, indent=2, sort_keys=sort_keys) + '\n'
    write_bytes_atomic(Path(path), text.encode('utf-8'))


def resume_hint(run_dir: Path) -> str:
    """Say how far an interrupted run folder got, and how to continue it."""
    state = read_json(run_dir / STATE_FILE)
    if state is None:
        return f'{run_dir} has no finished epoch, so it cannot be resumed'
    return (f'{run_dir} holds {state["epoch"]} finished epochs; continue with: '
            f'fvt-train train --resume {run_dir}')


def summary_text(lines: list[str], report: Mapping[str, Any]) -> str:
    """Join a command's summary lines, ending with where its JSON report was written."""
    return '\n'.join([*lines, f'report: {report.get("report_path", "—")}'])
