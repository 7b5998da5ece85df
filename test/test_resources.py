"""Where shipped files are found: ament share first, then sys.prefix, then the source tree."""

from __future__ import annotations

from pathlib import Path
import sys

import pytest

from fvt_segmentation.resources import package_file, resolve_model_path, share_directories

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ament_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An install prefix that the ament index knows, holding only config/only_here.yaml."""
    index = tmp_path / 'share/ament_index/resource_index/packages'
    index.mkdir(parents=True)
    (index / 'fvt_segmentation').touch()
    share = tmp_path / 'share/fvt_segmentation'
    (share / 'config').mkdir(parents=True)
    (share / 'config/only_here.yaml').write_text('x: 1\n')
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(tmp_path))
    return share


def test_ament_share_comes_first(ament_prefix: Path) -> None:
    assert share_directories()[0] == ament_prefix
    assert share_directories()[-1] == REPO
    assert package_file('config/only_here.yaml') == ament_prefix / 'config/only_here.yaml'


def test_falls_back_to_the_source_tree(ament_prefix: Path) -> None:
    assert package_file('config/segmentation.yaml') == REPO / 'config/segmentation.yaml'


def test_missing_file_names_the_first_candidate(ament_prefix: Path) -> None:
    assert package_file('models/nothing.onnx') == ament_prefix / 'models/nothing.onnx'
    assert resolve_model_path('') == package_file('models/default.onnx')


def test_without_ament_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv('AMENT_PREFIX_PATH', raising=False)
    pip_installed = Path(sys.prefix) / 'share/fvt_segmentation/config/segmentation.rviz'
    expected = pip_installed if pip_installed.exists() else REPO / 'config/segmentation.rviz'
    assert package_file('config/segmentation.rviz') == expected


def test_explicit_model_path_is_used_as_given() -> None:
    assert resolve_model_path(' /models/x.onnx ') == Path('/models/x.onnx')
    assert resolve_model_path('~/m.onnx') == Path.home() / 'm.onnx'
