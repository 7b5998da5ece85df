"""Find the package's shipped files (models/, config/, launch/) wherever it is installed.

No rclpy here. Three layouts are searched in order:

1. a colcon/ament install: ``get_package_share_directory('fvt_segmentation')``;
2. a pip install (wheel or ``pip install .``): ``<sys.prefix>/share/fvt_segmentation``;
3. the source tree (``pip install -e .``, tests, a plain checkout): the repository root.
"""

from __future__ import annotations

from pathlib import Path
import sys

PACKAGE = 'fvt_segmentation'
DEFAULT_MODEL = 'models/default.onnx'


def share_directories() -> list[Path]:
    """Return the candidate share directories, most specific installation first.

    Code running from a source checkout (``pip install -e .``, tests) reads the checkout's own
    files first: an editable install copies data files into ``<sys.prefix>/share`` once, and
    those copies go stale when the checkout changes.
    """
    source = Path(__file__).resolve().parents[2]
    candidates = [source] if (source / 'package.xml').is_file() else []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            candidates.append(Path(get_package_share_directory(PACKAGE)))
        except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset
            pass
    except ImportError:  # a pip install without the ROS Python packages
        pass
    candidates.append(Path(sys.prefix) / 'share' / PACKAGE)
    candidates.append(source)
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def package_file(relative: str) -> Path:
    """Return the path of a shipped file, e.g. ``package_file('config/fastdds.xml')``.

    The first candidate share directory that holds the file wins; if none does, the path in
    the first candidate is returned so that the caller's error message names a sensible place.
    """
    candidates = [directory / relative for directory in share_directories()]
    for path in candidates:
        if path.exists():
            return path
    return candidates[0]


def resolve_model_path(model_path: str) -> Path:
    """Return ``model_path`` as a Path, or the shipped default model when it is empty."""
    if model_path.strip():
        return Path(model_path.strip()).expanduser()
    return package_file(DEFAULT_MODEL)
