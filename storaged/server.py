"""Assembles storaged: metadata, blob backend, store, catalog, gRPC server, periodic GC."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from c3 import grpcutil
from c3.service import Probe, Service, Steps, build
from c3.tokens import TokenVerifier
from storaged import auth
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


class StoragedServer(Service):
    """A running storaged: `await StoragedServer.start(config, verifier)`, then `stop()`
    (or `async with`). A start that fails half-way leaves nothing open (c3/service.py)."""

    def __init__(
        self,
        steps: Steps,
        config: StoragedConfig,
        server: grpcutil.Server,
        store: BlobStore,
        grace: list[float | None],
    ) -> None:
        super().__init__(steps.hand_over())
        self.config = config
        self.grpc = server
        self.store = store
        self._grace = grace  # how long the server's stop lets calls finish (stop(grace))

    @property
    def port(self) -> int:
        return self.grpc.port

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    @classmethod
    async def start(
        cls, config: StoragedConfig, verifier: TokenVerifier, probe: Probe | None = None
    ) -> StoragedServer:
        return await build(lambda steps: cls._build(steps, config, verifier), probe)

    @classmethod
    async def _build(
        cls, steps: Steps, config: StoragedConfig, verifier: TokenVerifier
    ) -> StoragedServer:
        steps.step("metadata")
        config.data_dir.mkdir(parents=True, exist_ok=True)
        meta = await Metadata.open(config.data_dir / "meta.sqlite")
        steps.on_stop(meta.close)
        steps.step("blob store")
        backend = await asyncio.to_thread(LocalDiskBackend, config.data_dir)
        store = BlobStore(backend, meta, max_blob_bytes=config.max_blob_bytes)
        steps.on_stop_sync(store.close)
        steps.step("server")
        service = StorageService(store, Catalog(meta, store))
        server = await grpcutil.create_server(
            config.listen,
            [(add_storage_service, service, SERVICE_NAME)],
            server_credentials=config.server_credentials,
            auth=auth.rules(verifier),
        )
        grace: list[float | None] = [1.0]
        steps.on_stop(lambda: server.stop(grace[0]))
        if config.gc_interval_seconds > 0:
            steps.step("garbage collection")
            steps.task(_gc_loop(store, config), "storaged-gc")
        return cls(steps, config, server, store, grace)

    async def collect_garbage(self, grace_seconds: float | None = None) -> GcStats:
        grace = self.config.gc_grace_seconds if grace_seconds is None else grace_seconds
        return await collect_garbage(self.store, grace)

    async def stop(self, grace: float | None = 1.0) -> None:
        if not self.stopped:
            self._grace[0] = grace
        await super().stop()


async def _gc_loop(store: BlobStore, config: StoragedConfig) -> None:
    while True:
        await asyncio.sleep(config.gc_interval_seconds)
        try:
            await collect_garbage(store, config.gc_grace_seconds)
        except Exception:  # a failed GC round must not take the server down
            log.exception("garbage collection failed")
