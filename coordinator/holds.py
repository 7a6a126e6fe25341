"""Storage holds for the datasets a job mounts: `c3ctl data rm` of a version a pending or
running job mounts is refused by storaged, and GC keeps its blobs.

storaged knows versions, not jobs (docs/storage-holds.md): the coordinator pins each
mount as holder "job:<id>" and releases the holder when the job reaches a final state.

Submit (`pin`, called by JobService.submit under the id the job will get, before the job
exists; JobService gets this object as its `pins`): the holds are awaited, with a short bounded retry, so they are in place before
SubmitJob returns and before any agent can be handed the job. A version storaged no
longer has refuses the submit with FailedPrecondition naming path and version; storaged
unreachable refuses it with Unavailable (no job runs on data that can vanish). Jobs
without mounts make no call.

Afterwards everything is fire-and-forget tasks with retry and backoff, logged and never
failing the job: release at a final state (recorded with the job's final state and kept
until storaged confirms it, so a restart redoes a release that was lost), re-taking holds
for unfinished jobs at startup, and renewing the TTL while the job lives, so a
coordinator that dies does not pin data forever. Every call goes over the coordinator's
one storage connection (coordinator/storage.py); job changes come from the job topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from c3.errors import (
    C3Error,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from c3.v1 import common_pb2
from coordinator.changes import JobChange, JobChanged, Topic
from coordinator.lifecycle import FINISHED
from coordinator.model import Job
from coordinator.repository import Repository

log = logging.getLogger(__name__)

HOLD_TTL_S = 3600
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# A submit waits on its holds: a few quick tries, each call bounded, then it is refused.
SUBMIT_RETRY_DELAYS_S = (0.1, 0.3, 0.6)
SUBMIT_CALL_TIMEOUT_S = 2.0
# Hold calls a submit keeps in flight on its one channel.
HOLD_CALLS_IN_FLIGHT = 32
# Errors that another try cannot fix.
_PERMANENT = (NotFound, InvalidArgument, PermissionDenied)


class HoldStore(Protocol):
    """storaged's holds (coordinator/storage.py's StorageLink)."""

    address: str

    async def hold(
        self,
        org_id: str,
        path: str,
        version: int,
        holder: str,
        ttl_s: int,
        timeout: float | None = None,
    ) -> None: ...

    async def release(self, org_id: str, holder: str) -> None: ...


class _HoldFailed(Exception):
    """One Hold call of a submit failed: which entry and mount, and storaged's answer."""

    def __init__(self, index: int, path: str, version: int, error: C3Error) -> None:
        super().__init__(str(error))
        self.index, self.path, self.version, self.error = index, path, version, error


def holder_of(job_id: str) -> str:
    return f"job:{job_id}"


def _spec_mounts(spec: common_pb2.JobSpec) -> list[tuple[str, int]]:
    return [(m.resolved_path, m.version) for m in spec.datasets if m.resolved_path and m.version]


def _mounts(job: Job) -> list[tuple[str, int]]:
    return _spec_mounts(job.spec)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


