"""`kill -9` of an agent in the middle of a sandboxed job, then what an operator would
check: no network namespace and no pasta of that agent left on the host (its reaper
deleted them the moment it died), and the next agent on the same data dir removes the
job's cgroup and unmounts its staged dirs before it takes work, then runs jobs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from agent.cgroups import CgroupManager, agent_key, detect_cgroups
from agent.jobnet import NETNS_DIR, missing_tools
from agent.stage import stage_root
from c3.v1 import common_pb2 as S
from c3.v1 import coordinator_pb2 as pb
from tests.harness.coordinator import Stack, push_workspace, start_agent_stack, submit_and_wait
from tests.harness.waiting import eventually

CGROUPS, _ = detect_cgroups()

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and staging need root"),
    pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()} (scripts/bootstrap)"),
]


def _pastas(prefix: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if b"--netns" in argv and state != "Z" and any(
                    a.decode(errors="replace").startswith(prefix) for a in argv):
                found.append(int(entry.name))
    return found


def _sleepers(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", token.encode()]:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _namespaces(prefix: str) -> list[str]:
    try:
        return [n for n in os.listdir(NETNS_DIR) if n.startswith(prefix)]
    except FileNotFoundError:
        return []


async def test_an_agent_killed_mid_job_leaves_nothing_its_successor_does_not_clear(
        tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    key = agent_key(data_dir)
    prefix = f"c3-{key}-"
    async with start_agent_stack(tmp_path) as stack:
        ws = tmp_path / "ws"
        ws.mkdir()
        token = f"{os.getpid() % 1000 + 300}.25"
        (ws / "run.sh").write_text(f"echo started\nsleep {token}\n")
        (ws / "ok.sh").write_text("echo fine\n")
        digest = await push_workspace(stack, ws)
        job = (await stack.c.SubmitJob(pb.SubmitJobRequest(spec=S.JobSpec(
            project="demo", script="run.sh", workspace_manifest_digest=digest)),
            metadata=stack.md)).job
        await eventually(lambda: stack.app.jobs.jobs[job.id].state == S.JOB_STATE_RUNNING,
                         30, "the job to run")
        assert _namespaces(prefix) and _pastas(prefix)
        staged = stage_root(key)
        assert any(staged.iterdir()), "the job's dirs are staged"
        group = CGROUPS.for_agent(key) if CGROUPS is not None else None
        if group is not None:
            assert group.own_groups()

        stack.agent.send_signal(signal.SIGKILL)
        await asyncio.to_thread(stack.agent.wait, 10)
        await eventually(lambda: not _namespaces(prefix) and not _pastas(prefix), 10,
                         "the dead agent's namespaces and pasta to be gone")
        # The job's process dies with the agent (bubblewrap --die-with-parent).
        await eventually(lambda: not _sleepers(token), 10, "the job's process to be gone")
        await eventually(lambda: stack.app.jobs.jobs[job.id].state == S.JOB_STATE_FAILED,
                         60, "the job to end AGENT_LOST")

        # The next agent on the same data dir clears what is left before it registers.
        successor = await asyncio.to_thread(
            subprocess.Popen, stack.agent.args, env=dict(os.environ))  # type: ignore[arg-type]
        try:
            await _successor_clears_and_runs(stack, successor, staged, group, digest)
        finally:
            if successor.poll() is None:
                successor.send_signal(signal.SIGTERM)
                await asyncio.to_thread(successor.wait, 20)


async def _successor_clears_and_runs(stack: Stack, successor: subprocess.Popen[bytes],
                                     staged: Path, group: CgroupManager | None,
                                     digest: str) -> None:
    await eventually(lambda: list(stack.app.scheduler.idle_agents()), 30,
                     "the new agent to register")
    assert successor.poll() is None
    assert not staged.exists() or not any(staged.iterdir())
    assert str(staged) not in Path("/proc/self/mountinfo").read_text()
    if group is not None:
        assert group.own_groups() == []
    ok, events = await submit_and_wait(stack, script="ok.sh", workspace_manifest_digest=digest)
    assert ok.state == S.JOB_STATE_COMPLETED
    assert "fine" in [e.log.text for e in events if e.HasField("log")]
