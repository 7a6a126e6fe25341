"""Warm pools with the local provider: real agent processes started and released by the
coordinator; baseline at start, growth under a burst up to the cap, back after idle; an
agent that exits before registering is the pool's error at once; the pool file's
provider options are checked."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from c3.errors import ConfigError
from c3.grpcutil import bearer, channel
from c3.v1 import agent_pb2, common_pb2
from c3.v1 import coordinator_pb2 as pb
from coordinator.agents import AgentState
from coordinator.poolconfig import ProviderOptions, load_pool_config
from tests.harness.coordinator import ENDED, client, pool_stack, push_tree, spec
from tests.harness.waiting import eventually

S = common_pb2


POOL = """
pools:
  - {profile: cpu, provider: local, baseline: 1, cap: 2, idle_timeout_s: 1}
providers:
  local: {agent_args: ["--no-cgroups"]}
"""


@pytest.mark.integration
async def test_local_pool_baseline_burst_and_shrink(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "run.sh").write_text("sleep 120\n")  # busy until the test cancels it
    async with pool_stack(tmp_path, POOL) as stack:
        app, key = stack.app, stack.api_key
        assert app.pools is not None
        pool = app.pools.pools[0]
        provider = app.pools.provider_of(pool)

        def members() -> int:
            return sum(1 for a in app.scheduler.known_agents() if a.pool == "cpu"
                       and a.connected and not a.releasing)  # fmt: skip

        # Baseline: one warm agent, started by the coordinator itself.
        await eventually(lambda: len(app.scheduler.idle_agents()) == 1, 60, "baseline agent")
        assert provider.running() == 1  # type: ignore[attr-defined]
        md = bearer(key)
        async with channel(app.address) as ch:
            c = client(ch)
            digest = await push_tree(ch, key, ws)
            pinned = (await c.SubmitJob(
                pb.SubmitJobRequest(spec=spec(gpu="cpu", provider="slurm")), metadata=md)).job
            assert (await c.GetJob(pb.GetJobRequest(job_id=pinned.id), metadata=md)).job.message \
                == "provider slurm unavailable"  # fmt: skip
            await c.CancelJob(pb.CancelJobRequest(job_ids=[pinned.id]), metadata=md)

            # A burst of three long jobs: the pool grows to its cap (2), not beyond.
            burst = spec(gpu="cpu", workspace_manifest_digest=digest)
            jobs = [
                (await c.SubmitJob(pb.SubmitJobRequest(spec=burst), metadata=md)).job
                for _ in range(3)
            ]
            peak = 0

            def grown() -> bool:
                nonlocal peak
                peak = max(peak, members(), provider.running())  # type: ignore[attr-defined]
                return members() == 2 and sum(
                    app.jobs.jobs[j.id].state == S.JOB_STATE_RUNNING for j in jobs
                ) == 2

            await eventually(grown, 60, "pool grown to its cap, two jobs running")
            first = (await c.GetJob(pb.GetJobRequest(job_id=jobs[0].id), metadata=md)).job
            assert first.startup.warm_pool_hit is True and first.pool == "cpu"
            third = app.jobs.jobs[jobs[2].id]
            assert third.state == S.JOB_STATE_PENDING, third.state
            await c.CancelJob(pb.CancelJobRequest(job_ids=[j.id for j in jobs]), metadata=md)
            await eventually(
                lambda: all(app.jobs.jobs[j.id].state in ENDED for j in jobs), 60, "jobs over"
            )
            assert peak <= 2 and provider.running() <= 2  # type: ignore[attr-defined]
            # Idle timeout (1 s): back to the baseline of one agent, the extra one exits.
            await eventually(
                lambda: members() == 1 and provider.running() == 1,  # type: ignore[attr-defined]
                60,
                "pool back to baseline",
            )
            assert not pool.error
    assert provider.running() == 0  # type: ignore[attr-defined]

BROKEN_POOL = """
pools:
  - {profile: cpu, provider: local, baseline: 0, cap: 1, register_timeout_s: 300}
providers:
  local: {agent_args: ["--no-such-flag"]}
