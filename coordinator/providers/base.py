"""The provider interface: provision an agent for a profile, watch it start, release it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class ProvisionError(Exception):
    """A provider could not start an agent; the text is shown to users as it is."""


@dataclass(frozen=True)
class AgentLaunch:
    """What a provisioned agent needs to find and join the coordinator."""

    coordinator: str
    secret_file: Path
    work_dir: Path
    python: str = sys.executable

    def argv(self, provider: str, profile: str, data_dir: str, launch_id: str) -> list[str]:
        return [
            self.python, "-m", "agent.main", "--coordinator", self.coordinator,
            "--secret-file", str(self.secret_file), "--data-dir", data_dir,
            "--provider", provider, "--profile", profile, "--launch-id", launch_id,
        ]  # fmt: skip


class Provider(Protocol):
    name: str

    async def provision(self, profile: str, gpu_count: int, launch_id: str) -> Any:
        """Start one agent for `profile` that registers with `launch_id`; returns a handle
        for release(). Raises ProvisionError with a readable reason."""
        ...

    async def watch_start(self, handle: Any, on_progress: Callable[[str], None]) -> None:
        """Follow the agent behind `handle` until the pool cancels this (it registered or
        was released). Calls `on_progress` with a phrase for users whenever where the start
        stands changes; raises ProvisionError, naming where to look, as soon as the agent
        has ended without registering."""
        ...

    async def release(self, handle: Any) -> None:
        """Stop the agent behind `handle` (idempotent)."""
        ...

    def describe(self, handle: Any) -> str:
        """A short phrase for users naming what was started."""
        ...


_TAIL_BYTES = 4096
_LINE_MAX = 200


def last_line(path: Path) -> str:
    """The last non-empty line of a (log) file, shortened; "" when there is none. Blocking:
    call it through asyncio.to_thread."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
            tail = f.read().decode(errors="replace")
    except OSError:  # e.g. a compute node's file that this host cannot see
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= _LINE_MAX else line[: _LINE_MAX - 1] + "…"
