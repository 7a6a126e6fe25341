"""docker.image: only Docker Hub references pass; the `docker run` the agent builds; the
engine probe that decides whether the agent advertises docker at all."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from pathlib import Path

import grpc
import pytest

from agent.docker import docker_run_argv, probe_docker, validate_image
from agent.resources import ResourceShare
from agent.sandbox import JobLayout, LaunchSpec, ReadOnlyMount, launch_argv
from c3.errors import InvalidArgument
from c3.grpcutil import bearer
from c3.v1 import common_pb2 as S
from c3.v1 import coordinator_pb2 as pb
from tests.harness.coordinator import client, push_workspace, start_agent_stack, submit_and_wait


@pytest.mark.unit
@pytest.mark.parametrize(("ref", "canonical"), [
    ("ubuntu", "docker.io/library/ubuntu"),
    ("python:3.11-slim", "docker.io/library/python:3.11-slim"),
    ("pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime",
     "docker.io/pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime"),
    ("docker.io/library/ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
    ("index.docker.io/nvidia/cuda:12.4.1-base-ubuntu22.04",
     "docker.io/nvidia/cuda:12.4.1-base-ubuntu22.04"),
    ("alpine@sha256:" + "a" * 64, "docker.io/library/alpine@sha256:" + "a" * 64),
])
def test_docker_hub_references_are_accepted(ref: str, canonical: str) -> None:
    assert validate_image(ref) == canonical


@pytest.mark.unit
@pytest.mark.parametrize(("ref", "message"), [
    ("ghcr.io/org/image:1", "names the registry 'ghcr.io'; only Docker Hub"),
    ("nvcr.io/nvidia/pytorch:24.01-py3", "only Docker Hub"),
    ("localhost:5000/x", "only Docker Hub"),
    ("localhost/x", "only Docker Hub"),
    ("Ubuntu", "not a valid image name"),
    ("ubuntu:bad tag", "invalid tag"),
    ("ubuntu@sha256:xyz", "digest must be"),
    ("", "empty"),
])
def test_other_registries_and_bad_names_are_refused_with_a_reason(ref: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        validate_image(ref)


@pytest.mark.unit
def test_docker_run_mounts_workspace_and_artifacts_and_passes_gpus_and_limits(
    tmp_path: Path
) -> None:
    layout = JobLayout.under(tmp_path / "job")
    layout.create()
    (layout.workspace / "src").mkdir()
    (layout.workspace / "src/train.sh").write_text("echo hi\n")
    share = ResourceShare(0.25, 2 << 30, 1 << 30, 4.0, 512, 1 << 30, 0)
    spec = LaunchSpec(layout=layout, script="train.sh", workdir="src", cuda_visible_devices="2,3",
                      docker_image="pytorch/pytorch:latest", container_name="c3-job1",
                      datasets=(ReadOnlyMount(tmp_path / "ds", "/data/mnist"),), share=share)
    launch = launch_argv(spec, None)
    argv, cwd = launch.argv, launch.cwd
    assert argv == docker_run_argv(spec, "src/train.sh", share) and cwd == layout.workspace / "src"
    assert argv[:3] == ["docker", "run", "--rm"]
    assert argv[-3:] == ["docker.io/pytorch/pytorch:latest", "bash", "/workspace/src/train.sh"]
    pairs = set(itertools.pairwise(argv))
    assert ("-v", f"{layout.workspace}:/workspace") in pairs
    assert ("-v", f"{layout.artifacts}:/c3/artifacts") in pairs
    assert ("-v", f"{tmp_path / 'ds'}:/data/mnist:ro") in pairs
    assert ("-w", "/workspace/src") in pairs and ("--name", "c3-job1") in pairs
    assert ("--gpus", '"device=2,3"') in pairs
    assert ("-e", "CUDA_VISIBLE_DEVICES=0,1") in pairs  # renumbered inside the container
    assert ("-e", "C3_ARTIFACTS_DIR=/c3/artifacts") in pairs
    assert ("--memory", str(2 << 30)) in pairs and ("--pids-limit", "512") in pairs
    assert ("--shm-size", str(1 << 30)) in pairs
    assert not any(a.startswith("PATH=") for a in argv)  # the image's own PATH
    # Never root, never a capability, never the host's network.
    assert ("--user", "1000:1000") in pairs and ("--cap-drop", "ALL") in pairs
    assert ("--security-opt", "no-new-privileges") in pairs and ("--network", "none") in pairs
    assert "host" not in argv
    no_gpu = LaunchSpec(layout=layout, script="src/train.sh", docker_image="ubuntu")
    assert "--gpus" not in launch_argv(no_gpu, None).argv


@pytest.mark.integration
async def test_engine_probe_matches_docker_info() -> None:
    works = False
    if shutil.which("docker"):
        proc = await asyncio.create_subprocess_exec(
            "docker", "info", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        works = await asyncio.wait_for(proc.wait(), 30) == 0
    problem = await probe_docker()
    assert (problem is None) == works, problem
    if not works:
        assert problem and "docker" in problem


@pytest.mark.integration
async def test_docker_jobs_are_checked_at_submit_and_never_reach_an_agent_without_docker(
    tmp_path: Path
) -> None:
    if await probe_docker() is None:
        pytest.skip("a container engine works here; the refusal path is for hosts without one")
    async with start_agent_stack(tmp_path) as stack:
        ws = tmp_path / "ws"
        ws.mkdir()
        (ws / "run.sh").write_text("echo in-container\n")
        digest = await push_workspace(stack, ws)
        c, md = client(stack.channel), bearer(stack.api_key)
        # Another registry: refused at submit with the rule, before any agent sees it.
        with pytest.raises(grpc.RpcError) as refused:
            await c.SubmitJob(pb.SubmitJobRequest(spec=S.JobSpec(
                project="demo", script="run.sh", workspace_manifest_digest=digest,
                docker_image="ghcr.io/org/image:1")), metadata=md)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "only Docker Hub" in (refused.value.details() or "")
        # A Hub image: the only agent has no container engine (it does not advertise
        # one), so the job waits, saying why, and the agent never runs it.
        job = (await c.SubmitJob(pb.SubmitJobRequest(spec=S.JobSpec(
            project="demo", script="run.sh", workspace_manifest_digest=digest,
            docker_image="python:3.11")), metadata=md)).job
        got = (await c.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)).job
        assert got.state == S.JOB_STATE_PENDING and not got.agent_id
        assert "container engine" in got.message
        # The agent still takes plain jobs.
        plain, _ = await submit_and_wait(stack, script="run.sh", workspace_manifest_digest=digest)
        assert plain.state == S.JOB_STATE_COMPLETED
