"""Jobs: submit, read, cancel, and every state change (persisted, timestamped, an event)."""

from __future__ import annotations

import asyncio
import heapq
import logging
import operator
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from c3.errors import FailedPrecondition, NotFound
from c3.v1 import agent_pb2, common_pb2
from coordinator.convert import fill_startup
from coordinator.events import EventLog
from coordinator.lifecycle import (
    FINISHED,
    ON_AGENT,
    Reason,
    State,
    check_transition,
    parse_enum,
)
from coordinator.model import Job, Transition
from coordinator.repo import Repository
from coordinator.residency import ResidentJobs
from coordinator.secrets_util import new_id

if TYPE_CHECKING:
    from coordinator.scheduler import Scheduler

log = logging.getLogger(__name__)

# How listings order jobs; the database pages in the same order.
_LISTING_ORDER = operator.attrgetter("created_at", "id")
_NO_FLOOR = (float("-inf"), "")


class MountPins(Protocol):
    """Pins a job's dataset mounts in storage before the job exists (coordinator/holds.py)."""

    async def pin(
        self,
        org_id: str,
        entries: Sequence[tuple[str, common_pb2.JobSpec]],
        *,
        name_entries: bool = False,
    ) -> None:
        """Return once every mount of every (job id, spec) is pinned; raise (a C3Error,
        naming the entry with `name_entries`) to refuse the submit, leaving none pinned."""

    def unpin(self, org_id: str, job_id: str) -> None:
        """Drop what `pin` took for a submit that did not go through (in the background)."""


