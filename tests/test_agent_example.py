"""examples/pyproject-job through a real agent: `uv lock` generates its lock file (never
committed), the agent builds the env with the real third-party dependency, runs the
script in it, and a second job reuses the cached env without syncing again."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.envs import find_uv
from c3.config import job_spec, load_project
from c3.v1 import common_pb2 as S
from tests.harness.coordinator import push_workspace, start_agent_stack, submit_and_wait

pytestmark = pytest.mark.integration


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "pyproject-job"


async def uv_lock(directory: Path) -> None:
    uv = find_uv()
    if uv is None:
        pytest.skip("uv is not installed")
    proc = await asyncio.create_subprocess_exec(
        uv, "lock", cwd=directory, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        if any(s in text.lower() for s in ("failed to fetch", "dns", "connect", "network",
                                           "timed out", "offline")):
            pytest.skip(f"the package index is unreachable from here: {text.strip()[-300:]}")
        raise AssertionError(f"uv lock failed:\n{text}")


def test_the_example_lock_file_is_never_committed() -> None:
    assert not (EXAMPLE / "uv.lock").exists() or _ignored(EXAMPLE / "uv.lock")
    assert "uv lock" in (EXAMPLE / "README.md").read_text()


def _ignored(path: Path) -> bool:
    git = shutil.which("git")
    if git is None:
        return True
    return subprocess.run([git, "check-ignore", "-q", str(path)],
                          cwd=EXAMPLE).returncode == 0


async def test_pyproject_example_runs_with_its_dependency_and_reuses_the_env(
    tmp_path: Path
) -> None:
    project = tmp_path / "pyproject-job"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("uv.lock", ".venv",
                                                                   "c3-artifacts"))
    await uv_lock(project)
    cfg = load_project(project / ".c3")
    assert cfg.python_project == "."
    async with start_agent_stack(tmp_path) as stack:
        digest = await push_workspace(stack, project)
        spec = job_spec(cfg, workspace_manifest_digest=digest)
        fields = {f.name: getattr(spec, f.name) for f, _ in spec.ListFields()}
        first, events = await submit_and_wait(stack, **fields)
        text = [e.log.text for e in events if e.HasField("log")]
        assert first.state == S.JOB_STATE_COMPLETED, (first.message, text)
        assert any("building environment" in t for t in text)
        assert any(t.startswith("| what") for t in text), text  # tabulate's table
        second, events = await submit_and_wait(stack, **fields)
        text = [e.log.text for e in events if e.HasField("log")]
        assert second.state == S.JOB_STATE_COMPLETED, text
        assert any("cached, no sync needed" in t for t in text)
        assert not any("building environment" in t for t in text)
