"""What this host offers: GPUs from `nvidia-smi`, mapped to a catalog profile.

A profile is `<class>-<count>x` (`l40-1x`, `a100-4x`); a host without GPUs (or without
`nvidia-smi`) offers the `cpu` profile. One agent owns a fixed set of GPUs and passes
exactly that set to its jobs through `CUDA_VISIBLE_DEVICES`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Most specific first: "A100" must not match the "A10" rule.
_CLASS_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"\bL40S?\b", "l40"),
    (r"\bL4\b", "l4"),
    (r"\bH200\b", "h200"),
    (r"\bH100\b", "h100"),
    (r"\bGH200\b", "gh200"),
    (r"\bB200\b", "b200"),
    (r"\bA100\b", "a100"),
    (r"\bA10G?\b", "a10"),
    (r"\bA40\b", "a40"),
    (r"\bA6000\b", "a6000"),
    (r"\bV100\b", "v100"),
    (r"\bT4\b", "t4"),
    (r"\bRTX\s*(\d{4})\b", "rtx{0}"),
)

CPU_PROFILE = "cpu"


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mib: int


@dataclass(frozen=True)
class HostInfo:
    profile: str
    gpu_class: str
    gpus: tuple[Gpu, ...]
    hostname: str
    host_gpu_count: int = 0  # every GPU on the host, not only this agent's

    @property
    def gpu_fraction(self) -> float:
        """This agent's share of the host (its GPUs / all GPUs); 1 for the cpu profile."""
        if not self.gpus or self.host_gpu_count <= 0:
            return 1.0
        return min(1.0, len(self.gpus) / self.host_gpu_count)

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(str(g.index) for g in self.gpus)


def gpu_class_of(name: str) -> str:
    """The catalog class of a GPU model name ("NVIDIA L40S" -> "l40")."""
    for pattern, cls in _CLASS_PATTERNS:
        match = re.search(pattern, name, re.IGNORECASE)
        if match:
            return cls.format(*match.groups())
    # Unknown model: a stable, readable code from its name.
    words = re.sub(r"^(nvidia|tesla|geforce)\s+", "", name.strip(), flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]+", "", words.lower()) or "gpu"


def parse_nvidia_smi(output: str) -> list[Gpu]:
    """Parse `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader` output."""
    gpus = []
    for index, line in enumerate(x for x in output.splitlines() if x.strip()):
        name, _, memory = line.rpartition(",")
        digits = re.search(r"\d+", memory)
        gpus.append(Gpu(index, name.strip(), int(digits.group()) if digits else 0))
    return gpus


async def query_gpus() -> list[Gpu]:
    """GPUs reported by nvidia-smi; empty when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        proc = await asyncio.create_subprocess_exec(
            exe,
            "--query-gpu=name,memory.total",
            "--format=csv,noheader",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    except (OSError, TimeoutError) as exc:
        log.warning("nvidia-smi failed (%s); offering the cpu profile", exc)
        return []
    if proc.returncode != 0:
        log.warning("nvidia-smi exited %s: %s; offering the cpu profile",
                    proc.returncode, err.decode(errors="replace").strip())
        return []
    return parse_nvidia_smi(out.decode(errors="replace"))


def select_gpus(gpus: Sequence[Gpu], wanted: Sequence[int] | None) -> tuple[Gpu, ...]:
    if wanted is None:
        return tuple(gpus)
    by_index = {g.index: g for g in gpus}
    missing = [i for i in wanted if i not in by_index]
    if missing:
        raise ValueError(
            f"--gpus names GPU index {missing[0]} but nvidia-smi lists indices "
            f"{sorted(by_index) or 'none'}; pick from those"
        )
    return tuple(by_index[i] for i in wanted)


def catalog_profile(gpu_class: str, count: int) -> str:
    """The coordinator catalog's profile code for `count` GPUs of a class ("l40s-1x"),
    or `<class>-<count>x` when the catalog has none."""
    try:
        from coordinator.catalog import Catalog

        catalog = Catalog.load()
    except Exception as exc:  # catalog missing or unreadable: the generic code still works
        log.debug("no coordinator catalog (%s)", exc)
        return f"{gpu_class}-{count}x"
    for profile in catalog.profiles:
        if profile.gpu_class == gpu_class and profile.gpu_count == count:
            return profile.code
    return f"{gpu_class}-{count}x"


def host_info(gpus: Sequence[Gpu], profile_override: str = "") -> HostInfo:
    hostname = socket.gethostname()
    if not gpus:
        return HostInfo(profile_override or CPU_PROFILE, CPU_PROFILE, (), hostname)
    classes = {gpu_class_of(g.name) for g in gpus}
    if len(classes) > 1:
        raise ValueError(
            f"the GPUs given to one agent must be one model, found {sorted(classes)}; "
            "start one agent per model with --gpus"
        )
    cls = classes.pop()
    profile = profile_override or catalog_profile(cls, len(gpus))
    return HostInfo(profile, cls, tuple(gpus), hostname)


async def discover(wanted: Sequence[int] | None = None, profile_override: str = "") -> HostInfo:
    every = await query_gpus()
    info = host_info(select_gpus(every, wanted), profile_override)
    return dataclasses.replace(info, host_gpu_count=len(every))