class JobHolds:
    def __init__(
        self,
        storage: HoldStore,
        repo: Repository,
        job_changes: Topic[JobChange],
        ttl_s: int = HOLD_TTL_S,
    ) -> None:
        self._storage = storage
        self._address = storage.address
        self._repo = repo
        self._ttl_s = ttl_s
        # Job ids whose holds are taken or being taken, and the job (None: pinned for a
        # submit, before the job exists).
        self._held: dict[str, Job | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._renew_timer: asyncio.TimerHandle | None = None
        job_changes.subscribe(self._on_change)

    async def load(self, resident: Iterable[Job]) -> None:
        """Reconcile with the jobs loaded at startup, redo the releases a restart
        interrupted, and start renewing."""
        for job in resident:
            if _mounts(job) and job.state not in FINISHED and job.id not in self._held:
                self._take(job)
        # Releases not done before the restart (storaged was down, or the process died).
        for job_id, org_id in await self._repo.pending_releases():
            self._release(job_id, org_id)
        self._schedule_renewal()

    def _on_change(self, change: JobChange) -> None:
        if not isinstance(change, JobChanged):
            return
        job = change.job
        if change.target in FINISHED:
            if job.id in self._held:
                del self._held[job.id]
                # Recorded in the commit that finishes the job: a restart redoes it until
                # storaged has confirmed it.
                self._repo.put_pending_release(job.id, job.org_id)
                self._release(job.id, job.org_id)
        elif job.id in self._held:
            self._held[job.id] = job  # pinned at submit: this is the job now
        elif _mounts(job):
            self._take(job)

    # -- submit: awaited ----------------------------------------------------------------------
    async def pin(
        self,
        org_id: str,
        entries: Sequence[tuple[str, common_pb2.JobSpec]],
        *,
        name_entries: bool = False,
    ) -> None:
        """Hold every mount of the jobs about to be these ids (job id, spec), over one
        channel with the calls in flight together (an array of 1,000 jobs is one batch);
        see the module docstring. A refusal leaves nothing pinned and, with `name_entries`,
        names its entry (`jobs[3]: …`)."""
        wanted = [
            (index, job_id, path, version)
            for index, (job_id, spec) in enumerate(entries)
            for path, version in _spec_mounts(spec)
        ]
        if not wanted:
            return
        job_ids = list(dict.fromkeys(job_id for _, job_id, _, _ in wanted))
        for job_id in job_ids:  # the PENDING transitions must not take them again
            self._held.setdefault(job_id, None)
        slots = asyncio.Semaphore(HOLD_CALLS_IN_FLIGHT)

        async def hold_all() -> None:
            async def hold(index: int, job_id: str, path: str, version: int) -> None:
                async with slots:
                    try:
                        await self._storage.hold(
                            org_id, path, version, holder_of(job_id), self._ttl_s,
                            timeout=SUBMIT_CALL_TIMEOUT_S,
                        )
                    except C3Error as exc:
                        raise _HoldFailed(index, path, version, exc) from None

            outcomes = await asyncio.gather(*(hold(*item) for item in wanted), return_exceptions=True)
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            held_back = [f for f in failed if isinstance(f, _HoldFailed)]
            if held_back:
                raise min(held_back, key=lambda f: f.index)  # the first entry refused
            if failed:
                raise failed[0]

        try:
            for delay in (*SUBMIT_RETRY_DELAYS_S, None):
                try:
                    await hold_all()
                    return
                except _HoldFailed as failed:
                    error: Exception = failed.error
                    at = f"jobs[{failed.index}]: " if name_entries else ""
                    if isinstance(error, NotFound):
                        raise FailedPrecondition(
                            f"{at}{failed.path} v{failed.version} no longer exists; deploy again"
                            " to mount the latest"
                        ) from None
                    if isinstance(error, InvalidArgument | PermissionDenied):
                        raise Unavailable(
                            f"{at}storage refused to pin the job's datasets ({_one_line(error)});"
                            " the job was not submitted"
                        ) from None
                except (C3Error, OSError) as exc:
                    error = exc
                if delay is None:
                    raise Unavailable(
                        f"storage at {self._address} is unreachable ({_one_line(error)}); the"
                        " job was not submitted, as its datasets could not be pinned; try again"
                    ) from None
                await asyncio.sleep(delay)
        except BaseException:
            for job_id in job_ids:
                self.unpin(org_id, job_id)
            raise

    def unpin(self, org_id: str, job_id: str) -> None:
        if job_id not in self._held:
            return  # nothing was pinned for it (no mounts)
        del self._held[job_id]
        holder = holder_of(job_id)
        self._spawn(f"release mounts of {job_id}", lambda: self._release_now(org_id, holder))

    # -- storaged calls --------------------------------------------------------------------
    def _take(self, job: Job) -> None:
        self._held[job.id] = job

        async def take() -> None:
            if job.state in FINISHED:
                return  # ended before the hold landed: nothing to pin
            for path, version in _mounts(job):  # one job mounts a handful: a few calls
                await self._storage.hold(job.org_id, path, version, holder_of(job.id), self._ttl_s)
            if job.state in FINISHED:  # it ended while we were pinning: undo
                await self._release_now(job.org_id, holder_of(job.id))

        self._spawn(f"hold mounts of {job.id}", take)

    def _release(self, job_id: str, org_id: str) -> None:
        async def release() -> None:
            try:
                await self._release_now(org_id, holder_of(job_id))
            except _PERMANENT:
                self._repo.drop_pending_release(job_id)  # nothing left that it could release
                raise
            self._repo.drop_pending_release(job_id)

        self._spawn(f"release mounts of {job_id}", release)

    async def _release_now(self, org_id: str, holder: str) -> None:
        await self._storage.release(org_id, holder)

    def _spawn(self, what: str, attempt: Callable[[], Awaitable[None]]) -> None:
        async def with_retry() -> None:
            for delay in (*RETRY_DELAYS_S, None):
                try:
                    await attempt()
                    return
                except _PERMANENT as exc:
                    log.warning("%s failed: %s", what, exc)
                    return
                except (C3Error, OSError) as exc:
                    if delay is None:
                        log.error("%s failed, giving up: %s", what, exc)
                        return
                    log.info("%s failed (%s); retrying in %.1fs", what, exc, delay)
                    await asyncio.sleep(delay)

        task = asyncio.get_running_loop().create_task(with_retry())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- renewal -----------------------------------------------------------------------------
    def _schedule_renewal(self) -> None:
        loop = asyncio.get_running_loop()
        self._renew_timer = loop.call_later(self._ttl_s / 3, self._renew)

    def _renew(self) -> None:
        for job_id, job in list(self._held.items()):
            if job is None:
                continue  # its submit is still pinning
            if job.state in FINISHED:
                del self._held[job_id]
            else:
                self._take(job)
        self._schedule_renewal()

    def stop(self) -> None:
        if self._renew_timer is not None:
            self._renew_timer.cancel()
        for task in self._tasks:
            task.cancel()
