import os

import cv2
import numpy as np
import onnx
from onnx import numpy_helper
from onnx_models import default_weights, expected_scores, to_v2
import onnxruntime as ort
import pytest

from fvt_segmentation.core.contract import (
    MIN_ARGMAX_AGREEMENT,
    ContractError,
    ModelContract,
    ModelLoadError,
    Normalization,
)
from fvt_segmentation.core.frame_processing import preprocess_frame, scores_to_classes
from fvt_segmentation.core.inference import load_segmenter
from fvt_segmentation.core.parity import (
    argmax_agreement,
    engine_files,
    read_parity,
    write_parity,
)
from fvt_segmentation.core.providers import CPU, CUDA, provider_library_error
from fvt_segmentation.core.sessions import resolve_providers

RNG = np.random.default_rng(0)


def frame(h=32, w=64, c=3):
    return RNG.integers(0, 256, size=(h, w, c) if c else (h, w), dtype=np.uint8)


def test_preprocess_normalises_in_contract_colour_order():
    norm = Normalization(1 / 255, (0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    contract = ModelContract(color_order='BGR', normalization=norm)
    rgb = frame()
    x = preprocess_frame(rgb, 'RGB', (32, 64), contract)
    bgr = rgb[:, :, ::-1].astype(np.float64)
    expected = (bgr / 255 - np.array(norm.mean)) / np.array(norm.std)
    assert x.shape == (1, 32, 64, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], expected, atol=1e-5)
    # a BGR frame for a BGR model is not reordered
    np.testing.assert_allclose(preprocess_frame(rgb[:, :, ::-1], 'BGR', (32, 64), contract), x)


def test_preprocess_nchw_alpha_and_mono():
    contract = ModelContract(layout='NCHW')
    rgba = frame(c=4)
    x = preprocess_frame(rgba, 'RGB', (32, 64), contract)
    assert x.shape == (1, 3, 32, 64) and x.flags.c_contiguous
    np.testing.assert_allclose(x[0].transpose(1, 2, 0), rgba[:, :, :3] / 255, atol=1e-6)
    mono = frame(c=0)
    y = preprocess_frame(mono, 'RGB', (32, 64), contract)
    for ch in range(3):
        np.testing.assert_allclose(y[0, ch], mono / 255, atol=1e-6)


def test_preprocess_resizes_uint8_with_area_when_shrinking():
    big = frame(128, 256)
    x = preprocess_frame(big, 'RGB', (32, 64), ModelContract())
    ref = cv2.resize(big, (64, 32), interpolation=cv2.INTER_AREA) / 255
    np.testing.assert_allclose(x[0], ref, atol=1e-6)


@pytest.mark.parametrize('layout', ['NHWC', 'NCHW'])
@pytest.mark.parametrize('output', ['probabilities', 'logits'])
def test_scores_to_classes_and_confidence(layout, output):
    logits = RNG.normal(size=(1, 4, 5, 8)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    scores = probs if output == 'probabilities' else logits
    if layout == 'NCHW':
        scores = scores.transpose(0, 3, 1, 2)
    classes, conf = scores_to_classes(scores, layout, output, want_confidence=True)
    assert classes.dtype == np.uint8 and classes.shape == (4, 5)
    np.testing.assert_array_equal(classes, logits[0].argmax(-1))
    np.testing.assert_array_equal(conf, np.round(probs[0].max(-1) * 255).astype(np.uint8))
    assert scores_to_classes(scores, layout, output)[1] is None


@pytest.mark.parametrize('layout', ['NHWC', 'NCHW'])
@pytest.mark.parametrize('output', ['probabilities', 'logits'])
def test_segmenter_matches_the_model_maths(model_factory, layout, output):
    seg = load_segmenter(model_factory(layout=layout, output=output), providers=['cpu'])
    assert seg.active_provider == 'CPUExecutionProvider' and seg.input_size == (32, 64)
    img = frame()
    result = seg.segment(img, 'RGB', want_confidence=True)
    expected = expected_scores(img / 255.0, default_weights()).argmax(-1)
    assert (result.classes == expected).mean() > 0.999  # float32 vs float64 ties only
    assert result.confidence.shape == (32, 64)
    assert set(result.timings_ms) == {'preprocess', 'inference', 'postprocess'}
    assert seg.warm_up() > 0


def test_loading_leaves_the_onnx_runtime_log_severity_alone(tiny_model, capfd):
    library = provider_library_error(CUDA)
    if library is None:
        pytest.skip('the CUDA provider loads here; its warning needs a machine without CUDA')
    ort.set_default_logger_severity(2)  # warnings: ONNX Runtime's default
    try:
        load_segmenter(tiny_model)
        capfd.readouterr()
        # ONNX Runtime warns about a CUDA provider it cannot create: the warning still
        # shows, so the severity the process chose is the one in force after loading.
        ort.InferenceSession(str(tiny_model), providers=[CUDA, CPU])
        err = capfd.readouterr().err
        assert '[W:onnxruntime' in err and 'CUDAExecutionProvider' in err
    finally:
        ort.set_default_logger_severity(2)


def test_argmax_agreement_tells_a_perturbed_model_apart(model_factory):
    same = load_segmenter(model_factory(), providers=['cpu'])
    again = load_segmenter(model_factory(), providers=['cpu'], intra_op_threads=1)
    weights, bias = default_weights()
    perturbed = model_factory(contract=ModelContract(provenance={'perturbed': True}))
    # A second file whose scores differ: its bias favours one class by a little.
    proto = onnx.load(str(perturbed))
    for init in proto.graph.initializer:
        if init.name == 'B':
            init.CopyFrom(numpy_helper.from_array(bias + np.eye(8, dtype=np.float32)[3] * 0.3,
                                                  'B'))
    onnx.save(proto, str(perturbed))
    other = load_segmenter(perturbed, providers=['cpu'])
    frames = [frame() for _ in range(3)]
    assert argmax_agreement(again, same, frames) == 1.0
    agreement = argmax_agreement(other, same, frames)
    assert 0.5 < agreement < MIN_ARGMAX_AGREEMENT
    with pytest.raises(ValueError, match='at least one frame'):
        argmax_agreement(other, same, [])


def test_parity_record_belongs_to_the_engines_it_checked(tmp_path):
    assert read_parity(tmp_path) is None
    engine = tmp_path / 'a.engine'
    engine.write_bytes(b'engine 1')
    record = write_parity(tmp_path, 0.9995, 4, engine_files(tmp_path))
    assert record['passed'] and read_parity(tmp_path) == record
    assert not write_parity(tmp_path, 0.99, 4, engine_files(tmp_path))['passed']
    assert read_parity(tmp_path)['argmax_agreement'] == 0.99
    engine.write_bytes(b'engine 22')  # rebuilt: another size
    assert read_parity(tmp_path) is None
    write_parity(tmp_path, 0.9995, 4, engine_files(tmp_path))
    os.utime(engine, ns=(0, engine.stat().st_mtime_ns + 1))  # rebuilt: another time
    assert read_parity(tmp_path) is None
    write_parity(tmp_path, 0.9995, 4, engine_files(tmp_path))
    (tmp_path / 'b.engine').write_bytes(b'a second engine')
    assert read_parity(tmp_path) is None
    (tmp_path / 'b.engine').unlink()
    assert read_parity(tmp_path) is not None
    engine.unlink()  # a verdict without its engine says nothing
    assert read_parity(tmp_path) is None
    (tmp_path / 'parity.json').write_text('{broken')
    assert read_parity(tmp_path) is None


def test_cpu_thread_settings_reach_the_session(tiny_model):
    seg = load_segmenter(tiny_model, providers=['cpu'], intra_op_threads=1,
                         intra_op_spinning=False)
    assert seg.threads == (1, False)
    options = seg.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry('session.intra_op.allow_spinning') == '0'


def test_provider_names():
    assert resolve_providers(['cuda', 'CPU', 'cpu']) == [
        'CUDAExecutionProvider', 'CPUExecutionProvider']
    with pytest.raises(ValueError, match='unknown execution provider'):
        resolve_providers(['quantum'])


def test_missing_garbage_and_contractless_files(tmp_path, model_factory):
    with pytest.raises(ModelLoadError, match='no such model file'):
        load_segmenter(tmp_path / 'nope.onnx')
    garbage = tmp_path / 'garbage.onnx'
    garbage.write_bytes(b'not a model')
    with pytest.raises(ModelLoadError, match='garbage.onnx: not a loadable ONNX model'):
        load_segmenter(garbage)
    bare = model_factory(drop_keys=tuple(ModelContract().to_metadata()))
    with pytest.raises(ContractError, match='no model contract'):
        load_segmenter(bare)
    wrong = model_factory(metadata={'fvt.categories': '["a", "b", "c"]',
                                    'fvt.palette': '[[0,0,0],[1,1,1],[2,2,2]]'})
    with pytest.raises(ContractError, match='8 channels but fvt.categories names 3'):
        load_segmenter(wrong)


def test_large_frames_shrink_by_a_power_of_two_first():
    big = frame(1024, 2048)
    x = preprocess_frame(big, 'RGB', (192, 256), ModelContract())
    half = cv2.resize(big, (512, 256), interpolation=cv2.INTER_AREA)  # exact 4x4 box filter
    ref = cv2.resize(half, (256, 192), interpolation=cv2.INTER_AREA) / 255
    np.testing.assert_allclose(x[0], ref, atol=1e-6)
    # a CamVid-sized frame (no power-of-two factor fits) takes the single area resize
    small = frame(360, 480)
    y = preprocess_frame(small, 'RGB', (192, 256), ModelContract())
    ref = cv2.resize(small, (256, 192), interpolation=cv2.INTER_AREA) / 255
    np.testing.assert_allclose(y[0], ref, atol=1e-6)


def test_name_shows_architecture_and_backbone_when_known(model_factory):
    unet = ModelContract(provenance={'architecture': 'unet_like', 'backbone': None})
    fpn = ModelContract(provenance={'architecture': 'FPN', 'backbone': 'efficientnetb0'})
    assert load_segmenter(model_factory(contract=unet), providers=['cpu']).name.endswith(
        ' (unet_like)')
    assert load_segmenter(model_factory(contract=fpn), providers=['cpu']).name.endswith(
        ' (FPN/efficientnetb0)')



def test_threads_sleep_by_default_and_spin_when_asked(tiny_model):
    key = 'session.intra_op.allow_spinning'
    quiet = load_segmenter(tiny_model, providers=['cpu'])
    assert quiet.session.get_session_options().get_session_config_entry(key) == '0'
    spinning = load_segmenter(tiny_model, providers=['cpu'], intra_op_spinning=True)
    with pytest.raises(RuntimeError):  # unset: ONNX Runtime's default, spinning
        spinning.session.get_session_options().get_session_config_entry(key)
    image = frame(*quiet.input_size)
    np.testing.assert_array_equal(quiet.segment(image).classes, spinning.segment(image).classes)


@pytest.mark.parametrize('version', [1, 2])
def test_io_binding_gives_the_same_results_in_fresh_arrays(model_factory, tmp_path, version):
    path = model_factory(output='logits')
    if version == 2:
        path = to_v2(path, tmp_path / 'v2.onnx')
    plain = load_segmenter(path, providers=['cpu'])
    bound = load_segmenter(path, providers=['cpu'])
    assert bound.io_binding == '' and bound.enable_io_binding('cpu')
    assert bound.io_binding == 'cpu'
    images = [frame() for _ in range(3)]
    results = [bound.segment(image, want_confidence=True) for image in images]
    for image, result in zip(images, results, strict=True):  # earlier results stay intact
        want = plain.segment(image, want_confidence=True)
        np.testing.assert_array_equal(result.classes, want.classes)
        np.testing.assert_array_equal(result.confidence, want.confidence)
    np.testing.assert_array_equal(bound.segment(images[0]).classes, results[0].classes)
    np.testing.assert_array_equal(bound.infer(bound.preprocess(images[1])),
                                  plain.infer(plain.preprocess(images[1])))



@pytest.mark.parametrize('layout', ['NHWC', 'NCHW'])
@pytest.mark.parametrize('output', ['probabilities', 'logits'])
def test_version_2_without_a_confidence_output_derives_it_from_its_scores(
        model_factory, tmp_path, layout, output):
    v1 = model_factory(layout=layout, output=output)
    v2 = load_segmenter(to_v2(v1, tmp_path / 'v2.onnx', confidence=False), providers=['cpu'])
    v1 = load_segmenter(v1, providers=['cpu'])
    assert v2.confidence_name is None and v2.classes_name is not None
    image = frame()
    want, got = v1.segment(image, want_confidence=True), v2.segment(image, want_confidence=True)
    np.testing.assert_array_equal(got.classes, want.classes)
    np.testing.assert_array_equal(got.confidence, want.confidence)
