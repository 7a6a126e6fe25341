"""A real `c3-agent` process against the real coordinator and storaged (both in-process
gRPC servers on free ports): a job's workspace is fetched, its output streams back, its
artifacts are committed under /jobs/<id>; cancel stops the whole process group."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from c3.grpcutil import bearer
from c3.storage.client import StorageClient
from c3.v1 import common_pb2
from c3.v1 import coordinator_pb2 as pb
from tests.harness.coordinator import (
    Stack,
    client,
    events_until_done,
    push_workspace,
    start_agent_stack,
)
from tests.harness.waiting import eventually

S = common_pb2
pytestmark = pytest.mark.integration


RUN_SH = """set -e
echo "hello from the agent"
echo "secret=${C3_AGENT_SECRET:-none}"
echo "home=$HOME workdir=$C3_JOB_WORKDIR"
bash ./helper.sh > "$C3_ARTIFACTS_DIR/out.txt"
mkdir -p results && echo 42 > results/answer.txt
"""


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with start_agent_stack(tmp_path) as s:
        yield s


async def test_agent_runs_a_job_end_to_end_and_cancel_kills_the_group(
    stack: Stack, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "run.sh").write_text(RUN_SH)
    (ws / "helper.sh").write_text("echo artifact-body\n")
    digest = await push_workspace(stack, ws)
    c, md = client(stack.channel), bearer(stack.api_key)
    job = (await c.SubmitJob(pb.SubmitJobRequest(spec=S.JobSpec(
        project="demo", script="run.sh", workspace_manifest_digest=digest,
        output=["results"])), metadata=md)).job
    events: list[S.JobEvent] = []
    state = await asyncio.wait_for(events_until_done(stack, job.id, events), 60)
    lines = [e.log.text for e in events if e.HasField("log")]
    assert state == S.JOB_STATE_COMPLETED, (lines, events[-1])
    assert "hello from the agent" in lines
    assert "secret=none" in lines
    done = (await c.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)).job
    assert done.artifacts_path == f"/jobs/{job.id}" and done.artifacts_version == 1
    assert done.startup.workspace_fetch_ms > 0
    token = (await c.IssueStorageToken(pb.IssueStorageTokenRequest(), metadata=md)).token
    async with StorageClient(stack.storage_address, token) as storage:
        version = await storage.resolve(f"/jobs/{job.id}")
        manifest = await storage.get_manifest(version.manifest_digest)
        assert sorted(e.path for e in manifest.entries) == ["out.txt", "results/answer.txt"]
        pulled = tmp_path / "pulled"
        await storage.download_tree(manifest, pulled)
    assert (pulled / "out.txt").read_text() == "artifact-body\n"

    # A job that leaves a background child; cancel must end both and free the agent.
    (ws / "run.sh").write_text("sleep 300 &\necho started $$\nsleep 300\n")
    digest = await push_workspace(stack, ws)
    job = (await c.SubmitJob(pb.SubmitJobRequest(spec=S.JobSpec(
        project="demo", script="run.sh", workspace_manifest_digest=digest)), metadata=md)).job
    canceled = False

    async def cancel_once_started(event: S.JobEvent) -> None:
        nonlocal canceled
        if not canceled and event.HasField("log") and event.log.text.startswith("started"):
            canceled = True
            await c.CancelJob(pb.CancelJobRequest(job_ids=[job.id]), metadata=md)

    events = []
    state = await asyncio.wait_for(events_until_done(stack, job.id, events, cancel_once_started), 60)
    assert canceled and state == S.JOB_STATE_CANCELED
    await eventually(lambda: not _sleepers_under(stack.agent.pid), timeout=15,
                     what="the job's processes to be gone")
    await eventually(lambda: list(stack.app.scheduler.idle_agents()),
                     what="the agent to be idle again")

    stack.agent.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(stack.agent.wait, 20) == 0


def _sleepers_under(agent_pid: int) -> list[int]:
    """`sleep 300` processes whose session began under the agent (the job's group)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"300"]:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if stat[0] != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


async def test_failures_carry_their_reason_and_the_agent_takes_the_next_job(
    stack: Stack, tmp_path: Path
) -> None:
    c, md = client(stack.channel), bearer(stack.api_key)

    async def submit_and_wait(**fields: Any) -> S.Job:
        job = (await c.SubmitJob(pb.SubmitJobRequest(spec=S.JobSpec(project="demo", **fields)),
                                 metadata=md)).job
        await asyncio.wait_for(events_until_done(stack, job.id, []), 60)
        return (await c.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)).job

    missing = await submit_and_wait(script="run.sh", workspace_manifest_digest="ab" * 32)
    assert (missing.state, missing.failure_reason) == (S.JOB_STATE_FAILED,
                                                      S.FAILURE_REASON_WORKSPACE_ERROR)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "fail.sh").write_text("echo failing; exit 3\n")
    (ws / "slow.sh").write_text("sleep 300 &\nsleep 300\n")
    digest = await push_workspace(stack, ws)
    failed = await submit_and_wait(script="fail.sh", workspace_manifest_digest=digest)
    assert (failed.state, failed.failure_reason, failed.exit_code) == (
        S.JOB_STATE_FAILED, S.FAILURE_REASON_EXIT_CODE, 3)
    no_script = await submit_and_wait(script="nope.sh", workspace_manifest_digest=digest)
    assert no_script.failure_reason == S.FAILURE_REASON_WORKSPACE_ERROR
    assert "nope.sh" in no_script.message
    timed = await submit_and_wait(script="slow.sh", workspace_manifest_digest=digest,
                                  time_limit_seconds=1)
    assert timed.state == S.JOB_STATE_TIMED_OUT
    await eventually(lambda: not _sleepers_under(stack.agent.pid), timeout=15,
                     what="the timed-out job's processes to be gone")
