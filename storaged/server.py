"""Assembles storaged: metadata, blob backend, store, catalog, gRPC server, periodic GC."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from c3 import grpcutil
from c3.tokens import TokenVerifier
from storaged.backend import LocalDiskBackend
from storaged.catalog import Catalog
from storaged.gc import GcStats, collect_garbage
from storaged.handlers import add_storage_service
from storaged.meta import Metadata
from storaged.service import SERVICE_NAME, StorageService
from storaged.store import BlobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoragedConfig:
    data_dir: Path
    listen: str = "127.0.0.1:7431"
    max_blob_bytes: int = 64 << 30
    gc_interval_seconds: float = 3600.0
    # Blobs touched more recently than this are never collected (uploads in flight,
    # jobs that just resolved their inputs).
    gc_grace_seconds: float = 6 * 3600.0
    # grpc.ServerCredentials for TLS (storaged/main.py --tls-cert/--tls-key); None: plaintext.
    server_credentials: Any = None


class StoragedServer:
    def __init__(self, config: StoragedConfig, server: grpcutil.Server, store: BlobStore) -> None:
        self.config = config
        self.grpc = server
        self.store = store
        self._gc_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.grpc.port

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    @classmethod
    async def start(cls, config: StoragedConfig, verifier: TokenVerifier) -> StoragedServer:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        meta = await Metadata.open(config.data_dir / "meta.sqlite")
        backend = await asyncio.to_thread(LocalDiskBackend, config.data_dir)
        store = BlobStore(backend, meta, max_blob_bytes=config.max_blob_bytes)
        service = StorageService(verifier, store, Catalog(meta, store))
        server = await grpcutil.create_server(
            config.listen,
            [(add_storage_service, service, SERVICE_NAME)],
            server_credentials=config.server_credentials,
        )
        self = cls(config, server, store)
        if config.gc_interval_seconds > 0:
            self._gc_task = asyncio.create_task(self._gc_loop())
        return self

    async def collect_garbage(self, grace_seconds: float | None = None) -> GcStats:
        grace = self.config.gc_grace_seconds if grace_seconds is None else grace_seconds
        return await collect_garbage(self.store, grace)

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.gc_interval_seconds)
            try:
                await self.collect_garbage()
            except Exception:  # a failed GC round must not take the server down
                log.exception("garbage collection failed")

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._gc_task is not None:
            self._gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gc_task
        await self.grpc.stop(grace)
        self.store.close()
        await self.store.meta.close()
