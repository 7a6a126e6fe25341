"""One storage client (one gRPC channel, kept connected) per storage address.

A job used to open its own channel: a TCP connect and an HTTP/2 handshake on the startup
path of every job. The agent runs one job at a time, so the job's scoped token is simply
set on the shared client when the job starts (each RPC carries the current token).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

ClientFactory = Callable[[str, str], Any]  # (address, token) -> client with set_token/close
MAX_ADDRESSES = 4


class StoragePool:
    def __init__(self, factory: ClientFactory) -> None:
        self._factory = factory
        self._clients: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def client(self, address: str, token: str) -> AsyncIterator[Any]:
        """The address's client, now using `token`. Not closed on exit: the channel
        stays up for the next job."""
        found = self._clients.pop(address, None)
        if found is None:
            found = self._factory(address, token)
            while len(self._clients) >= MAX_ADDRESSES:  # coordinator moved storaged
                oldest = next(iter(self._clients))
                await self._clients.pop(oldest).close()
        else:
            found.set_token(token)
        self._clients[address] = found  # most recently used last
        yield found

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.close()
