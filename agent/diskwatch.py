"""The workspace disk limit and the process limit, enforced by watchdogs.

A hard limit (a per-job filesystem quota, or a loop-mounted image of fixed size) needs
project quotas on the data dir's filesystem or root-only mount setup per job, which
neither the test hosts nor many GPU hosts provide; a tmpfs would count against RAM.
So the agent measures the job's directory (workspace, artifacts and the job's /tmp) every
few seconds off the event loop and stops the job with a clear reason the moment it is
over its limit. A job can overshoot by what it writes within one interval.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

DEFAULT_INTERVAL_SECONDS = 2.0


def tree_bytes(root: Path) -> int:
    """Bytes allocated under `root` (blocks, so sparse files count what they use);
    symlinks are not followed."""
    total = 0
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


async def watch_disk(root: Path, limit_bytes: int, over: Callable[[str], None],
                     interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
    """Call `over(reason)` once when `root` grows past `limit_bytes`; runs until cancelled."""
    while True:
        await asyncio.sleep(interval)
        used = await asyncio.to_thread(tree_bytes, root)
        if used > limit_bytes:
            over(f"the job's workspace uses {_gib(used)}, over its disk limit of "
                 f"{_gib(limit_bytes)}; write large outputs to a dataset or ask for a "
                 "bigger profile")
            return


async def watch_pids(limited: Callable[[], bool], pids_max: int, over: Callable[[str], None],
                     interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
    """Call `over(reason)` once the job's cgroup refused a fork at its process limit (a
    fork bomb never ends by itself: shells retry); runs until cancelled."""
    while True:
        await asyncio.sleep(interval)
        if await asyncio.to_thread(limited):
            over(f"the job hit its limit of {pids_max} processes (pids.max) and was stopped; "
                 "a script that forks without bound (a fork bomb) ends like this")
            return
