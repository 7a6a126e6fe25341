"""Cold provisioning through a real single-node Slurm (scripts/slurm-setup): an agent
submitted with sbatch registers, runs the job, and is scancelled after the idle timeout;
a --gres request Slurm cannot satisfy leaves the c3 job PENDING with a provider reason;
while the agent's batch job waits the c3 job says Slurm's state and reason; an agent
that ends before registering is a failure at once, naming its .out file."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from c3.grpcutil import bearer, channel
from c3.v1 import common_pb2
from c3.v1 import coordinator_pb2 as pb
from c3.v1.coordinator_pb2_grpc import CoordinatorStub
from tests.harness.coordinator import ENDED, Stack, client, pool_stack, push_tree, spec
from tests.harness.waiting import eventually

pytestmark = pytest.mark.integration


S = common_pb2
ROOT = Path(__file__).resolve().parents[1]

POOLS = """
pools:
  - {profile: cpu, provider: slurm, baseline: 0, cap: 1, idle_timeout_s: 1}
  - {profile: l40s-1x, provider: slurm, baseline: 0, cap: 1, idle_timeout_s: 1}
providers:
  slurm: {agent_args: ["--allow-unsandboxed", "--no-cgroups"]}
"""


@pytest.fixture(scope="session")
def slurm() -> None:
    if os.geteuid() != 0:
        pytest.skip("Slurm tests need root (scripts/slurm-setup installs and starts daemons)")
    done = subprocess.run([str(ROOT / "scripts" / "slurm-setup")], capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    if done.returncode == 3:
        pytest.skip(f"apt could not install slurm-wlm munge: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr


def slurm_state(job_id: str) -> str:
    """STATE|REASON of one Slurm job, finished ones included."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T|%r"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def queued_under(work_dir: Path) -> list[str]:
    """Slurm jobs still queued or running whose working directory is `work_dir` (the
    pool's agents directory): this test's agents, not another run's."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%Z"], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return [line for line in out.stdout.splitlines() if line.endswith(f"|{work_dir}")]


@asynccontextmanager
async def slurm_stack(tmp_path: Path, pools: str) -> AsyncIterator[Stack]:
    """pool_stack with a Slurm pool file; on exit, every Slurm job the pool submitted
    must be gone (coordinator stop scancels what it started)."""
    async with pool_stack(tmp_path, pools) as started:
        yield started
    await eventually(lambda: not queued_under(tmp_path / "agents"), 30,
                     "Slurm jobs of the pool to be gone after shutdown")  # fmt: skip


@pytest.fixture
async def stack(tmp_path: Path, slurm: None) -> AsyncIterator[Stack]:
    async with slurm_stack(tmp_path, POOLS) as started:
        yield started


async def test_slurm_cold_provision_run_and_release(stack: Stack, tmp_path: Path) -> None:
    app, key = stack.app, stack.api_key
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "run.sh").write_text("echo hello from slurm\n")
    md = bearer(key)
    async with channel(app.address) as ch:
        digest = await push_tree(ch, key, ws)
        c = client(ch)
        job = (await c.SubmitJob(pb.SubmitJobRequest(
            spec=spec(gpu="cpu", provider="slurm", workspace_manifest_digest=digest)),
            metadata=md)).job  # fmt: skip
        await eventually(lambda: queued_under(tmp_path / "agents"), 30, "an sbatch'ed agent")
        await eventually(lambda: app.jobs.jobs[job.id].state in ENDED, 120, "job to finish")
        got = (await c.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)).job
        assert got.state == S.JOB_STATE_COMPLETED, got.message
        assert got.provider == "slurm" and got.pool == "slurm-cpu"
        assert got.startup.warm_pool_hit is False
        events = c.StreamJobEvents(pb.StreamJobEventsRequest(job_id=job.id), metadata=md)
        assert "hello from slurm" in [e.log.text async for e in events if e.HasField("log")]
        # Idle timeout (1 s): the agent is released and its Slurm job ends.
        await eventually(lambda: not queued_under(tmp_path / "agents"), 60, "squeue without the agent")

        # A GPU gres this node cannot give: the c3 job waits with a provider reason.
        gpu = (await c.SubmitJob(pb.SubmitJobRequest(
            spec=spec(gpu="l40", provider="slurm", workspace_manifest_digest=digest)),
            metadata=md)).job  # fmt: skip

        def provider_reason() -> bool:
            j = app.jobs.jobs[gpu.id]
            assert j.state == S.JOB_STATE_PENDING, j.state  # never stuck in SCHEDULING
            return j.message.startswith(("provider slurm", "provisioning a l40s-1x"))

        await eventually(provider_reason, 30, "a provider reason")
        message = (await c.GetJob(pb.GetJobRequest(job_id=gpu.id), metadata=md)).job.message
        assert "slurm" in message.lower(), message
        await c.CancelJob(pb.CancelJobRequest(job_ids=[gpu.id]), metadata=md)


async def pending_message(c: CoordinatorStub, key: str, job_id: str) -> str:
    got = (await c.GetJob(pb.GetJobRequest(job_id=job_id), metadata=bearer(key))).job
    assert got.state == S.JOB_STATE_PENDING, got.state
    return str(got.message)


HELD = """
pools:
  - {profile: cpu, provider: slurm, cap: 1, register_timeout_s: 300}
