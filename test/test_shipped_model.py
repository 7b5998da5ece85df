"""The shipped model: loads through the node's loader, follows the contract, and is the model
its card describes (a broken or swapped file fails here)."""

import json

import pytest

from fvt_segmentation.bag.bundled_recording import score_on_recording
from fvt_segmentation.core.contract import CATEGORIES, PALETTE
from fvt_segmentation.core.inference import load_segmenter
from fvt_segmentation.core.resources import package_file, resolve_model_path

CARD = json.loads(package_file('models/default.card.json').read_text())
VARIANTS = CARD['recording']['variants']


def test_default_model_path_resolves_to_the_shipped_model():
    assert resolve_model_path('') == package_file('models/default.onnx')
    assert resolve_model_path('').stat().st_size <= 30 * 1024 * 1024


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_shipped_model_follows_the_contract_and_reaches_its_card(variant):
    path = package_file(f'models/{VARIANTS[variant]["file"]}')
    assert path.stat().st_size <= 30 * 1024 * 1024
    segmenter = load_segmenter(path, providers=['cpu'])
    contract = segmenter.contract
    assert contract.categories == CATEGORIES and contract.palette == PALETTE
    assert contract.ignore_index == 0
    provenance = contract.provenance
    assert provenance['dataset'] == 'camvid' and 'CC BY-NC' in provenance['licence']
    assert provenance == VARIANTS[variant]['provenance']  # the card describes this very file
    assert segmenter.input_size == tuple(provenance['input_size'])
    scores = score_on_recording(segmenter)
    assert scores['frames'] == VARIANTS[variant]['frames']
    assert scores['miou'] >= VARIANTS[variant]['miou'] - 0.02
