"""python.project environments with the real uv (offline: a project without dependencies
needs no index), and the job script running inside them, sandboxed and not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.envs import EnvCache, EnvError, build_environment, find_uv
from agent.logbatch import LogBatcher
from agent.runner import run_script
from agent.sandbox import SANDBOX_VENV, JobLayout, LaunchSpec
from c3.v1 import agent_pb2
from tests.harness.sandbox import host_sandbox

pytestmark = pytest.mark.integration


PYPROJECT = '[project]\nname = "demo"\nversion = "0.1.0"\nrequires-python = ">=3.11"\ndependencies = []\n'


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobLayout:
    if find_uv() is None:
        pytest.skip("uv is not installed")
    monkeypatch.setenv("UV_OFFLINE", "1")
    layout = JobLayout.under(tmp_path / "job")
    layout.create()
    proj = layout.workspace / "py"
    proj.mkdir()
    (proj / "pyproject.toml").write_text(PYPROJECT)
    (layout.workspace / "run.sh").write_text(
        'python -c "import sys, os; print(sys.prefix); print(os.environ[\'VIRTUAL_ENV\'])"\n')
    return layout


async def lock(directory: Path) -> None:
    uv = find_uv()
    assert uv is not None
    proc = await asyncio.create_subprocess_exec(uv, "lock", "--offline", cwd=directory)
    assert await proc.wait() == 0


async def test_missing_and_stale_lock_name_the_fix(project: JobLayout, tmp_path: Path) -> None:
    cache = EnvCache(tmp_path / "envs")
    with pytest.raises(EnvError, match=r"uv\.lock is missing; run `uv lock`"):
        await cache.ensure(project.workspace, "py", "", print)
    await lock(project.workspace / "py")
    # Stale without needing the network: the lock records the project's version. (A new
    # dependency would fail offline for a reason of its own.)
    (project.workspace / "py" / "pyproject.toml").write_text(
        PYPROJECT.replace('version = "0.1.0"', 'version = "0.2.0"'))
    with pytest.raises(EnvError, match=r"uv\.lock is out of date with pyproject\.toml; run `uv lock`"):
        await cache.ensure(project.workspace, "py", "", print)
    assert cache.cached_hashes() == []


@pytest.mark.parametrize("sandboxed", [False, True], ids=["unsandboxed", "bwrap"])
async def test_env_built_once_then_cached_and_used_by_the_script(
    project: JobLayout, tmp_path: Path, sandboxed: bool
) -> None:
    policy = host_sandbox() if sandboxed else None
    if sandboxed and policy is None:
        pytest.skip("bubblewrap cannot run on this host")
    await lock(project.workspace / "py")
    cache = EnvCache(tmp_path / "envs")
    said: list[str] = []
    first, second = await asyncio.gather(
        cache.ensure(project.workspace, "py", "", said.append),
        cache.ensure(project.workspace, "py", "", said.append))
    assert first == second
    assert sum("building environment" in s for s in said) == 1
    assert cache.cached_hashes() == [first.env_hash]

    lines: list[str] = []

    async def send(batch: agent_pb2.LogBatch) -> None:
        lines.extend(line.text for line in batch.lines)

    logs = LogBatcher("j", send)
    logs.start()
    spec = LaunchSpec(layout=project, script="run.sh", venv=first.venv,
                      extra_read_only=first.read_only)
    result = await run_script(spec, sandbox=policy, logs=logs)
    await logs.close()
    assert result.exit_code == 0, lines
    # In the sandbox the venv (relocatable) is at /c3/env, never at its host path.
    seen = SANDBOX_VENV if sandboxed else str(first.venv)
    assert lines == [seen, seen]


async def test_an_unreadable_lock_is_an_env_error_naming_the_file(project: JobLayout, tmp_path: Path) -> None:
    # Reading /proc/self/mem from offset 0 fails (EIO) even for root: an unreadable uv.lock.
    (project.workspace / "py" / "uv.lock").symlink_to("/proc/self/mem")
    cache = EnvCache(tmp_path / "envs")
    with pytest.raises(EnvError, match=r"python\.project py: cannot read uv\.lock: .*deploy again"):
        await cache.ensure(project.workspace, "py", "", print)


def test_an_environment_build_sees_none_of_the_agents_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dependency's build script is the job's code: it runs with uv's environment.
    monkeypatch.setenv("C3_AGENT_SECRET", "s3cr3t-provisioning")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    env = build_environment(tmp_path / "uv-cache", tmp_path / "venv")
    assert "s3cr3t-provisioning" not in env.values() and "hunter2" not in env.values()
    assert env["HTTPS_PROXY"] == "http://proxy.internal:3128"  # how to reach the index
    assert env["UV_PROJECT_ENVIRONMENT"] == str(tmp_path / "venv")
