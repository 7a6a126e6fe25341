"""The SQLite repository: every SQL statement the coordinator runs is in this module
(the schema is in coordinator/db.py, the engine under it). It implements the interface in
coordinator/repository.py, which is all the rest of the coordinator sees."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Container, Sequence
from pathlib import Path
from typing import Any

from c3.v1 import common_pb2
from coordinator.db import FINISHED_STATES_SQL, LIVE_STATES_SQL, Database
from coordinator.lifecycle import Reason, State
from coordinator.model import AgentRecord, ApiKey, Charge, Job, Org, Startup, Transition

_UPSERT_ORG = "INSERT OR REPLACE INTO orgs VALUES (?,?,?,?,?)"
_UPSERT_KEY = "INSERT OR REPLACE INTO api_keys VALUES (?,?,?,?,?,?,?,?,?)"
_INSERT_PROV = "INSERT OR REPLACE INTO provisioning_secrets VALUES (?,?,?,?)"
_UPSERT_AGENT = "INSERT OR REPLACE INTO agents VALUES (?,?,?,?,?,?)"
_UPSERT_JOB = "INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?)"
_INSERT_TRANSITION = "INSERT OR REPLACE INTO transitions VALUES (?,?,?,?,?)"
_INSERT_EVENT = "INSERT INTO events VALUES (?,?,?)"
_INSERT_PENDING_RELEASE = "INSERT OR REPLACE INTO pending_releases VALUES (?,?)"
_INSERT_OPERATOR = "INSERT OR REPLACE INTO operator_orgs VALUES (?)"
_UPSERT_ONE_TIME = "INSERT OR REPLACE INTO one_time_secrets VALUES (?,?)"
_UPSERT_CHARGE = "INSERT OR REPLACE INTO charges VALUES (?,?,?,?,?,?)"

# Job fields kept in the JSON `data` column (everything but id/org/state/spec/transitions).
_JOB_DATA_FIELDS = (
    "created_at", "failure_reason", "exit_code", "message", "agent_id", "gpu_profile",
    "provider", "region", "started_at", "finished_at", "assigned_at", "artifacts_path",
    "artifacts_version", "prefer_agent_id", "cancel_requested", "log_bytes", "truncated_bytes",
    "pool", "log_index",
)  # fmt: skip


# The jobs kept in memory (see coordinator/residency.py): unfinished, or finished since ?.
# Two index searches (db.py's jobs_live and jobs_finished_at), not a read of every row.
_RESIDENT_JOBS = (
    f"SELECT * FROM jobs WHERE state IN ({LIVE_STATES_SQL}) UNION ALL "
    f"SELECT * FROM jobs WHERE state IN ({FINISHED_STATES_SQL}) "
    "AND json_extract(data, '$.finished_at') >= ? ORDER BY created_at"
)
_LIST_PAGE = 1000
_IDS_PER_QUERY = 500
_MIN_ROWS_PER_QUERY = 32

# Made once: the job row is encoded thousands of times a second under load.
_encode_json = json.JSONEncoder(check_circular=False, separators=(",", ":")).encode


def _job_from_row(
    row: Sequence[Any], transitions: list[Transition], spec: common_pb2.JobSpec | None = None
) -> Job:
    job_id, org_id, state, created_at, spec_bytes, data_text = row
    data = json.loads(data_text)
    startup = Startup(**data.pop("startup"))
    data["failure_reason"] = Reason(data["failure_reason"])
    data["created_at"] = created_at
    return Job(
        id=job_id, org_id=org_id, spec=spec or common_pb2.JobSpec.FromString(spec_bytes),
        state=State(state), startup=startup, transitions=transitions, **data,
    )  # fmt: skip


def _job_row(job: Job) -> tuple[object, ...]:
    data = {name: getattr(job, name) for name in _JOB_DATA_FIELDS}
    data["startup"] = dict(vars(job.startup))  # flat dataclass: no asdict() deep copy
    if not job.spec_bytes:  # the spec never changes after submit: serialize it once
        job.spec_bytes = job.spec.SerializeToString()
    return (job.id, job.org_id, int(job.state), job.created_at, job.spec_bytes, _encode_json(data))


class SqliteRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    async def open(cls, path: Path) -> SqliteRepository:
        return cls(await Database.open(path))

    async def barrier(self) -> None:
        await self.db.barrier()

    async def close(self) -> None:
        await self.db.close()

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

    def put_operator(self, org_id: str) -> asyncio.Future[None]:
        return self.db.write(_INSERT_OPERATOR, (org_id,))

    async def load_operators(self) -> set[str]:
        return {r[0] for r in await self.db.fetchall("SELECT org_id FROM operator_orgs")}

    def put_one_time_secret(self, secret_id: str, used_at: float) -> asyncio.Future[None]:
        return self.db.write(_UPSERT_ONE_TIME, (secret_id, used_at))

    async def load_one_time_secrets(self) -> dict[str, float]:
        rows = await self.db.fetchall("SELECT id, used_at FROM one_time_secrets")
        return {r[0]: float(r[1]) for r in rows}

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

    async def load_jobs(self, finished_since: float) -> list[Job]:
        """Every unfinished job, and the finished ones that finished at `finished_since` or
        later (the rest stay in the database until someone asks for them)."""
        rows = await self.db.fetchall(_RESIDENT_JOBS, (finished_since,))
        transitions = await self._transitions_of([row[0] for row in rows])
        return [_job_from_row(row, transitions.get(row[0], [])) for row in rows]

    async def load_job(self, job_id: str) -> Job | None:
        rows = await self.db.fetchall("SELECT * FROM jobs WHERE id=?", (job_id,))
        if not rows:
            return None
        return _job_from_row(rows[0], (await self._transitions_of([job_id])).get(job_id, []))

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
        (created_at, id) on and leaving out the ids in `skip`: at most `want` of them, or
        all when `want` is 0. Ids are read a page at a time and whole rows only as needed,
        so a long history costs little more than the answer."""
        if not states:
            return []
        marks = ",".join("?" * len(states))
        page_sql = (
            f"SELECT id, created_at FROM jobs WHERE org_id=? AND state IN ({marks}) "
            "AND (created_at, id) < (?, ?) AND (created_at, id) >= (?, ?) "
            "ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        found: list[Job] = []
        cursor: tuple[float, str] = (float("inf"), "")
        while not want or len(found) < want:
            page = await self.db.fetchall(
                page_sql, (org_id, *(int(s) for s in states), *cursor, *floor, _LIST_PAGE)
            )
            kept = [job_id for job_id, _ in page if job_id not in skip]
            while kept and (not want or len(found) < want):
                size = max(_MIN_ROWS_PER_QUERY, want - len(found)) if want else _IDS_PER_QUERY
                chunk, kept = kept[: min(size, _IDS_PER_QUERY)], kept[min(size, _IDS_PER_QUERY) :]
                rows = {
                    row[0]: row
                    for row in await self.db.fetchall(
                        f"SELECT * FROM jobs WHERE id IN ({','.join('?' * len(chunk))})", chunk
                    )
                }
                for job_id in chunk:
                    row = rows.get(job_id)
                    if row is None:
                        continue
                    spec = common_pb2.JobSpec.FromString(row[4])
                    if not project or spec.project == project:
                        found.append(_job_from_row(row, [], spec))
            if len(page) < _LIST_PAGE:
                break
            cursor = (page[-1][1], page[-1][0])
        if want:
            found = found[:want]
        transitions = await self._transitions_of([job.id for job in found])
        for job in found:
            job.transitions = transitions.get(job.id, [])
        return found

    async def _transitions_of(self, job_ids: Sequence[str]) -> dict[str, list[Transition]]:
        transitions: dict[str, list[Transition]] = {}
        for start in range(0, len(job_ids), _IDS_PER_QUERY):
            chunk = job_ids[start : start + _IDS_PER_QUERY]
            rows = await self.db.fetchall(
                f"SELECT * FROM transitions WHERE job_id IN ({','.join('?' * len(chunk))}) "
                "ORDER BY job_id, idx",
                chunk,
            )
            for job_id, _idx, state, at, note in rows:
                transitions.setdefault(job_id, []).append(Transition(State(state), at, note))
        return transitions

    # -- storage holds a finished job still has to release (coordinator/holds.py) --------
    def put_pending_release(self, job_id: str, org_id: str) -> asyncio.Future[None]:
        return self.db.write(_INSERT_PENDING_RELEASE, (job_id, org_id))

    def drop_pending_release(self, job_id: str) -> asyncio.Future[None]:
        return self.db.write("DELETE FROM pending_releases WHERE job_id=?", (job_id,))

    async def pending_releases(self) -> list[tuple[str, str]]:
        rows = await self.db.fetchall("SELECT job_id, org_id FROM pending_releases")
        return [(r[0], r[1]) for r in rows]

    # -- billing -----------------------------------------------------------------------
    def put_charge(self, c: Charge) -> asyncio.Future[None]:
        return self.db.write(
            _UPSERT_CHARGE, (c.job_id, c.org_id, c.amount_minor, c.millis, c.gpu_profile, c.at)
        )

    async def load_charges(self) -> list[Charge]:
        rows = await self.db.fetchall("SELECT * FROM charges")
        return [Charge(r[0], r[1], int(r[2]), int(r[3]), r[4], float(r[5])) for r in rows]

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

    async def last_seqs(self, job_ids: Sequence[str]) -> dict[str, int]:
        """The last event seq of each of these jobs that has events."""
        seqs: dict[str, int] = {}
        for start in range(0, len(job_ids), _IDS_PER_QUERY):
            chunk = job_ids[start : start + _IDS_PER_QUERY]
            rows = await self.db.fetchall(
                "SELECT job_id, MAX(seq) FROM events "
                f"WHERE job_id IN ({','.join('?' * len(chunk))}) GROUP BY job_id",
                chunk,
            )
            seqs.update((r[0], int(r[1])) for r in rows)
        return seqs
