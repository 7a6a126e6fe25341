"""Push dispatch over real AgentGateway streams: warm hits, cancel, agent loss, isolation."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc import aio

from c3.grpcutil import bearer
from c3.tokens import TokenSigner, TokenVerifier
from c3.v1 import agent_pb2, common_pb2
from c3.v1 import coordinator_pb2 as pb
from tests.harness.coordinator import SimAgent, client, connected_agent, spec
from tests.harness.waiting import eventually

pytestmark = pytest.mark.unit


S = common_pb2


async def final_events(ch: aio.Channel, key: str, job_id: str) -> list[common_pb2.JobEvent]:
    stream = client(ch).StreamJobEvents(
        pb.StreamJobEventsRequest(job_id=job_id, follow=True), metadata=bearer(key)
    )
    return [e async for e in stream]


async def test_warm_agent_runs_job_and_streams_logs(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app, boot, ch = stack.app, stack.boot, stack.channel
    agent = await connected_agent(app, boot)
    c, md = client(ch), bearer(boot.api_key)
    submitted = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec(gpu="l40")), metadata=md)).job
    assignment = await agent.assignment()
    assert assignment.job.id == submitted.id
    assert assignment.storage_address == "127.0.0.1:7431"
    claims = TokenVerifier.from_pem(
        TokenSigner.load_or_create(tmp_path / "signing-key.pem").public_key_pem()
    ).verify(assignment.storage_token)
    assert claims.allows("write", f"/jobs/{submitted.id}/out.txt")
    assert not claims.allows("write", "/datasets/x") and not claims.allows(
        "delete", f"/jobs/{submitted.id}"
    )
    assert claims.read_manifests == ("ab" * 32,)

    await agent.report(submitted.id, S.JOB_STATE_SCHEDULING)  # pickup acknowledgement
    await agent.report(
        submitted.id, S.JOB_STATE_RUNNING,
        startup=S.StartupBreakdown(workspace_fetch_ms=12.5, environment_ms=30.0, script_start_ms=4.0),
    )  # fmt: skip
    await agent.log(submitted.id, "hello from c3 on l40s-1x", "second line")
    await agent.report(
        submitted.id,
        S.JOB_STATE_COMPLETED,
        artifacts_path=f"/jobs/{submitted.id}",
        artifacts_version=1,
    )

    events = await final_events(ch, boot.api_key, submitted.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    kinds = [(e.status.state if e.HasField("status") else e.log.text) for e in events]
    assert kinds == [
        S.JOB_STATE_PENDING, S.JOB_STATE_SCHEDULING, S.JOB_STATE_RUNNING,
        "hello from c3 on l40s-1x", "second line", S.JOB_STATE_COMPLETED,
    ]  # fmt: skip
    job = (await c.GetJob(pb.GetJobRequest(job_id=submitted.id), metadata=md)).job
    assert job.state == S.JOB_STATE_COMPLETED and job.gpu_profile == "l40s-1x"
    assert job.startup.warm_pool_hit is True
    assert job.startup.allocation_ms < 1000 and job.startup.agent_pickup_ms > 0
    assert job.startup.workspace_fetch_ms == 12.5 and job.startup.environment_ms == 30.0
    assert job.artifacts_path == f"/jobs/{submitted.id}" and job.artifacts_version == 1
    synced = (await c.MarkSynced(pb.MarkSyncedRequest(job_id=job.id), metadata=md)).job
    assert synced.state == S.JOB_STATE_SYNCED
    # The agent is idle again: the next job goes straight to it.
    second = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=md)).job
    assert (await agent.assignment()).job.id == second.id
    await agent.close()


async def test_placement_prefers_cached_project_and_matches_class(stack) -> None:  # type: ignore[no-untyped-def]
    app, boot, ch = stack.app, stack.boot, stack.channel
    plain = await connected_agent(app, boot)
    cached = await connected_agent(app, boot, cached_projects=("demo",))
    h100 = await connected_agent(app, boot, profile="h100-1x", gpu_class="h100")
    md = bearer(boot.api_key)
    await client(ch).SubmitJob(pb.SubmitJobRequest(spec=spec(gpu="l40")), metadata=md)
    assert (await cached.assignment()).job.spec.project == "demo"
    job = (
        await client(ch).SubmitJob(pb.SubmitJobRequest(spec=spec(gpu="h100-1x")), metadata=md)
    ).job
    assert (await h100.assignment()).job.id == job.id
    assert plain.inbox.empty()
    for a in (plain, cached, h100):
        await a.close()


async def test_cancel_reaches_the_running_agent(stack) -> None:  # type: ignore[no-untyped-def]
    app, boot, ch = stack.app, stack.boot, stack.channel
    agent = await connected_agent(app, boot)
    c, md = client(ch), bearer(boot.api_key)
    job = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=md)).job
    await agent.assignment()
    await agent.report(job.id, S.JOB_STATE_RUNNING)
    await eventually(lambda: app.jobs.jobs[job.id].state == S.JOB_STATE_RUNNING, what="RUNNING")
    reply = await c.CancelJob(pb.CancelJobRequest(job_ids=[job.id]), metadata=md)
    assert reply.jobs[0].state == S.JOB_STATE_RUNNING  # the agent has the last word
    message = await agent.next()
    assert message is not None and message.cancel.job_id == job.id
    assert message.cancel.state == S.JOB_STATE_CANCELED
    await agent.report(job.id, S.JOB_STATE_CANCELED, message="stopped by user")
    events = await final_events(ch, boot.api_key, job.id)
    assert events[-1].status.state == S.JOB_STATE_CANCELED
    await agent.close()


async def test_agent_lost_before_script_start_requeues(stack) -> None:  # type: ignore[no-untyped-def]
    app, boot, ch = stack.app, stack.boot, stack.channel
    first = await connected_agent(app, boot)
    c, md = client(ch), bearer(boot.api_key)
    job = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=md)).job
    await first.assignment()
    second = await connected_agent(app, boot)  # joined after the job was submitted
    second.keep_alive(0.1)  # only the first agent goes silent
    await first.drop()
    reassigned = await second.assignment(timeout=10)
    assert reassigned.job.id == job.id
    got = (await c.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)).job
    assert [t.state for t in got.transitions] == [
        S.JOB_STATE_PENDING, S.JOB_STATE_SCHEDULING, S.JOB_STATE_PENDING, S.JOB_STATE_SCHEDULING,
    ]  # fmt: skip
    assert "lost" in got.transitions[2].note
    assert got.agent_id == second.agent_id and got.startup.warm_pool_hit is False
    await second.close()
    await first.close()


async def test_agent_lost_after_script_start_fails_job(stack) -> None:  # type: ignore[no-untyped-def]
    app, boot, ch = stack.app, stack.boot, stack.channel
    agent = await connected_agent(app, boot)
    c, md = client(ch), bearer(boot.api_key)
    job = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=md)).job
    await agent.assignment()
    await agent.report(job.id, S.JOB_STATE_RUNNING)
    await eventually(lambda: app.jobs.jobs[job.id].state == S.JOB_STATE_RUNNING, what="RUNNING")
    await agent.drop()
    events = await final_events(ch, boot.api_key, job.id)
    assert events[-1].status.state == S.JOB_STATE_FAILED
    assert events[-1].status.failure_reason == S.FAILURE_REASON_AGENT_LOST
    await agent.close()


async def test_agent_cannot_report_on_another_agents_job(stack) -> None:  # type: ignore[no-untyped-def]
    app, boot, ch = stack.app, stack.boot, stack.channel
    owner = await connected_agent(app, boot)
    c, md = client(ch), bearer(boot.api_key)
    job = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=md)).job
    await owner.assignment()
    intruder = await connected_agent(app, boot)
    await intruder.report(job.id, S.JOB_STATE_COMPLETED)
    await intruder.log(job.id, "forged line")
    await intruder.heartbeat()  # processed after the two above, on the same stream
    await eventually(lambda: app.jobs.jobs[job.id].state == S.JOB_STATE_SCHEDULING)
    await owner.report(job.id, S.JOB_STATE_RUNNING)
    await owner.report(job.id, S.JOB_STATE_COMPLETED)
    events = await final_events(ch, boot.api_key, job.id)
    assert not any(e.HasField("log") for e in events)
    assert [e.status.state for e in events] == [
        S.JOB_STATE_PENDING, S.JOB_STATE_SCHEDULING, S.JOB_STATE_RUNNING, S.JOB_STATE_COMPLETED,
    ]  # fmt: skip
    # An illegal report from the owner is refused and the job stays as it was.
    await owner.report(job.id, S.JOB_STATE_RUNNING)
    await owner.heartbeat()
    assert app.jobs.jobs[job.id].state == S.JOB_STATE_COMPLETED
    for a in (owner, intruder):
        await a.close()


async def test_bad_agent_credentials_are_refused(stack) -> None:  # type: ignore[no-untyped-def]
    app, _boot, _ch = stack.app, stack.boot, stack.channel
    stranger = SimAgent(app.address, "c3_prov_nope_nope")
    with pytest.raises(grpc.RpcError) as info:
        await stranger.register()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await stranger.close()


async def test_docker_jobs_go_only_to_agents_with_a_container_engine(stack) -> None:  # type: ignore[no-untyped-def]
    app, boot, ch = stack.app, stack.boot, stack.channel
    plain = SimAgent(app.address, boot.agent_secret, profile="cpu", gpu_class="cpu")
    await plain.register()
    await plain.connect()
    docker_spec = spec()
    docker_spec.docker_image = "python:3.11"
    job = (await client(ch).SubmitJob(pb.SubmitJobRequest(spec=docker_spec), metadata=bearer(boot.api_key))).job
    pending = app.jobs.jobs[job.id]
    assert pending.state.name == "PENDING"
    assert "container engine" in pending.message
    assert pending.agent_id == ""  # placement happens in SubmitJob: nothing went to the agent


async def test_submit_jobs_places_a_sweep_in_order_and_refuses_it_whole(stack) -> None:  # type: ignore[no-untyped-def]
    app, boot, ch = stack.app, stack.boot, stack.channel
    agents = [await connected_agent(app, boot) for _ in range(2)]
    c, md = client(ch), bearer(boot.api_key)

    async def refused(request: pb.SubmitJobsRequest) -> str:
        with pytest.raises(grpc.RpcError) as info:
            await c.SubmitJobs(request, metadata=md)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return str(info.value.details())

    entry = pb.SubmitJobRequest
    bad = await refused(pb.SubmitJobsRequest(jobs=[entry(spec=spec()), entry(spec=spec(project="Bad Name"))]))
    assert bad.startswith("jobs[1]: spec.project")
    assert "jobs[0].supersedes_job_id" in await refused(
        pb.SubmitJobsRequest(jobs=[entry(spec=spec(), supersedes_job_id="j-old")])
    )
    assert "jobs is empty" in await refused(pb.SubmitJobsRequest())
    assert "at most 1000" in await refused(pb.SubmitJobsRequest(jobs=[entry(spec=spec())] * 1001))
    assert not (await c.ListJobs(pb.ListJobsRequest(), metadata=md)).jobs  # none half-made

    names = ["lr-0.1", "lr-0.01", "lr-0.001"]
    sweep = [entry(spec=spec(job_name=name)) for name in names]
    jobs = (await c.SubmitJobs(pb.SubmitJobsRequest(jobs=sweep), metadata=md)).jobs
    assert [j.spec.job_name for j in jobs] == names
    assert len({j.id for j in jobs}) == 3
    # Two warm agents take the first two at once; the third waits its turn.
    assert [j.state for j in jobs] == [S.JOB_STATE_SCHEDULING, S.JOB_STATE_SCHEDULING, S.JOB_STATE_PENDING]
    assert all(j.startup.warm_pool_hit for j in jobs[:2])
    assigned = {(await a.assignment()).job.id for a in agents}
    assert assigned == {jobs[0].id, jobs[1].id}
    for a in agents:
        await a.close()


async def test_batched_agent_reports_apply_in_order_and_one_bad_item_spoils_nothing(stack) -> None:  # type: ignore[no-untyped-def]
    app, boot, ch = stack.app, stack.boot, stack.channel
    agent = await connected_agent(app, boot)
    c, md = client(ch), bearer(boot.api_key)
    job = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=md)).job
    await agent.assignment()

    def status(job_id: str, state: int) -> agent_pb2.AgentReport:
        return agent_pb2.AgentReport(status=agent_pb2.JobStatusUpdate(job_id=job_id, state=state))  # type: ignore[arg-type]

    line = common_pb2.LogLine(text="fast job output", index=1)
    items = [
        status(job.id, S.JOB_STATE_RUNNING),
        agent_pb2.AgentReport(logs=agent_pb2.LogBatch(job_id=job.id, lines=[line])),
        status("j-not-mine", S.JOB_STATE_COMPLETED),  # refused, and the rest still applies
        status(job.id, S.JOB_STATE_COMPLETED),
    ]
    await agent.send(agent_pb2.AgentMessage(reports=agent_pb2.AgentReports(items=items)))
    events = await final_events(ch, boot.api_key, job.id)
    kinds = [(e.status.state if e.HasField("status") else e.log.text) for e in events]
    assert kinds == [
        S.JOB_STATE_PENDING, S.JOB_STATE_SCHEDULING, S.JOB_STATE_RUNNING,
        "fast job output", S.JOB_STATE_COMPLETED,
    ]  # fmt: skip
    await agent.close()