providers:
  slurm: {sbatch_args: ["--begin=now+3600"], agent_args: ["--allow-unsandboxed"]}
"""


async def test_slurm_pending_reason_reaches_the_job(tmp_path: Path, slurm: None) -> None:
    """An agent's batch job held by Slurm (--begin in an hour): the c3 job's message names
    the Slurm job, PENDING and Slurm's reason, BeginTime; stopping the coordinator
    scancels it."""
    async with slurm_stack(tmp_path, HELD) as stack:
        app, key = stack.app, stack.api_key
        async with channel(app.address) as ch:
            c = client(ch)
            job = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec(gpu="cpu", provider="slurm")),
                                     metadata=bearer(key))).job  # fmt: skip

            async def held() -> re.Match[str] | None:
                return re.fullmatch(
                    r"provisioning a cpu agent through slurm \(Slurm job (\d+) PENDING: "
                    r"BeginTime\)",
                    await pending_message(c, key, job.id),
                )

            slurm_job = (await eventually(held, 20, "Slurm's reason in the job's message"))[1]
            assert slurm_state(slurm_job) == "PENDING|BeginTime"
            listed = await c.ListJobs(pb.ListJobsRequest(), metadata=bearer(key))
            assert [j.message for j in listed.jobs if j.id == job.id] == [
                f"provisioning a cpu agent through slurm (Slurm job {slurm_job} PENDING: BeginTime)"
            ]
    assert slurm_state(slurm_job).startswith("CANCELLED|"), slurm_state(slurm_job)


BROKEN = """
pools:
  - {profile: cpu, provider: slurm, cap: 1, register_timeout_s: 300}
providers:
  slurm: {agent_args: ["--no-such-flag"]}
"""


async def test_slurm_agent_that_ends_before_registering_fails_at_once(
    tmp_path: Path, slurm: None
) -> None:
    """The agent's batch job fails at start (c3-agent refuses a flag): the c3 job says so
    within seconds, not after register_timeout_s (300 s), and names the .out file."""
    async with slurm_stack(tmp_path, BROKEN) as stack:
        app, key = stack.app, stack.api_key
        async with channel(app.address) as ch:
            c = client(ch)
            started = time.monotonic()
            job = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec(gpu="cpu", provider="slurm")),
                                     metadata=bearer(key))).job  # fmt: skip

            async def ended() -> re.Match[str] | None:
                return re.fullmatch(
                    r"provider slurm: Slurm job (\d+) ended \(FAILED\) before its agent "
                    r"registered: (.*); see (\S+/slurm-\d+\.out); retrying",
                    await pending_message(c, key, job.id),
                )

            found = await eventually(ended, 30, "the early failure in the job's message")
            elapsed = time.monotonic() - started
            slurm_job, last, out_file = found[1], found[2], Path(found[3])
            assert elapsed < 30, elapsed  # well before the 300 s registration timeout
            assert out_file == tmp_path / "agents" / f"slurm-{slurm_job}.out"
            assert "unrecognized arguments: --no-such-flag" in last
            assert last in out_file.read_text()
            assert slurm_state(slurm_job) == "FAILED|NonZeroExitCode"
