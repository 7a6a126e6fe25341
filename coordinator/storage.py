"""The coordinator's one long-lived connection to storaged: holds, releases, usage.

One channel for the coordinator's lifetime (gRPC reconnects it by itself after storaged
restarts), each call carrying a token of the coordinator's own for one operation on one
org (coordinator/grants.py). Failures arrive as `c3.errors` classes (the channel's
interceptor maps them).
"""

from __future__ import annotations

import grpc

from c3 import grpcutil
from c3.tokens import HOLD, READ
from c3.v1 import storage_pb2, storage_pb2_grpc
from coordinator.grants import StorageGrants


class StorageLink:
    def __init__(
        self, grants: StorageGrants, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self.address = grants.storage_address
        self._grants = grants
        self._channel = grpcutil.channel(self.address, credentials, service="storage")
        self._stub = storage_pb2_grpc.StorageStub(self._channel)

    def _md(self, org_id: str, operation: str, subject: str) -> tuple[tuple[str, str], ...]:
        return grpcutil.storage_metadata(self._grants.for_service(org_id, operation, subject))

    async def hold(
        self,
        org_id: str,
        path: str,
        version: int,
        holder: str,
        ttl_s: int,
        timeout: float | None = None,
    ) -> None:
        request = storage_pb2.HoldRequest(
            path=path, version=version, holder=holder, ttl_seconds=ttl_s
        )
        md = self._md(org_id, HOLD, "coordinator:holds")
        await self._stub.Hold(request, metadata=md, timeout=timeout)

    async def release(self, org_id: str, holder: str) -> None:
        md = self._md(org_id, HOLD, "coordinator:holds")
        await self._stub.Release(storage_pb2.ReleaseRequest(holder=holder), metadata=md)

    async def stored_bytes(self, org_id: str, timeout: float) -> int:
        """Bytes the org has committed, as storaged counts them."""
        md = self._md(org_id, READ, "coordinator:billing")
        reply = await self._stub.DiskUsage(
            storage_pb2.DiskUsageRequest(path="/"), metadata=md, timeout=timeout
        )
        return int(reply.stored_bytes or reply.logical_bytes)

    async def close(self) -> None:
        await self._channel.close()
