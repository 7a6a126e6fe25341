"""How a job's script is launched: the exact environment, and the bubblewrap sandbox.

Inside the sandbox the job is uid 1000 (`c3`) in a user namespace of its own with no
capability, no-new-privileges, the seccomp filter of `agent.seccomp`, and its own pid,
ipc, uts, cgroup and network namespaces. It sees its workspace at /workspace, its
artifacts dir at /c3/artifacts, a private /tmp, datasets read-only at their mount paths,
its environment at /c3/env, the host's /usr read-only, a synthesised /etc
(`agent.jobetc`), read-only /sys and /proc/sys, the device nodes of its own GPUs only
(`agent.devices`), and nothing else of the host: no agent state, no credentials, no other
job. bubblewrap reads its arguments from a file descriptor, so not even `/proc/1/cmdline`
names a host path, and on a root agent the job's directories are staged through overlays
first (`agent.stage`, `stage_mounts`) so `/proc/self/mountinfo` names none either. A root agent also runs
bubblewrap itself as an unprivileged host uid of its own, so the job's processes are
nobody in particular to the host, not root without capabilities.

Without the sandbox the same environment scrubbing still applies.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from agent import jobetc, stage
from agent.devices import gpu_nodes
from agent.jobnet import NETNS_DIR, NS_GATEWAY, JobNetwork
from agent.resources import ResourceShare
from agent.seccomp import filter_fd
from c3.errors import InvalidArgument
from c3.manifest import check_relative_path

BWRAP = "/usr/bin/bwrap"
SANDBOX_WORKSPACE = "/workspace"
SANDBOX_ARTIFACTS = "/c3/artifacts"
SANDBOX_VENV = "/c3/env"
SANDBOX_TMP = "/tmp"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Host directories a job may read (never write). Only those that exist are bound; /etc is
# synthesised instead (agent.jobetc).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")
# Mount targets a dataset may not take: they would hide the system or the job's own dirs.
RESERVED_TARGETS = (*SYSTEM_DIRS, "/etc", "/proc", "/dev", "/sys", "/tmp", "/var",
                    SANDBOX_WORKSPACE, "/c3")
# Host uids for jobs: a fixed one per agent data dir, in a range no distribution assigns.
JOB_HOST_UID_BASE, JOB_HOST_UID_SPAN = 2_100_000_000, 10_000_000


@dataclass(frozen=True)
class JobLayout:
    """Host-side directories of one job (all under the agent's data dir)."""

    workspace: Path
    artifacts: Path
    tmp: Path

    @classmethod
    def under(cls, job_dir: Path) -> JobLayout:
        return cls(job_dir / "workspace", job_dir / "artifacts", job_dir / "tmp")

    @property
    def root(self) -> Path:
        return self.workspace.parent

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
    docker_user: str = f"{jobetc.JOB_UID}:{jobetc.JOB_GID}"  # the container's uid:gid
    docker_egress: bool = False  # docker jobs: the bridge network (else none)
    share: ResourceShare | None = None  # docker jobs: limits passed to `docker run`
    # `deploy --array`: this job's place in its array (array_size 0: not in an array).
    array_index: int = 0
    array_size: int = 0
    # The prepared network namespace (agent.jobnet) for `egress`; empty: no network.
    netns: str = ""
    # The job's cgroup dirs, shown read-only at /sys/fs/cgroup: (controller or "", dir).
    cgroup_view: tuple[tuple[str, Path], ...] = ()
    # `c3 run -- CMD ARGS...`: this argv instead of `bash <script>` (script is then unused).
    command: tuple[str, ...] = ()

    def gpu_indices(self) -> list[int]:
        return [int(i) for i in self.cuda_visible_devices.split(",") if i.strip().isdigit()]


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the host tools the launch chain runs as root. Never found
    through the job's PATH (its venv's bin/ could hold a `mount` of its own)."""

    sh: str = "/bin/sh"
    bash: str = "/bin/bash"
    bwrap: str = BWRAP
    nsenter: str = "/usr/bin/nsenter"
    setpriv: str = "/usr/bin/setpriv"

    @classmethod
    def find(cls) -> Tools:
        def which(name: str, default: str) -> str:
            return shutil.which(name, path=SYSTEM_PATH) or default
        d = cls()
        return cls(*(which(Path(getattr(d, f)).name, getattr(d, f))
                     for f in ("sh", "bash", "bwrap", "nsenter", "setpriv")))


@dataclass(frozen=True)
class SandboxPolicy:
    """How this agent sandboxes jobs (decided once at start, see agent.probe)."""

    network: JobNetwork = JobNetwork.NONE
    # bubblewrap runs as this host (uid, gid) instead of the agent's own; needs staging.
    host_ids: tuple[int, int] | None = None
    # Where job dirs are staged through overlays (agent.stage); None: bound as they are.
    stage_root: Path | None = None
    seccomp: bytes | None = None
    dev_root: Path = Path("/dev")
    proc_root: Path = Path("/proc")
    tools: Tools = field(default_factory=Tools)

    @property
    def staged(self) -> bool:
        return self.stage_root is not None

    def stage_dir(self, spec: LaunchSpec) -> Path:
        assert self.stage_root is not None
        return self.stage_root / spec.layout.root.name

    def describe(self) -> str:
        who = (f"host uid {self.host_ids[0]}" if self.host_ids else "the agent's uid")
        return (f"bubblewrap as {who}, network {self.network.value}, "
                f"seccomp {'on' if self.seccomp else 'off'}, "
                f"host paths {'hidden' if self.staged else 'visible in mountinfo'}")


def job_host_ids(data_dir: Path) -> tuple[int, int]:
    """The host uid/gid this agent's jobs run as: fixed per data dir, unnamed on the host."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).digest()
    uid = JOB_HOST_UID_BASE + int.from_bytes(digest[:4], "big") % JOB_HOST_UID_SPAN
    return uid, uid


