"""The layering README.md's architecture table states: read from the sources' import lines."""

from __future__ import annotations

import ast
from pathlib import Path
import re

REPO = Path(__file__).resolve().parents[1]
ROOTS = {'fvt_segmentation': REPO / 'fvt_segmentation',
         'fvt_training': REPO / 'training' / 'fvt_training'}


def modules() -> dict[str, Path]:
    """Every module of both packages by dotted name."""
    found = {}
    for package, root in ROOTS.items():
        for path in root.rglob('*.py'):
            parts = [package, *path.relative_to(root).with_suffix('').parts]
            found['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
    return found


def imports(path: Path) -> set[str]:
    """Every absolute import of ``path``, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f'{node.module}.{alias.name}' for alias in node.names)
    return names


def graph() -> dict[str, set[str]]:
    """Module -> the modules of both packages it imports."""
    known = modules()
    return {name: {i for i in imports(path) if i in known and i != name}
            for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_in_either_package() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]


def test_each_layer_imports_only_the_layers_below_it() -> None:
    below = {'core': {'core'}, 'bag': {'core', 'bag'}, 'node': {'core', 'bag', 'node'},
             'tools': {'core', 'bag', 'node', 'tools'}}
    for name, targets in graph().items():
        parts = name.split('.')
        if parts[0] == 'fvt_training':
            allowed = {'core'}
        elif len(parts) > 2:
            allowed = below[parts[1]]
        else:
            continue
        for target in targets:
            layer = target.split('.')[1] if target.startswith('fvt_segmentation.') else None
            assert layer is None or layer in allowed, f'{name} imports {target}'


# Each group of fvt_training and the groups it may import: the ones below it, and itself.
TRAINING_ORDER = ('common', 'data', 'models', 'runs', 'evaluation', 'onnx', 'adopt', 'review',
                  'cli')
TRAINING_BELOW = {group: set(TRAINING_ORDER[:i + 1]) for i, group in enumerate(TRAINING_ORDER)}
MAX_LINES = 500
ENTRY_POINT = re.compile(r'((?:fvt_training|fvt_segmentation)(?:\.\w+)+):(\w+)')


def training_group(name: str) -> str | None:
    """The group of an fvt_training module (``cli`` for the command line), None for the root."""
    parts = name.split('.')
    return parts[1] if len(parts) > 1 else None


def test_each_training_group_imports_only_the_groups_below_it() -> None:
    training = {name for name in modules() if name.startswith('fvt_training')}
    assert {training_group(name) for name in training} - {None} == set(TRAINING_ORDER)
    for name, targets in graph().items():
        if name not in training or training_group(name) is None:
            continue
        allowed = TRAINING_BELOW[training_group(name)]
        for target in targets:
            group = training_group(target) if target.startswith('fvt_training') else None
            assert group is None or group in allowed, f'{name} imports {target}'


def test_the_command_line_is_the_only_module_outside_a_group() -> None:
    assert [n for n, path in modules().items() if n.startswith('fvt_training.')
            and path.parent == ROOTS['fvt_training']] == ['fvt_training.cli']


def test_no_module_is_longer_than_the_limit() -> None:
    lines = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in lines.items() if n > MAX_LINES} == {}


def test_modules_named_in_strings_exist_and_define_what_is_named() -> None:
    # The subcommand registrars, the user errors and the supervised worker are named by
    # strings ('module:function', {module: (error, ...)}), which the import lines above miss.
    known = modules()
    named: dict[str, set[str]] = {}
    for path in known.values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Dict) and all(
                    isinstance(k, ast.Constant) and str(k.value).startswith(tuple(ROOTS))
                    for k in node.keys):
                for key, value in zip(node.keys, node.values, strict=True):
                    named.setdefault(key.value, set()).update(
                        e.value for e in ast.walk(value) if isinstance(e, ast.Constant))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    entry := ENTRY_POINT.fullmatch(node.value)):
                named.setdefault(entry[1], set()).add(entry[2])
    assert 'fvt_training.runs.train' in named and 'fvt_training.onnx.export' in named
    for module, names in named.items():
        assert module in known, f'{module} is named but does not exist'
        tree = ast.parse(known[module].read_text())
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert names <= defined, f'{module} lacks {sorted(names - defined)}'


def test_core_never_imports_rclpy() -> None:
    for name, path in modules().items():
        if name.startswith('fvt_segmentation.core'):
            assert not {i for i in imports(path) if i.split('.')[0] == 'rclpy'}, name


def test_no_module_imports_the_command_line_that_loads_it() -> None:
    # fvt_training.cli imports the subcommand modules by name (REGISTRARS), so an import of
    # cli from one of them would be a circle the import lines above do not show.
    assert [name for name, targets in graph().items() if 'fvt_training.cli' in targets] == []
