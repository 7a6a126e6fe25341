"""Shared server plumbing: health and reflection on every server, and domain errors mapped
to gRPC status in one place (unary and streaming alike)."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from c3 import grpcutil
from c3.errors import FailedPrecondition, NotFound, from_rpc_error
from c3.v1 import daemon_pb2, daemon_pb2_grpc

pytestmark = pytest.mark.unit


class Failing(daemon_pb2_grpc.DaemonServicer):
    async def Status(self, request, context):  # type: ignore[no-untyped-def]
        raise NotFound("no such thing: /datasets/x")

    async def Logs(self, request, context):  # type: ignore[no-untyped-def]
        yield daemon_pb2.DeployEvent  # never reached: raise before the first item
        raise FailedPrecondition("job j-1 is not running")

    async def Shutdown(self, request, context):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug")


@pytest.fixture
async def server():  # type: ignore[no-untyped-def]
    srv = await grpcutil.create_server(
        "127.0.0.1:0", [(daemon_pb2_grpc.add_DaemonServicer_to_server, Failing(), "c3.v1.Daemon")]  # type: ignore[abstract]
    )
    yield f"127.0.0.1:{srv.port}"
    await srv.stop(0)


async def test_health_and_reflection(server: str) -> None:
    async with grpcutil.channel(server) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "c3.v1.Daemon"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = set()
        async for reply in call:
            names |= {s.name for s in reply.list_services_response.service}
            break
        assert {"c3.v1.Daemon", "grpc.health.v1.Health"} <= names


async def test_domain_errors_keep_their_status_and_message(server: str) -> None:
    async with grpcutil.channel(server) as ch:
        stub = daemon_pb2_grpc.DaemonStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await stub.Status(daemon_pb2.DaemonStatusRequest())
        assert unary.value.code() == grpc.StatusCode.NOT_FOUND
        assert isinstance(from_rpc_error(unary.value), NotFound)
        assert str(from_rpc_error(unary.value)) == "no such thing: /datasets/x"

        with pytest.raises(grpc.aio.AioRpcError) as bug:
            await stub.Shutdown(daemon_pb2.ShutdownRequest())
        assert bug.value.code() == grpc.StatusCode.UNKNOWN
