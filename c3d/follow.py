"""Following a job's events without gaps or duplicates, across dropped connections,
coordinator restarts and laptop sleeps: resume from the last sequence number seen."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from c3.errors import Cancelled, DeadlineExceeded, Unavailable
from c3.v1 import common_pb2
from c3d.coordclient import CoordinatorClient
from c3d.history import FINAL_STATES, History

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 5.0
# How long a follow keeps trying to reach the coordinator before giving up.
RECONNECT_BUDGET_S = 600.0


def reconnect_notice(job_id: str, text: str) -> common_pb2.JobEvent:
    """A client-side notice (seq 0: never stored, never a gap)."""
    return common_pb2.JobEvent(
        job_id=job_id, seq=0,
        log=common_pb2.LogLine(stream=common_pb2.LOG_STREAM_SYSTEM, text=text),
    )


async def follow_events(
    client: CoordinatorClient, history: History, job_id: str, *, live: bool = True,
    after_seq: int = 0,
) -> AsyncIterator[common_pb2.JobEvent]:
    """Every event of the job after `after_seq` exactly once: stored ones first, then from
    the coordinator (resuming after the last stored seq), until the job is final."""
    last = after_seq
    for event in await history.events(job_id, after_seq):
        last = event.seq
        yield event
    if await history.is_finished(job_id):
        return
    delay = RETRY_INITIAL_S
    lost_at: float | None = None
    while True:
        try:
            async for event in client.events(job_id, after_seq=last, follow=live):
                if event.seq <= last:
                    continue  # already delivered before a reconnect
                if lost_at is not None:
                    yield reconnect_notice(job_id, f"c3: reconnected after {time.monotonic() - lost_at:.1f}s")
                    lost_at = None
                    delay = RETRY_INITIAL_S
                await history.record([event])
                last = event.seq
                yield event
                if event.HasField("status") and event.status.state in FINAL_STATES:
                    return
            if not live:
                return  # a replay of what is stored ends there
            # The server ended a live stream before the job finished (it is shutting down).
            raise Unavailable("the coordinator closed the stream")
        except (Unavailable, DeadlineExceeded, Cancelled) as exc:
            if lost_at is None:
                lost_at = time.monotonic()
                yield reconnect_notice(job_id, f"c3: connection to the coordinator lost ({exc}); retrying")
            elif time.monotonic() - lost_at > RECONNECT_BUDGET_S:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
