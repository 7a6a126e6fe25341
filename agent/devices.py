"""The GPU device nodes a job may open: exactly its own GPUs' `/dev/nvidiaN`, plus the
driver's shared control nodes, and nothing else of the host's `/dev`.

GPU index i (nvidia-smi's order, which is PCI bus order) is usually `/dev/nvidia<i>`,
but the driver numbers nodes by its own minor numbers; when the driver's
`/proc/driver/nvidia/gpus/<bus id>/information` files are there, index i is the i-th bus
id in order and its node is that file's "Device Minor". `dev_root` and `proc_root` are
injectable so tests can fake a four-GPU host with plain files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

# Nodes every CUDA process needs besides its GPUs' own (when the host has them).
SHARED_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


def gpu_minors(indices: Sequence[int], proc_root: Path = Path("/proc")) -> list[int]:
    """The device minor of each GPU index (the index itself when the driver does not say)."""
    gpus_dir = proc_root / "driver" / "nvidia" / "gpus"
    minors: list[int] = []
    try:
        buses = sorted(p for p in gpus_dir.iterdir() if p.is_dir())
    except OSError:
        buses = []
    by_index: dict[int, int] = {}
    for i, bus in enumerate(buses):
        try:
            match = re.search(r"Device Minor:\s*(\d+)", (bus / "information").read_text())
        except OSError:
            match = None
        if match:
            by_index[i] = int(match.group(1))
    for index in indices:
        minors.append(by_index.get(index, index))
    return minors


def gpu_nodes(indices: Sequence[int], dev_root: Path = Path("/dev"),
              proc_root: Path = Path("/proc")) -> list[tuple[Path, str]]:
    """(host node, path inside the sandbox) for the job's GPUs and the shared nodes that
    exist on this host; never another GPU's node."""
    nodes: list[tuple[Path, str]] = []
    for minor in gpu_minors(indices, proc_root):
        node = dev_root / f"nvidia{minor}"
        if node.exists():
            nodes.append((node, f"/dev/nvidia{minor}"))
    for name in SHARED_NODES:
        node = dev_root / name
        if node.exists():
            nodes.append((node, f"/dev/{name}"))
    return nodes
