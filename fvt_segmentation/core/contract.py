"""The model contract: what an ONNX file must say about itself for the node to run it.

This module is the single source of truth for the category list, the palette and the
metadata keys (see ``shared/design/model-contract.md``, copied as ``docs/model-contract.md``).
It never imports rclpy, so the training package and the tests use it as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
import json
import math
from typing import Any

import numpy as np

CONTRACT_VERSION = '1'
CONTRACT_V2 = '2'
KNOWN_VERSIONS = frozenset({CONTRACT_VERSION, CONTRACT_V2})

CATEGORIES: tuple[str, ...] = (
    'void', 'flat', 'construction', 'object', 'nature', 'sky', 'human', 'vehicle',
)
"""The 8 Cityscapes categories; index = class id in every mask."""

PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (128, 64, 128), (70, 70, 70), (250, 170, 30),
    (107, 142, 35), (70, 130, 180), (220, 20, 60), (0, 0, 142),
)
"""Cityscapes category colours (RGB), one per entry of :data:`CATEGORIES`."""

VOID = 0
MIN_ARGMAX_AGREEMENT = 0.999
"""Parity rule: a converted model (ONNX from Keras, a TensorRT engine against the CPU) must
give the reference's class on at least this fraction of pixels."""
LAYOUTS = ('NHWC', 'NCHW')
COLOR_ORDERS = ('RGB', 'BGR')
OUTPUT_KINDS = ('probabilities', 'logits')
INPUT_TYPES = ('float32', 'uint8')
OUTPUT_ROLES = ('scores', 'classes', 'confidence')
"""Roles of a version 2 file's outputs (``fvt.outputs``): float scores, uint8 class ids,
uint8 confidence (0..255 = top probability * 255, rounded)."""
QUANTIZATIONS = ('none', 'int8_symmetric_qdq')
"""``fvt.quantization`` (optional, both versions): ``int8_symmetric_qdq`` marks a file whose
QDQ nodes are symmetric int8, which TensorRT runs with ``trt_int8_enable``."""

REQUIRED_KEYS = (
    'fvt.contract', 'fvt.categories', 'fvt.palette', 'fvt.layout', 'fvt.color_order',
    'fvt.normalization', 'fvt.output', 'fvt.ignore_index', 'fvt.provenance',
)


class ModelLoadError(RuntimeError):
    """A model that cannot be used: the message names the file and what is wrong."""


class ContractError(ModelLoadError, ValueError):
    """A model file that does not follow the contract; the message names file and key."""


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``x = (pixel * scale - mean) / std``, channels in the contract's order."""

    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def as_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(gain, offset)`` float32 vectors with ``x = pixel * gain + offset``."""
        std = np.asarray(self.std, dtype=np.float64)
        gain = self.scale / std
        offset = -np.asarray(self.mean, dtype=np.float64) / std
        return gain.astype(np.float32), offset.astype(np.float32)

    def to_json(self) -> str:
        """Serialise as the contract's JSON value."""
        return json.dumps({'scale': self.scale, 'mean': list(self.mean), 'std': list(self.std)})


@dataclass(frozen=True)
class ModelContract:
    """Everything the node needs to feed a model and read its output."""

    categories: tuple[str, ...] = CATEGORIES
    palette: tuple[tuple[int, int, int], ...] = PALETTE
    layout: str = 'NHWC'
    color_order: str = 'RGB'
    normalization: Normalization = field(default_factory=Normalization)
    output: str = 'probabilities'
    ignore_index: int = VOID
    provenance: Mapping[str, Any] = field(default_factory=dict)
    version: str = CONTRACT_VERSION
    input_type: str = 'float32'
    """Version 2: ``uint8`` means the graph takes raw pixels and normalises them itself."""
    outputs: Mapping[str, str] = field(default_factory=dict)
    """Version 2: role (see :data:`OUTPUT_ROLES`) -> graph output name; empty in version 1,
    whose one output holds the scores."""
    quantization: str = 'none'

    @property
    def num_classes(self) -> int:
        """Number of categories (output channels)."""
        return len(self.categories)

    def palette_array(self) -> np.ndarray:
        """Return the palette as a ``(C, 3)`` uint8 array for fancy-index colouring."""
        return np.asarray(self.palette, dtype=np.uint8).reshape(-1, 3)

    def to_metadata(self) -> dict[str, str]:
        """Return the ONNX ``metadata_props`` (all strings) that describe this contract."""
        meta = {
            'fvt.contract': self.version,
            'fvt.categories': json.dumps(list(self.categories)),
            'fvt.palette': json.dumps([list(c) for c in self.palette]),
            'fvt.layout': self.layout,
            'fvt.color_order': self.color_order,
            'fvt.normalization': self.normalization.to_json(),
            'fvt.output': self.output,
            'fvt.ignore_index': str(self.ignore_index),
            'fvt.provenance': json.dumps(dict(self.provenance), sort_keys=True),
        }
        if self.version == CONTRACT_V2:
            meta['fvt.input_type'] = self.input_type
            meta['fvt.outputs'] = json.dumps(dict(self.outputs), sort_keys=True)
        if self.quantization != 'none':
            meta['fvt.quantization'] = self.quantization
        return meta

    def categories_json(self) -> str:
        """Return names and palette as one JSON document (the node's ``~/categories``)."""
        return json.dumps({
            'categories': [
                {'id': i, 'name': n, 'color': list(c)}
                for i, (n, c) in enumerate(zip(self.categories, self.palette, strict=True))
            ],
            'ignore_index': self.ignore_index,
        })


def _json(meta: Mapping[str, str], key: str, source: str) -> Any:
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as err:
        raise ContractError(
            f'{source}: metadata key {key!r} is not valid JSON ({err.msg}); '
            f'got {meta[key][:80]!r}') from None


