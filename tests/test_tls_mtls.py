"""Mutual TLS: a coordinator started with a client CA admits an agent presenting the agent
certificate and refuses, at the TLS handshake, a client that only trusts the CA."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from c3 import certs, tls
from c3.grpcutil import channel
from c3.v1 import agent_pb2, agent_pb2_grpc
from tests.harness.coordinator import config_for_test, start_coordinator

pytestmark = pytest.mark.unit


async def test_agent_needs_a_client_certificate(tmp_path: Path) -> None:
    files = certs.generate(tmp_path / "certs")
    config = config_for_test(
        tmp_path / "coord", tls_cert=files.server_cert, tls_key=files.server_key,
        tls_client_ca=files.ca_cert,
    )  # fmt: skip
    app, boot = await start_coordinator(config)
    port = app.address.rsplit(":", 1)[1]
    address = f"localhost:{port}"  # a name the server certificate covers
    request = agent_pb2.RegisterAgentRequest(
        secret=boot.agent_secret,
        capabilities=agent_pb2.AgentCapabilities(profile="l40s-1x", gpu_class="l40", capacity=1),
    )
    try:
        with_cert = tls.channel_credentials(files.ca_cert, files.agent_cert, files.agent_key)
        async with channel(address, with_cert) as ch:
            reply = await agent_pb2_grpc.AgentGatewayStub(ch).Register(request, timeout=10)
        assert reply.agent_id and reply.credential.startswith("c3_agent_")

        ca_only = tls.channel_credentials(files.ca_cert)
        async with channel(address, ca_only) as ch:
            with pytest.raises(grpc.RpcError) as info:
                await agent_pb2_grpc.AgentGatewayStub(ch).Register(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # Refused before any RPC ran: no second agent was enrolled.
        assert len(app.scheduler.known_agents()) == 1
    finally:
        await app.stop()
