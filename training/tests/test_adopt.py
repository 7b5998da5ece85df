"""fvt-train adopt: public-model stand-ins adopted, run through the inference core, refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
import onnxruntime as ort
from prepared_fixture import make_prepared
from public_models import (
    IMAGENET_BGR_MEAN,
    IMAGENET_BGR_STD,
    SOURCES,
    argmax_ids_nchw,
    category_reference,
    channel_max_nchw,
    conv_logits_nchw,
    floor_ids_nchw,
    matmul_probabilities_nhwc,
    official_mapping,
    patchwork,
    run_source,
)
import pytest

from fvt_segmentation.core.contract import CATEGORIES, PALETTE
from fvt_segmentation.core.inference import load_segmenter
from fvt_training.adopt.adopt import adopt, check_adopted
from fvt_training.adopt.inspection import AdoptError, AdoptOptions
from fvt_training.cli import main
from fvt_training.data import label_sets
from fvt_training.data.label_sets import CAMVID_CLASSES, LabelSetError
from fvt_training.evaluation.evaluate import evaluate

LICENCE = 'stand-in weights for tests, no restrictions'


def options(**kwargs) -> AdoptOptions:
    return AdoptOptions(**{'licence': LICENCE, **kwargs})


@pytest.fixture(scope='module', params=sorted(SOURCES))
def adopted(request, tmp_path_factory):
    spec = SOURCES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    source = spec.build(folder / f'{request.param}.onnx')
    out = folder / 'adopted.onnx'
    result = adopt(source, out, options(**spec.adopt_kwargs()))
    return spec, source, out, result


# --- label sets -------------------------------------------------------------------------

def test_built_in_label_sets_follow_the_official_tables():
    from cityscapesscripts.helpers.labels import trainId2label

    train = label_sets.load_label_set('cityscapes-trainids')
    assert len(train) == 19 and train.classes[0] == 'road' and train.classes[18] == 'bicycle'
    assert train.category_ids == tuple(trainId2label[i].categoryId for i in range(19))
    ids = label_sets.load_label_set('cityscapes-labelids')
    assert len(ids) == 34 and ids.category_ids[:7] == (0,) * 7  # unlabeled .. ground: void
    assert ids.classes[26] == 'car' and CATEGORIES[ids.category_ids[26]] == 'vehicle'
    camvid = label_sets.load_label_set('camvid11')
    assert list(zip(camvid.classes, (CATEGORIES[c] for c in camvid.category_ids),
                    strict=True)) == list(CAMVID_CLASSES[:11])
    matrix = train.matrix()
    assert matrix.shape == (19, 8) and (matrix.sum(axis=1) == 1).all()


def test_yaml_label_set_maps_classes_without_category_to_void(tmp_path):
    path = tmp_path / 'labels.yaml'
    path.write_text('classes:\n  - {name: road, category: flat}\n  - {name: background}\n'
                    '  - {name: person, category: human}\n  - {name: cloud, category: sky}\n')
    labels = label_sets.load_label_set(str(path))
    assert labels.classes == ('road', 'background', 'person', 'cloud')
    assert [CATEGORIES[c] for c in labels.category_ids] == ['flat', 'void', 'human', 'sky']
    assert labels.by_category() == {'void': ['background'], 'flat': ['road'],
                                    'human': ['person'], 'sky': ['cloud']}


@pytest.mark.parametrize('text, message', [
    ('classes:\n  - {name: road, category: pavement}\n',
     "classes[0] (road) has category 'pavement'; expected one of ['void', 'flat'"),
    ('classes: []\n', "expected a mapping with a non-empty list under 'classes'"),
    ('classes:\n  - {name: road, colour: 3}\n', "unknown keys ['colour']"),
    ('names: [road]\n', "non-empty list under 'classes'"),
])
def test_bad_yaml_label_sets_are_refused(tmp_path, text, message):
    path = tmp_path / 'labels.yaml'
    path.write_text(text)
    with pytest.raises(LabelSetError, match=None) as err:
        label_sets.load_label_set(str(path))
    assert message in str(err.value) and 'labels.yaml' in str(err.value)


# --- the three kinds of public model ------------------------------------------------------

def test_adopted_file_follows_the_contract_with_provenance(adopted):
    spec, source, out, result = adopted
    segmenter = load_segmenter(out, providers=['cpu'])
    contract = segmenter.contract
    assert segmenter.input_size == spec.input_size
    assert contract.categories == CATEGORIES and contract.palette == PALETTE
    assert (contract.layout, contract.color_order) == (spec.layout, spec.color_order)
    assert contract.output == 'probabilities' and contract.ignore_index == 0
    norm = contract.normalization
    assert (norm.scale, norm.mean, norm.std) == (1.0, spec.mean, spec.std)
    prov = contract.provenance
    assert prov['adopted_from'] == {'file': source.name,
                                    'sha256': hashlib.sha256(source.read_bytes()).hexdigest()}
    assert prov['licence'] == LICENCE and prov['labels'] == spec.labels
    assert prov['source_output'] == spec.kind
    assert prov['input_size'] == list(spec.input_size)
    expected_mapping = {}
    labels = label_sets.load_label_set(spec.labels)
    for name, category in zip(labels.classes, labels.category_ids, strict=True):
        expected_mapping.setdefault(CATEGORIES[category], []).append(name)
    assert prov['mapping'] == expected_mapping
    model = onnx.load(str(out))
    assert model.producer_name == 'fvt-train' and LICENCE in model.doc_string
    assert source.name in model.doc_string
    # The source graph is kept as it is and the head appended to it.
    source_ops = [n.op_type for n in onnx.load(str(source)).graph.node]
    assert [n.op_type for n in model.graph.node][:len(source_ops)] == source_ops
    assert not [p for p in out.parent.iterdir() if p.name.startswith('.tmp')]


def test_output_resolution_and_ops_of_each_kind(adopted):
    spec, _, out, result = adopted
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    dims = [d.dim_value or d.dim_param for d in
            model.graph.output[0].type.tensor_type.shape.dim]
    # NCHW logits: no Softmax (ONNX Runtime transposes for one over axis 1), no 1x1 Conv.
    head = {'nchw_logits_eighth': ['Reshape', 'ReduceMax', 'Sub', 'Exp', 'MatMul', 'Reshape',
                                   'MatMul', 'Reshape', 'Div'],
            'nhwc_probabilities': ['MatMul'],
            'argmax_ids': ['Cast', 'Less', 'Greater', 'Or', 'Where', 'Gather', 'Reshape',
                           'Equal', 'Cast']}
    if spec.kind == 'logits':
        assert ops[-9:] == head['nchw_logits_eighth'] and dims[1:] == [8, 8, 16]  # 1/8
        assert result['inspection'].stride() == 8
    elif spec.kind == 'probabilities':
        assert ops[-1:] == head['nhwc_probabilities'] and dims[1:] == [48, 64, 8]
        assert 'Softmax' not in ops[3:]  # probabilities are not normalised a second time
    else:
        assert ops[-9:] == head['argmax_ids'] and dims[1:] == [8, 16, 16]  # 1/4
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert tuple(dims[2:4] if spec.layout == 'NCHW' else dims[1:3]) == spec.input_size  # fixed now


@pytest.mark.parametrize('seed', [0, 1])
def test_inference_core_masks_match_the_official_mapping(adopted, seed):
    spec, source, out, _ = adopted
    segmenter = load_segmenter(out, providers=['cpu'])
    frame = patchwork(spec.input_size, seed)
    probabilities, mask = spec.expected(source, frame)
    top2 = np.sort(probabilities, axis=-1)[..., -2:]
    if spec.kind != 'class-ids':
        assert (top2[..., 1] - top2[..., 0]).min() > 1e-5  # no near-ties: exact comparison
    assert len(np.unique(mask)) >= 3  # the frame exercises several categories
    for order, pixels in (('RGB', frame), ('BGR', frame[:, :, ::-1].copy())):
        result = segmenter.segment(pixels, order, want_confidence=True)
        np.testing.assert_array_equal(result.classes, mask)
        want = np.clip(probabilities.max(axis=-1) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        assert np.abs(result.confidence.astype(int) - want).max() <= 1
    if spec.kind == 'class-ids':
        assert (result.confidence == 255).all()  # one-hot: the ids carry no uncertainty
    else:
        assert result.confidence.min() < 250  # a real category probability


def test_category_probability_is_a_sum_not_the_top_class(tmp_path):
    # 19 logits where 'road' wins alone but the 6 vehicle classes together win.
    logits = np.full(19, -10.0, np.float32)
    logits[0] = 2.0
    logits[13:19] = 1.5
    path = tmp_path / 'constant.onnx'
    graph = helper.make_graph(
        [helper.make_node('Mul', ['input', 'zero'], ['nothing']),
         helper.make_node('ReduceSum', ['nothing'], ['zeros'], axes=[1], keepdims=1),
         helper.make_node('Add', ['zeros', 'bias'], ['logits'])], 'constant',
        [helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info('logits', TensorProto.FLOAT, [1, 19, 16, 16])],
        [onnx.numpy_helper.from_array(np.zeros(1, np.float32), 'zero'),
         onnx.numpy_helper.from_array(logits.reshape(1, 19, 1, 1), 'bias')])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 11)],
                                ir_version=8), str(path))
    adopt(path, tmp_path / 'a.onnx', options(labels='cityscapes-trainids', color_order='RGB',
                                             mean=(0, 0, 0), std=(1, 1, 1)))
    segmenter = load_segmenter(tmp_path / 'a.onnx', providers=['cpu'])
    result = segmenter.segment(np.zeros((16, 16, 3), np.uint8), want_confidence=True)
    probabilities = np.exp(logits) / np.exp(logits).sum()
    assert (result.classes == CATEGORIES.index('vehicle')).all()
    vehicle = probabilities[13:].sum()
    assert vehicle > probabilities[0] and vehicle < 0.9
    assert (result.confidence == np.uint8(vehicle * 255 + 0.5)).all()


def test_argmax_without_keepdims(tmp_path):
    ids = argmax_ids_nchw(tmp_path / 'ids.onnx', keepdims=False)
    result = adopt(ids, tmp_path / 'ids_adopted.onnx', options(
        labels='camvid11', color_order='RGB', mean=(0, 0, 0), std=(255, 255, 255)))
    assert result['inspection'].output_size == (16, 16)
    assert result['parity']['argmax_agreement'] == 1.0


@pytest.mark.parametrize('opset', [11, 17])
def test_class_ids_outside_the_label_set_are_void(tmp_path, opset):
    source = floor_ids_nchw(tmp_path / 'ids.onnx', opset=opset)
    out = tmp_path / 'adopted.onnx'
    adopt(source, out, options(labels='camvid11', color_order='RGB', mean=(0, 0, 0),
                               std=(25.5,) * 3))
    # Inputs no pixel gives: ids -4..15 around CamVid's 0..10.
    tensor = np.random.default_rng(4).uniform(-4, 16, (1, 3, 16, 16)).astype(np.float32)
    ids = ort.InferenceSession(str(source), providers=['CPUExecutionProvider']).run(
        None, {'pixels': tensor})[0]
    assert ids.min() < 0 and ids.max() >= 11
    expected, _ = category_reference(ids, 'class-ids', 1, official_mapping('camvid11'))
    got = load_segmenter(out, providers=['cpu']).session.run(None, {'pixels': tensor})[0]
    np.testing.assert_array_equal(np.moveaxis(got[0], 0, -1), expected)


@pytest.mark.parametrize('opset', [11, 12, 13, 17, 18])
def test_nchw_logits_head_at_every_opset(tmp_path, opset):
    source = conv_logits_nchw(tmp_path / 'old.onnx', opset=opset)
    out = tmp_path / 'adopted.onnx'
    result = adopt(source, out, options(
        labels='cityscapes-trainids', color_order='BGR', mean=IMAGENET_BGR_MEAN,
        std=IMAGENET_BGR_STD, size=(128, 64)))
    reduce_max, = [n for n in onnx.load(str(out)).graph.node if n.op_type == 'ReduceMax']
    # ReduceMax takes its axes as an input from opset 18 on, as an attribute before.
    assert (len(reduce_max.input) == 2) == (opset >= 18)
    assert result['parity']['max_abs_diff'] < 1e-5
    frame = patchwork((64, 128), seed=3)
    probabilities, _ = SOURCES['nchw_logits_eighth'].expected(source, frame)
    segmenter = load_segmenter(out, providers=['cpu'])
    got = segmenter.infer(segmenter.preprocess(frame, 'RGB'))[0]
    np.testing.assert_allclose(np.moveaxis(got, 0, -1), probabilities, atol=1e-5)


def test_nchw_probabilities_are_summed_without_a_second_softmax(tmp_path):
    model = onnx.load(str(conv_logits_nchw(tmp_path / 'logits.onnx')))
    model.graph.node.append(helper.make_node('Softmax', ['logits'], ['probs'], axis=1))
    model.graph.output[0].name = 'probs'
    onnx.save(model, str(tmp_path / 'probs.onnx'))
    spec = SOURCES['nchw_logits_eighth']
    out = tmp_path / 'adopted.onnx'
    result = adopt(tmp_path / 'probs.onnx', out, options(**spec.adopt_kwargs()))
    assert result['inspection'].output == 'probabilities'
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops == ['Conv', 'Softmax', 'Reshape', 'MatMul', 'Reshape']  # the source's softmax
    frame = patchwork(spec.input_size, seed=5)
    scores = run_source(tmp_path / 'probs.onnx', frame[:, :, ::-1], 'NCHW', spec.mean, spec.std)
    expected, _ = category_reference(scores, 'probabilities', 1,
                                     official_mapping('cityscapes-trainids'))
    segmenter = load_segmenter(out, providers=['cpu'])
    got = segmenter.infer(segmenter.preprocess(frame, 'RGB'))[0]
    np.testing.assert_allclose(np.moveaxis(got, 0, -1), expected, atol=1e-6)


def test_yaml_labels_adopt_a_four_class_model(tmp_path):
    path = tmp_path / 'labels.yaml'
    path.write_text('classes:\n  - {name: road, category: flat}\n  - {name: background}\n'
                    '  - {name: person, category: human}\n  - {name: cloud, category: sky}\n')
    source = matmul_probabilities_nhwc(tmp_path / 'four.onnx', classes=4, input_size=(16, 16))
    result = adopt(source, tmp_path / 'four_adopted.onnx', options(
        labels=str(path), color_order='RGB', mean=(127.5,) * 3, std=(127.5,) * 3))
    prov = result['contract'].provenance
    assert prov['labels'] == 'labels.yaml' and prov['label_table'].startswith('labels.yaml sha256')
    assert prov['mapping'] == {'void': ['background'], 'flat': ['road'], 'human': ['person'],
                               'sky': ['cloud']}


# --- refusals -------------------------------------------------------------------------------

def refused(source: Path, tmp_path: Path, **kwargs) -> str:
    out = tmp_path / 'refused.onnx'
    with pytest.raises((AdoptError, LabelSetError)) as err:
        adopt(source, out, options(**kwargs))
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith('.tmp')]
    return str(err.value)


RGB_RAW = {'color_order': 'RGB', 'mean': (0, 0, 0), 'std': (1, 1, 1)}


def test_no_class_dimension_is_refused(tmp_path):
    message = refused(channel_max_nchw(tmp_path / 'heat.onnx'), tmp_path,
                      labels='cityscapes-trainids', **RGB_RAW)
    assert 'no class dimension' in message and "output 'heat' (shape [1, 32, 32]" in message
    assert 'expected scores [N, C, H, W] over the 19 classes' in message
    assert '--output class-ids' in message


def test_class_count_mismatch_is_refused(tmp_path):
    message = refused(conv_logits_nchw(tmp_path / 'voc.onnx', classes=21, dynamic=False),
                      tmp_path, labels='cityscapes-trainids', **RGB_RAW)
    assert 'class count mismatch' in message and 'has 21 classes on axis 1 (NCHW)' in message
    assert '--labels cityscapes-trainids names 19 classes' in message
    assert 'write a YAML label file' in message
    message = refused(conv_logits_nchw(tmp_path / 'ids34.onnx', classes=34, dynamic=False),
                      tmp_path, labels='cityscapes-trainids', **RGB_RAW)
    assert 'label sets with 34 classes: cityscapes-labelids' in message
    message = refused(argmax_ids_nchw(tmp_path / 'ids19.onnx', classes=19), tmp_path,
                      labels='camvid11', **RGB_RAW)
    assert 'its ids come from an ArgMax over 19 classes' in message
    assert '--labels camvid11 names 11 classes' in message


def test_yaml_with_an_unknown_category_is_refused(tmp_path):
    path = tmp_path / 'labels.yaml'
    path.write_text('classes:\n  - {name: road, category: street}\n')
    message = refused(matmul_probabilities_nhwc(tmp_path / 'one.onnx', classes=1), tmp_path,
                      labels=str(path), **RGB_RAW)
    assert "classes[0] (road) has category 'street'; expected one of" in message
    assert str(list(CATEGORIES)) in message


@pytest.mark.parametrize('change, flag', [
    ({'color_order': None}, '--color-order RGB'),
    ({'mean': None, 'std': None}, '--mean A,B,C --std A,B,C'),
    ({'std': None}, '--mean needs --std too'),
    ({'size': None}, 'add --size WxH'),
    ({'output': 'probabilities'}, 'pass --output logits or omit --output'),
    ({'output': 'class-ids'}, 'class ids expected as [N, H, W] or with a size-1 axis 1'),
    ({'labels': 'pascal-voc'}, "--labels expects one of ['cityscapes-trainids'"),
])
def test_missing_or_contradicting_options_name_the_flag(tmp_path, change, flag):
    spec = SOURCES['nchw_logits_eighth']
    source = spec.build(tmp_path / 'source.onnx')
    message = refused(source, tmp_path, **{**spec.adopt_kwargs(), **change})
    assert flag in message


def test_fixed_size_mismatch_and_ambiguous_layout_are_refused(tmp_path):
    fixed = conv_logits_nchw(tmp_path / 'fixed.onnx', dynamic=False, input_size=(64, 128))
    message = refused(fixed, tmp_path, labels='cityscapes-trainids', size=(256, 64), **RGB_RAW)
    assert 'its width is fixed at 128' in message
    square = tmp_path / 'square.onnx'
    graph = helper.make_graph(
        [helper.make_node('Identity', ['x'], ['y'])], 'square',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3, 8, 3])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 3, 8, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)],
                                ir_version=8), str(square))
    message = refused(square, tmp_path, labels='camvid11', **RGB_RAW)
    assert 'cannot tell the input layout from its shape [1, 3, 8, 3]' in message
    assert 'add --input-layout NCHW or --input-layout NHWC' in message


def test_probabilities_declared_as_logits_and_two_outputs_are_refused(tmp_path):
    probs = matmul_probabilities_nhwc(tmp_path / 'p.onnx')
    message = refused(probs, tmp_path, labels='cityscapes-labelids', output='logits',
                      **RGB_RAW)
    assert 'they are probabilities; pass --output probabilities or omit --output' in message
    model = onnx.load(str(probs))
    model.graph.output.append(helper.make_tensor_value_info('scores', TensorProto.FLOAT, None))
    onnx.save(model, str(tmp_path / 'two.onnx'))
    message = refused(tmp_path / 'two.onnx', tmp_path, labels='cityscapes-labelids', **RGB_RAW)
    assert 'expected one output (class scores or ids); the file has 2 (probs, scores)' in message


# --- the command ----------------------------------------------------------------------------

def test_cli_adopts_and_prints_what_it_found(tmp_path, capsys):
    spec = SOURCES['nchw_logits_eighth']
    source = spec.build(tmp_path / 'pidnet_like.onnx')
    out = tmp_path / 'models' / 'adopted.onnx'
    code = main(['adopt', str(source), '--labels', 'cityscapes-trainids', '--out', str(out),
                 '--licence', LICENCE, '--color-order', 'BGR',
                 '--mean', ','.join(map(str, IMAGENET_BGR_MEAN)),
                 '--std', ','.join(map(str, IMAGENET_BGR_STD)), '--size', '128x64'])
    text = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "input 'input' [batch, 3, height, width] float32 NCHW, run at 128x64" in text
    assert "output 'logits' [1, 19, 8, 16] float32: logits, 19 classes, at 1/8" in text
    assert 'vehicle: car, truck, bus, train, motorcycle, bicycle' in text
    assert 'argmax agreement 100.00%' in text


def test_cli_error_is_one_line_with_status_2(tmp_path, capsys):
    source = conv_logits_nchw(tmp_path / 'src.onnx')
    code = main(['adopt', str(source), '--labels', 'camvid11', '--out',
                 str(tmp_path / 'x.onnx'), '--licence', 'x', '--color-order', 'RGB',
                 '--mean', '0,0,0', '--std', '1,1,1'])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('fvt-train adopt: error: ') and 'add --size WxH' in err
    assert err.count('\n') == 1
    with pytest.raises(SystemExit):
        main(['adopt', str(source), '--labels', 'camvid11', '--out', 'x.onnx', '--licence',
              'x', '--mean', '1,2'])
    assert 'expected three numbers A,B,C' in capsys.readouterr().err


def test_check_scores_with_evaluate_and_times_both_files(tmp_path, capsys):
    data = make_prepared(tmp_path / 'data', (64, 128), {'train': 1, 'val': 3})
    spec = SOURCES['nchw_logits_eighth']
    source = spec.build(tmp_path / 'source.onnx')
    out = tmp_path / 'adopted.onnx'
    code = main(['adopt', str(source), '--labels', 'cityscapes-trainids', '--out', str(out),
                 '--licence', LICENCE, '--color-order', 'BGR',
                 '--mean', ','.join(map(str, IMAGENET_BGR_MEAN)),
                 '--std', ','.join(map(str, IMAGENET_BGR_STD)), '--size', '128x64',
                 '--check', str(data), '--split', 'val', '--timing-runs', '3'])
    text = capsys.readouterr().out
    assert code == 0
    report = evaluate(out, data, 'val', out_dir=tmp_path / 'eval', samples=0, timing_runs=0)
    miou = report['metrics']['miou']
    assert f'(3 images): mIoU {miou:.4f} (7 categories, void ignored)' in text
    assert 'speed (CPU, batch 1, median of 3 runs): adopted' in text and 'source' in text
    check = check_adopted(out, source, data, 'val', runs=2, warmup=1)
    assert check['metrics']['miou'] == miou
    assert set(check['latency_ms']) == {'source', 'adopted'}
    assert all(v['median_ms'] > 0 for v in check['latency_ms'].values())


def test_review_app_shows_the_provenance(adopted, tmp_path):
    from fvt_training.review.app import create_app

    spec, source, out, _ = adopted
    data = make_prepared(tmp_path / 'data', spec.input_size, {'val': 2})
    client = create_app(data, out, providers=('cpu',)).test_client()
    body = client.get('/api/model').get_json()
    prov = body['provenance']
    assert prov['adopted_from']['sha256'] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert prov['licence'] == LICENCE and prov['labels'] == spec.labels
    assert prov['mapping'] == label_sets.load_label_set(spec.labels).by_category()
    segment = client.get('/api/segment/val_000?split=val').get_json()
    assert segment['height_width'] == list(spec.input_size)
    assert 0 <= segment['metrics']['miou'] <= 1


def test_input_layout_flag_settles_a_dynamic_channel_axis(tmp_path):
    model = onnx.load(str(conv_logits_nchw(tmp_path / 'any.onnx')))
    channels = model.graph.input[0].type.tensor_type.shape.dim[1]
    channels.Clear()
    channels.dim_param = 'channels'
    onnx.save(model, str(tmp_path / 'any.onnx'))
    kwargs = {**SOURCES['nchw_logits_eighth'].adopt_kwargs()}
    message = refused(tmp_path / 'any.onnx', tmp_path, **kwargs)
    assert 'shape [batch, channels, height, width]; add --input-layout NCHW' in message
    adopt(tmp_path / 'any.onnx', tmp_path / 'fixed.onnx', options(input_layout='NCHW', **kwargs))
    dims = onnx.load(str(tmp_path / 'fixed.onnx')).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims] == ['batch', 3, 64, 128]
    assert load_segmenter(tmp_path / 'fixed.onnx', providers=['cpu']).input_size == (64, 128)
