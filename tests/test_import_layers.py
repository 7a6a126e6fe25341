"""How the product's code is layered: no import cycle in the shared library or in
storaged; storaged imports only the modules it shares with the client (c3.storage.wire,
codec, batching), never the client itself; and every product module is reachable from a
command (nothing in the product exists only for tests or benchmarks)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("c3", "c3d", "c3ctl", "coordinator", "agent", "storaged")
# Product modules landed ahead of the command that will use them (each with what it is
# for); an entry goes once its command imports it.
AHEAD_OF_USE = {"c3.httpserve": "the HTTP listener of the coming dashboard, /api/v1 and /metrics"}
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


def _uses(path: Path, known: dict[str, Path]) -> set[str]:
    """What `path` imports, and the modules it names to import or run later: a string
    "package.module" or "package.module:attribute" (c3ctl's lazy commands, `python -m`)."""
    names = _imports(path, known)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.split(":", 1)[0]
            if name in known:
                names.add(name)
    return names


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


def test_every_product_module_serves_a_command() -> None:
    modules = _modules(*PRODUCT)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    reached: set[str] = set()
    todo = [target.split(":", 1)[0] for target in scripts.values()]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # its packages load too
        todo += _uses(modules[name], modules) if name in modules else []
    assert sorted(set(modules) - reached - set(AHEAD_OF_USE)) == []
    assert sorted(set(AHEAD_OF_USE) & reached) == [], "in use now: drop it from AHEAD_OF_USE"


def test_the_wheel_holds_the_product_and_not_its_tests_or_benchmarks() -> None:
    setuptools = pytest.importorskip("setuptools")  # the build backend, not first-party
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    packages = setuptools.find_packages(str(ROOT), **find["find"])
    assert {name.split(".")[0] for name in packages} == set(PRODUCT)
    assert "c3.storage" in packages and "coordinator.providers" in packages
