"""Open channels kept between requests: a deploy after a save should not pay for a TCP
(or TLS) handshake and a token round trip every time."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from c3.storage.client import StorageClient
from c3.tls import credentials_for
from c3.v1 import coordinator_pb2
from c3d.coordclient import CoordinatorClient, Target

# A storage token is renewed when it has less than this left.
TOKEN_MARGIN_S = 60.0
MAX_TARGETS = 8


def _key(target: Target) -> tuple[str, str, bytes]:
    tls = target.tls.SerializeToString() if target.tls is not None else b""
    return (target.coordinator_address, target.api_key, tls)


@dataclass
class _Storage:
    client: StorageClient
    address: str
    expires_at: float


class Connections:
    def __init__(self) -> None:
        self._coordinators: OrderedDict[tuple[str, str, bytes], CoordinatorClient] = OrderedDict()
        self._storage: dict[tuple[str, str, bytes], _Storage] = {}

    def target(self, request: Any) -> Target:
        """The target of a daemon request carrying coordinator_address, api_key and tls."""
        tls = request.tls if request.HasField("tls") else None
        return Target(request.coordinator_address, request.api_key, tls)

    async def coordinator(self, target: Target) -> CoordinatorClient:
        key = _key(target)
        client = self._coordinators.get(key)
        if client is None:
            client = CoordinatorClient(target)
            self._coordinators[key] = client
            while len(self._coordinators) > MAX_TARGETS:
                old_key, old = self._coordinators.popitem(last=False)
                await old.close()
                await self._drop_storage(old_key)
        self._coordinators.move_to_end(key)
        return client

    async def storage(self, target: Target) -> StorageClient:
        """A storage client for the target's org, its token fresh for at least a minute."""
        key = _key(target)
        held = self._storage.get(key)
        if held is not None and held.expires_at - time.time() > TOKEN_MARGIN_S:
            return held.client
        coordinator = await self.coordinator(target)
        token = await coordinator.stub.IssueStorageToken(coordinator_pb2.IssueStorageTokenRequest())
        expires_at = token.expires_at.ToSeconds() if token.expires_at.seconds else time.time() + 300
        if held is not None and held.address == token.storage_address:
            held.client.set_token(token.token)
            held.expires_at = expires_at
            return held.client
        await self._drop_storage(key)
        client = StorageClient(
            token.storage_address, token.token, credentials=credentials_for(target.tls)
        )
        self._storage[key] = _Storage(client, token.storage_address, expires_at)
        return client

    def storage_address(self, target: Target) -> str:
        held = self._storage.get(_key(target))
        return held.address if held is not None else ""

    async def _drop_storage(self, key: tuple[str, str, bytes]) -> None:
        held = self._storage.pop(key, None)
        if held is not None:
            await held.client.close()

    async def close(self) -> None:
        for key in list(self._storage):
            await self._drop_storage(key)
        for client in self._coordinators.values():
            await client.close()
        self._coordinators.clear()
