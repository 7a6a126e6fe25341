"""Storage holds for the datasets a job mounts: `c3ctl data rm` of a version a pending or
running job mounts is refused by storaged, and GC keeps its blobs.

storaged knows versions, not jobs (docs/storage-holds.md): the coordinator pins each
mount as holder "job:<id>" once the job exists and releases the holder when the job
reaches a final state. Calls are fire-and-forget tasks with retry and backoff; a failure
is logged and never fails the job. Holds carry a TTL that this class renews while the
job lives, so a coordinator that dies does not pin data forever.

Known race: the hold is requested when the job is submitted but lands a round trip later,
so an `rm` arriving in between still wins; the hold then fails with NotFound (logged) and
the job fails at fetch time. Closing it needs submit to await the holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from c3.errors import C3Error, InvalidArgument, NotFound, PermissionDenied, from_rpc_error
from c3.grpcutil import channel, storage_metadata
from c3.storage_client import HOLD_OPERATION
from c3.tokens import TokenClaims, TokenSigner
from c3.v1 import storage_pb2, storage_pb2_grpc
from coordinator.jobs import JobService
from coordinator.lifecycle import FINISHED, State
from coordinator.model import Job

log = logging.getLogger(__name__)

HOLD_TTL_S = 3600
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# Errors that another try cannot fix.
_PERMANENT = (NotFound, InvalidArgument, PermissionDenied)


def holder_of(job: Job) -> str:
    return f"job:{job.id}"


def _mounts(job: Job) -> list[tuple[str, int]]:
    return [(m.resolved_path, m.version) for m in job.spec.datasets if m.resolved_path and m.version]


class JobHolds:
    def __init__(
        self,
        jobs: JobService,
        signer: TokenSigner,
        storage_address: str,
        storage_credentials: grpc.ChannelCredentials | None = None,
        ttl_s: int = HOLD_TTL_S,
    ) -> None:
        self._jobs = jobs
        self._signer = signer
        self._address = storage_address
        self._credentials = storage_credentials
        self._ttl_s = ttl_s
        self._held: set[str] = set()  # job ids whose holds are taken or being taken
        self._tasks: set[asyncio.Task[None]] = set()
        self._renew_timer: asyncio.TimerHandle | None = None

    async def load(self) -> None:
        """Subscribe to transitions and reconcile with the jobs loaded at startup."""
        self._jobs.on_transition.append(self._on_transition)
        cutoff = time.time() - self._ttl_s  # older holds have lapsed on their own
        for job in list(self._jobs.jobs.values()):
            if not _mounts(job):
                continue
            if job.state not in FINISHED:
                self._take(job)
            elif job.finished_at >= cutoff:
                self._release(job)
        self._schedule_renewal()

    def _on_transition(self, job: Job, target: State) -> None:
        if target in FINISHED:
            if job.id in self._held:
                self._held.discard(job.id)
                self._release(job)
        elif job.id not in self._held and _mounts(job):
            self._take(job)

    # -- storaged calls --------------------------------------------------------------------
    def _take(self, job: Job) -> None:
        self._held.add(job.id)

        async def take() -> None:
            if job.state in FINISHED:
                return  # ended before the hold landed: nothing to pin
            requests = [
                storage_pb2.HoldRequest(
                    path=path, version=version, holder=holder_of(job), ttl_seconds=self._ttl_s
                )
                for path, version in _mounts(job)
            ]

            async def hold_all(stub: storage_pb2_grpc.StorageStub, md: Any) -> None:
                for request in requests:  # one job mounts a handful: one channel, few calls
                    await stub.Hold(request, metadata=md)

            await self._call(job, hold_all)
            if job.state in FINISHED:  # it ended while we were pinning: undo
                await self._release_now(job)

        self._spawn(f"hold mounts of {job.id}", take)

    def _release(self, job: Job) -> None:
        self._spawn(f"release mounts of {job.id}", lambda: self._release_now(job))

    async def _release_now(self, job: Job) -> None:
        request = storage_pb2.ReleaseRequest(holder=holder_of(job))

        async def release(stub: storage_pb2_grpc.StorageStub, md: Any) -> None:
            await stub.Release(request, metadata=md)

        await self._call(job, release)

    async def _call(
        self, job: Job, rpc: Callable[[storage_pb2_grpc.StorageStub, Any], Awaitable[None]]
    ) -> None:
        token = self._signer.sign(TokenClaims(
            org_id=job.org_id, operations=(HOLD_OPERATION,), read_prefixes=(),
            write_prefixes=(), expires_at=time.time() + 60, subject="coordinator:holds",
        ))  # fmt: skip
        async with channel(self._address, self._credentials) as ch:  # type: ignore[arg-type]
            try:
                await rpc(storage_pb2_grpc.StorageStub(ch), storage_metadata(token))
            except grpc.RpcError as exc:
                raise from_rpc_error(exc) from None

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
        for job_id in list(self._held):
            job = self._jobs.jobs.get(job_id)
            if job is None or job.state in FINISHED:
                self._held.discard(job_id)
            else:
                self._take(job)
        self._schedule_renewal()

    def stop(self) -> None:
        if self._renew_timer is not None:
            self._renew_timer.cancel()
        for task in self._tasks:
            task.cancel()
