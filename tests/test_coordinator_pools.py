"""Warm pools with the local provider: real agent processes started and released by the
coordinator; baseline at start, growth under a burst up to the cap, back after idle."""

from __future__ import annotations

from pathlib import Path

from c3.grpcutil import bearer, channel
from c3.v1 import common_pb2
from c3.v1 import coordinator_pb2 as pb
from coordinator.testing import client, config_for_test, eventually, spec, start_coordinator

S = common_pb2
FINAL = {S.JOB_STATE_COMPLETED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELED, S.JOB_STATE_TIMED_OUT}

POOL = """
pools:
  - {profile: cpu, provider: local, baseline: 1, cap: 2, idle_timeout_s: 1}
providers:
  local: {agent_args: ["--no-cgroups"]}
"""


async def test_local_pool_baseline_burst_and_shrink(tmp_path: Path) -> None:
    pool_file = tmp_path / "pools.yaml"
    pool_file.write_text(POOL)
    app, boot = await start_coordinator(
        config_for_test(tmp_path, pool_config=pool_file, heartbeat_ms=500)
    )
    assert app.pools is not None
    provider = app.pools.pools[0].provider
    pool = app.pools.pools[0]

    def members() -> int:
        return sum(1 for a in app.scheduler.known_agents() if a.pool == "cpu" and a.connected
                   and not a.releasing)  # fmt: skip

    try:
        # Baseline: one warm agent, started by the coordinator itself.
        await eventually(lambda: len(app.scheduler.idle_agents()) == 1, 60, "baseline agent")
        assert provider.running() == 1  # type: ignore[attr-defined]
        md = bearer(boot.api_key)
        async with channel(app.address) as ch:
            c = client(ch)
            pinned = (await c.SubmitJob(
                pb.SubmitJobRequest(spec=spec(gpu="cpu", provider="slurm")), metadata=md)).job
            assert (await c.GetJob(pb.GetJobRequest(job_id=pinned.id), metadata=md)).job.message \
                == "provider slurm unavailable"  # fmt: skip
            await c.CancelJob(pb.CancelJobRequest(job_ids=[pinned.id]), metadata=md)

            jobs = [
                (await c.SubmitJob(pb.SubmitJobRequest(spec=spec(gpu="cpu")), metadata=md)).job
                for _ in range(3)
            ]
            peak = 0

            def grown() -> bool:
                nonlocal peak
                peak = max(peak, members(), provider.running())  # type: ignore[attr-defined]
                return members() == 2

            await eventually(grown, 60, "pool grown to its cap")
            first = (await c.GetJob(pb.GetJobRequest(job_id=jobs[0].id), metadata=md)).job
            assert first.startup.warm_pool_hit is True and first.pool == "cpu"
            live = [j.id for j in jobs if app.jobs.jobs[j.id].state not in FINAL]
            if live:
                await c.CancelJob(pb.CancelJobRequest(job_ids=live), metadata=md)
            await eventually(
                lambda: all(app.jobs.jobs[j.id].state in FINAL for j in jobs), 60, "jobs over"
            )
            assert peak <= 2 and provider.running() <= 2  # type: ignore[attr-defined]
            # Idle timeout (1 s): back to the baseline of one agent, the extra one exits.
            await eventually(
                lambda: members() == 1 and provider.running() == 1,  # type: ignore[attr-defined]
                60,
                "pool back to baseline",
            )
            assert not pool.error
    finally:
        await app.stop()
    assert provider.running() == 0  # type: ignore[attr-defined]
