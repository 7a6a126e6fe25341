"""`admin agent list|revoke` on a real in-process coordinator: a revoked agent loses its
stream at once, cannot come back, and its running job is handled as on a lost agent."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from c3.grpcutil import bearer, channel
from c3.v1 import admin_pb2, admin_pb2_grpc, common_pb2
from c3.v1 import coordinator_pb2 as pb
from coordinator.lifecycle import Reason, State
from tests.harness.coordinator import SimAgent, client, config_for_test, spec, start_coordinator
from tests.harness.rpc import code_of
from tests.harness.waiting import eventually

pytestmark = pytest.mark.unit


S = common_pb2


async def test_list_then_revoke_closes_the_stream_and_fails_the_running_job(tmp_path: Path) -> None:
    # A 3 s loss window: the stream must end well before silence alone would end it.
    app, boot = await start_coordinator(config_for_test(tmp_path, heartbeat_ms=1000))
    ch = channel(app.address)
    try:
        await _list_then_revoke(app, boot, ch)
    finally:
        await ch.close()
        await app.stop()


async def _list_then_revoke(app, boot, ch) -> None:  # type: ignore[no-untyped-def]
    adm, op = admin_pb2_grpc.AdminStub(ch), bearer(boot.api_key)
    busy = SimAgent(app.address, boot.agent_secret, profile="h100-8x", gpu_class="h100", provider="lambda")
    idle = SimAgent(app.address, boot.agent_secret)
    for agent in (busy, idle):
        await agent.register()
    await busy.connect()
    job = (await client(ch).SubmitJob(pb.SubmitJobRequest(spec=spec(gpu="h100-8x")), metadata=bearer(boot.api_key))).job
    assert (await busy.assignment()).job.id == job.id
    await busy.report(job.id, S.JOB_STATE_RUNNING)
    await eventually(lambda: app.jobs.jobs[job.id].state == State.RUNNING, what="job running")

    listed = {a.id: a for a in (await adm.ListAgents(admin_pb2.ListAgentsRequest(), metadata=op)).agents}
    assert set(listed) == {busy.agent_id, idle.agent_id}
    b, i = listed[busy.agent_id], listed[idle.agent_id]
    assert (b.profile, b.provider, b.connected, b.revoked) == ("h100-8x", "lambda", True, False)
    assert b.HasField("last_seen") and list(b.running_job_ids) == [job.id]
    assert (i.profile, i.connected, i.HasField("last_seen")) == ("l40s-1x", False, False)

    await busy.heartbeat((job.id,))
    reply = await adm.RevokeAgent(admin_pb2.RevokeAgentRequest(agent_id=busy.agent_id), metadata=op)
    assert reply.newly_revoked and reply.agent.revoked
    # Its running job is failed by the revoke itself, not after the loss timer.
    done = app.jobs.jobs[job.id]
    assert (done.state, done.failure_reason) == (State.FAILED, Reason.AGENT_LOST)
    assert "revoked" in done.message
    # The coordinator ends the stream itself, at once: not the 3 s loss window.
    assert await busy.next(timeout=1.5) is None
    # The credential is dead for Register and Connect alike.
    assert await code_of(busy.register()) == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as info:
        await busy.connect()
        await busy._call.read()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    again = await adm.RevokeAgent(admin_pb2.RevokeAgentRequest(agent_id=busy.agent_id), metadata=op)
    assert not again.newly_revoked
    assert await code_of(adm.RevokeAgent(admin_pb2.RevokeAgentRequest(agent_id="a-nope"), metadata=op)) == grpc.StatusCode.NOT_FOUND
    # The other agent is untouched.
    await idle.register()
    await idle.connect()
    listed = {a.id: a for a in (await adm.ListAgents(admin_pb2.ListAgentsRequest(), metadata=op)).agents}
    assert listed[busy.agent_id].revoked and not listed[busy.agent_id].connected
    assert listed[idle.agent_id].connected and not listed[idle.agent_id].revoked
    for agent in (busy, idle):
        await agent.close()


async def test_agent_verbs_need_an_operator_admin_key(stack) -> None:  # type: ignore[no-untyped-def]
    app, boot, ch = stack.app, stack.boot, stack.channel
    adm, op = admin_pb2_grpc.AdminStub(ch), bearer(boot.api_key)
    agent = SimAgent(app.address, boot.agent_secret)
    await agent.register()
    plain = await client(ch).CreateApiKey(pb.CreateApiKeyRequest(name="dev"), metadata=op)
    acme = await adm.CreateOrg(admin_pb2.CreateOrgRequest(name="acme"), metadata=op)
    for key in (plain.secret, acme.admin_key):  # an operator org's plain key; another org's admin
        md = bearer(key)
        assert await code_of(adm.ListAgents(admin_pb2.ListAgentsRequest(), metadata=md)) == grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(adm.RevokeAgent(admin_pb2.RevokeAgentRequest(agent_id=agent.agent_id), metadata=md)) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(adm.ListAgents(admin_pb2.ListAgentsRequest())) == grpc.StatusCode.UNAUTHENTICATED
    # Nothing was revoked by the refused calls: the agent still gets in.
    await agent.register()
    await agent.connect()
    await agent.close()


async def test_revocation_survives_a_coordinator_restart(tmp_path: Path) -> None:
    config = config_for_test(tmp_path)
    app, boot = await start_coordinator(config)
    agent = SimAgent(app.address, boot.agent_secret)
    await agent.register()
    async with channel(app.address) as ch:
        await admin_pb2_grpc.AdminStub(ch).RevokeAgent(
            admin_pb2.RevokeAgentRequest(agent_id=agent.agent_id), metadata=bearer(boot.api_key)
        )
    await app.stop()
    app, boot = await start_coordinator(config)
    try:
        await agent.retarget(app.address)
        assert await code_of(agent.register()) == grpc.StatusCode.UNAUTHENTICATED
        async with channel(app.address) as ch:
            listed = await admin_pb2_grpc.AdminStub(ch).ListAgents(
                admin_pb2.ListAgentsRequest(), metadata=bearer(boot.api_key)
            )
        [info] = listed.agents
        assert info.id == agent.agent_id and info.revoked
    finally:
        await agent.close()
        await app.stop()
