"""Local-first job history: every event c3d sees is mirrored into its own SQLite file, so
`c3ctl logs` of a past job is instant and works offline, and a follow resumes from the last
sequence number it stored."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import aiosqlite

from c3.sqlite import open_database
from c3.v1 import common_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events(
  job_id TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY(job_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS finished(
  job_id TEXT PRIMARY KEY, state INTEGER NOT NULL) WITHOUT ROWID;
"""

FINAL_STATES = frozenset({
    common_pb2.JOB_STATE_COMPLETED,
    common_pb2.JOB_STATE_SYNCED,
    common_pb2.JOB_STATE_FAILED,
    common_pb2.JOB_STATE_CANCELED,
    common_pb2.JOB_STATE_TIMED_OUT,
})


class History:
    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> History:
        self._db = await open_database(self.db_path, _SCHEMA)
        return self

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def __aenter__(self) -> History:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("History is not open")
        return self._db

    async def record(self, events: list[common_pb2.JobEvent]) -> None:
        """Store events (idempotent per (job, seq)); remember jobs that reached a final state."""
        if not events:
            return
        await self.db.executemany(
            "INSERT OR IGNORE INTO events VALUES (?,?,?)",
            [(e.job_id, e.seq, e.SerializeToString()) for e in events],
        )
        finals = [
            (e.job_id, e.status.state)
            for e in events
            if e.HasField("status") and e.status.state in FINAL_STATES
        ]
        if finals:
            await self.db.executemany("INSERT OR REPLACE INTO finished VALUES (?,?)", finals)
        await self.db.commit()

    async def events(self, job_id: str, after_seq: int = 0) -> list[common_pb2.JobEvent]:
        async with self.db.execute(
            "SELECT data FROM events WHERE job_id=? AND seq>? ORDER BY seq", (job_id, after_seq)
        ) as cur:
            rows = await cur.fetchall()
        out = []
        for (data,) in rows:
            event = common_pb2.JobEvent()
            event.ParseFromString(data)
            out.append(event)
        return out

    async def last_seq(self, job_id: str) -> int:
        async with self.db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id=?", (job_id,)
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def is_finished(self, job_id: str) -> bool:
        async with self.db.execute("SELECT 1 FROM finished WHERE job_id=?", (job_id,)) as cur:
            return await cur.fetchone() is not None
