"""Admin verbs, plans, one-time agent secrets and per-second billing on a real coordinator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from c3.grpcutil import bearer, channel
from c3.v1 import admin_pb2, admin_pb2_grpc, common_pb2
from c3.v1 import coordinator_pb2 as pb
from coordinator.billing import cost_minor
from coordinator.lifecycle import Reason, State
from tests.harness.coordinator import SimAgent, client, config_for_test, spec, start_coordinator
from tests.harness.rpc import code_of
from tests.harness.waiting import eventually

pytestmark = pytest.mark.unit


S = common_pb2


async def test_admin_verbs_need_an_operator_admin_key(stack) -> None:  # type: ignore[no-untyped-def]
    _app, boot, ch = stack.app, stack.boot, stack.channel
    adm, c = admin_pb2_grpc.AdminStub(ch), client(ch)
    op = bearer(boot.api_key)
    created = await adm.CreateOrg(admin_pb2.CreateOrgRequest(name="acme", plan="pro"), metadata=op)
    assert created.admin_key.startswith("c3_key_") and created.org.plan == "pro"
    assert created.org.balance_minor == 1000  # the configured starting credit (GBP 10)
    other = bearer(created.admin_key)
    me = await c.WhoAmI(pb.WhoAmIRequest(), metadata=other)
    assert (me.org_name, me.plan, me.admin) == ("acme", "pro", True)
    assert created.admin_key not in str(me)
    plain = await c.CreateApiKey(pb.CreateApiKeyRequest(name="ci"), metadata=op)
    # Another org's admin key, and a non-admin key of the operator org: PERMISSION_DENIED.
    for md in (other, bearer(plain.secret)):
        assert await code_of(adm.ListOrgs(admin_pb2.ListOrgsRequest(), metadata=md)) == grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(adm.CreateOrg(admin_pb2.CreateOrgRequest(name="x"), metadata=md)) == grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(adm.TopUp(admin_pb2.TopUpRequest(org="acme", amount_minor=500), metadata=md)) == grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(adm.CreateAgentToken(admin_pb2.CreateAgentTokenRequest(), metadata=md)) == grpc.StatusCode.PERMISSION_DENIED
    for md in ((), bearer("c3_key_forged_0000"), bearer("nonsense")):
        assert await code_of(adm.ListOrgs(admin_pb2.ListOrgsRequest(), metadata=md)) == grpc.StatusCode.UNAUTHENTICATED
    # Top-ups: positive integers only; they land on the named org.
    for bad in (0, -500):
        assert await code_of(adm.TopUp(admin_pb2.TopUpRequest(org="acme", amount_minor=bad), metadata=op)) == grpc.StatusCode.INVALID_ARGUMENT
    topped = await adm.TopUp(admin_pb2.TopUpRequest(org="acme", amount_minor=250), metadata=op)
    assert topped.org.balance_minor == 1250
    assert (await c.GetBalance(pb.GetBalanceRequest(), metadata=other)).balance_minor == 1250
    assert (await c.GetBalance(pb.GetBalanceRequest(), metadata=op)).balance_minor == 1000
    names = {o.name for o in (await adm.ListOrgs(admin_pb2.ListOrgsRequest(), metadata=op)).orgs}
    assert names == {"local", "acme"}
    # Plans: the org's admin may change its own; a plain key may not; unknown plans refused.
    changed = await adm.ChangePlan(admin_pb2.ChangePlanRequest(plan="team"), metadata=other)
    assert (changed.previous_plan, changed.org.plan) == ("pro", "team")
    assert (await c.WhoAmI(pb.WhoAmIRequest(), metadata=other)).plan == "team"
    acme_plain = await c.CreateApiKey(pb.CreateApiKeyRequest(name="dev"), metadata=other)
    assert await code_of(adm.ChangePlan(admin_pb2.ChangePlanRequest(plan="free"), metadata=bearer(acme_plain.secret))) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(adm.ChangePlan(admin_pb2.ChangePlanRequest(plan="gold"), metadata=other)) == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(adm.ChangePlan(admin_pb2.ChangePlanRequest(plan="free", org="local"), metadata=other)) == grpc.StatusCode.PERMISSION_DENIED


async def test_one_time_agent_secret_cannot_be_replayed(stack) -> None:  # type: ignore[no-untyped-def]
    app, boot, ch = stack.app, stack.boot, stack.channel
    adm = admin_pb2_grpc.AdminStub(ch)
    secret = (await adm.CreateAgentToken(admin_pb2.CreateAgentTokenRequest(), metadata=bearer(boot.api_key))).secret
    first = SimAgent(app.address, secret)
    reply = await first.register()
    assert reply.credential.startswith("c3_agent_") and secret not in reply.credential
    replay = SimAgent(app.address, secret)
    with pytest.raises(grpc.RpcError) as info:
        await replay.register()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The bootstrap secret of the local stack stays reusable; an unknown credential is refused.
    for _ in range(2):
        await SimAgent(app.address, boot.agent_secret).register()
    stranger = SimAgent(app.address, "c3_agent_a-000000000000_" + "0" * 64)
    stranger.credential = stranger.secret
    with pytest.raises(grpc.RpcError) as info:
        await stranger.connect()
        await stranger._call.read()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for agent in (first, replay, stranger):
        await agent.close()


async def beat_for(agent: SimAgent, seconds: float, job_id: str) -> None:
    """Stay alive (heartbeats) for `seconds`, as a host running a job does."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        await agent.heartbeat((job_id,))
        await asyncio.sleep(min(0.1, max(0.0, end - loop.time())))


