"""The coordinator's SQLite database with group commit: the storage engine under
`coordinator/repo.py` (which holds every statement; this module the schema).

Writes are queued and one writer task commits everything queued so far in a single
transaction (one hop to the database thread), so a burst of submissions costs a handful
of commits, not one each. Repeated upserts of one row before a commit collapse into one. Each
write returns a future resolved once it is durable; callers that acknowledge something
to a peer await it, and event subscribers are only woken after it. Every write queued for
one commit shares one future (see `_Durable`): at thousands of writes a second a future
per write, each with its own callbacks, cost more than the SQL.

Every mutable row is written as a full upsert, so grouping writes by statement inside
one transaction never reorders two writes to the same row.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import aiosqlite

from c3.errors import Unavailable
from c3.sqlite import open_database
from coordinator.lifecycle import FINISHED, State

log = logging.getLogger(__name__)

# Written into the partial indexes below; a query uses one only with the same IN list.
LIVE_STATES_SQL = ",".join(str(int(s)) for s in sorted(set(State) - FINISHED))
FINISHED_STATES_SQL = ",".join(str(int(s)) for s in sorted(FINISHED))

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS orgs (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, plan TEXT NOT NULL,
  balance_minor INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY, org_id TEXT NOT NULL, name TEXT NOT NULL, salt BLOB NOT NULL,
  digest BLOB NOT NULL, admin INTEGER NOT NULL, created_at REAL NOT NULL,
  last_used_at REAL NOT NULL, revoked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS provisioning_secrets (
  id TEXT PRIMARY KEY, salt BLOB NOT NULL, digest BLOB NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS agents (
  id TEXT PRIMARY KEY, salt BLOB NOT NULL, digest BLOB NOT NULL, capabilities BLOB NOT NULL,
  registered_at REAL NOT NULL, revoked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, org_id TEXT NOT NULL, state INTEGER NOT NULL,
  created_at REAL NOT NULL, spec BLOB NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_org ON jobs(org_id, created_at);
-- A restart loads live and recently finished jobs through these, not by reading every row.
CREATE INDEX IF NOT EXISTS jobs_live ON jobs(state) WHERE state IN ({LIVE_STATES_SQL});
CREATE INDEX IF NOT EXISTS jobs_finished_at ON jobs(json_extract(data, '$.finished_at'))
  WHERE state IN ({FINISHED_STATES_SQL});
CREATE TABLE IF NOT EXISTS transitions (
  job_id TEXT NOT NULL, idx INTEGER NOT NULL, state INTEGER NOT NULL, at REAL NOT NULL,
  note TEXT NOT NULL, PRIMARY KEY (job_id, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT NOT NULL, seq INTEGER NOT NULL, payload BLOB NOT NULL,
  PRIMARY KEY (job_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending_releases (
  job_id TEXT PRIMARY KEY, org_id TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS operator_orgs (org_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS one_time_secrets (id TEXT PRIMARY KEY, used_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS charges (
  job_id TEXT PRIMARY KEY, org_id TEXT NOT NULL, amount_minor INTEGER NOT NULL,
  millis INTEGER NOT NULL, gpu_profile TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS charges_org ON charges(org_id, at);
"""

_Write = tuple[str, Sequence[Any]]
# A row written at commit time from the object's state then (see `write_latest`).
_RowFn = Callable[[], Sequence[Any]]


# "INSERT [OR REPLACE] INTO t VALUES (?,…)": statements that can take many rows at once.
_SINGLE_ROW_INSERT = re.compile(r"^(INSERT (?:OR REPLACE )?INTO \w+ VALUES )(\([?,]+\))$")
_CHUNK_SIZES = (128, 32, 8)


