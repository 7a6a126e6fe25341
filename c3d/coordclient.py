"""The daemon's connection to the coordinator, with the caller's credential."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from c3 import grpcutil
from c3.errors import Unavailable, from_rpc_error
from c3.tls import credentials_for
from c3.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc


@dataclass(frozen=True)
class Target:
    """Which coordinator and credential a request runs against."""

    coordinator_address: str
    api_key: str
    tls: Any = None  # daemon_pb2.ClientTls from the CLI; None or disabled: plaintext


class CoordinatorClient:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.channel = grpcutil.channel(target.coordinator_address, credentials_for(target.tls))
        self.stub = coordinator_pb2_grpc.CoordinatorStub(self.channel)
        self.metadata = grpcutil.bearer(target.api_key) if target.api_key else ()

    def _error(self, exc: grpc.RpcError) -> Exception:
        error = from_rpc_error(exc)
        if isinstance(error, Unavailable):
            return Unavailable(
                f"coordinator at {self.target.coordinator_address} is unreachable "
                "(start a local one with `c3ctl up`, or check C3_COORDINATOR)"
            )
        return error

    async def call(self, method: str, request: Any, timeout: float = 30.0) -> Any:
        try:
            return await getattr(self.stub, method)(request, metadata=self.metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    async def events(
        self, job_id: str, after_seq: int = 0, follow: bool = True
    ) -> AsyncIterator[common_pb2.JobEvent]:
        call = self.stub.StreamJobEvents(
            coordinator_pb2.StreamJobEventsRequest(job_id=job_id, after_seq=after_seq, follow=follow),
            metadata=self.metadata,
        )
        try:
            async for event in call:
                yield event
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        finally:
            call.cancel()

    async def watch_job(self, job_id: str) -> AsyncIterator[common_pb2.Job]:
        """The job now, then each change of it (server-pushed), until cancelled."""
        call = self.stub.WatchJobs(
            coordinator_pb2.WatchJobsRequest(job_id=job_id), metadata=self.metadata
        )
        try:
            async for job in call:
                yield job
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self.channel.close()
