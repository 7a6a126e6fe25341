"""Per-job cgroups: a job's share of memory, CPU and processes, enforced by the kernel.

Both layouts are handled: cgroup v2 (one unified hierarchy: `memory.max`, `memory.high`,
`cpu.weight`, `pids.max`, `memory.events`) and cgroup v1 (one hierarchy per controller:
`memory.limit_in_bytes`, `memory.soft_limit_in_bytes`, `cpu.shares`, `pids.max`,
`memory.oom_control`). CPU is given as a *weight*, never a quota, so a job may burst
above its share while the host's CPUs are idle.

Job groups live under the agent's own cgroup (`<own>/c3-jobs/job-<key>-<job id>`), so
several agents on one host started by the same parent are siblings and share the host by
weight. `<key>` names the agent's data dir (`agent_key`): an agent removes the groups of
its own key that are left over (the agent was killed, a job's processes were stuck, it
stopped mid-job) when it starts and after every job — and never another agent's.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from agent.resources import ResourceShare

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
JOBS_GROUP = "c3-jobs"
V1_CONTROLLERS = ("memory", "cpu", "pids")
V2_CONTROLLERS = ("memory", "cpu", "pids")
RMDIR_ATTEMPTS = 50  # x 20 ms: processes killed with SIGKILL leave the group within ms


# Runs before the job's command: puts its own pid (the session leader the runner made)
# into the job's groups, then execs the command, which every child then inherits.
_ENTER = ('while [ "$1" != -- ]; do echo $$ >"$1" || '
          '{ echo "c3: cannot enter cgroup $1" >&2; exit 125; }; shift; done; shift; exec "$@"')


def agent_key(data_dir: Path) -> str:
    """A short stable name for one agent data dir (its job cgroups, its namespaces)."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]


def enter_cgroup_argv(procs_files: list[str], argv: list[str]) -> list[str]:
    return ["/bin/sh", "-c", _ENTER, "c3-enter-cgroup", *procs_files, "--", *argv]


def _write(path: Path, value: str | int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _read_key(path: Path, key: str) -> int:
    """`key value` files (memory.events, memory.oom_control): the value, 0 if absent."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def own_cgroups(proc_file: Path = Path("/proc/self/cgroup")) -> dict[str, str]:
    """controller -> this process's cgroup path; the v2 hierarchy is under key ''."""
    found: dict[str, str] = {}
    for line in proc_file.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            found[name] = path
    return found


@dataclass
class JobCgroup:
    """One job's groups (one dir for v2, one per controller for v1)."""

    version: int
    dirs: tuple[Path, ...]
    memory_dir: Path
    oom_kills_before: int = 0
    controllers: tuple[str, ...] = ()  # v1: the controller of each of `dirs`

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def oom_kills(self) -> int:
        if self.version == 2:
            return _read_key(self.memory_dir / "memory.events", "oom_kill")
        return _read_key(self.memory_dir / "memory.oom_control", "oom_kill")

    def oom_killed(self) -> bool:
        return self.oom_kills() > self.oom_kills_before

    @property
    def pids_dir(self) -> Path:
        if self.version == 1 and "pids" in self.controllers:
            return self.dirs[self.controllers.index("pids")]
        return self.dirs[0]

    def pids_limited(self) -> bool:
        """A fork or clone of the job failed at its pids.max (pids.events `max`)."""
        return _read_key(self.pids_dir / "pids.events", "max") > 0

    def view(self) -> tuple[tuple[str, Path], ...]:
        """(controller or "" for v2, dir): what the sandbox shows at /sys/fs/cgroup."""
        if self.version == 2:
            return (("", self.dirs[0]),)
        return tuple(zip(self.controllers, self.dirs, strict=True))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        return found

    def kill_all(self) -> None:
        """SIGKILL everything in the group, including processes that left the job's
        process group (setsid) — the cgroup is the one boundary a job cannot escape."""
        kill_file = self.dirs[0] / "cgroup.kill"
        if self.version == 2 and kill_file.exists():
            with contextlib.suppress(OSError):
                _write(kill_file, 1)
                return
        for _ in range(3):  # a process may fork while we kill; a few passes settle it
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def remove(self, attempts: int = RMDIR_ATTEMPTS) -> None:
        """Kill what is left and remove the group dirs (blocking; call off the loop).
        A group still busy after `attempts` tries (x 20 ms) is left for a later sweep."""
        self.kill_all()
        for d in self.dirs:
            for _ in range(attempts):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        log.warning("cannot remove cgroup %s: %s", d, exc)
                        break
                    self.kill_all()
                    time.sleep(0.02)
            else:
                log.warning("cgroup %s still busy; left behind", d)


class CgroupManager:
    """Creates job groups under the agent's own cgroup, for v1 or v2."""

    def __init__(self, version: int, parents: dict[str, Path], key: str = "") -> None:
        self.version = version
        self.parents = parents  # controller (or "" for v2) -> the c3-jobs dir
        self.key = key  # agent_key of the data dir whose jobs this manager runs

    def for_agent(self, key: str) -> CgroupManager:
        return CgroupManager(self.version, self.parents, key)

    def job_group_name(self, job_id: str) -> str:
        return f"job-{self.key}-{job_id}" if self.key else f"job-{job_id}"

    def own_groups(self) -> list[Path]:
        """Every group dir of this agent's jobs (and trial groups) that exists now."""
        found: list[Path] = []
        if not self.key:
            return found
        for parent in self.parents.values():
            for pattern in (f"job-{self.key}-*", f"probe-{self.key}-*"):
                found.extend(p for p in parent.glob(pattern) if p.is_dir())
        return sorted(found)

    def sweep(self, keep: frozenset[str] = frozenset(),
              attempts: int = RMDIR_ATTEMPTS) -> list[str]:
        """Kill what is left in this agent's stale groups and remove them (blocking).
        `keep`: group names of jobs running now. Returns the names removed."""
        by_name: dict[str, list[Path]] = {}
        for d in self.own_groups():
            if d.name not in keep:
                by_name.setdefault(d.name, []).append(d)
        removed = []
        for name, dirs in sorted(by_name.items()):
            JobCgroup(self.version, tuple(dirs), dirs[0]).remove(attempts)
            if not any(d.exists() for d in dirs):
                removed.append(name)
        return removed

    @classmethod
    def detect(cls, root: Path = CGROUP_ROOT,
               proc_file: Path = Path("/proc/self/cgroup")) -> CgroupManager:
        """The layout this host has; raises OSError with the reason when unusable."""
        own = own_cgroups(proc_file)
        controllers_file = root / "cgroup.controllers"
        if controllers_file.exists():
            available = controllers_file.read_text().split()
            missing = [c for c in V2_CONTROLLERS if c not in available]
            if missing:
                raise OSError(f"cgroup v2 at {root} lacks controllers {missing}")
            return cls(2, {"": cls._prepare_v2(root, own.get("", "/"))})
        parents = {}
        for name in V1_CONTROLLERS:
            mount = root / name
            if not (mount / "cgroup.procs").exists():
                raise OSError(f"no cgroup v1 {name} controller at {mount} and no cgroup v2 "
                              f"at {root}")
            parent = mount / own.get(name, "/").lstrip("/") / JOBS_GROUP
            parent.mkdir(exist_ok=True)
            parents[name] = parent
        if (parents["memory"].parent / "memory.use_hierarchy").exists():
            with contextlib.suppress(OSError):
                _write(parents["memory"] / "memory.use_hierarchy", 1)
        return cls(1, parents)

    @staticmethod
    def _prepare_v2(root: Path, own_path: str) -> Path:
        """v2 forbids controllers on a group's children while it holds processes
        (except at the root), so the agent moves itself into a leaf `agent` first."""
        own = root / own_path.lstrip("/")
        enable = " ".join(f"+{c}" for c in V2_CONTROLLERS)
        try:
            _write(own / "cgroup.subtree_control", enable)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            leaf = own / "agent"
            leaf.mkdir(exist_ok=True)
            _write(leaf / "cgroup.procs", os.getpid())
            _write(own / "cgroup.subtree_control", enable)
        parent = own / JOBS_GROUP
        parent.mkdir(exist_ok=True)
        _write(parent / "cgroup.subtree_control", enable)
        return parent

    def create(self, name: str, share: ResourceShare) -> JobCgroup:
        """A fresh group for one job with its limits written (blocking; off the loop)."""
        if self.version == 2:
            d = self.parents[""] / name
            d.mkdir()
            group = JobCgroup(2, (d,), d)
            try:
                if share.memory_bytes:
                    _write(d / "memory.high", share.memory_high_bytes)
                    _write(d / "memory.max", share.memory_bytes)
                    with contextlib.suppress(OSError):  # no swap escape hatch
                        _write(d / "memory.swap.max", 0)
                _write(d / "cpu.weight", share.cpu_weight_v2)
                if share.pids_max:
                    _write(d / "pids.max", share.pids_max)
            except OSError:
                group.remove()
                raise
        else:
            dirs = {c: p / name for c, p in self.parents.items()}
            for d in dirs.values():
                d.mkdir()
            group = JobCgroup(1, tuple(dirs.values()), dirs["memory"],
                              controllers=tuple(dirs))
            try:
                mem = dirs["memory"]
                if share.memory_bytes:
                    _write(mem / "memory.soft_limit_in_bytes", share.memory_high_bytes)
                    _write(mem / "memory.limit_in_bytes", share.memory_bytes)
                    with contextlib.suppress(OSError):  # absent without swap accounting
                        _write(mem / "memory.memsw.limit_in_bytes", share.memory_bytes)
                _write(dirs["cpu"] / "cpu.shares", share.cpu_shares_v1)
                if share.pids_max:
                    _write(dirs["pids"] / "pids.max", share.pids_max)
            except OSError:
                group.remove()
                raise
        group.oom_kills_before = group.oom_kills()
        return group

    def probe(self) -> None:
        """Create, limit and remove a trial group (raises OSError when it cannot)."""
        trial = self.create(f"probe-{self.key or 'x'}-{os.getpid()}", ResourceShare.trial())
        trial.remove()


def detect_cgroups(key: str = "") -> tuple[CgroupManager | None, str]:
    """(manager, "") when job groups can be made here, else (None, why not). `key`: the
    agent_key of the data dir whose jobs the manager runs (its groups' names)."""
    try:
        manager = CgroupManager.detect().for_agent(key)
        manager.probe()
    except (OSError, ValueError) as exc:
        return None, f"cgroups are not usable here ({exc})"
    return manager, ""
