"""The package's layers, checked from its source: no import cycles and no layer importing a
higher one. Lazy imports (inside functions) count; imports under ``if TYPE_CHECKING:`` (type
annotations only, never executed) do not."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "omnivae"

# Rank of each room: a module may import modules of its own rank or lower ones.
LAYERS = {
    "module": 0,     # pure torch
    "_compat": 0,    # old import paths (resolved at run time by importlib, imports nothing)
    "data": 1,       # MuData -> arrays
    "datasets": 1,   # simulator and dataset loaders
    "metrics": 1,    # evaluation helpers (numpy, scikit-learn, scanpy)
    "train": 2,      # Lightning
    "model": 3,      # the user-facing Model
    "tl": 4,         # scanpy-style tools
    "pl": 5,         # plots
    "demo": 6,
    "cli": 6,
}


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(path: Path, modules: set[str], src: Path = SRC) -> set[str]:
    """Modules of the package that ``path`` (under ``src``) imports at run time (top level or
    lazily)."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: runtime_imports(path, modules) for name, path in paths.items()}


def room(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a list that starts and ends at the same module)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in graph.items():
        if source == "omnivae":
            continue
        for target in targets:
            if target != "omnivae" and LAYERS[room(target)] > LAYERS[room(source)]:
                bad.append(f"{source} ({room(source)}) imports {target} ({room(target)})")
    return sorted(bad)


def test_every_room_has_a_rank():
    rooms = {room(m) for m in import_graph() if m != "omnivae"}
    assert rooms == set(LAYERS), "add the new room to LAYERS (and README's architecture map)"


def test_no_import_cycle_in_src():
    assert find_cycle(import_graph()) is None, f"import cycle: {find_cycle(import_graph())}"


def test_no_layer_imports_a_higher_one():
    assert layer_violations(import_graph()) == []


def test_the_checks_fail_on_a_cycle_and_an_upward_import():
    graph = {"omnivae.module.a": {"omnivae.module.b"}, "omnivae.module.b": {"omnivae.module.a"},
             "omnivae.data.x": {"omnivae.model.y"}, "omnivae.model.y": set()}
    assert find_cycle(graph) == ["omnivae.module.a", "omnivae.module.b", "omnivae.module.a"]
    assert layer_violations(graph) == ["omnivae.data.x (data) imports omnivae.model.y (model)"]


def test_lazy_imports_count_and_type_checking_ones_do_not(tmp_path):
    source = tmp_path / "omnivae" / "module" / "m.py"
    source.parent.mkdir(parents=True)
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from omnivae.model import x\n"
                      "def f():\n    from omnivae.data import y\n")
    found = runtime_imports(source, {"omnivae.model.x", "omnivae.data.y"}, src=tmp_path)
    assert found == {"omnivae.data.y"}


@pytest.mark.parametrize(("old", "new", "deprecated"), [
    ("penalties", "module.penalties", True), ("query", "model.model", True),
    ("tools", "tl", True),
    ("models.mmvae", "module.models.mmvae", False),  # omnivae.models is a documented alias
])
def test_old_import_paths_give_the_moved_module(old, new, deprecated):
    import importlib
    import sys

    sys.modules.pop(f"omnivae.{old}", None)  # import it afresh, so that the finder runs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        moved = importlib.import_module(f"omnivae.{old}")
    assert moved is importlib.import_module(f"omnivae.{new}")
    said = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any(f"omnivae.{new}" in m and "CHANGELOG" in m for m in said) == deprecated
