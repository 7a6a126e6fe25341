"""The daemon's connection to the coordinator, with the caller's credential."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from c3 import grpcutil
from c3.tls import credentials_for
from c3.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

CALL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Target:
    """Which coordinator and credential a request runs against."""

    coordinator_address: str
    api_key: str
    tls: Any = None  # daemon_pb2.ClientTls from the CLI; None or disabled: plaintext


class CoordinatorClient:
    """The daemon's channel to one coordinator with one credential: typed stub calls
    (`client.stub.GetJob(request)`) that fail with c3.errors classes, an unreachable
    coordinator as one line saying how to get one."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.channel = grpcutil.channel(
            target.coordinator_address,
            credentials_for(target.tls),
            service="coordinator",
            hint="start a local one with `c3ctl up`, or check C3_COORDINATOR",
            metadata=grpcutil.bearer(target.api_key) if target.api_key else (),
            timeout=CALL_TIMEOUT_S,
        )
        self.stub = coordinator_pb2_grpc.CoordinatorStub(self.channel)

    async def events(
        self, job_id: str, after_seq: int = 0, follow: bool = True
    ) -> AsyncIterator[common_pb2.JobEvent]:
        call = self.stub.StreamJobEvents(
            coordinator_pb2.StreamJobEventsRequest(job_id=job_id, after_seq=after_seq, follow=follow)
        )
        try:
            async for event in call:
                yield event
        finally:
            call.cancel()

    async def watch_job(self, job_id: str) -> AsyncIterator[common_pb2.Job]:
        """The job now, then each change of it (server-pushed), until cancelled."""
        call = self.stub.WatchJobs(coordinator_pb2.WatchJobsRequest(job_id=job_id))
        try:
            async for job in call:
                yield job
        finally:
            call.cancel()

    async def close(self) -> None:
        await self.channel.close()