class JobService:
    def __init__(
        self, repo: Repository, events: EventLog, log_cap_bytes: int, keep_finished_s: float
    ) -> None:
        self._repo = repo
        self.events = events
        self._log_cap = log_cap_bytes
        self._keep_finished_s = keep_finished_s
        self._resident = ResidentJobs(keep_finished_s, lambda job: events.forget(job.id))
        # The jobs in memory: every unfinished one and the recently finished (residency.py).
        self.jobs = self._resident.by_id
        self._watchers: dict[str, set[asyncio.Queue[Job]]] = {}
        self.scheduler: Scheduler  # wired by the app (the two call each other)
        # Called after every transition (billing meters RUNNING -> finished).
        self.on_transition: list[Callable[[Job, State], None]] = []
        self.pins: MountPins | None = None  # wired by JobHolds; None: mounts are not pinned

    async def load(self) -> list[Job]:
        now = time.time()
        since = now - self._keep_finished_s
        loaded = await self._repo.load_jobs(since)
        await self.events.load([job.id for job in loaded])
        for job in loaded:
            self._resident.admit(job)
        for job in sorted((j for j in loaded if j.state in FINISHED), key=lambda j: j.finished_at):
            self._resident.finished(job, ago_s=max(0.0, now - job.finished_at))
        return loaded

    def close(self) -> None:
        self._resident.close()

    # -- state changes -----------------------------------------------------------------
    def transition(
        self,
        job: Job,
        target: State,
        note: str = "",
        *,
        reason: Reason | None = None,
        exit_code: int | None = None,
        message: str | None = None,
    ) -> asyncio.Future[None]:
        """Apply one legal state change; returns a future resolved once it is durable."""
        check_transition(job.id, job.state, target)
        now = time.time()
        previous, job.state = job.state, target
        if reason is not None:
            job.failure_reason = reason
        if exit_code is not None:
            job.exit_code = exit_code
        # A message describes the current state only: every transition replaces it.
        job.message = message or ""
        if target == State.RUNNING:
            job.started_at = now
        if target in FINISHED and target != State.SYNCED:
            job.finished_at = now
            if job.truncated_bytes:
                self.events.append(
                    common_pb2.JobEvent(job_id=job.id, truncated_bytes=job.truncated_bytes)
                )
        t = Transition(target, now, note)
        job.transitions.append(t)
        self._repo.add_transition(job.id, len(job.transitions) - 1, t)
        saved = self.save(job)
        if target in FINISHED:
            self._resident.finished(job, saved)
        for hook in self.on_transition:
            hook(job, target)
        status = common_pb2.StatusChange(
            state=int(target),  # type: ignore[arg-type]
            failure_reason=int(job.failure_reason),  # type: ignore[arg-type]
            exit_code=job.exit_code,
            message=job.message or note,
        )
        if target == State.RUNNING:  # followers show where the startup time went
            fill_startup(status.startup, job.startup)
        durable = self.events.append(common_pb2.JobEvent(job_id=job.id, status=status))
        self.scheduler.job_state_changed(job, previous, target)
        return durable

    def save(self, job: Job) -> asyncio.Future[None]:
        for queue in self._watchers.get(job.org_id, ()):
            queue.put_nowait(job)
        return self._repo.put_job(job)

    # -- client operations -------------------------------------------------------------
    async def submit(
        self,
        org_id: str,
        spec: common_pb2.JobSpec,
        prefer_agent_id: str = "",
        supersedes_job_id: str = "",
    ) -> Job:
        superseded = await self.find(org_id, supersedes_job_id) if supersedes_job_id else None
        job_id = f"j-{new_id(5)}"
        hold_agent_id = ""
        if self.pins is not None:
            # Before the job exists, so no agent can be handed it and no `data rm` can
            # remove a version it mounts; a refusal leaves no job and the old one running.
            await self.pins.pin(org_id, [(job_id, spec)])
        try:
            if superseded is not None and superseded.state not in FINISHED:
                # Cancel first, so the agent is told to stop the old run before anything else.
                on_agent = superseded.state in ON_AGENT
                await self.cancel(org_id, [superseded.id], reason=f"superseded by {job_id}")
                if on_agent and prefer_agent_id and superseded.agent_id == prefer_agent_id:
                    hold_agent_id = prefer_agent_id
        except BaseException:
            if self.pins is not None:
                self.pins.unpin(org_id, job_id)
            raise
        job, durable = self._create(org_id, job_id, spec, prefer_agent_id, hold_agent_id)
        await durable
        return job

    async def submit_many(
        self, org_id: str, requests: Sequence[tuple[common_pb2.JobSpec, str]]
    ) -> list[Job]:
        """New jobs from (spec, prefer_agent_id) pairs, in order. Every mount of every job
        is held before any job exists, so a refusal (naming its entry) creates none."""
        job_ids = [f"j-{new_id(5)}" for _ in requests]
        if self.pins is not None:
            entries = [(job_id, spec) for job_id, (spec, _) in zip(job_ids, requests, strict=True)]
            await self.pins.pin(org_id, entries, name_entries=True)
        created = [
            self._create(org_id, job_id, spec, prefer_agent_id, "")
            for job_id, (spec, prefer_agent_id) in zip(job_ids, requests, strict=True)
        ]
        for _, durable in created:
            await durable  # every job shares the batch's commit: one wait in practice
        return [job for job, _ in created]

    def _create(
        self,
        org_id: str,
        job_id: str,
        spec: common_pb2.JobSpec,
        prefer_agent_id: str,
        hold_agent_id: str,
    ) -> tuple[Job, asyncio.Future[None]]:
        now = time.time()
        job = Job(
            id=job_id,
            org_id=org_id,
            spec=spec,
            state=State.PENDING,
            created_at=now,
            prefer_agent_id=prefer_agent_id,
            hold_agent_id=hold_agent_id,
        )
        self._resident.admit(job)
        job.transitions.append(Transition(State.PENDING, now, "submitted"))
        self._repo.add_transition(job.id, 0, job.transitions[0])
        self.save(job)
        for hook in self.on_transition:
            hook(job, State.PENDING)
        durable = self.events.append(
            common_pb2.JobEvent(
                job_id=job.id,
                status=common_pb2.StatusChange(state=common_pb2.JOB_STATE_PENDING),
            )
        )
        self.scheduler.enqueue(job)
        return job, durable

    async def find(self, org_id: str, job_id: str) -> Job:
        """The org's job, from memory or read back from the database (then kept in memory
        for a while, as if it had just finished)."""
        job = self.jobs.get(job_id)
        if job is None:
            stored = await self._repo.load_job(job_id)
            if stored is not None and stored.org_id == org_id:
                last_seq = (await self._repo.last_seqs([job_id])).get(job_id, 0)
                job = self.jobs.get(job_id)  # read back by another call meanwhile?
                if job is None:
                    job = stored
                    self._resident.admit(job)
                    self.events.restore(job.id, last_seq)
                    if job.state in FINISHED:  # (an unfinished job is never stored only)
                        self._resident.finished(job)
        # Another org's job answers exactly like a missing one: ids reveal nothing.
        if job is None or job.org_id != org_id:
            raise NotFound(f"no job {job_id!r} (c3ctl squeue lists your jobs)")
        return job

    async def list_jobs(
        self, org_id: str, states: Iterable[int] = (), project: str = "", limit: int = 0
    ) -> list[Job]:
        """The org's jobs, oldest first: the newest `limit` of them (0: all)."""
        wanted = {parse_enum(State, s, "states") for s in states}
        # Unfinished jobs are all in memory; finished ones may be in the database only.
        stored_states = (wanted & FINISHED) if wanted else FINISHED

        # A snapshot of memory: a job that leaves it during the database read is skipped
        # there and taken from here; one read back meanwhile comes from the database.
        resident = list(self._resident.of_org(org_id))
        matching = [
            j
            for j in reversed(resident)  # newest first (about creation order): the heap rarely changes
            if (not wanted or j.state in wanted) and (not project or j.spec.project == project)
        ]
        found = heapq.nlargest(limit, matching, key=_LISTING_ORDER) if limit else matching
        # Anything older than the limit-th newest job in memory cannot make the list.
        floor = _LISTING_ORDER(found[-1]) if limit and len(found) == limit else _NO_FLOOR
        found += await self._repo.jobs_newest_first(
            org_id, stored_states, project, limit, skip={j.id for j in resident}, floor=floor
        )
        found.sort(key=_LISTING_ORDER)
        return found[-limit:] if limit else found

    async def cancel(self, org_id: str, job_ids: list[str], reason: str = "") -> list[Job]:
        jobs = [await self.find(org_id, job_id) for job_id in job_ids]
        for job in jobs:
            if job.state in FINISHED:
                raise FailedPrecondition(f"job {job.id} is already {job.state.name}")
        last: asyncio.Future[None] | None = None
        for job in jobs:
            note = reason or "canceled by user"
            if job.state == State.PENDING:
                self.scheduler.forget(job)
                last = self.transition(job, State.CANCELED, note, message=note)
            elif job.state in ON_AGENT and not job.cancel_requested:
                job.cancel_requested = True
                job.message = "cancel requested; waiting for the agent to stop the script"
                last = self.save(job)
                self.scheduler.push_cancel(job, State.CANCELED, note)
        if last is not None:
            await last
        return jobs

    async def mark_synced(self, org_id: str, job_id: str) -> Job:
        job = await self.find(org_id, job_id)
        if job.state == State.SYNCED:
            return job
        await self.transition(job, State.SYNCED, "artifacts pulled")
        return job

    # -- agent reports -----------------------------------------------------------------
    def apply_update(self, agent_id: str, update: agent_pb2.JobStatusUpdate) -> Job:
        job = self.jobs.get(update.job_id)
        if job is None or job.agent_id != agent_id or job.state not in ON_AGENT | FINISHED:
            raise FailedPrecondition(
                f"agent {agent_id} reported on job {update.job_id!r}, which is not assigned to it"
            )
        target = parse_enum(State, update.state, "status.state")
        startup, reported = job.startup, update.startup
        if target == State.SCHEDULING:  # the agent's pickup acknowledgement
            if job.state == State.SCHEDULING and job.assigned_at:
                startup.agent_pickup_ms = (time.time() - job.assigned_at) * 1000
                self.save(job)
            return job
        if target == job.state:
            return job  # a repeat after a reconnect: already applied
        for name in ("workspace_fetch_ms", "environment_ms", "script_start_ms"):
            if getattr(reported, name):
                setattr(startup, name, getattr(reported, name))
        if update.artifacts_path:
            job.artifacts_path = update.artifacts_path
            job.artifacts_version = update.artifacts_version
        if target == State.CANCELED and job.failure_reason == Reason.BALANCE_EXHAUSTED:
            # Stopped by the coordinator for want of credit: a failure, not a user cancel.
            target = State.FAILED
            update.failure_reason = int(Reason.BALANCE_EXHAUSTED)  # type: ignore[assignment]
        reason = (
            parse_enum(Reason, update.failure_reason, "status.failure_reason")
            if target == State.FAILED
            else None
        )
        self.transition(
            job,
            target,
            update.message or "reported by agent",
            reason=reason,
            exit_code=update.exit_code,
            message=update.message,
        )
        return job

    def append_logs(self, agent_id: str, batch: agent_pb2.LogBatch) -> None:
        job = self.jobs.get(batch.job_id)
        if job is None or job.agent_id != agent_id:
            raise FailedPrecondition(
                f"agent {agent_id} sent logs for job {batch.job_id!r}, which is not assigned to it"
            )
        if job.state in FINISHED:
            return
        indexed = False
        for line in batch.lines:
            if line.index:
                if line.index <= job.log_index:
                    continue  # a resend of a line already held: never a second event
                job.log_index, indexed = line.index, True
            size = len(line.text.encode())
            if job.log_bytes + size > self._log_cap:
                job.truncated_bytes += size
                continue
            job.log_bytes += size
            event = common_pb2.JobEvent(job_id=job.id)
            event.log.CopyFrom(line)
            if line.HasField("at"):
                event.at.CopyFrom(line.at)
            self.events.append(event)
        if indexed:
            # The row is serialized when its commit starts, so the persisted log_index
            # never counts a line whose event is not in that commit or an earlier one.
            self._repo.put_job(job)

    async def resume_logs(self, job_ids: Iterable[str]) -> agent_pb2.ResumeLogs:
        """For each job on an agent: the index of the first log line not held durably."""
        points = {
            job_id: job.log_index + 1
            for job_id in job_ids
            if (job := self.jobs.get(job_id)) is not None and job.state in ON_AGENT
        }
        await self._repo.db.barrier()  # what the points count is committed now
        return agent_pb2.ResumeLogs(next_index=points)

    def is_finished(self, job: Job) -> bool:
        return job.state in FINISHED

    # -- squeue --follow ---------------------------------------------------------------
    def watch(self, org_id: str) -> asyncio.Queue[Job]:
        queue: asyncio.Queue[Job] = asyncio.Queue()
        self._watchers.setdefault(org_id, set()).add(queue)
        return queue

    def unwatch(self, org_id: str, queue: asyncio.Queue[Job]) -> None:
        self._watchers.get(org_id, set()).discard(queue)
