"""The house has no cycles: no module of the package imports, directly or through others, a
module that imports it back, and no function hides an `argusrec` import (the usual disguise of
a cycle). The CLI modules may defer imports (start-up time); type-only imports under
`if TYPE_CHECKING:` do not count."""

from __future__ import annotations

import ast
from pathlib import Path

import argusrec

PACKAGE = Path(argusrec.__file__).parent
DEFERRING = {"argusrec.cli", "argusrec.cli_deploy"}  # `argus --help` must not import torch


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text())
    return out


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("argusrec"):
        return [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("argusrec")]
    return []


def _top_level_imports(tree: ast.Module, modules: set[str]) -> set[str]:
    found = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for name in _imported(node):
            if name in modules:
                found.add(name)
    return found


def test_no_function_level_argusrec_imports_outside_the_cli():
    hidden = []
    for name, tree in _modules().items():
        if name in DEFERRING:
            continue
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    hidden += [f"{name}.{fn.name}: {m}" for m in _imported(node)[:1]]
    assert hidden == []


def test_the_import_graph_has_no_cycle():
    modules = _modules()
    graph = {name: _top_level_imports(tree, set(modules)) for name, tree in modules.items()}
    for name, targets in graph.items():  # a package may import its own submodules
        graph[name] = {t for t in targets if t != name and not t.startswith(name + ".")}
    for name in list(graph):  # importing a submodule runs its package's __init__ first
        parent = name.rsplit(".", 1)[0]
        if parent in graph and parent != name and parent != "argusrec":
            graph[name].add(parent)
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []
