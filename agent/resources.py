"""A job's baseline share of the host: CPU, memory, /dev/shm, processes and disk, in
proportion to its fraction of the host's GPUs (a 1-GPU agent on a 4-GPU host gets 25%).
A host without GPUs counts as one unit (fraction 1) unless the operator says otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

# A whole host's process budget when the kernel allows more (threads-max is often ~1M).
HOST_PROCESS_BUDGET = 32768
MIN_PIDS = 64
DEFAULT_SHM_FRACTION_OF_MEMORY = 0.5
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'64M', '2G', '1.5g', '1048576' -> bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a size; use bytes or a unit such as 512M or 4G")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True)
class HostTotals:
    memory_bytes: int
    cpus: int
    processes: int
    disk_bytes: int

    @classmethod
    def of_this_host(cls, data_dir: Path) -> HostTotals:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        try:
            threads = int(Path("/proc/sys/kernel/threads-max").read_text())
        except (OSError, ValueError):
            threads = HOST_PROCESS_BUDGET
        return cls(pages, os.cpu_count() or 1, min(threads, HOST_PROCESS_BUDGET),
                   shutil.disk_usage(data_dir).total)


@dataclass(frozen=True)
class ResourceShare:
    """Limits of one job. 0 means "no limit" for a field."""

    fraction: float
    memory_bytes: int  # hard limit: above it the OOM killer ends the job
    memory_high_bytes: int  # baseline: above it the kernel reclaims / throttles first
    cpus: float  # CPU share, enforced as a weight (bursts while the host is idle)
    pids_max: int
    shm_bytes: int
    disk_bytes: int

    @property
    def cpu_weight_v2(self) -> int:  # cgroup v2 default weight is 100 for one CPU's worth
        return max(1, min(10000, round(100 * self.cpus)))

    @property
    def cpu_shares_v1(self) -> int:  # cgroup v1 default is 1024 for one CPU's worth
        return max(2, min(262144, round(1024 * self.cpus)))

    @classmethod
    def trial(cls) -> ResourceShare:
        return cls(1.0, 64 << 20, 64 << 20, 1.0, MIN_PIDS, 0, 0)

    def describe(self) -> str:
        def gib(n: int) -> str:
            return f"{n / (1 << 30):.2f} GiB" if n else "unlimited"
        return (f"{self.fraction:.0%} of the host: memory {gib(self.memory_bytes)}, "
                f"{self.cpus:g} CPUs (weight, may burst), {self.pids_max or 'unlimited'} "
                f"processes, /dev/shm {gib(self.shm_bytes)}, disk {gib(self.disk_bytes)}")


@dataclass(frozen=True)
class ShareOverrides:
    """Operator flags; None keeps the proportional default."""

    fraction: float | None = None
    memory_bytes: int | None = None
    memory_burst: float = 1.0  # hard limit = baseline x this (>= 1)
    cpus: float | None = None
    pids_max: int | None = None
    shm_bytes: int | None = None
    disk_bytes: int | None = None


def gpu_fraction(owned_gpus: int, host_gpus: int) -> float:
    if owned_gpus <= 0 or host_gpus <= 0:
        return 1.0  # cpu profile: the host is one unit
    return min(1.0, owned_gpus / host_gpus)


def compute_share(host: HostTotals, fraction: float, flags: ShareOverrides) -> ResourceShare:
    if flags.fraction is not None:
        fraction = flags.fraction
    if not 0 < fraction <= 1:
        raise ValueError(f"resource fraction {fraction} must be in (0, 1]")
    if flags.memory_burst < 1:
        raise ValueError(f"--memory-burst {flags.memory_burst} must be at least 1")
    baseline = flags.memory_bytes if flags.memory_bytes is not None else int(
        host.memory_bytes * fraction)
    hard = int(baseline * flags.memory_burst)
    cpus = flags.cpus if flags.cpus is not None else round(host.cpus * fraction, 2)
    pids = flags.pids_max if flags.pids_max is not None else max(
        MIN_PIDS, int(host.processes * fraction))
    shm = flags.shm_bytes if flags.shm_bytes is not None else int(
        baseline * DEFAULT_SHM_FRACTION_OF_MEMORY)
    disk = flags.disk_bytes if flags.disk_bytes is not None else int(host.disk_bytes * fraction)
    return ResourceShare(fraction, hard, baseline, cpus, pids, shm, disk)
