"""How the CLI reaches the services: which coordinator, which key, and storage tokens."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from c3 import grpcutil
from c3.tls import credentials_for, warn_if_plaintext
from c3.userconfig import LOCAL_FILE, TlsSettings, load_user_config, resolve_api_key
from c3.v1 import admin_pb2_grpc, coordinator_pb2, coordinator_pb2_grpc, daemon_pb2
from c3ctl.localkey import warn_if_local_key_not_ignored

if TYPE_CHECKING:
    from c3.storage.client import StorageClient


@dataclass(frozen=True)
class Credentials:
    coordinator_address: str
    api_key: str
    source: str
    tls: TlsSettings = field(default_factory=TlsSettings)

    @property
    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        return credentials_for(self.tls)

    @property
    def daemon_tls(self) -> daemon_pb2.ClientTls:
        """The TLS settings for c3d, which dials coordinator and storage for us."""
        t = self.tls
        return daemon_pb2.ClientTls(enabled=t.enabled, ca_file=t.ca_file, cert_file=t.cert_file,
                                    key_file=t.key_file, server_name=t.server_name)


def credentials(project_root: Path | None = None) -> Credentials:
    """The coordinator address and API key in force for a command run here."""
    if project_root is None:
        project_root = _nearest_project_root(Path.cwd())
    config = load_user_config()
    key, source = resolve_api_key(project_root)
    if project_root is not None and source.endswith(LOCAL_FILE):
        warn_if_local_key_not_ignored(project_root)
    return Credentials(config.coordinator, key, source, config.tls)


def _nearest_project_root(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        if (directory / ".c3").is_file():
            return directory
    return None


# A call with a single answer that names no timeout of its own gets this one.
CALL_TIMEOUT_S = 30.0


class CoordinatorSession:
    """A channel to the coordinator with the caller's key attached to every call; calls are
    typed stub calls (`session.stub.GetJob(request)`) and fail with c3.errors classes."""

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        tls = creds.channel_credentials
        warn_if_plaintext(creds.coordinator_address, tls)
        self.channel = grpcutil.channel(
            creds.coordinator_address,
            tls,
            service="coordinator",
            metadata=grpcutil.bearer(creds.api_key) if creds.api_key else (),
            timeout=CALL_TIMEOUT_S,
        )
        self.stub = coordinator_pb2_grpc.CoordinatorStub(self.channel)
        self.admin = admin_pb2_grpc.AdminStub(self.channel)

    async def storage_token(self) -> coordinator_pb2.IssueStorageTokenResponse:
        return await self.stub.IssueStorageToken(coordinator_pb2.IssueStorageTokenRequest())

    async def close(self) -> None:
        await self.channel.close()


@asynccontextmanager
async def coordinator(project_root: Path | None = None) -> AsyncIterator[CoordinatorSession]:
    session = CoordinatorSession(credentials(project_root))
    try:
        yield session
    finally:
        await session.close()


@asynccontextmanager
async def storage_client(project_root: Path | None = None) -> AsyncIterator[StorageClient]:
    from c3.storage.client import StorageClient

    """A storage client holding a fresh token for the caller's org."""
    async with coordinator(project_root) as session:
        token = await session.storage_token()
    address = os.environ.get("C3_STORAGE") or token.storage_address
    tls = session.creds.channel_credentials
    async with StorageClient(address, token.token, credentials=tls) as client:
        yield client