async def run_job(agent: SimAgent, job_id: str, seconds: float) -> None:
    assignment = await agent.assignment()
    assert assignment.job.id == job_id
    await agent.report(job_id, S.JOB_STATE_SCHEDULING)
    await agent.report(job_id, S.JOB_STATE_RUNNING)
    await beat_for(agent, seconds, job_id)  # the job's runtime: what is being metered
    await agent.report(job_id, S.JOB_STATE_COMPLETED)


async def test_metered_per_second_and_charged_in_minor_units(stack) -> None:  # type: ignore[no-untyped-def]
    app, boot, ch = stack.app, stack.boot, stack.channel
    c, md = client(ch), bearer(boot.api_key)
    agent = SimAgent(app.address, boot.agent_secret, profile="h100-8x", gpu_class="h100")
    await agent.register()
    await agent.connect()
    job = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=md)).job
    await run_job(agent, job.id, 1.2)
    done = await eventually(lambda: app.jobs.jobs[job.id].state == State.COMPLETED and app.jobs.jobs[job.id])
    runtime = done.finished_at - done.started_at
    b = await c.GetBalance(pb.GetBalanceRequest(history=True), metadata=md)
    [charge] = b.charges
    assert charge.job_id == job.id and charge.gpu_profile == "h100-8x"
    assert abs(charge.seconds - runtime) < 1.0
    assert charge.amount_minor == cost_minor(round(charge.seconds * 1000), 2320) >= 1
    assert isinstance(b.balance_minor, int) and b.balance_minor == 1000 - charge.amount_minor
    assert b.month_spend_minor == charge.amount_minor
    await agent.close()


async def test_balance_exhaustion_stops_the_job_and_refuses_submits(tmp_path: Path) -> None:
    # 1p of credit on a 2320p/h profile lasts about 1.6 s.
    app, boot = await start_coordinator(config_for_test(tmp_path, starting_credit_minor=1))
    ch = channel(app.address)
    c, md = client(ch), bearer(boot.api_key)
    agent = SimAgent(app.address, boot.agent_secret, profile="h100-8x", gpu_class="h100")
    try:
        await agent.register()
        await agent.connect()
        job = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=md)).job
        await agent.assignment()
        await agent.report(job.id, S.JOB_STATE_SCHEDULING)
        await agent.report(job.id, S.JOB_STATE_RUNNING)
        beats = asyncio.create_task(beat_for(agent, 8.0, job.id))
        message = await agent.next(timeout=10)
        beats.cancel()
        assert message is not None and message.HasField("cancel"), message
        assert message.cancel.job_id == job.id
        await agent.report(job.id, S.JOB_STATE_CANCELED, message=message.cancel.reason)
        stopped = await eventually(lambda: app.jobs.jobs[job.id].state in (State.FAILED, State.CANCELED) and app.jobs.jobs[job.id])
        assert stopped.state == State.FAILED and stopped.failure_reason == Reason.BALANCE_EXHAUSTED
        assert 1.0 < stopped.finished_at - stopped.started_at < 4.0
        balance = (await c.GetBalance(pb.GetBalanceRequest(), metadata=md)).balance_minor
        assert balance <= 0
        with pytest.raises(grpc.RpcError) as info:
            await c.SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=md)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no credit" in (info.value.details() or "")
    finally:
        await agent.close()
        await ch.close()
        await app.stop()


async def test_a_plan_named_in_the_concurrency_limits_can_be_given_and_caps_the_org(
    tmp_path: Path,
) -> None:
    config = config_for_test(tmp_path, concurrency_limits=(("free", 0), ("gold", 1)))
    app, boot = await start_coordinator(config)
    ch = channel(app.address)
    adm, op = admin_pb2_grpc.AdminStub(ch), bearer(boot.api_key)
    agents = [SimAgent(app.address, boot.agent_secret) for _ in range(2)]
    try:
        created = await adm.CreateOrg(admin_pb2.CreateOrgRequest(name="acme", plan="gold"), metadata=op)
        assert created.org.plan == "gold"
        unknown = adm.CreateOrg(admin_pb2.CreateOrgRequest(name="beta", plan="platinum"), metadata=op)
        assert await code_of(unknown) == grpc.StatusCode.INVALID_ARGUMENT
        for agent in agents:
            await agent.register()
            await agent.connect()
        await eventually(lambda: len(app.scheduler.idle_agents()) == 2, what="two idle agents")
        c, md = client(ch), bearer(created.admin_key)
        first, second = [
            (await c.SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=md)).job for _ in range(2)
        ]
        # gold allows one job at a time: the second waits although an agent is idle.
        assert first.state == S.JOB_STATE_SCHEDULING
        assert second.state == S.JOB_STATE_PENDING and "limit" in second.message
    finally:
        for agent in agents:
            await agent.close()
        await ch.close()
        await app.stop()
