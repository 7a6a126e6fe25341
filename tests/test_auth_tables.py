"""Auth is structure: each server's table names every method it serves, a method missing
from a table is refused before its handler runs, and handlers see the caller the table's
rule found. The lists of methods come from the running servers (reflection), so an RPC
added later without an entry fails here."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc import aio
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from c3 import grpcutil
from c3.auth import PUBLIC_METHODS, principal
from c3.errors import PermissionDenied
from c3.grpctypes import Context
from c3.tokens import READ, TokenClaims, TokenSigner
from c3.v1 import coordinator_pb2 as pb
from c3.v1 import coordinator_pb2_grpc, storage_pb2, storage_pb2_grpc
from coordinator import auth as coordinator_auth
from storaged import auth as storaged_auth
from tests.harness.coordinator import config_for_test, start_coordinator
from tests.harness.storage import start_storaged

pytestmark = pytest.mark.unit


async def served_methods(address: str) -> set[str]:
    """Every method of every service the server at `address` serves, asked of it."""
    async with aio.insecure_channel(address) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)

        async def ask(
            request: reflection_pb2.ServerReflectionRequest,
        ) -> reflection_pb2.ServerReflectionResponse:
            call = stub.ServerReflectionInfo(iter([request]))
            async for reply in call:
                return reply
            raise AssertionError("no reflection answer")

        listed = await ask(reflection_pb2.ServerReflectionRequest(list_services=""))
        methods: set[str] = set()
        for service in listed.list_services_response.service:
            reply = await ask(
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=service.name)
            )
            for raw in reply.file_descriptor_response.file_descriptor_proto:
                file = descriptor_pb2.FileDescriptorProto.FromString(raw)
                for svc in file.service:
                    full = f"{file.package}.{svc.name}" if file.package else svc.name
                    if full == service.name:
                        methods |= {f"/{full}/{m.name}" for m in svc.method}
    return methods


async def test_every_coordinator_method_has_a_permission(tmp_path: Path) -> None:
    app, _ = await start_coordinator(config_for_test(tmp_path))
    try:
        served = await served_methods(app.address)
    finally:
        await app.stop()
    assert len(served) >= 15 + 7 + 2  # Coordinator, Admin, AgentGateway (and more)
    table = {**PUBLIC_METHODS, **coordinator_auth.PERMISSIONS}
    assert served - set(table) == set(), "methods served with no permission entry"
    assert set(coordinator_auth.PERMISSIONS) <= served  # and no entry for a method gone


async def test_every_storage_method_has_a_permission(tmp_path: Path) -> None:
    signer = TokenSigner.load_or_create(tmp_path / "key.pem")
    srv = await start_storaged(tmp_path / "data", signer, gc=False)
    try:
        served = await served_methods(srv.address)
    finally:
        await srv.stop(0)
    assert len(served) >= 16
    table = {**PUBLIC_METHODS, **storaged_auth.PERMISSIONS}
    assert served - set(table) == set(), "methods served with no permission entry"
    assert set(storaged_auth.PERMISSIONS) <= served


async def test_a_method_missing_from_the_table_is_refused_before_its_handler(
    tmp_path: Path,
) -> None:
    """A server whose table lacks GetJob refuses it (the handler never runs); the methods
    in the table run with the principal their rule returned."""
    ran: list[str] = []

    class Probe(coordinator_pb2_grpc.CoordinatorServicer):
        async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
            ran.append("GetJob")
            return pb.GetJobResponse()

        async def WhoAmI(self, request: pb.WhoAmIRequest, context: Context) -> pb.WhoAmIResponse:
            ran.append("WhoAmI")
            return pb.WhoAmIResponse(key_id=principal(str))

    rules = {"/c3.v1.Coordinator/WhoAmI": lambda context, method, request: f"caller of {method}"}
    server = await grpcutil.create_server(
        "127.0.0.1:0",
        [(coordinator_pb2_grpc.add_CoordinatorServicer_to_server, Probe(), "c3.v1.Coordinator")],
        auth={**PUBLIC_METHODS, **rules},
    )
    try:
        async with grpcutil.channel(f"127.0.0.1:{server.port}", service="coordinator") as ch:
            stub = coordinator_pb2_grpc.CoordinatorStub(ch)
            with pytest.raises(PermissionDenied, match="GetJob is open to no caller"):
                await stub.GetJob(pb.GetJobRequest(job_id="j-1"))
            who = await stub.WhoAmI(pb.WhoAmIRequest())
        assert who.key_id == "caller of /c3.v1.Coordinator/WhoAmI"
        assert ran == ["WhoAmI"]
        assert await grpcutil.check_health(f"127.0.0.1:{server.port}")  # public
    finally:
        await server.stop(0)


async def test_storage_refuses_a_token_without_the_operation_before_the_handler(
    tmp_path: Path,
) -> None:
    signer = TokenSigner.load_or_create(tmp_path / "key.pem")
    srv = await start_storaged(tmp_path / "data", signer, gc=False)
    try:
        read_only = signer.sign(TokenClaims(org_id="o", operations=(READ,)))
        async with grpcutil.channel(srv.address, service="storage") as ch:
            stub = storage_pb2_grpc.StorageStub(ch)
            md = grpcutil.storage_metadata(read_only)
            with pytest.raises(PermissionDenied, match="does not allow write"):
                await stub.FindMissing(storage_pb2.FindMissingRequest(digests=["x"]), metadata=md)
            with pytest.raises(PermissionDenied, match="does not allow write on /datasets/d"):
                await stub.Commit(storage_pb2.CommitRequest(path="/datasets/d"), metadata=md)
            with pytest.raises(PermissionDenied, match="does not allow hold"):
                await stub.Release(storage_pb2.ReleaseRequest(holder="job:j"), metadata=md)
            listed = await stub.List(storage_pb2.ListRequest(path="/datasets"), metadata=md)
            assert not listed.entries
        async with aio.insecure_channel(srv.address) as raw:  # no token at all
            with pytest.raises(grpc.RpcError) as refused:
                await storage_pb2_grpc.StorageStub(raw).List(storage_pb2.ListRequest(path="/"))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await srv.stop(0)
