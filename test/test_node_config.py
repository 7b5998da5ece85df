"""config/segmentation.yaml lists every node parameter with its default and a comment."""

from __future__ import annotations

from pathlib import Path

from node_harness import RosHarness
from onnx_models import build_model
import pytest
import yaml

from fvt_segmentation.node.params import PARAMETERS, check_value
from fvt_segmentation.node.segmentation_node import SegmentationNode

CONFIG = Path(__file__).resolve().parents[1] / 'config' / 'segmentation.yaml'


def config_parameters() -> dict:
    return yaml.safe_load(CONFIG.read_text())['/**']['ros__parameters']


def test_yaml_lists_every_parameter_with_its_default() -> None:
    assert config_parameters() == {spec.name: spec.default for spec in PARAMETERS}


def test_every_yaml_parameter_has_a_comment() -> None:
    lines = [line for line in CONFIG.read_text().splitlines()
             if line.startswith('    ') and not line.strip().startswith('#')]
    assert len(lines) == len(PARAMETERS)
    for line in lines:
        assert '  # (' in line, line


@pytest.mark.parametrize('name, value, reason', [
    ('mask_resolution', 'full', "mask_resolution must be one of ['input', 'model']; got 'full'"),
    ('input_transport', 'theora', "input_transport must be one of ['raw', 'compressed']"),
    ('overlay_alpha', 1.01, 'overlay_alpha must be in [0.0, 1.0]; got 1.01'),
    ('providers', ['', ' '], 'providers must name at least one provider'),
])
def test_check_value_explains_rejections(name: str, value, reason: str) -> None:
    assert reason in check_value(name, value)


def test_valid_values_pass() -> None:
    for spec in PARAMETERS:
        assert check_value(spec.name, spec.default) is None, spec.name
    assert check_value('use_sim_time', True) is None  # not ours to judge


def test_node_loads_the_params_file(tmp_path: Path) -> None:
    model = build_model(tmp_path / 'tiny.onnx')
    params = tmp_path / 'params.yaml'
    text = CONFIG.read_text().replace("model_path: ''", f"model_path: '{model}'")
    text = text.replace("providers: ['tensorrt', 'cuda', 'cpu']", "providers: ['cpu']")
    params.write_text(text.replace("mask_resolution: 'input'", "mask_resolution: 'model'"))
    ros = RosHarness()
    try:
        node = SegmentationNode(context=ros.context,
                                cli_args=['--ros-args', '--params-file', str(params)])
        try:
            assert node.model.wait_ready(15.0)
            assert node.settings.mask_resolution == 'model'
            assert node.model.segmenter.model_path == model
            assert node.get_parameter('input_reliability').value == 'best_effort'
        finally:
            node.destroy_node()
    finally:
        ros.close()
