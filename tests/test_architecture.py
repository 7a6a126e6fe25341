"""How the parts may depend on each other, read from the source: the shared library's, the
coordinator's, storaged's and c3d's modules import no module that imports them back (not
even behind TYPE_CHECKING); the agent imports nothing of the coordinator (it reports what
it has; the coordinator decides what that is); storaged imports only the storage modules
it shares with the client (c3.storage.wire, codec, batching), never the client; every
product module serves a command (nothing in the product exists only for tests or
benchmarks), and the wheel holds the product, not its tests or benchmarks."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("c3", "c3d", "c3ctl", "coordinator", "agent", "storaged")
SHARED_WITH_STORAGED = {"c3.storage", "c3.storage.wire", "c3.storage.codec", "c3.storage.batching"}
# Product modules landed ahead of the command that will use them (each with what it is
# for); an entry goes once its command imports it.
AHEAD_OF_USE = {"c3.httpserve": "the HTTP listener of the coming dashboard, /api/v1 and /metrics"}


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


def _uses(path: Path, modules: dict[str, Path]) -> set[str]:
    """What `path` imports, and the modules it names to import or run later: a string
    "package.module" or "package.module:attribute" (c3ctl's lazy commands, `python -m`)."""
    found = _imports(path, modules)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.split(":", 1)[0]
            if name in modules:
                found.add(name)
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


def test_no_import_cycle_in_the_library_coordinator_storaged_or_c3d() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    cycles = [
        group
        for group in _cycles(graph)
        if any(m.split(".")[0] in ("c3", "coordinator", "storaged", "c3d") for m in group)
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


def test_storaged_imports_no_client_module() -> None:
    modules = _modules()
    for name, path in modules.items():
        if name.startswith("storaged"):
            storage = {m for m in _imports(path, modules) if m.startswith("c3.storage")}
            assert storage <= SHARED_WITH_STORAGED, (name, storage - SHARED_WITH_STORAGED)
    # And at run time: what starting the server loads.
    probe = "import sys, storaged.main; print(*(m for m in sys.modules if m.startswith('c3.')))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    storage = {m for m in loaded if m.startswith("c3.storage")}
    assert storage <= SHARED_WITH_STORAGED, storage - SHARED_WITH_STORAGED
    assert "c3.storage.wire" in storage


def test_every_product_module_serves_a_command() -> None:
    modules = _modules()
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
    generated = {m for m in modules if m.startswith("c3.v1")}
    assert sorted(set(modules) - reached - generated - set(AHEAD_OF_USE)) == []
    assert sorted(set(AHEAD_OF_USE) & reached) == [], "in use now: drop it from AHEAD_OF_USE"


def test_the_wheel_holds_the_product_and_not_its_tests_or_benchmarks() -> None:
    setuptools = pytest.importorskip("setuptools")  # the build backend, not first-party
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    packages = setuptools.find_packages(str(ROOT), **find["find"])
    assert {name.split(".")[0] for name in packages} == set(PACKAGES)
    assert "c3.storage" in packages and "coordinator.providers" in packages
