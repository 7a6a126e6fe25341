"""A run as its follower sees it: the job's events, one timing line just before its first
output line, why it still waits (while it does), then its final record with what the
footer needs (artifact count, currency)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from c3.errors import C3Error
from c3.storage.client import StorageClient
from c3.v1 import common_pb2, coordinator_pb2, daemon_pb2
from c3d.coordclient import CoordinatorClient
from c3d.follow import follow_events
from c3d.history import FINAL_STATES, History

log = logging.getLogger(__name__)

# A job still PENDING this long after it was submitted gets its waiting reason shown: a
# warm agent takes a job well before, and the agent of a superseded run stops it in about
# this time, so the quick cases stay quiet.
WAIT_GRACE_S = 0.5
OUTPUT_STREAMS = (common_pb2.LOG_STREAM_STDOUT, common_pb2.LOG_STREAM_STDERR)
SUCCESS = (common_pb2.JOB_STATE_COMPLETED, common_pb2.JOB_STATE_SYNCED)

StorageSource = Callable[[], Awaitable[StorageClient]]


@dataclass(frozen=True)
class RunClock:
    """What a run's timing line counts from: `since` ("save", "command") at `reference`,
    and when the job was submitted (both wall-clock seconds, on this machine)."""

    since: str
    reference: float
    submitted_at: float


def run_timing(
    clock: RunClock | None, startup: common_pb2.StartupBreakdown,
    first_output: common_pb2.JobEvent, created: common_pb2.JobEvent | None,
) -> daemon_pb2.RunTiming | None:
    """The timing line. Without a clock (following a job started elsewhere) it counts from
    the job's creation, by the coordinator's own timestamps; None when that is unknown."""
    s = startup
    timing = daemon_pb2.RunTiming(
        queue_ms=s.allocation_ms + s.agent_pickup_ms, fetch_ms=s.workspace_fetch_ms,
        environment_ms=s.environment_ms, start_ms=s.script_start_ms,
        warm_pool_hit=s.warm_pool_hit,
    )
    if clock is not None:
        timing.since = clock.since
        timing.first_output_ms = max(0.0, (time.time() - clock.reference) * 1000)
        timing.push_ms = max(0.0, (clock.submitted_at - clock.reference) * 1000)
        return timing
    if created is None:
        return None
    timing.since = "submit"
    timing.first_output_ms = max(
        0.0, (first_output.at.ToNanoseconds() - created.at.ToNanoseconds()) / 1e6
    )
    return timing


async def tail_events(
    client: CoordinatorClient, history: History, job_id: str, *, live: bool, tail: int
) -> AsyncIterator[common_pb2.JobEvent]:
    """From the `tail`-th last output line there is (0: from the start), then, when
    following, what comes."""
    if tail == 0:
        async for event in follow_events(client, history, job_id, live=live):
            yield event
        return
    stored = [e async for e in follow_events(client, history, job_id, live=False)]
    outputs = [i for i, e in enumerate(stored)
               if e.HasField("log") and e.log.stream in OUTPUT_STREAMS]
    start = outputs[-tail] if len(outputs) >= tail else 0
    for event in stored[start:]:
        yield event
    finished = any(e.HasField("status") and e.status.state in FINAL_STATES for e in stored)
    if live and not finished:
        last = max((e.seq for e in stored), default=0)
        async for event in follow_events(client, history, job_id, live=True, after_seq=last):
            yield event


async def _waiting_reasons(
    client: CoordinatorClient, job_id: str, put: Callable[[str], None]
) -> None:
    """Each new reason the job waits for, while it is PENDING (server-pushed)."""
    shown = ""
    try:
        async for job in client.watch_job(job_id):
            if job.state != common_pb2.JOB_STATE_PENDING:
                return
            if job.message and job.message != shown:
                shown = job.message
                put(shown)
    except C3Error as exc:  # only a hint is lost: the job's own stream goes on
        log.debug("waiting reasons of %s: %s", job_id, exc)


_currencies: dict[str, str] = {}


async def _currency(client: CoordinatorClient) -> str:
    """The coordinator's billing currency (asked once per coordinator)."""
    address = client.target.coordinator_address
    if address not in _currencies:
        reply = await client.stub.ListHardware(coordinator_pb2.ListHardwareRequest())
        _currencies[address] = next((p.currency for p in reply.profiles if p.currency), "")
    return _currencies[address]


