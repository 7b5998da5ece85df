"""Shared fixtures of the training tests: a generated Cityscapes tree and real CamVid frames."""

from __future__ import annotations

from pathlib import Path
import shutil
import sys

import pytest

from fvt_training.data import datasets, prepare

# The fixture modules next to this file (fixtures_cityscapes, prepared_fixture) import by name.
sys.path.insert(0, str(Path(__file__).parent))

from fixtures_cityscapes import CityscapesTree, make_cityscapes  # noqa: E402

CAMVID_FRAMES = Path(__file__).parent / 'data' / 'camvid'


@pytest.fixture
def cityscapes_tree(tmp_path: Path) -> CityscapesTree:
    """A fresh tiny Cityscapes tree (10 official train, 3 val, 1 test frame) to modify."""
    return make_cityscapes(tmp_path / 'cityscapes')


@pytest.fixture
def camvid_root(tmp_path: Path) -> Path:
    """A writable copy of the real CamVid test frames (3 train, 2 val)."""
    root = tmp_path / 'camvid'
    shutil.copytree(CAMVID_FRAMES, root)
    return root


@pytest.fixture(scope='session')
def prepared_cityscapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[CityscapesTree,
                                                                          Path]:
    """The generated Cityscapes tree prepared at 32x16 (read-only: shared by tests)."""
    base = tmp_path_factory.mktemp('prepared')
    tree = make_cityscapes(base / 'cityscapes')
    source = datasets.cityscapes_source(tree.root, val_fraction=0.3, seed=1)
    prepare.prepare_dataset(source, base / 'out', [(32, 16)], workers=2, progress=False)
    return tree, base / 'out' / '32x16'
