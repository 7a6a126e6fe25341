"""What this host offers: GPUs from `nvidia-smi` (model, memory), reported as they are.

The coordinator decides which catalog profile they make (coordinator/catalog.py); a host
without GPUs (or without `nvidia-smi`) offers none. One agent owns a fixed set of GPUs, all
of one model, and passes exactly that set to its jobs through `CUDA_VISIBLE_DEVICES`.
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

@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mib: int


@dataclass(frozen=True)
class HostInfo:
    gpus: tuple[Gpu, ...]
    hostname: str
    host_gpu_count: int = 0  # every GPU on the host, not only this agent's

    @property
    def gpu_model(self) -> str:
        return self.gpus[0].name if self.gpus else ""

    @property
    def gpu_memory_mib(self) -> int:
        return self.gpus[0].memory_mib if self.gpus else 0

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
        log.warning("nvidia-smi failed (%s); offering no GPU", exc)
        return []
    if proc.returncode != 0:
        log.warning("nvidia-smi exited %s: %s; offering no GPU",
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


def host_info(gpus: Sequence[Gpu]) -> HostInfo:
    models = sorted({g.name for g in gpus})
    if len(models) > 1:
        raise ValueError(
            f"the GPUs given to one agent must be one model, found {models}; "
            "start one agent per model with --gpus"
        )
    return HostInfo(tuple(gpus), socket.gethostname())


async def discover(wanted: Sequence[int] | None = None) -> HostInfo:
    every = await query_gpus()
    info = host_info(select_gpus(every, wanted))
    return dataclasses.replace(info, host_gpu_count=len(every))
