"""gRPC plumbing every c3 server and client shares: options, health, reflection, metadata."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from grpc import aio

from c3.auth import AuthInterceptor, Rule
from c3.errors import ClientCalls, ErrorMappingInterceptor, Unauthenticated, client_interceptors
from c3.grpctypes import Context

MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# Explicit limits and windows: large enough for batched blobs, bounded so one peer cannot
# make us buffer without end.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.http2.max_frame_size", 1 << 20),
    ("grpc.http2.lookahead_bytes", 4 << 20),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.http2.max_frame_size", 1 << 20),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.so_reuseport", 0),
]

AUTHORIZATION = "authorization"
STORAGE_TOKEN = "x-c3-storage-token"


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return ((AUTHORIZATION, f"Bearer {secret}"),)


def storage_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return ((STORAGE_TOKEN, token),)


def metadata_value(context: Context, key: str) -> str:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value.decode() if isinstance(value, bytes) else value
    return ""


def bearer_secret(context: Context) -> str:
    value = metadata_value(context, AUTHORIZATION)
    if not value:
        raise Unauthenticated("missing credentials: set C3_API_KEY or run `c3ctl up`")
    scheme, _, secret = value.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise Unauthenticated("malformed authorization metadata (expected 'Bearer <key>')")
    return secret


class Server:
    """A started grpc.aio server with health and reflection; `port` is the bound port."""

    def __init__(self, server: aio.Server, port: int, health_servicer: Any):
        self.server = server
        self.port = port
        self.health = health_servicer

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)

    async def wait(self) -> None:
        await self.server.wait_for_termination()


async def create_server(
    address: str,
    registrations: Sequence[tuple[Any, Any, str]],
    *,
    server_credentials: grpc.ServerCredentials | None = None,
    unix_socket: bool = False,
    auth: Mapping[str, Rule] | None = None,
) -> Server:
    """Start a server on `address` ("127.0.0.1:0" for a free port, "unix:/path").

    `registrations` are (add_XServicer_to_server function, servicer, full service name).
    `auth` is the server's table of method -> rule (c3/auth.py); without one every caller
    is let in (c3d, whose unix socket only its user can open).
    """
    interceptors: list[aio.ServerInterceptor] = [ErrorMappingInterceptor()]
    if auth is not None:
        interceptors.append(AuthInterceptor(auth))
    server = aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
    names = []
    for add, servicer, name in registrations:
        add(servicer, server)
        names.append(name)
    # Server-only modules, imported here so clients (the CLI) do not load them.
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names += [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    if server_credentials is not None:
        port = server.add_secure_port(address, server_credentials)
    else:
        port = server.add_insecure_port(address)
    await server.start()
    for name in [*names[:-2], ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return Server(server, port, health_servicer)


def channel(
    address: str,
    credentials: grpc.ChannelCredentials | None = None,
    *,
    service: str = "",
    hint: str = "",
    metadata: tuple[tuple[str, str], ...] = (),
    timeout: float | None = None,
) -> aio.Channel:
    """A channel to `address`. Naming the `service` ("storage", "coordinator") makes every
    call on it raise `c3.errors` classes instead of grpc.RpcError, a lost connection as
    Unavailable naming the service and address (and `hint`: what to do about it); every
    call then carries `metadata` and, for a single answer, `timeout` unless it names one."""
    interceptors = (
        client_interceptors(
            ClientCalls(service, address.removeprefix("unix:"), hint, metadata, timeout)
        )
        if service
        else None
    )
    if credentials is not None:
        return aio.secure_channel(
            address, credentials, options=CHANNEL_OPTIONS, interceptors=interceptors
        )
    return aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=interceptors)


async def check_health(
    address: str, timeout: float = 1.0, credentials: grpc.ChannelCredentials | None = None
) -> bool:
    """True when the server at `address` answers SERVING."""
    async with channel(address, credentials) as ch:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(ch)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
