"""The provider interface: provision an agent for a profile, release it again."""

from __future__ import annotations

import sys
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

    def argv(self, provider: str, profile: str, data_dir: str) -> list[str]:
        return [
            self.python, "-m", "agent.main", "--coordinator", self.coordinator,
            "--secret-file", str(self.secret_file), "--data-dir", data_dir,
            "--provider", provider, "--profile", profile,
        ]  # fmt: skip


class Provider(Protocol):
    name: str

    async def provision(self, profile: str, gpu_count: int) -> Any:
        """Start one agent for `profile`; returns a handle for release(). Raises
        ProvisionError with a readable reason."""
        ...

    async def release(self, handle: Any) -> None:
        """Stop the agent behind `handle` (idempotent)."""
        ...

    def describe(self, handle: Any) -> str:
        """A short phrase for users: what was started and where it stands."""
        ...
