"""The coordinator's SQLite database with group commit.

Writes are queued and one writer task commits everything queued so far in a single
transaction, so a burst of submissions costs a handful of commits, not one each. Each
write returns a future resolved once it is durable; callers that acknowledge something
to a peer await it, and event subscribers are only woken after it.

Every mutable row is written as a full upsert, so grouping writes by statement inside
one transaction never reorders two writes to the same row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from c3.errors import Unavailable

log = logging.getLogger(__name__)

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS transitions (
  job_id TEXT NOT NULL, idx INTEGER NOT NULL, state INTEGER NOT NULL, at REAL NOT NULL,
  note TEXT NOT NULL, PRIMARY KEY (job_id, idx));
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT NOT NULL, seq INTEGER NOT NULL, payload BLOB NOT NULL,
  PRIMARY KEY (job_id, seq));
"""

_Write = tuple[str, Sequence[Any], "asyncio.Future[None]"]


class Database:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> Database:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.executescript(SCHEMA)
        await conn.commit()
        db = cls(conn)
        db._writer = asyncio.create_task(db._write_loop(), name="coordinator-db-writer")
        return db

    def write(self, sql: str, params: Sequence[Any]) -> asyncio.Future[None]:
        """Queue one write; the future resolves when it is committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            fut.set_exception(Unavailable("coordinator is shutting down"))
            return fut
        self._queue.put_nowait((sql, params, fut))
        return fut

    async def barrier(self) -> None:
        """Returns once every write queued before this call is committed."""
        await self.write("SELECT 1", ())

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self._conn.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())

    async def _write_loop(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            await self._commit(batch)
            if stop:
                return

    async def _commit(self, batch: list[_Write]) -> None:
        grouped: dict[str, list[Sequence[Any]]] = {}
        for sql, params, _ in batch:
            if sql != "SELECT 1":
                grouped.setdefault(sql, []).append(params)
        error: BaseException | None = None
        try:
            for sql, rows in grouped.items():
                await self._conn.executemany(sql, rows)
            await self._conn.commit()
        except Exception as exc:  # a failed commit must reach every waiter, not vanish
            log.exception("database commit of %d writes failed", len(batch))
            error = exc
            await self._conn.rollback()
        for _, _, fut in batch:
            if fut.done():
                continue
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(Unavailable(f"database write failed: {error}"))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        if self._writer is not None:
            await self._writer
        await self._conn.close()
