"""The layering README.md's architecture table states: read from the sources' import lines."""

from __future__ import annotations

import ast
from pathlib import Path

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


def test_core_never_imports_rclpy() -> None:
    for name, path in modules().items():
        if name.startswith('fvt_segmentation.core'):
            assert not {i for i in imports(path) if i.split('.')[0] == 'rclpy'}, name


def test_no_module_imports_the_command_line_that_loads_it() -> None:
    # fvt_training.cli imports the subcommand modules by name (REGISTRARS), so an import of
    # cli from one of them would be a circle the import lines above do not show.
    assert [name for name, targets in graph().items() if 'fvt_training.cli' in targets] == []
