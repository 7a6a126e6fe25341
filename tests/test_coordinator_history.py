"""Job history beyond memory: finished jobs leave the coordinator's memory after
`keep_finished_s` and every read still answers the same from the database (GetJob,
ListJobs with its filters and limit, events, MarkSynced, cancel), a restart loads only
the live jobs, and WatchJobs starts with the newest `limit` jobs only."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from c3.grpcutil import bearer
from c3.v1 import common_pb2
from c3.v1 import coordinator_pb2 as pb
from coordinator.lifecycle import State
from coordinator.model import Job
from coordinator.residency import ResidentJobs
from tests.harness.coordinator import SimAgent, Stack, spec
from tests.harness.waiting import eventually

pytestmark = pytest.mark.unit


S = common_pb2


async def run_job(
    st: Stack, agent: SimAgent, final: int, lines: int = 2, width: int = 0, **kw: Any
) -> str:
    job = await st.submit(spec=kw)
    assert (await agent.assignment()).job.id == job.id
    await agent.report(job.id, S.JOB_STATE_RUNNING)
    await agent.log(job.id, *[f"{job.id} line {i} ".ljust(width, "x") for i in range(lines)])
    reason = {"failure_reason": S.FAILURE_REASON_EXIT_CODE} if final == S.JOB_STATE_FAILED else {}
    await agent.report(job.id, final, exit_code=1 if reason else 0, **reason)
    await eventually(lambda: st.app.jobs.jobs[job.id].state == final, what="finished")
    return job.id


async def test_finished_jobs_leave_memory_and_every_read_still_answers(make_stack) -> None:  # type: ignore[no-untyped-def]
    st = await make_stack(keep_finished_s=0.3)
    agent = await st.sim_agent()
    done = await run_job(st, agent, S.JOB_STATE_COMPLETED)
    other = await run_job(st, agent, S.JOB_STATE_COMPLETED, project="other")
    failed = await run_job(st, agent, S.JOB_STATE_FAILED)
    live = (await st.submit()).id
    assert (await agent.assignment()).job.id == live
    await agent.report(live, S.JOB_STATE_RUNNING)
    await eventually(lambda: st.app.jobs.jobs[live].state == S.JOB_STATE_RUNNING)

    finished = [done, other, failed]
    before = {job_id: await st.get(job_id) for job_id in finished}
    events_before = await st.events(done)
    queries: list[dict[str, Any]] = [
        {}, {"limit": 2}, {"states": [S.JOB_STATE_COMPLETED]}, {"project": "other"},
        {"states": [S.JOB_STATE_RUNNING]}, {"states": [S.JOB_STATE_FAILED], "limit": 1},
    ]  # fmt: skip
    lists_before = [await st.ids(**q) for q in queries]
    assert lists_before[0] == [done, other, failed, live]
    assert lists_before[1] == [failed, live]

    await eventually(lambda: not any(st.resident(j) for j in finished), what="eviction")
    assert st.resident(live)  # unfinished jobs never leave
    assert st.app.jobs.events.last_seq(done) == 0  # its seq bookkeeping went too

    # Every read answers exactly as before, now from the database.
    assert [await st.ids(**q) for q in queries] == lists_before
    assert {job_id: await st.get(job_id) for job_id in finished} == before
    assert await st.events(done) == events_before

    # Reading one back keeps it for a while and gives it its seqs again: SYNCED follows on.
    synced = (await st.c.MarkSynced(pb.MarkSyncedRequest(job_id=done), metadata=st.md)).job
    assert synced.state == S.JOB_STATE_SYNCED
    after = await st.events(done)
    assert after[:-1] == events_before
    assert after[-1].seq == events_before[-1].seq + 1
    assert after[-1].status.state == S.JOB_STATE_SYNCED

    # Cancelling a job that left memory is refused as for any finished job.
    await eventually(lambda: not st.resident(other), what="eviction again")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await st.c.CancelJob(pb.CancelJobRequest(job_ids=[other]), metadata=st.md)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already COMPLETED" in (refused.value.details() or "")

    # Another org cannot read it back either: the same answer as for a missing id.
    org = await st.app.accounts.create_org("elsewhere", "free")
    _, key = await st.app.accounts.create_key(org.id, "theirs")
    await eventually(lambda: not st.resident(failed), what="eviction")
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await st.get(failed, md=bearer(key))
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    assert not st.resident(failed)  # and it did not pull the job into memory
    await agent.close()


async def test_a_slow_reader_gets_every_event_while_the_job_leaves_memory(make_stack) -> None:  # type: ignore[no-untyped-def]
    st = await make_stack(keep_finished_s=0.3)
    agent = await st.sim_agent()
    # 5 MB of log: more than the stream's flow-control window, so the server is still
    # sending when the job leaves memory.
    job_id = await run_job(st, agent, S.JOB_STATE_COMPLETED, lines=2500, width=2000)
    stream = st.c.StreamJobEvents(
        pb.StreamJobEventsRequest(job_id=job_id, follow=True), metadata=st.md
    )
    seen = [await stream.read()]
    await eventually(lambda: not st.resident(job_id), what="eviction")
    while (event := await stream.read()) is not aio.EOF:
        seen.append(event)
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert sum(1 for e in seen if e.HasField("log")) == 2500
    assert seen[-1].status.state == S.JOB_STATE_COMPLETED
    await agent.close()


async def test_many_stored_jobs_list_in_pages_with_filters(make_stack) -> None:  # type: ignore[no-untyped-def]
    st = await make_stack(keep_finished_s=0.2)
    entries = [pb.SubmitJobRequest(spec=spec(project=f"p{i % 2}")) for i in range(600)]
    jobs = []
    for start in range(0, len(entries), 300):
        reply = await st.c.SubmitJobs(
            pb.SubmitJobsRequest(jobs=entries[start : start + 300]), metadata=st.md
        )
        jobs += [j.id for j in reply.jobs]
    queries: list[dict[str, Any]] = [
        {}, {"limit": 10}, {"project": "p1"}, {"project": "p0", "limit": 300},
        {"states": [S.JOB_STATE_CANCELED], "project": "p1", "limit": 7},
    ]  # fmt: skip
    await st.c.CancelJob(pb.CancelJobRequest(job_ids=jobs[:500]), metadata=st.md)
    lists_before = [await st.ids(**q) for q in queries]
    assert sorted(lists_before[0]) == sorted(jobs)
    assert len(lists_before[2]) == 300 and len(lists_before[3]) == 300
    await eventually(lambda: not any(st.resident(j) for j in jobs[:500]), what="eviction")
    assert [await st.ids(**q) for q in queries] == lists_before


async def test_restart_loads_live_and_recent_jobs_only(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    st = await make_stack(keep_finished_s=3600)
    agent = await st.sim_agent()
    old = await run_job(st, agent, S.JOB_STATE_COMPLETED)
    running = (await st.submit()).id
    assert (await agent.assignment()).job.id == running
    await agent.report(running, S.JOB_STATE_RUNNING)
    await eventually(lambda: st.app.jobs.jobs[running].state == S.JOB_STATE_RUNNING)
    before = await st.get(old)
    await agent.drop()
    await st.close()

    # Within the window the finished job is loaded; past it (here: a window of 0) it is not.
    recent = await make_stack(keep_finished_s=3600)
    assert recent.resident(old) and recent.resident(running)
    await recent.close()
    st = await make_stack(keep_finished_s=0)
    assert not st.resident(old) and st.resident(running)
    assert await st.get(old) == before
    assert await st.ids() == [old, running]
    await agent.retarget(st.app.address)
    await agent.register()
    await agent.connect(running=(running,))
    await agent.report(running, S.JOB_STATE_COMPLETED)
    await eventually(lambda: not st.resident(running) and not st.resident(old), what="eviction")
    assert (await st.get(running)).state == S.JOB_STATE_COMPLETED
    await agent.close()


async def test_watch_jobs_starts_with_the_newest_limit(make_stack) -> None:  # type: ignore[no-untyped-def]
    st = await make_stack(keep_finished_s=0.2)
    first = [(await st.submit()).id for _ in range(5)]
    await st.c.CancelJob(pb.CancelJobRequest(job_ids=first[:4]), metadata=st.md)
    await eventually(lambda: not any(st.resident(j) for j in first[:4]), what="eviction")
    watch = st.c.WatchJobs(pb.WatchJobsRequest(limit=2), metadata=st.md)
    initial = [await watch.read(), await watch.read()]
    assert [j.id for j in initial] == first[3:]
    assert initial[0].state == S.JOB_STATE_CANCELED and initial[1].state == S.JOB_STATE_PENDING
    pending = st.c.WatchJobs(
        pb.WatchJobsRequest(limit=10, states=[S.JOB_STATE_PENDING]), metadata=st.md
    )
    assert (await pending.read()).id == first[4]  # the only pending one, then changes
    newer = (await st.submit()).id
    assert (await watch.read()).id == newer  # next comes a change, not older history
    assert (await pending.read()).id == newer
    await st.c.CancelJob(pb.CancelJobRequest(job_ids=[newer]), metadata=st.md)
    # Changes of every job follow, whatever the state (a message change may come first).
    while (moved_on := await asyncio.wait_for(pending.read(), 10)).state == S.JOB_STATE_PENDING:
        assert moved_on.id == newer
    assert moved_on.id == newer and moved_on.state == S.JOB_STATE_CANCELED
    watch.cancel()
    pending.cancel()


def _job(job_id: str) -> Job:
    return Job(id=job_id, org_id="org", spec=spec(), state=State.COMPLETED, created_at=1.0)


async def test_a_job_leaves_memory_only_once_stored() -> None:
    loop = asyncio.get_running_loop()
    evicted: list[str] = []
    resident = ResidentJobs(0.0, lambda job: evicted.append(job.id))
    stored = _job("j-stored")
    resident.admit(stored)

    async def after_due_timers() -> None:
        # Timers fire in deadline order: once this one has, every earlier sweep has run.
        passed = asyncio.Event()
        loop.call_at(loop.time() + 0.01, passed.set)
        await passed.wait()

    saved: asyncio.Future[None] = loop.create_future()
    resident.finished(stored, saved)
    await after_due_timers()
    assert evicted == [] and "j-stored" in resident.by_id  # its row is not written yet
    saved.set_result(None)
    await after_due_timers()
    assert evicted == ["j-stored"] and "j-stored" not in resident.by_id
    assert list(resident.of_org("org")) == []
    resident.close()


async def test_a_job_that_leaves_memory_during_a_listing_is_listed_once(make_stack) -> None:  # type: ignore[no-untyped-def]
    st = await make_stack(keep_finished_s=0.2)
    jobs = [(await st.submit()).id for _ in range(3)]
    await st.c.CancelJob(pb.CancelJobRequest(job_ids=jobs[:2]), metadata=st.md)
    assert st.resident(jobs[0])  # finished just now: still in memory
    repo = st.app.jobs._repo
    read = repo.jobs_newest_first

    async def read_after_eviction(*args: Any, **kwargs: Any) -> list[Job]:
        await eventually(lambda: not st.resident(jobs[0]), what="eviction during the read")
        return await read(*args, **kwargs)

    repo.jobs_newest_first = read_after_eviction  # type: ignore[method-assign]
    assert await st.ids() == jobs
    assert await st.ids(limit=2) == jobs[1:]
