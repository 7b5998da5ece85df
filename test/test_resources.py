"""Where shipped files are found: ament share first, then sys.prefix, then the source tree."""

from __future__ import annotations

from pathlib import Path
import sys

import pytest

from fvt_segmentation.core.resources import package_file, resolve_model_path, share_directories

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


def test_source_checkout_first_then_ament_share(ament_prefix: Path) -> None:
    # Running from a checkout (as here): its own files beat an install's copies, which an
    # editable install made once and which go stale.
    assert share_directories()[:2] == [REPO, ament_prefix]
    assert package_file('config/only_here.yaml') == ament_prefix / 'config/only_here.yaml'


def test_falls_back_to_the_source_tree(ament_prefix: Path) -> None:
    assert package_file('config/segmentation.yaml') == REPO / 'config/segmentation.yaml'


def test_missing_file_names_the_first_candidate(ament_prefix: Path) -> None:
    assert package_file('models/nothing.onnx') == REPO / 'models/nothing.onnx'
    assert resolve_model_path('') == package_file('models/default.onnx')


def test_without_ament_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv('AMENT_PREFIX_PATH', raising=False)
    assert package_file('config/segmentation.rviz') == REPO / 'config/segmentation.rviz'
    assert share_directories()[1] == Path(sys.prefix) / 'share/fvt_segmentation'


def test_explicit_model_path_is_used_as_given() -> None:
    assert resolve_model_path(' /models/x.onnx ') == Path('/models/x.onnx')
    assert resolve_model_path('~/m.onnx') == Path.home() / 'm.onnx'
