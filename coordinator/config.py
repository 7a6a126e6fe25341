"""The coordinator's settings: one default and one environment override each."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LISTEN = "127.0.0.1:7430"
DEFAULT_STORAGE = "127.0.0.1:7431"


def env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class CoordinatorConfig:
    data_dir: Path
    signing_key: Path
    listen: str = DEFAULT_LISTEN
    storage_address: str = DEFAULT_STORAGE
    heartbeat_ms: int = 2000
    # An agent silent for this many heartbeat intervals is lost.
    loss_intervals: int = 3
    log_cap_bytes: int = 64 * 1024 * 1024
    client_token_ttl_s: float = 900.0
    starting_credit_minor: int = 1000
    bootstrap_plan: str = "free"
    ready_file: Path | None = None
    bootstrap_file: Path | None = None

    @property
    def database(self) -> Path:
        return self.data_dir / "coordinator.db"

    @property
    def loss_after_s(self) -> float:
        return self.heartbeat_ms * self.loss_intervals / 1000.0
