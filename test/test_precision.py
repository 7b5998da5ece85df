"""The shipped model's precision: which file runs (float32 or int8), chosen by provider.

The choice is a pure function tested on a table; the node tests start the real node on tiny
stand-ins for the two shipped files (``DEFAULT_MODEL`` pointed at a temporary folder), so
every branch is checked without the 12 MB model: CPU -> int8, a GPU that may run ->
float32, a missing int8 file -> float32 with a WARN, an explicit ``model_path`` untouched,
a runtime change of ``precision`` that reloads while the running model keeps serving.
"""

from __future__ import annotations

from pathlib import Path
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from fake_providers import OUT_OF_MEMORY, FakeGpu
from node_harness import RosHarness, image_msg
import numpy as np
from onnx_models import build_model
import pytest
from sensor_msgs.msg import Image

from fvt_segmentation.core import resources
from fvt_segmentation.core.model_choice import choose_model, int8_path, load_model

NS = '/segmentation_node'


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tiny stand-ins for models/default.onnx and models/default.int8.onnx; returns the first.

    The int8 stand-in is a float model too (what is checked is which file runs); its
    provenance says int8 and it has another input size, so a test can tell them apart.
    """
    folder = tmp_path / 'models'
    float_path = build_model(folder / 'default.onnx', size=(32, 64),
                             metadata={'fvt.provenance': '{"precision": "float32"}'})
    build_model(int8_path(float_path), size=(16, 32),
                metadata={'fvt.provenance': '{"precision": "int8"}'})
    monkeypatch.setattr(resources, 'DEFAULT_MODEL', str(float_path))
    return float_path


@pytest.fixture
def ros():
    harness = RosHarness()
    yield harness
    harness.close()


@pytest.mark.parametrize('model_path, precision, gpu, int8_exists, want, warned', [
    ('', 'auto', False, True, 'int8', False),
    ('', 'auto', True, True, 'float32', False),
    ('', 'auto', False, False, 'float32', True),
    ('', 'float32', False, True, 'float32', False),
    ('', 'int8', True, True, 'int8', False),
    ('', 'int8', False, False, 'float32', True),
    ('mine.onnx', 'auto', False, True, 'file', False),
    ('mine.onnx', 'int8', False, True, 'file', False),
])
def test_choice_table(tmp_path: Path, model_path: str, precision: str, gpu: bool,
                      int8_exists: bool, want: str, warned: bool) -> None:
    float_path = build_model(tmp_path / 'default.onnx')
    if int8_exists:
        build_model(int8_path(float_path))
    user = str(tmp_path / model_path) if model_path else ''
    choice = choose_model(user, precision, gpu, default_path=float_path)
    assert choice.precision == want
    assert bool(choice.warning) == warned
    expected_path = {'int8': int8_path(float_path), 'float32': float_path,
                     'file': tmp_path / 'mine.onnx'}[want]
    assert choice.path == expected_path
    if warned:
        assert str(int8_path(float_path)) in choice.warning and 'missing' in choice.warning


def test_unknown_precision_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"precision must be one of \['auto', 'float32', "
                                         r"'int8'\]; got 'fp8'"):
        choose_model('', 'fp8', False, default_path=tmp_path / 'default.onnx')


def test_int8_path_is_the_sibling() -> None:
    assert int8_path(Path('/a/models/default.onnx')) == Path('/a/models/default.int8.onnx')


def test_auto_with_gpu_providers_that_cannot_load_runs_int8(shipped: Path) -> None:
    # This machine's onnxruntime lists TensorRT and CUDA, but their libraries do not load
    # (a CI runner or a car whose GPU stack is broken): the CPU runs, so int8.
    segmenter, choice = load_model('', 'auto', ['tensorrt', 'cuda', 'cpu'])
    if segmenter.active_provider != 'CPUExecutionProvider':
        pytest.skip('a GPU provider really runs here; the GPU branch is tested below')
    assert choice.precision == 'int8' and segmenter.model_path == int8_path(shipped)
    assert 'CPU provider' in choice.reason
    assert segmenter.fallback_reason.startswith('TensorrtExecutionProvider: ')


def test_auto_gives_a_gpu_that_runs_the_float32_file(shipped: Path) -> None:
    gpu = FakeGpu()
    segmenter, choice = load_model('', 'auto', ['cuda', 'cpu'], layer=gpu.layer())
    assert segmenter.active_provider == 'CUDAExecutionProvider'
    assert choice.precision == 'float32' and segmenter.model_path == shipped
    assert gpu.opened == [('CUDAExecutionProvider', 'fp32')]


def test_auto_follows_a_gpu_that_fails_at_startup(shipped: Path) -> None:
    """CUDA loads, then cannot allocate at warm-up: the CPU runs, so the int8 file."""
    gpu = FakeGpu(run_error=OUT_OF_MEMORY)
    segmenter, choice = load_model('', 'auto', ['cuda', 'cpu'], layer=gpu.layer())
    assert segmenter.active_provider == 'CPUExecutionProvider'
    assert choice.precision == 'int8' and segmenter.model_path == int8_path(shipped)
    assert choice.reason.startswith('auto: no GPU provider started (CUDAExecutionProvider: ')
    assert 'out of memory' in choice.reason
    assert segmenter.requested_providers == ['CUDAExecutionProvider', 'CPUExecutionProvider']
    assert segmenter.fallback_reason.startswith('CUDAExecutionProvider: ')


def latest_status(ros: RosHarness) -> dict:
    status = ros.received['diagnostics'][-1].status[0]
    return {'level': status.level, 'message': status.message,
            **{v.key: v.value for v in status.values}}


def wait_status(ros: RosHarness, predicate, what: str) -> dict:
    ros.wait_for(lambda: ros.received['diagnostics'] and predicate(latest_status(ros)), what)
    return latest_status(ros)


def serving(ros: RosHarness) -> tuple[Any, Any, np.ndarray]:
    """Start the node on the shipped stand-ins, mask and diagnostics subscribed.

    Returns the node, a camera publisher and a frame to publish.
    """
    ros.subscribe(f'{NS}/mask', Image, 'mask')
    ros.subscribe('/diagnostics', DiagnosticArray, 'diagnostics')
    node = ros.start_node('', diagnostics_period=0.1)
    ros.wait_matched('mask')
    pixels = np.random.default_rng(3).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    return node, ros.publisher('/image'), pixels


def test_node_runs_int8_on_the_cpu_and_says_why(ros: RosHarness, shipped: Path) -> None:
    ros.subscribe('/diagnostics', DiagnosticArray, 'diagnostics')
    node = ros.start_node('', diagnostics_period=0.1)
    assert node.model.segmenter.model_path == int8_path(shipped)
    status = wait_status(ros, lambda s: s['provider'] != 'loading', 'a status after loading')
    assert status['model_precision'] == 'int8'
    assert status['model_file'] == str(int8_path(shipped))
    assert status['precision_parameter'] == 'auto'
    assert status['model_precision_reason'].startswith('auto: the CPU provider runs the model')


def test_node_missing_int8_file_runs_float32_with_a_warning(ros: RosHarness, shipped: Path,
                                                            capfd) -> None:
    int8_path(shipped).unlink()
    ros.subscribe('/diagnostics', DiagnosticArray, 'diagnostics')
    node = ros.start_node('', diagnostics_period=0.1)
    assert node.model.segmenter.model_path == shipped and node.model.choice.precision == 'float32'
    status = wait_status(ros, lambda s: s['provider'] != 'loading', 'a status after loading')
    assert 'is missing: running the float32 file' in status['model_precision_reason']
    log = capfd.readouterr().err
    assert any('[WARN]' in line and f'{int8_path(shipped)} is missing' in line
               for line in log.splitlines()), log


def test_node_explicit_model_path_runs_as_it_is(ros: RosHarness, shipped: Path,
                                                tmp_path: Path) -> None:
    mine = build_model(tmp_path / 'mine.onnx', size=(24, 40))
    node = ros.start_node(mine, precision='int8')
    assert node.model.segmenter.model_path == mine and node.model.choice.precision == 'file'
    assert node.model.segmenter.input_size == (24, 40)


def test_node_precision_change_reloads_while_the_old_model_serves(
        ros: RosHarness, shipped: Path) -> None:
    node, pub, pixels = serving(ros)
    sent = 0

    def serve_one() -> None:
        nonlocal sent
        sent += 1
        pub.publish(image_msg(pixels, 'rgb8', sent))
        ros.wait_count('mask', sent)

    serve_one()
    assert node.model.segmenter.input_size == (16, 32)  # the int8 stand-in
    [result] = ros.set_params(precision='float32')
    assert result.successful
    while node.model.choice.precision != 'float32':  # frames keep being served meanwhile
        serve_one()
        assert sent < 500, 'the reload never finished'
    serve_one()
    assert node.model.segmenter.model_path == shipped
    assert node.model.segmenter.input_size == (32, 64)
    status = wait_status(ros, lambda s: s.get('model_precision') == 'float32', 'float32')
    assert status['model_reload'].startswith('precision float32: default.onnx since ')

    # A broken int8 file: the reload fails loudly, the float32 model keeps serving.
    int8_path(shipped).write_bytes(b'not an onnx file')
    [result] = ros.set_params(precision='int8')
    assert result.successful
    status = wait_status(ros, lambda s: 'FAILED' in s.get('model_reload', ''),
                         'the failed reload on /diagnostics')
    assert 'not a loadable ONNX model' in status['model_reload']
    assert status['model_precision'] == 'float32' and status['level'] != DiagnosticStatus.ERROR
    serve_one()
    assert node.model.segmenter.model_path == shipped
    assert [m.header.stamp.nanosec for m in ros.received['mask']] == list(range(1, sent + 1))


def test_shutdown_during_a_load_starts_and_publishes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """destroy_node while the model still loads: the load ends later and changes nothing."""
    import threading

    errors: list[BaseException] = []
    monkeypatch.setattr(threading, 'excepthook', lambda args: errors.append(args.exc_value))
    slow = build_model(tmp_path / 'slow_load.onnx', size=(384, 512), slow_repeats=100)
    harness = RosHarness()
    node = harness.start_node(slow, wait=False)
    harness.close()  # destroys the node while its loader runs
    assert node.model.loader.is_alive(), 'the model loaded too fast to tell'
    node.model.loader.join(120.0)
    assert not node.model.loader.is_alive()
    assert errors == [] and node.model.segmenter is None and node._threads == []


def test_model_files_deleted_while_running(ros: RosHarness, shipped: Path) -> None:
    """The running model lives in memory; a reload then finds what is left, or fails."""
    node, pub, pixels = serving(ros)
    int8_path(shipped).unlink()
    pub.publish(image_msg(pixels, 'rgb8', 1))
    ros.wait_count('mask', 1)  # served by the int8 model already loaded
    shipped.unlink()
    [result] = ros.set_params(precision='float32')
    assert result.successful
    status = wait_status(ros, lambda s: 'FAILED' in s.get('model_reload', ''), 'FAILED')
    assert f'{shipped}: no such model file' in status['model_reload']
    assert status['model_precision'] == 'int8'
    pub.publish(image_msg(pixels, 'rgb8', 2))
    ros.wait_count('mask', 2)
    assert node.model.segmenter.model_path == int8_path(shipped)


def test_precision_change_with_a_model_path_of_yours_reloads_nothing(
        ros: RosHarness, shipped: Path, tmp_path: Path) -> None:
    mine = build_model(tmp_path / 'mine.onnx', size=(24, 40))
    node = ros.start_node(mine)
    segmenter = node.model.segmenter
    [result] = ros.set_params(precision='int8')
    assert result.successful
    time.sleep(1.0)  # a reload of this tiny file would be done by now
    assert node.model.reload_state == '' and node.model.segmenter is segmenter
