"""How the storage code is layered: no import cycle in the shared library or in storaged,
and storaged imports only the modules it shares with the client (c3.storage.wire, codec,
batching), never the client itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_WITH_STORAGED = {"c3.storage", "c3.storage.wire", "c3.storage.codec", "c3.storage.batching"}


def _modules(*packages: str) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            if rel.parts[:2] == ("c3", "v1"):
                continue  # generated stubs
            name = ".".join(rel.parts).removesuffix(".__init__")
            found[name] = path
    return found


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """First-party modules `path` imports anywhere (at the top, in a function, or for type
    checking only: a cycle hidden behind any of them is still a cycle)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                names.add(child if child in known else node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n in known}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_in_the_library_or_storaged() -> None:
    modules = _modules("c3", "storaged")
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert _cycles(graph) == []


def test_storaged_imports_no_client_module() -> None:
    modules = _modules("c3", "storaged")
    for name, path in modules.items():
        if name.startswith("storaged"):
            storage = {m for m in _imports(path, modules) if m.startswith("c3.storage")}
            assert storage <= SHARED_WITH_STORAGED, (name, storage - SHARED_WITH_STORAGED)
    # And at run time: what starting the server loads.
    probe = "import sys, storaged.main; print(*(m for m in sys.modules if m.startswith('c3.')))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    loaded = [m for m in loaded if m.startswith("c3.storage")]
    assert set(loaded) <= SHARED_WITH_STORAGED, set(loaded) - SHARED_WITH_STORAGED
    assert "c3.storage.wire" in loaded
