"""Repository: the only module that knows the table layout (so PostgreSQL can follow)."""

from __future__ import annotations

import asyncio
import json

from c3.v1 import common_pb2
from coordinator.db import Database
from coordinator.lifecycle import Reason, State
from coordinator.model import AgentRecord, ApiKey, Job, Org, Startup, Transition

_UPSERT_ORG = "INSERT OR REPLACE INTO orgs VALUES (?,?,?,?,?)"
_UPSERT_KEY = "INSERT OR REPLACE INTO api_keys VALUES (?,?,?,?,?,?,?,?,?)"
_INSERT_PROV = "INSERT OR REPLACE INTO provisioning_secrets VALUES (?,?,?,?)"
_UPSERT_AGENT = "INSERT OR REPLACE INTO agents VALUES (?,?,?,?,?,?)"
_UPSERT_JOB = "INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?)"
_INSERT_TRANSITION = "INSERT OR REPLACE INTO transitions VALUES (?,?,?,?,?)"
_INSERT_EVENT = "INSERT INTO events VALUES (?,?,?)"

# Job fields kept in the JSON `data` column (everything but id/org/state/spec/transitions).
_JOB_DATA_FIELDS = (
    "created_at", "failure_reason", "exit_code", "message", "agent_id", "gpu_profile",
    "provider", "region", "started_at", "finished_at", "assigned_at", "artifacts_path",
    "artifacts_version", "prefer_agent_id", "cancel_requested", "log_bytes", "truncated_bytes",
    "pool", "log_index",
)  # fmt: skip


# Made once: the job row is encoded thousands of times a second under load.
_encode_json = json.JSONEncoder(check_circular=False, separators=(",", ":")).encode


def _job_row(job: Job) -> tuple[object, ...]:
    data = {name: getattr(job, name) for name in _JOB_DATA_FIELDS}
    data["startup"] = dict(vars(job.startup))  # flat dataclass: no asdict() deep copy
    if not job.spec_bytes:  # the spec never changes after submit: serialize it once
        job.spec_bytes = job.spec.SerializeToString()
    return (job.id, job.org_id, int(job.state), job.created_at, job.spec_bytes, _encode_json(data))


class Repository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- orgs and keys ---------------------------------------------------------------
    def put_org(self, org: Org) -> asyncio.Future[None]:
        return self.db.write(
            _UPSERT_ORG, (org.id, org.name, org.plan, org.balance_minor, org.created_at)
        )

    async def load_orgs(self) -> list[Org]:
        rows = await self.db.fetchall("SELECT * FROM orgs")
        return [Org(r[0], r[1], r[2], int(r[3]), float(r[4])) for r in rows]

    def put_key(self, key: ApiKey) -> asyncio.Future[None]:
        return self.db.write(
            _UPSERT_KEY,
            (
                key.id, key.org_id, key.name, key.salt, key.digest, int(key.admin),
                key.created_at, key.last_used_at, int(key.revoked),
            ),
        )  # fmt: skip

    async def load_keys(self) -> list[ApiKey]:
        rows = await self.db.fetchall("SELECT * FROM api_keys")
        return [
            ApiKey(r[0], r[1], r[2], bytes(r[3]), bytes(r[4]), bool(r[5]), r[6], r[7], bool(r[8]))
            for r in rows
        ]

    def put_provisioning_secret(
        self, secret_id: str, salt: bytes, digest: bytes, at: float
    ) -> asyncio.Future[None]:
        return self.db.write(_INSERT_PROV, (secret_id, salt, digest, at))

    async def load_provisioning_secrets(self) -> list[tuple[str, bytes, bytes]]:
        rows = await self.db.fetchall("SELECT id, salt, digest FROM provisioning_secrets")
        return [(r[0], bytes(r[1]), bytes(r[2])) for r in rows]

    # -- agents ------------------------------------------------------------------------
    def put_agent(self, agent: AgentRecord) -> asyncio.Future[None]:
        return self.db.write(
            _UPSERT_AGENT,
            (
                agent.id, agent.salt, agent.digest, agent.capabilities, agent.registered_at,
                int(agent.revoked),
            ),
        )  # fmt: skip

    async def load_agents(self) -> list[AgentRecord]:
        rows = await self.db.fetchall("SELECT * FROM agents")
        return [
            AgentRecord(r[0], bytes(r[1]), bytes(r[2]), bytes(r[3]), float(r[4]), bool(r[5]))
            for r in rows
        ]

    # -- jobs --------------------------------------------------------------------------
    def put_job(self, job: Job) -> asyncio.Future[None]:
        """Upsert the job's row; saves before the next commit collapse into one."""
        return self.db.write_latest(_UPSERT_JOB, job.id, lambda: _job_row(job))

    def add_transition(self, job_id: str, index: int, t: Transition) -> asyncio.Future[None]:
        return self.db.write(_INSERT_TRANSITION, (job_id, index, int(t.state), t.at, t.note))

    async def load_jobs(self) -> list[Job]:
        rows = await self.db.fetchall("SELECT * FROM jobs ORDER BY created_at")
        trows = await self.db.fetchall("SELECT * FROM transitions ORDER BY job_id, idx")
        transitions: dict[str, list[Transition]] = {}
        for job_id, _idx, state, at, note in trows:
            transitions.setdefault(job_id, []).append(Transition(State(state), at, note))
        jobs = []
        for job_id, org_id, state, created_at, spec_bytes, data_text in rows:
            data = json.loads(data_text)
            startup = Startup(**data.pop("startup"))
            data["failure_reason"] = Reason(data["failure_reason"])
            data["created_at"] = created_at
            spec = common_pb2.JobSpec.FromString(spec_bytes)
            jobs.append(
                Job(
                    id=job_id, org_id=org_id, spec=spec, state=State(state), startup=startup,
                    transitions=transitions.get(job_id, []), **data,
                )
            )  # fmt: skip
        return jobs

    # -- events ------------------------------------------------------------------------
    def add_event(self, event: common_pb2.JobEvent) -> asyncio.Future[None]:
        return self.db.write(_INSERT_EVENT, (event.job_id, event.seq, event.SerializeToString()))

    async def events_after(
        self, job_id: str, after_seq: int, limit: int = 1000
    ) -> list[common_pb2.JobEvent]:
        rows = await self.db.fetchall(
            "SELECT payload FROM events WHERE job_id=? AND seq>? ORDER BY seq LIMIT ?",
            (job_id, after_seq, limit),
        )
        return [common_pb2.JobEvent.FromString(r[0]) for r in rows]

    async def last_seqs(self) -> dict[str, int]:
        rows = await self.db.fetchall("SELECT job_id, MAX(seq) FROM events GROUP BY job_id")
        return {r[0]: int(r[1]) for r in rows}