def _choice(meta: Mapping[str, str], key: str, allowed: tuple[str, ...], source: str) -> str:
    value = meta[key]
    if value not in allowed:
        raise ContractError(
            f'{source}: metadata key {key!r} must be one of {list(allowed)}; got {value!r}')
    return value


def _parse_normalization(meta: Mapping[str, str], source: str) -> Normalization:
    key = 'fvt.normalization'
    raw = _json(meta, key, source)
    expected = 'an object {"scale": number, "mean": [3 numbers], "std": [3 nonzero numbers]}'
    try:
        scale = float(raw['scale'])
        mean = tuple(float(v) for v in raw['mean'])
        std = tuple(float(v) for v in raw['std'])
    except (TypeError, KeyError, ValueError):
        raise ContractError(f'{source}: metadata key {key!r} must be {expected}; '
                            f'got {meta[key][:120]!r}') from None
    values = (scale, *mean, *std)
    if len(mean) != 3 or len(std) != 3 or any(s == 0 for s in std) or not all(
            math.isfinite(v) for v in values):
        raise ContractError(f'{source}: metadata key {key!r} must be {expected}; '
                            f'got {meta[key][:120]!r}')
    return Normalization(scale, mean, std)  # type: ignore[arg-type]


def parse_contract(meta: Mapping[str, str], source: str = '<model>') -> ModelContract:
    """Validate ONNX metadata and return the contract it describes.

    Raises :class:`ContractError` naming ``source`` and the first key that is missing or
    malformed.
    """
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        if len(missing) == len(REQUIRED_KEYS):
            raise ContractError(
                f'{source}: no model contract in its metadata (expected keys '
                f'{list(REQUIRED_KEYS)}; found {sorted(meta)}). Export with `fvt-train export`.')
        raise ContractError(f'{source}: metadata key {missing[0]!r} is missing '
                            f'(all missing: {missing})')
    version = meta['fvt.contract']
    if version not in KNOWN_VERSIONS:
        raise ContractError(f"{source}: metadata key 'fvt.contract' is {version!r}; this node "
                            f'knows versions {sorted(KNOWN_VERSIONS)}')

    categories = _json(meta, 'fvt.categories', source)
    if (not isinstance(categories, list) or len(categories) < 2
            or not all(isinstance(c, str) and c for c in categories)):
        raise ContractError(f"{source}: metadata key 'fvt.categories' must be a JSON list of at "
                            f'least 2 names; got {meta["fvt.categories"][:120]!r}')
    if len(categories) > 256:
        raise ContractError(f"{source}: metadata key 'fvt.categories' has {len(categories)} "
                            'names; masks are mono8, so at most 256 are possible')

    palette = _json(meta, 'fvt.palette', source)
    ok = isinstance(palette, list) and len(palette) == len(categories) and all(
        isinstance(c, list) and len(c) == 3
        and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in palette)
    if not ok:
        raise ContractError(
            f"{source}: metadata key 'fvt.palette' must be a JSON list of {len(categories)} "
            f'[r, g, b] triples of integers 0..255; got {meta["fvt.palette"][:120]!r}')

    try:
        ignore_index = int(meta['fvt.ignore_index'])
    except ValueError:
        ignore_index = -1
    if not 0 <= ignore_index < len(categories):
        raise ContractError(f"{source}: metadata key 'fvt.ignore_index' must be an integer in "
                            f'0..{len(categories) - 1}; got {meta["fvt.ignore_index"]!r}')

    provenance = _json(meta, 'fvt.provenance', source)
    if not isinstance(provenance, dict):
        raise ContractError(f"{source}: metadata key 'fvt.provenance' must be a JSON object; "
                            f'got {meta["fvt.provenance"][:120]!r}')

    input_type, outputs = 'float32', {}
    if version == CONTRACT_V2:
        input_type, outputs = _parse_v2(meta, source)
    quantization = meta.get('fvt.quantization', 'none')
    if quantization not in QUANTIZATIONS:
        raise ContractError(f"{source}: metadata key 'fvt.quantization' must be one of "
                            f'{list(QUANTIZATIONS)}; got {quantization!r}')

    return ModelContract(
        categories=tuple(categories),
        palette=tuple(tuple(c) for c in palette),
        layout=_choice(meta, 'fvt.layout', LAYOUTS, source),
        color_order=_choice(meta, 'fvt.color_order', COLOR_ORDERS, source),
        normalization=_parse_normalization(meta, source),
        output=_choice(meta, 'fvt.output', OUTPUT_KINDS, source),
        ignore_index=ignore_index,
        provenance=provenance,
        version=version,
        input_type=input_type,
        outputs=outputs,
        quantization=quantization,
    )


def _parse_v2(meta: Mapping[str, str], source: str) -> tuple[str, dict[str, str]]:
    for key in ('fvt.input_type', 'fvt.outputs'):
        if key not in meta:
            raise ContractError(f'{source}: metadata key {key!r} is missing (required by '
                                'contract version 2)')
    input_type = _choice(meta, 'fvt.input_type', INPUT_TYPES, source)
    outputs = _json(meta, 'fvt.outputs', source)
    expected = (f'a JSON object from roles {list(OUTPUT_ROLES)} to output names, with '
                '"scores" or "classes"')
    if (not isinstance(outputs, dict) or not set(outputs) <= set(OUTPUT_ROLES)
            or not all(isinstance(v, str) and v for v in outputs.values())
            or not {'scores', 'classes'} & set(outputs)):
        raise ContractError(f"{source}: metadata key 'fvt.outputs' must be {expected}; "
                            f'got {meta["fvt.outputs"][:120]!r}')
    return input_type, outputs