@dataclass
class Launch:
    """What to spawn for one job: argv, host cwd, env, and the file descriptors the
    child inherits (closed here once it is spawned)."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    fds: list[int] = field(default_factory=list)

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


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
        venv = SANDBOX_VENV if sandboxed else str(spec.venv)
        env["VIRTUAL_ENV"] = venv
        env["PATH"] = f"{venv}/bin:{SYSTEM_PATH}"
    env.update(spec.extra_env)
    return env


def _parents(target: str) -> list[str]:
    parents = list(PurePosixPath(target).parents)[:-1]  # without "/"
    return [str(p) for p in reversed(parents)]


def _data_fd(data: bytes, name: str) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def staged_dirs(spec: LaunchSpec) -> list[stage.StagedDir]:
    """What a staged launch mounts: the job dir (rw), each dataset and the venv (ro)."""
    root = spec.layout.root
    dirs = [stage.StagedDir(root.parent, root.name, "job", True)]
    for i, mount in enumerate(spec.datasets):
        dirs.append(stage.StagedDir(mount.host.parent, mount.host.name, f"d{i}", False))
    if spec.venv is not None:
        dirs.append(stage.StagedDir(spec.venv.parent, spec.venv.name, "env", False))
    for i, path in enumerate(spec.extra_read_only):
        dirs.append(stage.StagedDir(path.parent, path.name, f"x{i}", False, plain=True))
    for d in dirs:
        if not d.plain and not stage.can_stage(d.parent / d.name):
            raise InvalidArgument(f"cannot stage {d.name!r} for the sandbox (unusual name)")
    return dirs


def bwrap_args(spec: LaunchSpec, policy: SandboxPolicy, command: Sequence[str],
               fds: list[int]) -> list[str]:
    """bubblewrap's options (passed through `--args FD`, never on its command line, so
    the job's `/proc/1/cmdline` is `bwrap --args N -- bash /workspace/<script>`); the data
    fds it reads are appended to `fds`."""
    staged = ({d.target: str(policy.stage_dir(spec) / d.target) for d in staged_dirs(spec)}
              if policy.staged else {})
    job_root = staged.get("job", str(spec.layout.root))
    args = ["--unshare-user", "--uid", str(jobetc.JOB_UID), "--gid", str(jobetc.JOB_GID),
            "--disable-userns", "--cap-drop", "ALL", "--unshare-pid", "--unshare-ipc",
            "--unshare-uts", "--hostname", jobetc.JOB_HOSTNAME, "--unshare-cgroup-try",
            "--die-with-parent"]  # fmt: skip
    if not spec.netns:
        args += ["--unshare-net"]  # no prepared namespace: loopback only, never the host's
    for directory in SYSTEM_DIRS:
        if os.path.islink(directory):
            args += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            args += ["--ro-bind", directory, directory]
    args += ["--dir", "/etc"]
    for entry in jobetc.job_etc(NS_GATEWAY if spec.netns else ""):
        if entry.link:
            args += ["--symlink", entry.link, entry.target]
        elif entry.host is not None:
            args += ["--ro-bind", str(entry.host), entry.target]
        else:
            fds.append(_data_fd(entry.data, "c3-etc"))
            args += ["--ro-bind-data", str(fds[-1]), entry.target]
    args += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev"]
    if spec.shm_bytes:
        args += ["--size", str(spec.shm_bytes)]
    args += ["--tmpfs", "/dev/shm"]
    for node, target in gpu_nodes(spec.gpu_indices(), policy.dev_root, policy.proc_root):
        args += ["--dev-bind", str(node), target]
    args += ["--ro-bind", "/sys", "/sys", "--tmpfs", "/sys/fs/cgroup"]
    for controller, group_dir in spec.cgroup_view:
        args += ["--ro-bind", str(group_dir),
                 f"/sys/fs/cgroup/{controller}" if controller else "/sys/fs/cgroup"]
    args += ["--remount-ro", "/sys/fs/cgroup"]
    layout = spec.layout
    for own, target in ((layout.tmp, SANDBOX_TMP), (layout.workspace, SANDBOX_WORKSPACE),
                        (layout.artifacts, SANDBOX_ARTIFACTS)):
        args += ["--bind", f"{job_root}/{own.name}", target]
    args += ["--symlink", "/tmp", "/var/tmp"]
    read_only = [(staged.get(f"x{i}", str(p)), str(p)) for i, p in enumerate(spec.extra_read_only)]
    if spec.venv is not None:
        read_only.append((staged.get("env", str(spec.venv)), SANDBOX_VENV))
    read_only += [(staged.get(f"d{i}", str(m.host)), m.target)
                  for i, m in enumerate(spec.datasets)]
    made: set[str] = {"/c3"}
    for host, target in read_only:
        for parent in _parents(target):
            if parent not in made and not any(parent == d or parent.startswith(d + "/")
                                              for d in SYSTEM_DIRS):
                args += ["--dir", parent]
                made.add(parent)
        args += ["--ro-bind", host, target]
    if policy.seccomp is not None:
        fds.append(filter_fd(policy.seccomp))
        args += ["--seccomp", str(fds[-1])]
    workdir = spec.workdir.strip("/")
    args += ["--chdir", f"{SANDBOX_WORKSPACE}/{workdir}" if workdir else SANDBOX_WORKSPACE]
    args += ["--remount-ro", "/"]
    return args


def bwrap_argv(spec: LaunchSpec, policy: SandboxPolicy, command: Sequence[str]
               ) -> tuple[list[str], list[int]]:
    """The whole launch chain for a sandboxed `command`: (argv, fds it inherits). As root:
    enter the job's network namespace, drop to the job's host uid, then bubblewrap with
    its arguments read from a file descriptor. (The job's dirs are staged first:
    `stage_mounts`.)"""
    fds: list[int] = []
    try:
        args = bwrap_args(spec, policy, command, fds)
        fds.append(_data_fd(b"\0".join(a.encode() for a in args) + b"\0", "c3-bwrap-args"))
        t = policy.tools
        argv = [t.bwrap, "--args", str(fds[-1]), "--", *command]
        if policy.host_ids is not None:
            uid, gid = policy.host_ids
            argv = [t.setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--",
                    *argv]
        if spec.netns:
            argv = [t.nsenter, f"--net={NETNS_DIR / spec.netns}", "--", *argv]
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return argv, fds


def stage_mounts(spec: LaunchSpec, policy: SandboxPolicy | None) -> stage.Stage | None:
    """Mount what the sandbox of `spec` binds (blocking; unmount it after the job), or
    None when `policy` does not stage."""
    if policy is None or not policy.staged or spec.docker_image:
        return None
    return stage.Stage.mount(policy.stage_dir(spec), staged_dirs(spec))


# Runs a job's command argv: bash looks only argv[0] up on the job's PATH and execs it with
# the arguments as positional parameters ("$@" is never re-split or expanded), so every
# argument arrives byte for byte; a command that is not found exits 127, one that cannot
# run 126, as in a shell.
EXEC_COMMAND = (
    'case $1 in */*) ;; *) type -P -- "$1" >/dev/null || '
    '{ printf "c3: %s: command not found (PATH=%s)\\n" "$1" "$PATH" >&2; exit 127; };; esac; '
    'exec -- "$@"'
)


def launch_argv(spec: LaunchSpec, policy: SandboxPolicy | None) -> Launch:
    """What runs `bash <script>` (or the job's command) for this job: in the sandbox
    `policy`, or bare (None)."""
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
        from agent.docker import docker_client_env, docker_run_argv

        return Launch(docker_run_argv(spec, script, spec.share), host_cwd, docker_client_env())
    if policy is not None:
        argv, fds = bwrap_argv(spec, policy, command)
        return Launch(argv, Path("/"), job_environment(spec, True), fds)
    if not spec.command:
        command = [bash, str(spec.layout.workspace / script)]
    return Launch(command, host_cwd, job_environment(spec, False))
