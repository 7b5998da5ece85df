"""What setup.py installs is what the launch files, the node and resources.py look for.

Two installs into a temporary prefix: the setuptools command that colcon's ament_python build
runs (always), and a real ``colcon build`` when colcon is installed. The launch files cannot
run here (no ``launch`` package), so the names they use are read from their source.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = 'fvt_segmentation'
LAUNCH_FILES = ('segmentation.launch.py', 'two_cameras.launch.py')


def launch_constants(name: str) -> dict[str, str]:
    """Module-level string constants of a launch file (PACKAGE, EXECUTABLE, RVIZ_CONFIG...)."""
    tree = ast.parse((REPO / 'launch' / name).read_text())
    return {target.id: node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            for target in node.targets if isinstance(target, ast.Name)}


def site_packages(prefix: Path) -> Path:
    [path] = prefix.glob('lib/python3*/site-packages')
    return path


def check_install(prefix: Path) -> None:
    share = prefix / 'share' / PACKAGE
    assert (prefix / 'share/ament_index/resource_index/packages' / PACKAGE).is_file()
    assert (share / 'package.xml').is_file()
    for name in LAUNCH_FILES:
        assert (share / 'launch' / name).is_file(), name
    constants = launch_constants('segmentation.launch.py')
    assert constants['PACKAGE'] == PACKAGE
    for key in ('RVIZ_CONFIG', 'PARAMS_FILE'):
        assert (share / constants[key]).is_file(), constants[key]
    for name in ('fastdds.xml', 'cyclonedds.xml'):  # applied by the launch file
        assert (share / 'config' / name).is_file(), name
    for model in sorted((REPO / 'models').glob('*.onnx')):
        assert (share / 'models' / model.name).is_file(), model.name
    node = prefix / 'lib' / PACKAGE / constants['EXECUTABLE']
    assert node.is_file() and os.access(node, os.X_OK)
    assert 'segmentation_node' in node.read_text()
    assert 'segmentation.launch.py' in (REPO / 'launch/two_cameras.launch.py').read_text()
    assert (site_packages(prefix) / PACKAGE / 'node' / 'segmentation_node.py').is_file()

    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix),
               PYTHONPATH=str(site_packages(prefix)))
    # resources.py finds the installed share directory through the ament index.
    probe = ('import fvt_segmentation, fvt_segmentation.core.resources as r; '
             'print(fvt_segmentation.__file__); print(r.resolve_model_path("")); '
             'print(r.package_file("config/segmentation.rviz"))')
    lines = subprocess.run([sys.executable, '-c', probe], env=env, cwd=prefix,
                           capture_output=True, text=True, check=True,
                           timeout=60).stdout.splitlines()
    assert lines[0].startswith(str(site_packages(prefix)))
    assert lines[1:] == [str(share / 'models/default.onnx'),
                         str(share / 'config/segmentation.rviz')]
    # The installed executable runs the node: a missing model is one fatal line, exit 1.
    done = subprocess.run(
        [sys.executable, str(node), '--ros-args', '-p', 'model_path:=/nonexistent.onnx',
         '-p', 'providers:=[cpu]'], env=env, cwd=prefix, capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 1
    assert '/nonexistent.onnx: no such model file' in done.stderr + done.stdout


def test_setup_py_installs_launch_config_and_node(tmp_path: Path) -> None:
    prefix = tmp_path / 'install'
    # The command colcon's ament_python build runs, all outputs kept in tmp_path.
    subprocess.run(
        [sys.executable, 'setup.py', '-q', 'egg_info', '--egg-base', str(tmp_path),
         'build', '--build-base', str(tmp_path / 'build'), 'install', '--prefix', str(prefix),
         '--single-version-externally-managed', '--record', str(tmp_path / 'files.txt')],
        cwd=REPO, check=True, capture_output=True, timeout=120)
    check_install(prefix)


def colcon() -> str | None:
    beside = Path(sys.executable).parent / 'colcon'
    return str(beside) if beside.is_file() else shutil.which('colcon')


@pytest.mark.skipif(colcon() is None, reason='colcon is not installed '
                    '(pip install colcon-common-extensions)')
def test_colcon_build_installs_launch_config_and_node(tmp_path: Path) -> None:
    subprocess.run(
        [colcon(), '--log-base', str(tmp_path / 'log'), 'build', '--base-paths', str(REPO),
         '--build-base', str(tmp_path / 'build'), '--install-base', str(tmp_path / 'install'),
         '--packages-select', PACKAGE],
        cwd=tmp_path, check=True, capture_output=True, timeout=300)
    check_install(tmp_path / 'install' / PACKAGE)
