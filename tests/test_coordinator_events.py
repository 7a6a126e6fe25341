"""Resumable per-job event streams: no gap, no duplicate, across disconnects and restarts."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from c3.grpcutil import bearer, channel
from c3.v1 import common_pb2 as S
from c3.v1 import coordinator_pb2 as pb
from tests.harness.coordinator import SimAgent, client, config_for_test, spec, start_coordinator
from tests.harness.waiting import eventually

pytestmark = pytest.mark.unit


async def read_n(stream, n: int) -> list[S.JobEvent]:  # type: ignore[no-untyped-def]
    out: list[S.JobEvent] = []

    async def take() -> None:
        async for event in stream:
            out.append(event)
            if len(out) == n:
                return

    await asyncio.wait_for(take(), 10)
    return out


async def test_resume_after_disconnect_and_restart(tmp_path: Path) -> None:
    config = config_for_test(tmp_path)
    app, boot = await start_coordinator(config)
    md = bearer(boot.api_key)
    agent = SimAgent(app.address, boot.agent_secret)
    await agent.register()
    await agent.connect()
    ch = channel(app.address)
    job = (await client(ch).SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=md)).job
    await agent.assignment()
    await agent.report(job.id, S.JOB_STATE_RUNNING)
    await agent.log(job.id, *[f"line {i}" for i in range(5)])

    # A live subscriber reads part of the stream, then its connection drops mid-stream.
    first = client(ch).StreamJobEvents(
        pb.StreamJobEventsRequest(job_id=job.id, follow=True), metadata=md
    )
    seen = await read_n(first, 6)
    first.cancel()
    await agent.log(job.id, *[f"line {i}" for i in range(5, 10)])

    # It resumes from its last seq and gets the rest exactly once, live lines included.
    second = client(ch).StreamJobEvents(
        pb.StreamJobEventsRequest(job_id=job.id, after_seq=seen[-1].seq, follow=True), metadata=md
    )
    seen += await read_n(second, 7)  # line 3 .. line 9
    second.cancel()
    last_before_restart = seen[-1].seq

    # The coordinator restarts on the same data dir; the agent reconnects and finishes.
    await ch.close()
    await agent.drop()
    await app.stop()
    app, boot2 = await start_coordinator(replace(config, listen="127.0.0.1:0"))
    assert boot2 == boot  # bootstrap file left alone on an existing database
    await agent.retarget(app.address)
    await agent.register()
    await agent.connect(running=(job.id,))
    ch = channel(app.address)
    third = client(ch).StreamJobEvents(
        pb.StreamJobEventsRequest(job_id=job.id, after_seq=last_before_restart, follow=True),
        metadata=md,
    )
    tail: list[S.JobEvent] = []

    async def follow() -> None:
        async for event in third:
            tail.append(event)

    follower = asyncio.create_task(follow())
    await agent.log(job.id, "after restart")
    await agent.report(job.id, S.JOB_STATE_COMPLETED)
    await asyncio.wait_for(follower, 10)
    seen += tail
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    texts = [e.log.text for e in seen if e.HasField("log")]
    assert texts == [f"line {i}" for i in range(10)] + ["after restart"]
    assert seen[-1].status.state == S.JOB_STATE_COMPLETED
    job_after = app.jobs.jobs[job.id]
    assert job_after.state == S.JOB_STATE_COMPLETED  # resumed, not lost
    await ch.close()
    await agent.close()
    await app.stop()


async def test_logs_capped_with_truncation_event(tmp_path: Path) -> None:
    app, boot = await start_coordinator(config_for_test(tmp_path, log_cap_bytes=20))
    md = bearer(boot.api_key)
    agent = SimAgent(app.address, boot.agent_secret)
    await agent.register()
    await agent.connect()
    async with channel(app.address) as ch:
        job = (await client(ch).SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=md)).job
        await agent.assignment()
        await agent.report(job.id, S.JOB_STATE_RUNNING)
        await agent.log(job.id, "0123456789", "abcdefghij", "dropped-1", "dropped-2")
        await agent.report(job.id, S.JOB_STATE_FAILED, exit_code=3,
                           failure_reason=S.FAILURE_REASON_EXIT_CODE)  # fmt: skip
        stream = client(ch).StreamJobEvents(pb.StreamJobEventsRequest(job_id=job.id), metadata=md)
        events = [e async for e in stream]
        assert [e.log.text for e in events if e.HasField("log")] == ["0123456789", "abcdefghij"]
        truncated = [e.truncated_bytes for e in events if e.HasField("truncated_bytes")]
        assert truncated == [len("dropped-1") + len("dropped-2")]
        final = events[-1].status
        assert final.state == S.JOB_STATE_FAILED and final.exit_code == 3
        assert final.failure_reason == S.FAILURE_REASON_EXIT_CODE
        await eventually(lambda: app.jobs.jobs[job.id].finished_at > 0)
    await agent.close()
    await app.stop()
