"""`docker.image` jobs: the `docker run` that runs one (references are checked by
`c3.dockerref`: Docker Hub only).

The container gets the workspace at /workspace, the artifacts dir at /c3/artifacts, the
job's exact environment (no host variables), the agent's GPUs, and the job's resource
share as docker's own cgroup limits (docker puts the container in a cgroup of its own).
It runs as the job's non-root uid with every capability dropped and no-new-privileges,
on docker's bridge network (`egress`) or none; never the host's network. Docker's bridge
cannot be given the agent's namespace filter: the host's addresses stay reachable through
the bridge's gateway unless the operator drops them in the DOCKER-USER chain
(docs/security.md).
"""

from __future__ import annotations

import asyncio
import shutil

from agent.resources import ResourceShare
from agent.sandbox import (
    SANDBOX_ARTIFACTS,
    SANDBOX_WORKSPACE,
    SYSTEM_PATH,
    LaunchSpec,
    job_environment,
)
from c3.dockerref import validate_image


def docker_run_argv(spec: LaunchSpec, script: str, share: ResourceShare | None = None,
                    docker: str = "docker") -> list[str]:
    """`docker run` for one job: `bash /workspace/<script>` (or the job's command, which
    docker itself looks up and runs: 127 when it is not found) in the image."""
    image = validate_image(spec.docker_image)
    workdir = spec.workdir.strip("/")
    argv = [docker, "run", "--rm", "--init", "--pull", "missing",
            "--network", "bridge" if spec.docker_egress else "none",
            "--user", spec.docker_user, "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges"]
    if spec.container_name:
        argv += ["--name", spec.container_name]
    argv += ["-v", f"{spec.layout.workspace}:{SANDBOX_WORKSPACE}",
             "-v", f"{spec.layout.artifacts}:{SANDBOX_ARTIFACTS}",
             "-v", f"{spec.layout.tmp}:/tmp",
             "-w", f"{SANDBOX_WORKSPACE}/{workdir}" if workdir else SANDBOX_WORKSPACE]
    for mount in spec.datasets:
        argv += ["-v", f"{mount.host}:{mount.target}:ro"]
    env = job_environment(spec, sandboxed=True)
    env.pop("PATH", None)  # the image's own PATH (its python, its tools)
    for key in sorted(env):
        argv += ["-e", f"{key}={env[key]}"]
    if spec.cuda_visible_devices:
        argv += ["--gpus", f'"device={spec.cuda_visible_devices}"']
        argv += ["-e", "CUDA_VISIBLE_DEVICES=" + ",".join(
            str(i) for i in range(len(spec.cuda_visible_devices.split(","))))]
    if share is not None:
        if share.memory_bytes:
            argv += ["--memory", str(share.memory_bytes),
                     "--memory-reservation", str(share.memory_high_bytes)]
        argv += ["--cpu-shares", str(share.cpu_shares_v1)]
        if share.pids_max:
            argv += ["--pids-limit", str(share.pids_max)]
        if share.shm_bytes:
            argv += ["--shm-size", str(share.shm_bytes)]
    if spec.command:
        return [*argv, image, *spec.command]
    return [*argv, image, "bash", f"{SANDBOX_WORKSPACE}/{script}"]


def docker_client_env() -> dict[str, str]:
    """The docker CLI's own environment: nothing of the agent's secrets."""
    return {"PATH": SYSTEM_PATH, "HOME": "/root"}


async def probe_docker() -> str | None:
    """None when a container engine answers `docker info`, else why not."""
    exe = shutil.which("docker", path=SYSTEM_PATH)
    if exe is None:
        return "docker is not installed"
    try:
        proc = await asyncio.create_subprocess_exec(
            exe, "info", "--format", "{{.ServerVersion}}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    except (OSError, TimeoutError) as exc:
        return f"`docker info` failed: {exc}"
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        return f"`docker info` failed: {lines[-1] if lines else proc.returncode}"
    return None
