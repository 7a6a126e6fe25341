"""The coordinator's settings: one default and one environment override each."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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
    # TLS (coordinator/main.py --tls-*): server cert/key, optional client CA (mutual TLS),
    # and the CA the coordinator trusts when it dials storaged.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    storage_tls_ca: Path | None = None
    # Jobs an org may have scheduling or running at once, by plan; 0 means no limit.
    # A plan not listed gets the "free" limit.
    concurrency_limits: tuple[tuple[str, int], ...] = (("free", 1), ("pro", 10), ("team", 50))
    # A RUNNING job past its time limit by this much is timed out by the coordinator
    # (the agent should have stopped it); if the agent stays silent for as long again
    # after the cancel, the coordinator records TIMED_OUT itself.
    time_limit_grace_s: float = 30.0
    # A finished job stays in memory this long after it finished or was last read; older
    # jobs are read from the database when asked for (coordinator/residency.py).
    keep_finished_s: float = 600.0
    # A superseding job waits this long for the agent of the job it replaces.
    supersede_hold_s: float = 2.0
    # Warm pools and providers (coordinator/pools.py); None: agents come only from outside.
    pool_config: Path | None = None
    # Where provider-started agents keep their data (default: data_dir/agents).
    agents_dir: Path | None = field(default=None)

    def concurrency_limit(self, plan: str) -> int:
        # Called on every placement: a scan of a few pairs, no dict built per call.
        fallback = None
        for name, limit in reversed(self.concurrency_limits):  # the last entry for a plan wins
            if name == plan:
                return limit
            if name == "free" and fallback is None:
                fallback = limit
        return 1 if fallback is None else fallback

    @property
    def plans(self) -> frozenset[str]:
        """Every plan an org may be on: the built-in ones and any named in the limits."""
        defaults = CoordinatorConfig.concurrency_limits
        return frozenset(name for name, _ in (*defaults, *self.concurrency_limits))

    @property
    def database(self) -> Path:
        return self.data_dir / "coordinator.db"

    @property
    def loss_after_s(self) -> float:
        return self.heartbeat_ms * self.loss_intervals / 1000.0
