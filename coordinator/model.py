"""Domain records of the coordinator. Times are Unix seconds (float)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from c3.v1 import common_pb2
from coordinator.lifecycle import Reason, State


@dataclass(frozen=True)
class Org:
    id: str
    name: str
    plan: str
    balance_minor: int
    created_at: float


@dataclass
class ApiKey:
    id: str
    org_id: str
    name: str
    salt: bytes
    digest: bytes
    admin: bool
    created_at: float
    last_used_at: float = 0.0
    revoked: bool = False


@dataclass(frozen=True)
class Transition:
    state: State
    at: float
    note: str = ""


@dataclass
class Startup:
    allocation_ms: float = 0.0
    agent_pickup_ms: float = 0.0
    workspace_fetch_ms: float = 0.0
    environment_ms: float = 0.0
    script_start_ms: float = 0.0
    warm_pool_hit: bool = False


@dataclass
class Job:
    id: str
    org_id: str
    # The job spec is the wire contract itself; it is validated once, at submit.
    spec: common_pb2.JobSpec
    state: State
    created_at: float
    failure_reason: Reason = Reason.UNSPECIFIED
    exit_code: int = 0
    message: str = ""
    agent_id: str = ""
    gpu_profile: str = ""
    provider: str = ""
    region: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    assigned_at: float = 0.0
    transitions: list[Transition] = field(default_factory=list)
    startup: Startup = field(default_factory=Startup)
    artifacts_path: str = ""
    artifacts_version: int = 0
    prefer_agent_id: str = ""
    cancel_requested: bool = False
    log_bytes: int = 0
    truncated_bytes: int = 0
    # Highest LogLine.index accepted (0: none, or an old agent). Persisted in the job row,
    # which commits in the same transaction as the events it counts (see append_logs).
    log_index: int = 0
    # The warm pool (profile) the job's agent came from; "" for agents from outside a pool.
    pool: str = ""
    # Not persisted: while set, the job waits for this agent (supersede in watch mode).
    hold_agent_id: str = field(default="", compare=False)
    # Not persisted: the spec's wire bytes, kept once serialized (the spec is immutable).
    spec_bytes: bytes = field(default=b"", compare=False, repr=False)

    @property
    def runtime_seconds(self) -> float:
        if not self.started_at:
            return 0.0
        end = self.finished_at or time.time()
        return max(0.0, end - self.started_at)


@dataclass
class AgentRecord:
    id: str
    salt: bytes
    digest: bytes
    capabilities: bytes  # serialized AgentCapabilities, as last registered
    registered_at: float
    revoked: bool = False


@dataclass(frozen=True)
class Charge:
    """What one finished job cost its org (coordinator/billing.py)."""

    job_id: str
    org_id: str
    amount_minor: int
    millis: int
    gpu_profile: str
    at: float
