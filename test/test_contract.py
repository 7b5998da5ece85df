import json

import pytest

from fvt_segmentation.core.contract import (
    CATEGORIES,
    PALETTE,
    REQUIRED_KEYS,
    ContractError,
    ModelContract,
    Normalization,
    parse_contract,
)


def test_round_trip_through_metadata():
    contract = ModelContract(layout='NCHW', color_order='BGR', output='logits',
                             normalization=Normalization(1.0, (1.0, 2.0, 3.0), (2.0, 2.0, 4.0)),
                             provenance={'dataset': 'camvid'})
    parsed = parse_contract(contract.to_metadata(), 'm.onnx')
    assert parsed == contract
    assert parsed.categories == CATEGORIES and parsed.palette == PALETTE


def test_default_palette_is_cityscapes():
    assert PALETTE[1] == (128, 64, 128) and PALETTE[7] == (0, 0, 142)
    assert ModelContract().palette_array().shape == (8, 3)


def test_affine_normalisation_matches_formula():
    norm = Normalization(1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    gain, offset = norm.as_affine()
    pixel = 200.0
    expected = (pixel / 255 - 0.485) / 0.229
    assert abs(pixel * gain[0] + offset[0] - expected) < 1e-5


def test_categories_json_lists_names_and_colours():
    doc = json.loads(ModelContract().categories_json())
    assert [c['name'] for c in doc['categories']] == list(CATEGORIES)
    assert doc['categories'][5]['color'] == [70, 130, 180]


def test_no_contract_at_all_says_so():
    with pytest.raises(ContractError, match='m.onnx: no model contract'):
        parse_contract({'other': '1'}, 'm.onnx')


@pytest.mark.parametrize('key', REQUIRED_KEYS)
def test_each_missing_key_is_named(key):
    meta = ModelContract().to_metadata()
    del meta[key]
    with pytest.raises(ContractError, match=f'm.onnx: metadata key {key!r} is missing'):
        parse_contract(meta, 'm.onnx')


@pytest.mark.parametrize('key,value,fragment', [
    ('fvt.contract', '99', 'knows versions'),
    ('fvt.categories', '["only"]', 'at least 2 names'),
    ('fvt.categories', '[1, 2', 'not valid JSON'),
    ('fvt.palette', '[[0,0,0]]', '8 \\[r, g, b\\] triples'),
    ('fvt.palette', json.dumps([[0, 0, 300]] * 8), 'integers 0..255'),
    ('fvt.layout', 'NWHC', "one of \\['NHWC', 'NCHW'\\]"),
    ('fvt.color_order', 'rgb', 'one of'),
    ('fvt.output', 'softmax', 'one of'),
    ('fvt.normalization', '{"scale": 1}', 'must be an object'),
    ('fvt.normalization', '{"scale": 1, "mean": [0,0,0], "std": [1,0,1]}', 'nonzero'),
    ('fvt.ignore_index', '8', 'integer in 0..7'),
    ('fvt.ignore_index', 'void', 'integer in 0..7'),
    ('fvt.provenance', '[]', 'JSON object'),
])
def test_malformed_values_name_the_key(key, value, fragment):
    meta = ModelContract().to_metadata()
    meta[key] = value
    with pytest.raises(ContractError, match=fragment) as err:
        parse_contract(meta, 'm.onnx')
    assert key in str(err.value) and 'm.onnx' in str(err.value)


def test_version_2_round_trip_and_its_keys():
    v2 = ModelContract(version='2', input_type='uint8', quantization='int8_symmetric_qdq',
                       outputs={'scores': 'logits', 'classes': 'class_ids'})
    meta = v2.to_metadata()
    assert json.loads(meta['fvt.outputs']) == {'classes': 'class_ids', 'scores': 'logits'}
    assert meta['fvt.input_type'] == 'uint8'
    assert meta['fvt.quantization'] == 'int8_symmetric_qdq'
    assert parse_contract(meta, 'm.onnx') == v2
    v1 = ModelContract().to_metadata()
    assert not {'fvt.outputs', 'fvt.input_type', 'fvt.quantization'} & set(v1)
    for key, value, reason in [
            ('fvt.outputs', '{"confidence": "c"}', 'with "scores" or "classes"'),
            ('fvt.outputs', '{"mask": "m", "classes": "c"}', "metadata key 'fvt.outputs'"),
            ('fvt.input_type', 'float16', "'fvt.input_type' must be one of"),
            ('fvt.quantization', 'uint8', "'fvt.quantization' must be one of")]:
        with pytest.raises(ContractError, match=reason):
            parse_contract({**meta, key: value}, 'm.onnx')
    del meta['fvt.outputs']
    with pytest.raises(ContractError, match="'fvt.outputs' is missing .required by contract "
                                            'version 2'):
        parse_contract(meta, 'm.onnx')