def _insert_rows(raw: sqlite3.Connection, sql: str, rows: list[Sequence[Any]]) -> None:
    """Write `rows` with as few statements as possible.

    executemany steps once per row, and the sqlite3 module drops and retakes the GIL on
    every step; under load that hand-off, not the SQL, was the commit's cost. A
    multi-row VALUES list is one step per chunk of rows, with the same effect in order.
    """
    match = _SINGLE_ROW_INSERT.match(sql)
    if match is None or len(rows) < 2:
        raw.executemany(sql, rows)
        return
    head, group = match.groups()
    start = 0
    for size in _CHUNK_SIZES:  # a few fixed sizes, so the compiled statements are reused
        statement = head + ",".join([group] * size)
        while len(rows) - start >= size:
            chunk = rows[start : start + size]
            raw.execute(statement, list(chain.from_iterable(chunk)))
            start += size
    if start < len(rows):
        raw.executemany(sql, rows[start:])


class _Durable(asyncio.Future[None]):
    """The future every write of one commit shares.

    It refuses cancellation: a caller cancelled while awaiting it (a client that hung up)
    must not cancel it for every other writer of the same commit. Such a caller's task
    is still cancelled, once the commit it waits on has finished.
    """

    def cancel(self, msg: object = None) -> bool:
        return False


class Database:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._writes: list[_Write] = []
        self._latest: dict[tuple[str, str], _RowFn] = {}
        self._batch: _Durable | None = None  # the future of the writes queued so far
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0  # transactions committed (group commit makes this << writes)

    @classmethod
    async def open(cls, path: Path) -> Database:
        conn = await open_database(path, SCHEMA)
        db = cls(conn)
        db._writer = asyncio.create_task(db._write_loop(), name="coordinator-db-writer")
        return db

    def _durable_future(self) -> asyncio.Future[None]:
        if self._closed:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_exception(Unavailable("coordinator is shutting down"))
            return fut
        if self._batch is None:
            self._batch = _Durable()
            self._wake.set()
        return self._batch

    def write(self, sql: str, params: Sequence[Any]) -> asyncio.Future[None]:
        """Queue one write; the future resolves when it is committed."""
        fut = self._durable_future()
        if not fut.done():
            self._writes.append((sql, params))
        return fut

    def write_latest(self, sql: str, key: str, row: _RowFn) -> asyncio.Future[None]:
        """Queue a full-row upsert whose values `row()` reads at commit time.

        Several writes of the same row before a commit become one, serialized once, with
        the newest state; the future still resolves only once that state is durable.
        """
        fut = self._durable_future()
        if not fut.done():
            self._latest[(sql, key)] = row
        return fut

    async def barrier(self) -> None:
        """Returns once every write queued before this call is committed."""
        await self._durable_future()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self._conn.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())

    async def _write_loop(self) -> None:
        while True:
            batch = self._batch
            if batch is None:
                if self._closed:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            writes, latest = self._writes, self._latest
            self._writes, self._latest, self._batch = [], {}, None
            await self._commit(writes, latest, batch)

    async def _commit(
        self,
        writes: list[_Write],
        latest: dict[tuple[str, str], _RowFn],
        batch: asyncio.Future[None],
    ) -> None:
        grouped: dict[str, list[Sequence[Any]]] = {}
        for sql, params in writes:
            grouped.setdefault(sql, []).append(params)
        for (sql, _key), row in latest.items():
            grouped.setdefault(sql, []).append(row())
        error: BaseException | None = None
        try:
            # One hop to the database thread per transaction, not one per statement.
            await self._conn._execute(self._commit_in_thread, grouped)
            self.commits += 1
        except Exception as exc:  # a failed commit must reach every waiter, not vanish
            log.exception("database commit of %d writes failed", len(writes) + len(latest))
            error = exc
        if error is None:
            batch.set_result(None)
        else:
            batch.set_exception(Unavailable(f"database write failed: {error}"))
            # Mark it retrieved: writers that never await their future must not make
            # asyncio log "exception was never retrieved" on top of the log line above.
            batch.exception()

    def _commit_in_thread(self, grouped: dict[str, list[Sequence[Any]]]) -> None:
        raw = self._conn._conn  # runs on aiosqlite's own thread, the connection's owner
        try:
            for sql, rows in grouped.items():
                _insert_rows(raw, sql, rows)
            raw.commit()
        except BaseException:
            raw.rollback()
            raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
        await self._conn.close()
