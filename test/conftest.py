"""Shared fixtures: DDS isolation for the ROS tests and tiny ONNX models."""

from __future__ import annotations

import os
from pathlib import Path
import random
import sys

import pytest

# Each pytest process gets its own DDS domain, so parallel runs (CI, developers) never see
# each other's topics; discovery stays on this machine.
os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')

sys.path.insert(0, str(Path(__file__).parent))

from onnx_models import build_model  # noqa: E402


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A 32x64 NHWC probabilities model following the contract."""
    return build_model(tmp_path / 'tiny.onnx')


@pytest.fixture
def model_factory(tmp_path: Path):
    """Build tiny models with any options of :func:`onnx_models.build_model`."""
    counter = iter(range(1000))

    def make(**kwargs) -> Path:
        return build_model(tmp_path / f'model_{next(counter)}.onnx', **kwargs)

    return make
