"""Scheduling behaviour a user notices: logs without -f, messages, supersede, heartbeat
reconciliation, per-org limits and fairness, time limits the coordinator enforces."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from c3.grpcutil import bearer
from c3.v1 import common_pb2
from c3.v1 import coordinator_pb2 as pb
from tests.harness.coordinator import SimAgent
from tests.harness.waiting import eventually

pytestmark = pytest.mark.unit


S = common_pb2


async def run_to(agent: SimAgent, job_id: str, state: int, **fields: Any) -> None:
    await agent.report(job_id, state, **fields)


async def test_logs_without_follow_end_on_a_running_job(make_stack) -> None:  # type: ignore[no-untyped-def]
    st = await make_stack()
    agent = await st.sim_agent()
    job = await st.submit()
    await agent.assignment()
    await agent.report(job.id, S.JOB_STATE_RUNNING)
    await agent.log(job.id, "one", "two")
    await eventually(lambda: st.app.jobs.events.last_seq(job.id) >= 5, what="log events")
    stream = st.c.StreamJobEvents(pb.StreamJobEventsRequest(job_id=job.id), metadata=st.md)
    events = await asyncio.wait_for(_collect(stream), 5)  # returns although the job runs on
    assert [e.log.text for e in events if e.HasField("log")] == ["one", "two"]
    assert st.state(job.id) == S.JOB_STATE_RUNNING
    tail = st.c.StreamJobEvents(
        pb.StreamJobEventsRequest(job_id=job.id, after_seq=events[-1].seq), metadata=st.md
    )
    assert await asyncio.wait_for(_collect(tail), 5) == []
    await agent.close()


async def _collect(stream: Any) -> list[common_pb2.JobEvent]:
    return [e async for e in stream]


async def test_message_follows_the_state(make_stack) -> None:  # type: ignore[no-untyped-def]
    st = await make_stack(heartbeat_ms=1000)
    busy = await st.sim_agent()
    first = await st.submit()
    await busy.assignment()
    await busy.report(first.id, S.JOB_STATE_RUNNING, message="running on vm (cpu)")
    await eventually(lambda: st.state(first.id) == S.JOB_STATE_RUNNING)
    assert (await st.get(first.id)).message == "running on vm (cpu)"
    queued = await st.submit()
    assert (await st.get(queued.id)).message == (
        "waiting for a free agent (all matching agents are busy)"
    )
    # The only agent's stream drops: the pending job now says there is no capacity...
    await busy.drop()
    assert await busy.next() is None  # the old stream's end
    await eventually(lambda: st.app.jobs.jobs[queued.id].message.startswith("no capacity"))
    # ...and says "busy" again the moment the agent is back.
    await busy.connect(running=(first.id,))
    await eventually(lambda: st.app.jobs.jobs[queued.id].message.startswith("waiting for a free"))
    await busy.report(first.id, S.JOB_STATE_COMPLETED)
    await eventually(lambda: st.state(first.id) == S.JOB_STATE_COMPLETED)
    assert (await st.get(first.id)).message == ""
    assert (await busy.assignment()).job.id == queued.id
    assert (await st.get(queued.id)).message == ""
    await busy.close()


async def test_supersede_cancels_first_and_holds_for_the_same_agent(make_stack) -> None:  # type: ignore[no-untyped-def]
    st = await make_stack(heartbeat_ms=1000)
    mine = await st.sim_agent()
    old = await st.submit()
    await mine.assignment()
    await mine.report(old.id, S.JOB_STATE_RUNNING)
    await eventually(lambda: st.state(old.id) == S.JOB_STATE_RUNNING)
    other = await st.sim_agent()  # idle and fitting: it must NOT get the superseding job
    new = await st.submit(supersedes_job_id=old.id, prefer_agent_id=mine.agent_id)
    cancel = await mine.next()
    assert cancel is not None and cancel.cancel.job_id == old.id
    assert (await st.get(new.id)).state == S.JOB_STATE_PENDING
    assert "to stop the job this one replaces" in (await st.get(new.id)).message
    await mine.report(old.id, S.JOB_STATE_CANCELED)
    assert (await mine.assignment()).job.id == new.id
    assert other.inbox.empty()
    got = await st.get(new.id)
    assert got.agent_id == mine.agent_id and got.startup.warm_pool_hit
    await mine.close()
    await other.close()


async def test_supersede_hold_is_bounded(make_stack) -> None:  # type: ignore[no-untyped-def]
    st = await make_stack(heartbeat_ms=2000, supersede_hold_s=0.3)
    stuck = await st.sim_agent()
    old = await st.submit()
    await stuck.assignment()
    await stuck.report(old.id, S.JOB_STATE_RUNNING)
    await eventually(lambda: st.state(old.id) == S.JOB_STATE_RUNNING)
    other = await st.sim_agent()
    new = await st.submit(supersedes_job_id=old.id, prefer_agent_id=stuck.agent_id)
    # The old agent never confirms the cancel: after the hold any fitting agent will do.
    assert (await other.assignment(timeout=5)).job.id == new.id
    await stuck.close()
    await other.close()


async def test_heartbeat_reconciliation(make_stack) -> None:  # type: ignore[no-untyped-def]
    st = await make_stack(heartbeat_ms=1000)
    agent = await st.sim_agent()
    job = await st.submit()
    await agent.assignment()
    await agent.report(job.id, S.JOB_STATE_RUNNING)
    await eventually(lambda: st.state(job.id) == S.JOB_STATE_RUNNING)
    # The agent comes back (e.g. it restarted) without the job: the job is lost.
    await agent.drop()
    assert await agent.next() is None  # the old stream's end
    await agent.connect(running=())
    await eventually(lambda: st.state(job.id) == S.JOB_STATE_FAILED, what="AGENT_LOST")
    got = await st.get(job.id)
    assert got.failure_reason == S.FAILURE_REASON_AGENT_LOST
    assert "no longer runs it" in got.message
    # An agent still running a job the coordinator considers over is told to stop it.
    await agent.heartbeat(running=(job.id,))
    message = await agent.next()
    assert message is not None and message.cancel.job_id == job.id
    await agent.close()


async def test_org_limits_and_fairness(make_stack) -> None:  # type: ignore[no-untyped-def]
    st = await make_stack(heartbeat_ms=2000, concurrency_limits=(("free", 1), ("pro", 2)))
    accounts = st.app.accounts
    org = await accounts.create_org("acme", "pro")
    _, key = await accounts.create_key(org.id, "ci")
    acme = bearer(key)
    agents = [await st.sim_agent() for _ in range(3)]
    burst = [await st.submit() for _ in range(4)]  # "local" org, plan free: one at a time
    theirs = [await st.submit(md=acme) for _ in range(2)]
    await eventually(lambda: all(st.state(j.id) == S.JOB_STATE_SCHEDULING for j in theirs))
    states = [st.state(j.id) for j in burst]
    assert states.count(S.JOB_STATE_SCHEDULING) == 1
    waiting = [j for j in burst if st.state(j.id) == S.JOB_STATE_PENDING]
    assert (await st.get(waiting[0].id)).message == (
        "concurrency limit reached (1 running on plan free)"
    )
    # A pro org's third job waits for its own limit even though nothing else is free.
    third = await st.submit(md=acme)
    assert (await st.get(third.id, md=acme)).message.startswith("concurrency limit reached")
    # When the free org's job finishes, its next job runs (it was under its limit again).
    first = next(j for j in burst if st.state(j.id) == S.JOB_STATE_SCHEDULING)
    holder = next(a for a in agents if st.app.jobs.jobs[first.id].agent_id == a.agent_id)
    await holder.report(first.id, S.JOB_STATE_RUNNING)
    await holder.report(first.id, S.JOB_STATE_COMPLETED)
    await eventually(lambda: st.state(waiting[0].id) == S.JOB_STATE_SCHEDULING)
    for a in agents:
        await a.close()


async def test_pending_queue_is_served_round_robin_across_orgs(make_stack) -> None:  # type: ignore[no-untyped-def]
    st = await make_stack(heartbeat_ms=2000)
    org = await st.app.accounts.create_org("acme", "team")
    _, key = await st.app.accounts.create_key(org.id, "ci")
    agent = await st.sim_agent()
    burst = [await st.submit() for _ in range(5)]
    late = await st.submit(md=bearer(key))
    order = []
    for _ in range(3):
        job = (await agent.assignment()).job
        order.append(job.id)
        await agent.report(job.id, S.JOB_STATE_RUNNING)
        await agent.report(job.id, S.JOB_STATE_COMPLETED)
    # The other org's single job runs second, not after the whole burst.
    assert order == [burst[0].id, late.id, burst[1].id]
    await agent.close()


async def test_coordinator_enforces_time_limit_when_agent_does_not(make_stack) -> None:  # type: ignore[no-untyped-def]
    st = await make_stack(heartbeat_ms=2000, time_limit_grace_s=0.3)
    agent = await st.sim_agent()
    job = await st.submit(spec={"time_limit_seconds": 1})
    await agent.assignment()
    await agent.report(job.id, S.JOB_STATE_RUNNING)
    loop = asyncio.get_running_loop()
    started = loop.time()
    message = await agent.next(timeout=5)  # the coordinator's cancel, the agent ignores it
    assert message is not None and message.cancel.job_id == job.id
    assert message.cancel.state == S.JOB_STATE_TIMED_OUT
    assert loop.time() - started >= 1.0
    await eventually(lambda: st.state(job.id) == S.JOB_STATE_TIMED_OUT, timeout=5)
    got = await st.get(job.id)
    assert "did not stop the job" in got.message
    # The agent's slot is free again.
    nxt = await st.submit()
    assert (await agent.assignment()).job.id == nxt.id
    await agent.close()
