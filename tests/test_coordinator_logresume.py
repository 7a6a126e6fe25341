"""Resumable log delivery: after a restart the coordinator names the first log line it
does not hold durably, and a resend from before that point never makes a second event."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from c3.grpcutil import bearer, channel
from c3.v1 import common_pb2 as S
from c3.v1 import coordinator_pb2 as pb
from tests.harness.coordinator import SimAgent, client, config_for_test, spec, start_coordinator

pytestmark = pytest.mark.unit


async def stored_events(address: str, api_key: str, job_id: str) -> list[S.JobEvent]:
    async with channel(address) as ch:
        stream = client(ch).StreamJobEvents(
            pb.StreamJobEventsRequest(job_id=job_id, follow=False), metadata=bearer(api_key)
        )
        return [e async for e in stream]


async def test_resume_names_next_index_and_resend_makes_no_duplicates(tmp_path: Path) -> None:
    config = config_for_test(tmp_path)
    app, boot = await start_coordinator(config)
    agent = SimAgent(app.address, boot.agent_secret)
    await agent.register()
    await agent.connect()
    assert dict((await agent.resume()).next_index) == {}  # nothing runs here yet
    async with channel(app.address) as ch:
        job = (
            await client(ch).SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=bearer(boot.api_key))
        ).job
    await agent.assignment()
    await agent.report(job.id, S.JOB_STATE_RUNNING)
    await agent.log(job.id, *[f"tick {i}" for i in range(1, 6)], first_index=1)
    before = await stored_events(app.address, boot.api_key, job.id)  # waits for the commit
    assert [e.log.index for e in before if e.HasField("log")] == [1, 2, 3, 4, 5]

    # The stream breaks and comes back: the live coordinator asks from line 6.
    await agent.drop()
    await agent.connect(running=(job.id,))
    assert dict((await agent.resume()).next_index) == {job.id: 6}

    # Restart on the same data: the resume point comes from what was persisted.
    await agent.close()
    await app.stop()
    app, _ = await start_coordinator(replace(config, listen="127.0.0.1:0"))
    await agent.retarget(app.address)
    await agent.register()
    await agent.connect(running=(job.id,))
    assert dict((await agent.resume()).next_index) == {job.id: 6}

    # The agent resends from an older point (3..8): only 6..8 become events.
    await agent.log(job.id, *[f"tick {i}" for i in range(3, 9)], first_index=3)
    await agent.log(job.id, "tick 8", first_index=8)  # a repeat of a single line too
    await agent.report(job.id, S.JOB_STATE_COMPLETED)
    events = await stored_events(app.address, boot.api_key, job.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    logs = [e.log for e in events if e.HasField("log")]
    assert [line.text for line in logs] == [f"tick {i}" for i in range(1, 9)]
    assert [line.index for line in logs] == list(range(1, 9))
    assert events[-1].status.state == S.JOB_STATE_COMPLETED
    await agent.close()
    await app.stop()


async def test_lines_over_the_cap_count_and_unnumbered_lines_pass(tmp_path: Path) -> None:
    config = config_for_test(tmp_path, log_cap_bytes=12)
    app, boot = await start_coordinator(config)
    agent = SimAgent(app.address, boot.agent_secret)
    await agent.register()
    await agent.connect()
    await agent.resume()
    async with channel(app.address) as ch:
        job = (
            await client(ch).SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=bearer(boot.api_key))
        ).job
    await agent.assignment()
    await agent.report(job.id, S.JOB_STATE_RUNNING)
    # An old agent's lines (index 0) are kept as before, repeats included.
    await agent.log(job.id, "old", "old")
    # Line 2 is over the cap: dropped, yet it consumed its number.
    await agent.log(job.id, "new 1", "too long for the cap", first_index=1)
    await stored_events(app.address, boot.api_key, job.id)  # committed
    await agent.close()
    await app.stop()

    app, _ = await start_coordinator(replace(config, listen="127.0.0.1:0"))
    await agent.retarget(app.address)
    await agent.register()
    await agent.connect(running=(job.id,))
    assert dict((await agent.resume()).next_index) == {job.id: 3}
    await agent.log(job.id, "new 1", "too long for the cap", first_index=1)  # resent
    await agent.report(job.id, S.JOB_STATE_FAILED, exit_code=1,
                       failure_reason=S.FAILURE_REASON_EXIT_CODE)  # fmt: skip
    events = await stored_events(app.address, boot.api_key, job.id)
    assert [e.log.text for e in events if e.HasField("log")] == ["old", "old", "new 1"]
    # Counted once, not again for the resend.
    assert [e.truncated_bytes for e in events if e.HasField("truncated_bytes")] == [
        len("too long for the cap")
    ]
    await agent.close()
    await app.stop()
