"""What the coordinator keeps durably, as one interface: every part reads and writes its
records through it and none sees a table or a statement.

`coordinator/repo.py` implements it on SQLite with group commit (coordinator/db.py); a
PostgreSQL backend implements the same methods. The contract both keep:

- A `put_*`, `add_*` or `drop_*` is queued at once, in call order, and returns a future
  resolved once it is durable. Writes queued before a commit starts land in that commit
  together, so what one synchronous step writes (a job's final row, its charge, its
  pending release) is durable together or not at all.
- `put_job` reads the job when its commit starts: several saves before one commit cost one
  row, the newest.
- `barrier()` returns once everything queued before it is durable.
- Reads see every write whose future has resolved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Container, Sequence
from typing import Protocol

from c3.v1 import common_pb2
from coordinator.lifecycle import State
from coordinator.model import AgentRecord, ApiKey, Charge, Job, Org, Transition


class Repository(Protocol):
    async def barrier(self) -> None: ...

    async def close(self) -> None: ...

    # -- orgs, keys, operators, agent secrets ----------------------------------------
    def put_org(self, org: Org) -> asyncio.Future[None]: ...

    async def load_orgs(self) -> list[Org]: ...

    def put_key(self, key: ApiKey) -> asyncio.Future[None]: ...

    async def load_keys(self) -> list[ApiKey]: ...

    def put_operator(self, org_id: str) -> asyncio.Future[None]: ...

    async def load_operators(self) -> set[str]: ...

    def put_provisioning_secret(
        self, secret_id: str, salt: bytes, digest: bytes, at: float
    ) -> asyncio.Future[None]: ...

    async def load_provisioning_secrets(self) -> list[tuple[str, bytes, bytes]]: ...

    def put_one_time_secret(self, secret_id: str, used_at: float) -> asyncio.Future[None]:
        """A one-time provisioning secret and when it was used (0.0: not yet)."""
        ...

    async def load_one_time_secrets(self) -> dict[str, float]: ...

    # -- agents --------------------------------------------------------------------------
    def put_agent(self, agent: AgentRecord) -> asyncio.Future[None]: ...

    async def load_agents(self) -> list[AgentRecord]: ...

    # -- jobs ----------------------------------------------------------------------------
    def put_job(self, job: Job) -> asyncio.Future[None]: ...

    def add_transition(self, job_id: str, index: int, t: Transition) -> asyncio.Future[None]: ...

    async def load_jobs(self, finished_since: float) -> list[Job]:
        """Every unfinished job and those finished at `finished_since` or later."""
        ...

    async def load_job(self, job_id: str) -> Job | None: ...

    async def jobs_newest_first(
        self,
        org_id: str,
        states: Collection[State],
        project: str,
        want: int,
        skip: Container[str] = (),
        floor: tuple[float, str] = (float("-inf"), ""),
    ) -> list[Job]:
        """An org's jobs in `states` (in `project` unless ""), newest first, from `floor`
        (created_at, id) on, leaving out the ids in `skip`: at most `want` (0: all)."""
        ...

    # -- job events ----------------------------------------------------------------------
    def add_event(self, event: common_pb2.JobEvent) -> asyncio.Future[None]: ...

    async def events_after(
        self, job_id: str, after_seq: int, limit: int = 1000
    ) -> list[common_pb2.JobEvent]: ...

    async def last_seqs(self, job_ids: Sequence[str]) -> dict[str, int]: ...

    # -- storage holds a finished job still has to release -------------------------------
    def put_pending_release(self, job_id: str, org_id: str) -> asyncio.Future[None]: ...

    def drop_pending_release(self, job_id: str) -> asyncio.Future[None]: ...

    async def pending_releases(self) -> list[tuple[str, str]]: ...

    # -- billing -------------------------------------------------------------------------
    def put_charge(self, charge: Charge) -> asyncio.Future[None]: ...

    async def load_charges(self) -> list[Charge]: ...
