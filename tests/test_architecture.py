"""How the parts may depend on each other, read from the source: the coordinator's, the
storaged's and c3d's modules import no module that imports them back (not even behind
TYPE_CHECKING), and the agent imports nothing of the coordinator (it reports what it has;
the coordinator decides what that is)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("c3", "c3d", "c3ctl", "coordinator", "agent", "storaged")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """First-party modules `path` imports, anywhere in it (TYPE_CHECKING blocks too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for name in (node.module, *(f"{node.module}.{a.name}" for a in node.names)):
                if name in modules:
                    found.add(name)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return groups


def test_no_import_cycle_in_the_coordinator_storaged_or_c3d() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    cycles = [
        group
        for group in _cycles(graph)
        if any(m.split(".")[0] in ("coordinator", "storaged", "c3d") for m in group)
    ]
    assert cycles == []
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]  # the check works


def test_the_agent_imports_nothing_of_the_coordinator() -> None:
    modules = _modules()
    agent_imports = {
        (name, imported)
        for name, path in modules.items()
        if name.startswith("agent")
        for imported in _imports(path, modules)
        if imported.startswith("coordinator")
    }
    assert agent_imports == set()
    # Nor by name at run time (the catalog used to be loaded inside a function).
    by_name = re.compile(r"(from|import)\s+coordinator\b|import_module\(\s*[\"']coordinator")
    for path in (ROOT / "agent").rglob("*.py"):
        assert not by_name.search(path.read_text()), path
