"""setup.py declares exactly the third-party distributions the node package imports."""

from __future__ import annotations

import ast
from importlib import metadata
import importlib.util
import os
from pathlib import Path
import runpy
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
import pytest
import setuptools

REPO = Path(__file__).resolve().parents[1]


def setup_arguments(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Run setup.py with setuptools.setup replaced; return what it was called with."""
    captured: dict = {}
    monkeypatch.setattr(setuptools, 'setup', lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(REPO)
    runpy.run_path(str(REPO / 'setup.py'))
    return captured


def imported_modules(*subpackages: str) -> set[str]:
    """Every module the files of these subpackages import, by full name (``rosbags.rosbag2``)."""
    modules = set()
    paths = (p for sub in subpackages for p in (REPO / 'fvt_segmentation' / sub).rglob('*.py'))
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module)
    return {m for m in modules if m.split('.')[0] not in sys.stdlib_module_names
            and m.split('.')[0] not in ('fvt_segmentation', '__future__')}


def installed_by(module: str, top_level: dict[str, list[str]]) -> set[str]:
    """Return the distributions whose files include ``module``'s file (none: not installed).

    Several distributions may share a top-level package (rosbags and rosbags-image), so the
    module's own file decides. ``top_level`` is :func:`metadata.packages_distributions`.
    """
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return set()
    if spec is None or spec.origin is None:
        return set()
    origin = os.path.normpath(spec.origin)
    return {canonicalize_name(name) for name in top_level.get(module.split('.')[0], [])
            if any(os.path.normpath(metadata.distribution(name).locate_file(f)) == origin
                   for f in metadata.distribution(name).files or ())}


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def distributions(modules: set[str]) -> set[str]:
    """The non-ROS distributions that provide ``modules``."""
    top_level = metadata.packages_distributions()
    found = set()
    for module in modules:
        owners = installed_by(module, top_level)
        # ROS 2 comes from apt (package.xml) or from the wheels of the distro extras; a module
        # not installed is an optional import (rosidl_runtime_py, with apt ROS only).
        if not any(owner.startswith('ros-') for owner in owners):
            found |= owners
    return found


def test_every_import_is_declared_and_every_declaration_imported(monkeypatch) -> None:
    arguments = setup_arguments(monkeypatch)
    extras = arguments['extras_require']
    required = names(arguments['install_requires']) - {'setuptools'}  # setup.py's own import
    onnxruntime_builds = names(extras['gpu']) | names(extras['cpu'])
    # What a car installs (core, node, bag) needs exactly install_requires; tools add 'tools'.
    imported = distributions(imported_modules('core', 'node', 'bag'))
    assert imported - onnxruntime_builds == required
    assert imported & onnxruntime_builds  # one of the two builds, whichever is installed
    tools = distributions(imported_modules('tools')) - onnxruntime_builds - required
    assert tools == names(extras['tools'])
