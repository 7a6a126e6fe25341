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
from c3.errors import from_rpc_error
from c3.tls import credentials_for, warn_if_plaintext
from c3.userconfig import LOCAL_FILE, TlsSettings, load_user_config, resolve_api_key
from c3.v1 import coordinator_pb2, coordinator_pb2_grpc, daemon_pb2
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


class CoordinatorSession:
    """A channel to the coordinator with the caller's key attached to every call."""

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        tls = creds.channel_credentials
        warn_if_plaintext(creds.coordinator_address, tls)
        self.channel = grpcutil.channel(creds.coordinator_address, tls)
        self.stub = coordinator_pb2_grpc.CoordinatorStub(self.channel)
        self.metadata = grpcutil.bearer(creds.api_key) if creds.api_key else ()

    async def call(self, method: str, request: object, timeout: float | None = 30.0) -> object:
        """Unary call translating gRPC failures into C3Error."""
        try:
            return await getattr(self.stub, method)(request, metadata=self.metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def storage_token(self) -> coordinator_pb2.IssueStorageTokenResponse:
        reply = await self.call("IssueStorageToken", coordinator_pb2.IssueStorageTokenRequest())
        assert isinstance(reply, coordinator_pb2.IssueStorageTokenResponse)
        return reply

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
