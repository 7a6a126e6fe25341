"""How a job's script is launched: the exact environment, and the bubblewrap sandbox.

Inside the sandbox the job sees its workspace at /workspace, its artifacts dir at
/c3/artifacts, a private /tmp, datasets read-only at their mount paths and the host's
system directories read-only; nothing else of the host (no agent state, no credentials,
no other jobs). Without the sandbox the same environment scrubbing still applies.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from agent.resources import ResourceShare
from c3.errors import InvalidArgument
from c3.manifest import check_relative_path

log = logging.getLogger(__name__)

BWRAP = "/usr/bin/bwrap"
SANDBOX_WORKSPACE = "/workspace"
SANDBOX_ARTIFACTS = "/c3/artifacts"
SANDBOX_TMP = "/tmp"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Host directories a job may read (never write). Only those that exist are bound.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")
# Mount targets a dataset may not take: they would hide the system or the job's own dirs.
RESERVED_TARGETS = (*SYSTEM_DIRS, "/proc", "/dev", "/sys", "/tmp", SANDBOX_WORKSPACE, "/c3")


@dataclass(frozen=True)
class JobLayout:
    """Host-side directories of one job (all under the agent's data dir)."""

    workspace: Path
    artifacts: Path
    tmp: Path

    @classmethod
    def under(cls, job_dir: Path) -> JobLayout:
        return cls(job_dir / "workspace", job_dir / "artifacts", job_dir / "tmp")

    def create(self) -> None:
        for path in (self.workspace, self.artifacts, self.tmp):
            path.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class ReadOnlyMount:
    host: Path
    target: str


@dataclass(frozen=True)
class LaunchSpec:
    layout: JobLayout
    script: str  # relative to the workspace root
    workdir: str = ""  # relative to the workspace root
    datasets: tuple[ReadOnlyMount, ...] = ()
    venv: Path | None = None
    # Host paths the job must read at the same path (a venv's base interpreter).
    extra_read_only: tuple[Path, ...] = ()
    cuda_visible_devices: str = ""
    term: str = "dumb"
    extra_env: dict[str, str] = field(default_factory=dict)
    shm_bytes: int = 0  # size of the job's private /dev/shm (0: bwrap's default)
    docker_image: str = ""  # run inside this Docker Hub image instead of bwrap
    container_name: str = ""
    share: ResourceShare | None = None  # docker jobs: limits passed to `docker run`
    # `deploy --array`: this job's place in its array (array_size 0: not in an array).
    array_index: int = 0
    array_size: int = 0
    # `c3 run -- CMD ARGS...`: this argv instead of `bash <script>` (script is then unused).
    command: tuple[str, ...] = ()


def check_mount_target(target: str) -> str:
    """A dataset mount path: absolute, normalised, not over the system or the job's dirs."""
    path = PurePosixPath(target)
    if not path.is_absolute() or ".." in path.parts or str(path) != target.rstrip("/"):
        raise InvalidArgument(
            f"dataset mount {target!r} must be an absolute path without '..' (e.g. /data/name)"
        )
    for reserved in ("/", *RESERVED_TARGETS):
        if str(path) == reserved or (path.is_relative_to(reserved) and reserved != "/"):
            raise InvalidArgument(
                f"dataset mount {target!r} would cover {reserved}; mount it under /data instead"
            )
    return str(path)


def check_script(layout: JobLayout, script: str, workdir: str) -> str:
    """The script's path relative to the workspace root; it must be a file inside it."""
    candidates = [script]
    if workdir:
        candidates.append(f"{workdir.strip('/')}/{script}")
    for relative in candidates:
        try:
            check_relative_path(relative)
        except InvalidArgument:
            continue
        host = layout.workspace / relative
        real = Path(os.path.realpath(host))
        root = Path(os.path.realpath(layout.workspace))
        if host.is_file() and (real == root or root in real.parents):
            return relative
    raise InvalidArgument(
        f"script {script!r} is not a file in the workspace; check `script:` in .c3 "
        "(it is relative to the .c3 file and must not be ignored)"
    )


def job_environment(spec: LaunchSpec, sandboxed: bool) -> dict[str, str]:
    """Exactly the documented variables; nothing is inherited from the agent's environment."""
    if sandboxed:
        workspace, artifacts, tmp = SANDBOX_WORKSPACE, SANDBOX_ARTIFACTS, SANDBOX_TMP
    else:
        workspace = str(spec.layout.workspace)
        artifacts = str(spec.layout.artifacts)
        tmp = str(spec.layout.tmp)
    workdir = spec.workdir.strip("/")
    env = {
        "C3_JOB_WORKDIR": f"{workspace}/{workdir}" if workdir else workspace,
        "C3_ARTIFACTS_DIR": artifacts,
        "PYTHONUNBUFFERED": "1",
        "TERM": spec.term or "dumb",
        "HOME": workspace,
        "PATH": SYSTEM_PATH,
        "TMPDIR": tmp,
        "CUDA_VISIBLE_DEVICES": spec.cuda_visible_devices,
    }
    if spec.array_size > 0:
        env["C3_ARRAY_INDEX"] = str(spec.array_index)
        env["C3_ARRAY_SIZE"] = str(spec.array_size)
    if spec.venv is not None:
        env["VIRTUAL_ENV"] = str(spec.venv)
        env["PATH"] = f"{spec.venv}/bin:{SYSTEM_PATH}"
    env.update(spec.extra_env)
    return env


def _parents(target: str) -> list[str]:
    parents = list(PurePosixPath(target).parents)[:-1]  # without "/"
    return [str(p) for p in reversed(parents)]


def bwrap_argv(spec: LaunchSpec, command: Sequence[str]) -> list[str]:
    argv = [BWRAP, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    for directory in SYSTEM_DIRS:
        if os.path.islink(directory):
            argv += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            argv += ["--ro-bind", directory, directory]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    if spec.shm_bytes:
        argv += ["--size", str(spec.shm_bytes)]
    argv += ["--tmpfs", "/dev/shm"]
    # GPUs: device nodes only (the driver libraries come with /usr).
    for node in sorted(glob.glob("/dev/nvidia*")) + sorted(glob.glob("/dev/dri")):
        argv += ["--dev-bind", node, node]
    argv += ["--bind", str(spec.layout.tmp), SANDBOX_TMP]
    argv += ["--bind", str(spec.layout.workspace), SANDBOX_WORKSPACE]
    argv += ["--dir", "/c3", "--bind", str(spec.layout.artifacts), SANDBOX_ARTIFACTS]
    read_only = [(str(p), str(p)) for p in spec.extra_read_only]
    if spec.venv is not None:
        read_only.append((str(spec.venv), str(spec.venv)))
    read_only += [(str(m.host), m.target) for m in spec.datasets]
    made: set[str] = set()
    for host, target in read_only:
        for parent in _parents(target):
            if parent not in made and not any(parent == d or parent.startswith(d + "/")
                                              for d in SYSTEM_DIRS):
                argv += ["--dir", parent]
                made.add(parent)
        argv += ["--ro-bind", host, target]
    workdir = spec.workdir.strip("/")
    argv += ["--chdir", f"{SANDBOX_WORKSPACE}/{workdir}" if workdir else SANDBOX_WORKSPACE]
    return [*argv, "--", *command]


# Runs a job's command argv: bash looks only argv[0] up on the job's PATH and execs it with
# the arguments as positional parameters ("$@" is never re-split or expanded), so every
# argument arrives byte for byte; a command that is not found exits 127, one that cannot
# run 126, as in a shell.
EXEC_COMMAND = (
    'case $1 in */*) ;; *) type -P -- "$1" >/dev/null || '
    '{ printf "c3: %s: command not found (PATH=%s)\\n" "$1" "$PATH" >&2; exit 127; };; esac; '
    'exec -- "$@"'
)


def launch_argv(spec: LaunchSpec, sandboxed: bool) -> tuple[list[str], Path]:
    """(argv, host cwd) that runs `bash <script>` (or the job's command) for this job."""
    bash = shutil.which("bash", path=SYSTEM_PATH) or "/bin/bash"
    if spec.command:
        script = ""
        command = [bash, "-c", EXEC_COMMAND, "c3", *spec.command]
    else:
        script = check_script(spec.layout, spec.script, spec.workdir)
        command = [bash, f"{SANDBOX_WORKSPACE}/{script}"]
    workdir = spec.workdir.strip("/")
    host_cwd = spec.layout.workspace / workdir if workdir else spec.layout.workspace
    if not host_cwd.is_dir():
        raise InvalidArgument(f"job workdir {spec.workdir!r} is not a directory in the workspace")
    if spec.docker_image:
        from agent.docker import docker_run_argv

        return docker_run_argv(spec, script, spec.share), host_cwd
    if sandboxed:
        return bwrap_argv(spec, command), host_cwd
    if not spec.command:
        command = [bash, str(spec.layout.workspace / script)]
    return command, host_cwd


async def probe_bwrap() -> str | None:
    """None when bubblewrap can run a trial sandbox here, else why it cannot."""
    if not os.access(BWRAP, os.X_OK):
        return f"{BWRAP} is not installed (apt-get install bubblewrap)"
    with tempfile.TemporaryDirectory(prefix="c3-bwrap-probe-") as tmp:
        layout = JobLayout.under(Path(tmp))
        layout.create()
        (layout.workspace / "probe.sh").write_text("test -w /workspace && test -w /tmp\n")
        argv, cwd = launch_argv(LaunchSpec(layout=layout, script="probe.sh"), sandboxed=True)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env={"PATH": SYSTEM_PATH},
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        except (OSError, TimeoutError) as exc:
            return f"bubblewrap trial run failed: {exc}"
        if proc.returncode != 0:
            return f"bubblewrap trial run failed: {err.decode(errors='replace').strip()}"
    return None
