"""A real agent process through the failures a GPU host meets: the coordinator restarts
while a job runs (the job goes on, its logs arrive complete, it ends COMPLETED), and
storaged is gone when a successful script's artifacts are uploaded (FAILED/UPLOAD_ERROR,
not run again)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from c3.grpcutil import bearer
from c3.v1 import common_pb2 as S
from c3.v1 import coordinator_pb2 as pb
from tests.harness.coordinator import (
    Stack,
    client,
    events_until_done,
    push_workspace,
    start_agent_stack,
)
from tests.harness.waiting import eventually

pytestmark = pytest.mark.faults


# Prints a numbered tick until the test drops a `release` file into the job's workspace.
# It lists the directory rather than testing the name: in the sandbox the workspace is an
# overlay of the host dir, and a name looked up before it existed stays absent to the job.
WAIT_FOR_RELEASE = """echo "before"
i=0
until ls -a | grep -qx release; do i=$((i+1)); echo "tick $i"; sleep 0.05; done
echo "artifact" > "$C3_ARTIFACTS_DIR/out.txt"
echo "after"
"""


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with start_agent_stack(tmp_path) as s:
        yield s


async def _submit(stack: Stack, tmp_path: Path) -> S.Job:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "run.sh").write_text(WAIT_FOR_RELEASE)
    digest = await push_workspace(stack, ws)
    return (await client(stack.channel).SubmitJob(pb.SubmitJobRequest(spec=S.JobSpec(
        project="demo", script="run.sh", workspace_manifest_digest=digest)),
        metadata=bearer(stack.api_key))).job


async def _job(stack: Stack, job_id: str) -> S.Job:
    return (await client(stack.channel).GetJob(pb.GetJobRequest(job_id=job_id),
                                               metadata=bearer(stack.api_key))).job


async def _run_until_done(stack: Stack, job_id: str, on_started: Callable[[], Awaitable[None]]
                          ) -> list[str]:
    """Follow the job to its end; `on_started` runs once the script printed "before".
    Returns the job's log lines."""
    events: list[S.JobEvent] = []
    started = False

    async def on_event(event: S.JobEvent) -> None:
        nonlocal started
        if not started and event.HasField("log") and event.log.text == "before":
            started = True
            await on_started()

    await asyncio.wait_for(events_until_done(stack, job_id, events, on_event), 60)
    assert started
    return [e.log.text for e in events if e.HasField("log")]


async def _script_started(stack: Stack, job_id: str) -> None:
    """Return once the job's script has printed "before" (it is running)."""
    started = asyncio.Event()

    async def on_event(event: S.JobEvent) -> None:
        if event.HasField("log") and event.log.text == "before":
            started.set()

    follower = asyncio.create_task(events_until_done(stack, job_id, [], on_event))
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({follower, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    follower.cancel()
    waiter.cancel()
    await asyncio.gather(follower, waiter, return_exceptions=True)
    assert started.is_set(), "the script never started"


async def test_running_job_survives_a_coordinator_restart(stack: Stack, tmp_path: Path) -> None:
    job = await _submit(stack, tmp_path)
    agent_pid = stack.agent.pid
    await _script_started(stack, job.id)
    assert stack.app.jobs.jobs[job.id].state == S.JOB_STATE_RUNNING

    await stack.restart_coordinator()
    # The agent reconnects (backoff) and its heartbeat claims the job it kept running.
    await eventually(lambda: any(job.id in a.running and a.connected
                                 for a in stack.app.scheduler.known_agents()),
                     timeout=30, what="the agent to reconnect, still running the job")
    assert stack.app.jobs.jobs[job.id].state == S.JOB_STATE_RUNNING
    (stack.job_workspace(job.id) / "release").touch()

    # Followed from the start through the restarted coordinator: every line is there.
    events: list[S.JobEvent] = []
    await asyncio.wait_for(events_until_done(stack, job.id, events), 60)
    lines = [e.log.text for e in events if e.HasField("log")]
    done = await _job(stack, job.id)
    assert (done.state, done.message) == (S.JOB_STATE_COMPLETED, ""), lines
    assert stack.agent.poll() is None and stack.agent.pid == agent_pid  # never restarted
    script = [t for t in lines if not t.startswith("c3: ")]
    ticks = [t for t in script if t.startswith("tick ")]
    # Every line exactly once and in order, including those written while disconnected.
    assert script == ["before", *ticks, "after"]
    assert ticks == [f"tick {i}" for i in range(1, len(ticks) + 1)]
    assert done.artifacts_path == f"/jobs/{job.id}"


async def test_upload_failure_after_exit_0_is_upload_error_and_not_retried(
    stack: Stack, tmp_path: Path
) -> None:
    job = await _submit(stack, tmp_path)

    async def stop_storage_then_release() -> None:
        await stack.stop_storage()  # the script has its workspace; its upload will fail
        (stack.job_workspace(job.id) / "release").touch()

    lines = await _run_until_done(stack, job.id, stop_storage_then_release)
    done = await _job(stack, job.id)
    assert (done.state, done.failure_reason, done.exit_code) == (
        S.JOB_STATE_FAILED, S.FAILURE_REASON_UPLOAD_ERROR, 0), (done.message, lines)
    assert "artifacts could not be uploaded" in done.message
    assert any(t.startswith("c3: artifact upload failed") for t in lines)
    assert "after" in lines  # the script itself ran to its end
    # Not retried: the agent is idle again and the job was picked up exactly once.
    await eventually(lambda: list(stack.app.scheduler.idle_agents()), timeout=30,
                     what="the agent to be idle again")
    assert sum(t.startswith("c3: picked up by") for t in lines) == 1
    assert (await _job(stack, job.id)).state == S.JOB_STATE_FAILED
    assert not done.artifacts_path