"""


@pytest.mark.integration
async def test_local_agent_that_exits_before_registering_fails_at_once(tmp_path: Path) -> None:
    """An agent process that dies at start is the pool's readable error within seconds,
    not after register_timeout_s (300 s here); the pool retries with backoff."""
    async with pool_stack(tmp_path, BROKEN_POOL) as stack:
        app, key = stack.app, stack.api_key
        assert app.pools is not None
        provider = app.pools.provider_of(app.pools.pools[0])
        md = bearer(key)
        async with channel(app.address) as ch:
            c = client(ch)
            started = time.monotonic()
            job = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec(gpu="cpu")), metadata=md)).job

            async def message() -> str:
                got = (await c.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)).job
                assert got.state == S.JOB_STATE_PENDING, got.state
                return got.message

            async def failed() -> bool:
                return "before registering" in await message()

            await eventually(failed, 30, "the early failure in the job's message")
            elapsed = time.monotonic() - started
            text = await message()
            found = re.fullmatch(
                r"provider local: local agent pid \d+ exited with status 2 before registering: "
                r"(.*); see (\S+/agent\.log); retrying",
                text,
            )
            assert found, text
            assert "unrecognized arguments: --no-such-flag" in found[1], text
            assert "--no-such-flag" in Path(found[2]).read_text()
            assert elapsed < 30, elapsed  # well before the 300 s registration timeout
            # Retry with backoff: a second agent is started (and fails the same way).
            await eventually(
                lambda: (tmp_path / "agents" / "local-cpu-2" / "agent.log").exists(),
                30, "a retry after the backoff",
            )  # fmt: skip
            listed = await c.ListJobs(pb.ListJobsRequest(), metadata=md)
            assert [j.message for j in listed.jobs if j.id == job.id] == [await message()]
    assert provider.running() == 0  # type: ignore[attr-defined]

@pytest.mark.unit
@pytest.mark.parametrize(
    ("providers", "expected"),
    [
        ('local: {agent_args: "--no-cgroups"}',
         r"providers\.local\.agent_args: expected a list of strings"),
        ("local: {sbatch_args: [--x]}", r"providers\.local\.sbatch_args: unknown option for local"),
        ("slurm: {status_interval_s: 0}", r"providers\.slurm\.status_interval_s: expected a number"),
        ("slurm: [--x]", r"providers\.slurm: expected a mapping of options"),
        ("local: {job_network: host}", r"providers\.local\.job_network: expected egress or none"),
    ],
)  # fmt: skip
def test_pool_file_provider_options_are_checked(
    tmp_path: Path, providers: str, expected: str
) -> None:
    pool_file = tmp_path / "pools.yaml"
    pool_file.write_text(f"pools: [{{profile: cpu}}]\nproviders:\n  {providers}\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(pool_file))}: {expected}"):
        load_pool_config(pool_file, frozenset({"cpu"}))


@pytest.mark.unit
@pytest.mark.parametrize(
    ("pools", "expected"),
    [
        ("pools: 3", r"`pools` must be a list"),
        ("pools: [{profile: cpu, register_timeout_s: 0}]",
         r"pools\[0\]\.register_timeout_s: expected a number of seconds above 0"),
        ("pools: [{profile: cpu, idle_timeout_s: -1}]",
         r"pools\[0\]\.idle_timeout_s: expected a number of seconds above 0"),
    ],
)  # fmt: skip
def test_pool_file_bad_pool_values_are_one_clear_error(
    tmp_path: Path, pools: str, expected: str
) -> None:
    pool_file = tmp_path / "pools.yaml"
    pool_file.write_text(pools + "\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(pool_file))}: {expected}"):
        load_pool_config(pool_file, frozenset({"cpu"}))


@pytest.mark.unit
def test_pool_file_provider_options_are_read(tmp_path: Path) -> None:
    pool_file = tmp_path / "pools.yaml"
    pool_file.write_text(
        "pools: [{profile: cpu, provider: slurm}]\nproviders:\n"
        '  slurm: {partition: gpu, sbatch_args: ["--begin=now+60"], status_interval_s: 5}\n'
    )
    options = load_pool_config(pool_file, frozenset({"cpu"})).providers["slurm"]
    assert options == ProviderOptions(partition="gpu", sbatch_args=("--begin=now+60",),
                                      status_interval_s=5.0)  # fmt: skip
    assert options.launch_args == ()  # the agent's own default: egress


@pytest.mark.unit
def test_pool_job_network_reaches_the_agents_it_starts(tmp_path: Path) -> None:
    pool_file = tmp_path / "pools.yaml"
    pool_file.write_text("pools: [{profile: cpu}]\nproviders:\n"
                         '  local: {agent_args: ["--no-cgroups"], job_network: none}\n')
    options = load_pool_config(pool_file, frozenset({"cpu"})).providers["local"]
    assert options.launch_args == ("--no-cgroups", "--job-network", "none")


@pytest.mark.integration
async def test_each_registering_agent_takes_its_own_start_not_the_oldest(tmp_path: Path) -> None:
    # The agents point at a dead address (the last --coordinator wins), so they never
    # register by themselves: the test plays their registrations, in the wrong order.
    pools = """
pools:
  - {profile: cpu, provider: local, baseline: 2, cap: 2, idle_timeout_s: 300}
providers:
  local: {agent_args: ["--no-cgroups", "--coordinator", "127.0.0.1:1"]}
"""
    async with pool_stack(tmp_path, pools) as stack:
        app = stack.app
        manager = app.pools
        assert manager is not None
        pool = manager.pools[0]
        await eventually(lambda: len(pool.starting) == 2, what="two starts")
        first, second = pool.starting
        for started in (first, second):  # the provider hands the agent its launch id
            cmdline = Path(f"/proc/{started.handle.pid}/cmdline").read_bytes().split(b"\0")
            assert started.launch_id.encode() in cmdline
        caps = agent_pb2.AgentCapabilities
        late = AgentState("a-late", caps(profile="cpu", provider="local", launch_id=second.launch_id))
        manager.agent_connected(late)
        assert pool.members["a-late"] is second.handle  # released, it stops its own process
        assert pool.starting == [first]
        by_hand = AgentState("a-by-hand", caps(profile="cpu", provider="local"))
        manager.agent_connected(by_hand)
        assert pool.members["a-by-hand"] is None  # nobody's start: never released by the pool
        assert pool.starting == [first]
