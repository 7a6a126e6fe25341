"""Per-job event log: gap-free sequence numbers, persisted, with live subscriptions.

Sequence numbers are allocated synchronously (so the order of appends is the order of
seqs), written through the group-commit writer, and a job's subscribers are woken only
once an event is durable. A subscriber reads from the database what it has not seen and
then waits on an asyncio.Event, so nothing is polled and nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from c3.v1 import common_pb2
from coordinator.repository import Repository


def timestamp(at: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(at * 1e9))
    return ts


class EventLog:
    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._allocated: dict[str, int] = {}
        self._durable: dict[str, int] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        # Events appended per commit future, marked durable together when it resolves.
        self._unconfirmed: dict[asyncio.Future[None], list[tuple[str, int]]] = {}

    async def load(self, job_ids: Sequence[str]) -> None:
        """The seqs of the jobs kept in memory (see JobService.load)."""
        seqs = await self._repo.last_seqs(job_ids)
        self._allocated = dict(seqs)
        self._durable = dict(seqs)

    def restore(self, job_id: str, last_seq: int) -> None:
        """A job read back from the database: its next event follows `last_seq`."""
        self._allocated.setdefault(job_id, last_seq)
        self._durable.setdefault(job_id, last_seq)

    def forget(self, job_id: str) -> None:
        """The job left memory (finished long ago): its events are in the database."""
        self._allocated.pop(job_id, None)
        self._durable.pop(job_id, None)

    def last_seq(self, job_id: str) -> int:
        return self._allocated.get(job_id, 0)

    def append(self, event: common_pb2.JobEvent) -> asyncio.Future[None]:
        """Give `event` the job's next seq and persist it; subscribers see it once durable."""
        job_id = event.job_id
        seq = self._allocated.get(job_id, 0) + 1
        self._allocated[job_id] = seq
        event.seq = seq
        if not event.HasField("at"):
            event.at.FromNanoseconds(time.time_ns())
        fut = self._repo.add_event(event)
        waiting = self._unconfirmed.get(fut)
        if waiting is None:
            waiting = self._unconfirmed[fut] = []
            fut.add_done_callback(self._on_durable)
        waiting.append((job_id, seq))
        return fut

    def _on_durable(self, fut: asyncio.Future[None]) -> None:
        appended = self._unconfirmed.pop(fut, [])
        if fut.cancelled() or fut.exception() is not None:
            return
        durable, wakeups = self._durable, self._wakeups
        for job_id, seq in appended:
            if seq > durable.get(job_id, 0):
                durable[job_id] = seq
            wake = wakeups.pop(job_id, None)
            if wake is not None:
                wake.set()

    async def subscribe(
        self, job_id: str, after_seq: int, is_finished: Callable[[], bool], follow: bool = True
    ) -> AsyncIterator[common_pb2.JobEvent]:
        """Every event with seq > after_seq exactly once, then (when following) live ones
        until the job is finished. Without follow the stream ends with what is stored."""
        cursor = after_seq
        while True:
            if not follow or is_finished():
                # Everything to send is stored (a finished job gets nothing but a later
                # SYNCED, and may leave memory while a slow reader is still here): read it
                # from the database, including what was appended before this point.
                await self._repo.barrier()
                while batch := await self._repo.events_after(job_id, cursor):
                    for event in batch:
                        cursor = event.seq
                        yield event
                return
            wake = self._wakeups.get(job_id)
            if wake is None:
                wake = self._wakeups[job_id] = asyncio.Event()
            if self._durable.get(job_id, 0) > cursor:
                batch = await self._repo.events_after(job_id, cursor)
                for event in batch:
                    cursor = event.seq
                    yield event
                if batch:
                    continue
            await wake.wait()
