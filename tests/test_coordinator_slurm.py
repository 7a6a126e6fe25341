"""Cold provisioning through a real single-node Slurm (scripts/slurm-setup): an agent
submitted with sbatch registers, runs the job, and is scancelled after the idle timeout;
a --gres request Slurm cannot satisfy leaves the c3 job PENDING with a provider reason."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from c3.grpcutil import bearer, channel
from c3.manifest import build, sha256_file
from c3.storage_client import LocalBlob, StorageClient
from c3.tokens import TokenSigner, TokenVerifier
from c3.v1 import common_pb2
from c3.v1 import coordinator_pb2 as pb
from coordinator.testing import client, config_for_test, eventually, spec, start_coordinator
from storaged.server import StoragedConfig, StoragedServer

S = common_pb2
ROOT = Path(__file__).resolve().parents[1]
FINAL = {S.JOB_STATE_COMPLETED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELED, S.JOB_STATE_TIMED_OUT}

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


def squeue(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i %T"], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return out.stdout.split("\n")[:-1]


@pytest.fixture
async def stack(tmp_path: Path, slurm: None) -> AsyncIterator[tuple[object, str, str]]:
    signer = TokenSigner.load_or_create(tmp_path / "signing-key.pem")
    storaged = await StoragedServer.start(
        StoragedConfig(data_dir=tmp_path / "store", listen="127.0.0.1:0"),
        TokenVerifier.from_pem(signer.public_key_pem()),
    )
    (tmp_path / "pools.yaml").write_text(POOLS)
    config = config_for_test(
        tmp_path, storage_address=storaged.address, heartbeat_ms=500,
        pool_config=tmp_path / "pools.yaml",
    )  # fmt: skip
    app, boot = await start_coordinator(config)
    try:
        yield app, boot.api_key, str(tmp_path)
    finally:
        await app.stop()
        await storaged.stop()
    await eventually(lambda: not squeue("c3-agent-cpu") and not squeue("c3-agent-l40s-1x"),
                     30, "Slurm jobs of the pool to be gone after shutdown")  # fmt: skip


async def push_workspace(ch: object, key: str, root: Path) -> str:
    reply = await client(ch).IssueStorageToken(  # type: ignore[arg-type]
        pb.IssueStorageTokenRequest(), metadata=bearer(key)
    )
    entries, blobs = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest, size = sha256_file(path)
        blobs.append(LocalBlob(path, digest, size))
        entries.append(S.ManifestEntry(path=path.name, digest=digest, size=size))
    async with StorageClient(reply.storage_address, reply.token) as storage:
        await storage.push_files(blobs)
        return await storage.put_manifest(build(entries))


async def test_slurm_cold_provision_run_and_release(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app, key, _ = stack
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "run.sh").write_text("echo hello from slurm\n")
    md = bearer(key)
    async with channel(app.address) as ch:
        digest = await push_workspace(ch, key, ws)
        c = client(ch)
        job = (await c.SubmitJob(pb.SubmitJobRequest(
            spec=spec(gpu="cpu", provider="slurm", workspace_manifest_digest=digest)),
            metadata=md)).job  # fmt: skip
        await eventually(lambda: squeue("c3-agent-cpu"), 30, "an sbatch'ed agent")
        await eventually(lambda: app.jobs.jobs[job.id].state in FINAL, 120, "job to finish")
        got = (await c.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)).job
        assert got.state == S.JOB_STATE_COMPLETED, got.message
        assert got.provider == "slurm" and got.pool == "slurm-cpu"
        assert got.startup.warm_pool_hit is False
        events = c.StreamJobEvents(pb.StreamJobEventsRequest(job_id=job.id), metadata=md)
        assert "hello from slurm" in [e.log.text async for e in events if e.HasField("log")]
        # Idle timeout (1 s): the agent is released and its Slurm job ends.
        await eventually(lambda: not squeue("c3-agent-cpu"), 60, "squeue without the agent")

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
