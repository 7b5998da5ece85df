"""open_session: the one way both packages open an ONNX Runtime session."""

import numpy as np
import onnxruntime as ort
import pytest

from fvt_segmentation.core.contract import ModelLoadError
from fvt_segmentation.core.sessions import first_line, open_session

SPINNING = 'session.intra_op.allow_spinning'


def test_a_path_and_its_bytes_open_alike_with_the_same_options(tiny_model):
    by_path = open_session(tiny_model, threads=1, spinning=False)
    by_bytes = open_session(tiny_model.read_bytes())
    assert by_path.get_providers() == by_bytes.get_providers() == ['CPUExecutionProvider']
    options = by_path.get_session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.intra_op_num_threads == 1
    assert options.log_severity_level == 3
    assert options.get_session_config_entry(SPINNING) == '0'
    with pytest.raises(RuntimeError):  # unset: ONNX Runtime's default, spinning
        by_bytes.get_session_options().get_session_config_entry(SPINNING)


def test_an_unloadable_model_names_itself_and_keeps_the_cause(tmp_path):
    garbage = tmp_path / 'garbage.onnx'
    garbage.write_bytes(b'not a model')
    with pytest.raises(ModelLoadError, match='garbage.onnx: not a loadable ONNX model') as err:
        open_session(garbage)
    assert err.value.__cause__ is not None
    assert first_line(err.value.__cause__)[:100] in str(err.value)
    with pytest.raises(ModelLoadError, match='the serialized model: not a loadable'):
        open_session(b'not a model')


def test_the_profiler_writes_where_it_is_told(tiny_model, tmp_path):
    session = open_session(tiny_model, profile_prefix=tmp_path / 'profile')
    image = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in image.shape]
    session.run(None, {image.name: np.zeros(shape, np.float32)})
    assert session.end_profiling().startswith(str(tmp_path / 'profile'))


def test_first_line_falls_back_to_the_type_name():
    assert first_line(ValueError('one\ntwo')) == 'one'
    assert first_line(KeyboardInterrupt()) == 'KeyboardInterrupt'
