"""Experiment configuration: typed validation, ``key=value`` overrides, YAML in and out.

The keys, their types, defaults and meanings come from :mod:`fvt_training.runs.config_schema`;
:func:`render_config` writes YAML where each line reads ``key: value  # (type) meaning``.
Sections nest one level (``model.backbone``); overrides take dotted keys, or a bare leaf name
when it is unique (``epochs=3``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import copy
import difflib
import os
from pathlib import Path
from typing import Any

import yaml

from fvt_training.common.files import write_bytes_atomic
from fvt_training.runs.config_schema import FIELDS, SCHEMA, Field, InvalidValueError


class ConfigError(ValueError):
    """An invalid configuration; the message names the key, the valid form and what arrived."""


def defaults() -> dict:
    """Return a nested dict with every key at its default."""
    out: dict = {}
    for path, field in FIELDS.items():
        _set(out, path, copy.deepcopy(field.default))
    return out


def _set(tree: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split('.')
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def _get(tree: Mapping, path: str) -> Any:
    for p in path.split('.'):
        tree = tree[p]
    return tree


def _unknown(key: str, candidates: Iterable[str]) -> ConfigError:
    close = difflib.get_close_matches(key, list(candidates), n=1)
    hint = f' (did you mean {close[0]!r}?)' if close else ''
    return ConfigError(f'unknown configuration key {key!r}{hint}; valid keys: '
                       f'{", ".join(FIELDS)}')


def _flatten(tree: Mapping, source: str, prefix: str = '') -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f'{prefix}{key}'
        if path in FIELDS:
            out[path] = value
        elif isinstance(value, Mapping) and any(f.startswith(path + '.') for f in FIELDS):
            out.update(_flatten(value, source, path + '.'))
        else:
            raise ConfigError(f'{source}: {_unknown(path, FIELDS)}')
    return out


def validate(flat: Mapping[str, Any], source: str = '<config>',
             check_required: bool = True) -> dict:
    """Check every value of a flat ``{dotted key: value}`` mapping and return the nested config.

    Missing keys take their defaults; a missing required key, a wrong type or an unknown key
    raise :class:`ConfigError` with the valid form.
    """
    config = defaults()
    for path, value in flat.items():
        if path not in FIELDS:
            raise ConfigError(f'{source}: {_unknown(path, FIELDS)}')
        field = FIELDS[path]
        try:
            _set(config, path, field.check(value))
        except InvalidValueError:
            raise ConfigError(f'{source}: {path} must be {field.kind} ({field.doc}), e.g. '
                              f'`{field.example}`; got {value!r}') from None
    for path, field in FIELDS.items():
        if check_required and field.required and _get(config, path) is None:
            raise ConfigError(f'{source}: {path} is required ({field.doc}), e.g. '
                              f'`{field.example}`')
    _check_fixed_schedule(config, source)
    return config


def _check_fixed_schedule(config: Mapping, source: str) -> None:
    """Refuse a run judged by an unseen score whose training still watches that score."""
    train = config['train']
    sequence = config['data']['holdout_sequence']
    if sequence is not None and train['select'] != 'last':
        raise ConfigError(f'{source}: data.holdout_sequence: {sequence} needs '
                          'train.select: last (a held-out sequence that picked the epoch or '
                          'stopped the run would no longer be unseen); got train.select: '
                          f'{train["select"]}')
    if train['select'] == 'last' and train['lr_schedule'] != 'cosine':
        raise ConfigError(f'{source}: train.select: last needs train.lr_schedule: cosine (a '
                          'fixed schedule; plateau lowers the rate when the validation score '
                          f'stalls); got train.lr_schedule: {train["lr_schedule"]}')


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key=value`` (value parsed as YAML) and resolve a bare leaf name to its path."""
    key, sep, raw = text.partition('=')
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f'overrides are key=value (e.g. train.epochs=3); got {text!r}')
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if key in FIELDS:
        return key, value
    matches = [p for p in FIELDS if p.rsplit('.', 1)[-1] == key]
    if len(matches) == 1:
        return matches[0], value
    if len(matches) > 1:
        raise ConfigError(f'override key {key!r} is ambiguous; use one of {matches}')
    raise _unknown(key, FIELDS)


def load_config(path: str | os.PathLike | None, overrides: Iterable[str] = (),
                check_required: bool = True) -> dict:
    """Read a YAML config (or start from defaults), apply ``key=value`` overrides, validate.

    A missing ``name`` becomes the file's stem. ``check_required=False`` lets required keys
    stay null (to print a template).
    """
    flat: dict[str, Any] = {}
    source = '<overrides>'
    if path is not None:
        source = str(path)
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f'config file {source} does not exist') from None
        except yaml.YAMLError as err:
            raise ConfigError(f'{source}: not valid YAML ({err})') from None
        if not isinstance(raw, Mapping):
            raise ConfigError(f'{source}: expected a mapping of keys to values at the top '
                              f'level; got {type(raw).__name__}')
        flat = _flatten(raw, source)
    for text in overrides:
        key, value = parse_override(text)
        flat[key] = value
    if flat.get('name') is None and path is not None:
        flat['name'] = Path(path).stem
    return validate(flat, source, check_required)


def _yaml_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text[:-4].strip() if text.endswith('\n...') else text.removesuffix('...').strip()


def render_config(config: Mapping, header: str = '') -> str:
    """Return YAML for ``config`` with every key commented ``key: value  # (type) meaning``."""
    lines = [f'# {line}'.rstrip() for line in header.splitlines()] if header else []

    def walk(schema: Mapping, tree: Mapping, indent: str, prefix: str) -> None:
        for key, node in schema.items():
            if isinstance(node, Field):
                lines.append(f'{indent}{key}: {_yaml_value(tree[key])}  # ({node.kind}) '
                             f'{node.doc}')
            else:
                lines.append(f'{indent}{key}:')
                walk(node, tree[key], indent + '  ', f'{prefix}{key}.')

    walk(SCHEMA, config, '', '')
    return '\n'.join(lines) + '\n'


def write_config(config: Mapping, path: str | os.PathLike, header: str = '') -> None:
    """Write :func:`render_config` output atomically (temp file + rename)."""
    write_bytes_atomic(Path(path), render_config(config, header).encode('utf-8'))