async def run_summary(
    client: CoordinatorClient, storage: StorageSource, job: common_pb2.Job
) -> daemon_pb2.RunSummary:
    summary = daemon_pb2.RunSummary()
    with contextlib.suppress(C3Error):
        summary.currency = await _currency(client)
    if job.state not in SUCCESS:
        summary.artifact_files = 0  # only a completed job's artifacts can be pulled
    elif job.artifacts_path:
        ref = job.artifacts_path + (f"@v{job.artifacts_version}" if job.artifacts_version else "")
        try:
            summary.artifact_files = (await (await storage()).resolve(ref)).files
        except C3Error as exc:  # left unset: the footer then says how to pull anyway
            log.debug("artifacts of %s: %s", job.id, exc)
    return summary


async def follow_run(
    client: CoordinatorClient,
    storage: StorageSource,
    history: History,
    job_id: str,
    *,
    timing: RunClock | None = None,
    live: bool = True,
    tail: int = 0,
) -> AsyncIterator[daemon_pb2.DeployEvent]:
    """The job's events (as follow_events) with `timing` before the first output line and
    `waiting` while it waits, then `finished` with its summary once it is final."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in tail_events(client, history, job_id, live=live, tail=tail):
                queue.put_nowait(("event", event))
            queue.put_nowait(("end", None))
        except Exception as exc:  # raised to the follower below
            queue.put_nowait(("error", exc))

    waiter: asyncio.Task[None] | None = None

    def start_waiting() -> None:
        nonlocal waiter
        waiter = asyncio.create_task(
            _waiting_reasons(client, job_id, lambda why: queue.put_nowait(("waiting", why)))
        )

    events = asyncio.create_task(pump())
    grace: asyncio.TimerHandle | None = None
    state = common_pb2.JOB_STATE_UNSPECIFIED
    startup = common_pb2.StartupBreakdown()
    created: common_pb2.JobEvent | None = None
    timed = tail > 0  # a tail does not start at the first output line
    final = False
    try:
        while True:
            kind, item = await queue.get()
            if kind == "end":
                break
            if kind == "error":
                assert isinstance(item, BaseException)
                raise item
            if kind == "waiting":
                if state == common_pb2.JOB_STATE_PENDING:
                    assert isinstance(item, str)
                    yield daemon_pb2.DeployEvent(waiting=item)
                continue
            assert isinstance(item, common_pb2.JobEvent)
            event = item
            if event.HasField("status"):
                state = event.status.state
                final = state in FINAL_STATES
                if state == common_pb2.JOB_STATE_PENDING:
                    created = created or event
                    if live and grace is None:
                        grace = loop.call_later(WAIT_GRACE_S, start_waiting)
                else:
                    if grace is not None:
                        grace.cancel()
                    if waiter is not None:
                        waiter.cancel()
                if state == common_pb2.JOB_STATE_RUNNING:
                    startup = event.status.startup
            elif not timed and event.HasField("log") and event.log.stream in OUTPUT_STREAMS:
                timed = True
                line = run_timing(timing, startup, event, created)
                if line is not None:
                    yield daemon_pb2.DeployEvent(timing=line)
            yield daemon_pb2.DeployEvent(job_event=event)
    finally:
        events.cancel()
        if grace is not None:
            grace.cancel()
        if waiter is not None:
            waiter.cancel()
    if not final:
        return
    try:
        job = (await client.stub.GetJob(coordinator_pb2.GetJobRequest(job_id=job_id))).job
    except C3Error as exc:  # offline: the events were all there is
        log.debug("final record of %s: %s", job_id, exc)
        return
    if job.state in FINAL_STATES:
        yield daemon_pb2.DeployEvent(finished=job, summary=await run_summary(client, storage, job))
