"""storaged's metadata in SQLite (aiosqlite): which blobs exist, which org references
which blob, namespace versions and the job -> project links.

A blob row is written only after its file is durably in place, and removed before its
file is, so a crash leaves at worst an unreferenced file (reclaimed by GC), never a row
without bytes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from c3.sqlite import open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs(
  digest TEXT PRIMARY KEY, size INTEGER NOT NULL, stored_size INTEGER NOT NULL,
  compression INTEGER NOT NULL, last_seen REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS org_blobs(
  org TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY(org, digest)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS org_blobs_by_digest ON org_blobs(digest);
CREATE TABLE IF NOT EXISTS versions(
  org TEXT NOT NULL, path TEXT NOT NULL, version INTEGER NOT NULL, manifest TEXT NOT NULL,
  created_at REAL NOT NULL, files INTEGER NOT NULL, size INTEGER NOT NULL,
  message TEXT NOT NULL, PRIMARY KEY(org, path, version));
CREATE TABLE IF NOT EXISTS manifests(digest TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_projects(
  org TEXT NOT NULL, job_id TEXT NOT NULL, project TEXT NOT NULL,
  PRIMARY KEY(org, job_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holds(
  org TEXT NOT NULL, path TEXT NOT NULL, version INTEGER NOT NULL, holder TEXT NOT NULL,
  manifest TEXT NOT NULL, expires_at REAL NOT NULL,
  PRIMARY KEY(org, path, version, holder)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holds_by_holder ON holds(org, holder);
"""
_BATCH = 500
_TOUCH_SLACK_SECONDS = 60.0
_TOUCHED_REMEMBERED = 100_000


@dataclass(frozen=True)
class Version:
    path: str
    version: int
    manifest: str
    created_at: float
    files: int
    size: int
    message: str


@dataclass(frozen=True)
class HoldRow:
    path: str
    version: int
    holder: str


class VersionsHeld(Exception):
    """A removal touched versions that live holds pin (the catalog words the refusal)."""

    def __init__(self, holds: list[HoldRow]) -> None:
        super().__init__(f"{len(holds)} hold(s)")
        self.holds = holds


@dataclass(frozen=True)
class BlobRow:
    digest: str
    size: int
    stored_size: int
    compression: int


def _batches(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _BATCH):
        yield items[i : i + _BATCH]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class Metadata:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        # One connection shared by concurrent RPCs: each operation (its statements and its
        # commit) runs alone, so no statement is reset or committed under another's feet.
        self._lock = asyncio.Lock()
        # digest -> when this process last wrote its last_seen: within the slack a touch
        # needs no database trip at all (a job's manifest is read right after its push).
        self._touched: dict[str, float] = {}

    @classmethod
    async def open(cls, path: Path) -> Metadata:
        db = await open_database(path, _SCHEMA)
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._lock:
            return list(await self.db.execute_fetchall(sql, params))

    # Blobs ---------------------------------------------------------------------------

    async def referenced_by_org(self, org: str, digests: Sequence[str]) -> set[str]:
        if not digests:
            return set()
        # One query for any number of digests (a JSON array joined in SQLite), not one
        # per few hundred: a 10,000-file commit costs one round trip.
        rows = await self._rows(
            "SELECT digest FROM org_blobs WHERE org=? AND digest IN (SELECT value FROM json_each(?))",
            (org, json.dumps(list(digests))),
        )
        return {r[0] for r in rows}

    async def blob_rows(self, digests: Sequence[str]) -> dict[str, BlobRow]:
        if not digests:
            return {}
        rows = await self._rows(
            "SELECT digest, size, stored_size, compression FROM blobs"
            " WHERE digest IN (SELECT value FROM json_each(?))",
            (json.dumps(list(digests)),),
        )
        return {r[0]: BlobRow(*r) for r in rows}

    async def _touch(self, digests: Sequence[str]) -> None:
        # Rows seen within the last minute are left alone: a re-push of an unchanged tree
        # then writes nothing, and GC's grace period is hours.
        now = time.time()
        await self.db.execute(
            "UPDATE blobs SET last_seen=? WHERE digest IN (SELECT value FROM json_each(?))"
            " AND last_seen<?",
            (now, json.dumps(list(digests)), now - _TOUCH_SLACK_SECONDS),
        )

    async def touch(self, digests: Sequence[str]) -> None:
        """Mark blobs as just used: GC leaves them alone for its grace period."""
        now = time.time()
        stale = [d for d in digests if now - self._touched.get(d, 0.0) >= _TOUCH_SLACK_SECONDS]
        if not stale:
            return
        async with self._lock:
            await self._touch(stale)
            await self.db.commit()
        if len(self._touched) > _TOUCHED_REMEMBERED:
            self._touched.clear()
        self._touched.update(dict.fromkeys(stale, now))

    async def record_blobs(self, org: str, rows: Sequence[BlobRow], linked: Sequence[str]) -> None:
        """Register freshly stored blobs and link them plus `linked` (existing) to `org`:
        one transaction for the whole batch."""
        now = time.time()
        async with self._lock:
            if rows:
                await self.db.executemany(
                    "INSERT OR REPLACE INTO blobs VALUES (?,?,?,?,?)",
                    [(r.digest, r.size, r.stored_size, r.compression, now) for r in rows],
                )
            digests = [r.digest for r in rows] + list(linked)
            if digests:
                await self.db.executemany(
                    "INSERT OR IGNORE INTO org_blobs VALUES (?,?)", [(org, d) for d in digests]
                )
            if linked:
                await self._touch(linked)
            await self.db.commit()

    async def mark_manifest(self, digest: str) -> None:
        async with self._lock:
            await self.db.execute("INSERT OR IGNORE INTO manifests VALUES (?)", (digest,))
            await self.db.commit()

    async def stored_bytes(self, digests: Iterable[str]) -> int:
        total = 0
        for batch in _batches(list(digests)):
            rows = await self._rows(
                f"SELECT COALESCE(SUM(stored_size),0) FROM blobs WHERE digest IN ({_marks(len(batch))})",
                batch,
            )
            total += int(rows[0][0])
        return total

    # Versions --------------------------------------------------------------------------

    async def add_version(
        self, org: str, path: str, manifest: str, files: int, size: int, message: str
    ) -> Version:
        # One statement picks the next number, so concurrent commits cannot collide.
        async with self._lock:
            cur = await self.db.execute(
                "INSERT INTO versions SELECT ?, ?, COALESCE(MAX(version), 0) + 1, ?, ?, ?, ?, ?"
                " FROM versions WHERE org=? AND path=? RETURNING version, created_at",
                (org, path, manifest, time.time(), files, size, message, org, path),
            )
            row = await cur.fetchone()
            await cur.close()
            await self.db.commit()
        assert row is not None
        return Version(path, row[0], manifest, row[1], files, size, message)

    async def versions(self, org: str, path: str) -> list[Version]:
        rows = await self._rows(
            "SELECT path, version, manifest, created_at, files, size, message FROM versions"
            " WHERE org=? AND path=? ORDER BY version",
            (org, path),
        )
        return [Version(*r) for r in rows]

    async def versions_like(self, org: str, pattern: str) -> list[Version]:
        rows = await self._rows(
            "SELECT path, version, manifest, created_at, files, size, message FROM versions"
            " WHERE org=? AND path LIKE ? ORDER BY path, version",
            (org, pattern),
        )
        return [Version(*r) for r in rows]

    async def job_versions(self, org: str, project: str | None) -> list[Version]:
        """Versions of /jobs/<id> paths, of one project's jobs when `project` is set."""
        sql = (
            "SELECT v.path, v.version, v.manifest, v.created_at, v.files, v.size, v.message"
            " FROM versions v JOIN job_projects j ON j.org=v.org AND v.path='/jobs/' || j.job_id"
            " WHERE v.org=?"
        )
        params: list[Any] = [org]
        if project is not None:
            sql += " AND j.project=?"
            params.append(project)
        return [Version(*r) for r in await self._rows(sql + " ORDER BY v.path, v.version", params)]

    async def delete_versions(self, org: str, path: str, version: int | None) -> int:
        """Delete one version (or all) of a path, unless a live hold pins one: the check
        and the delete run under one lock, so a Hold cannot land in between."""
        async with self._lock:
            held = await self._live_holds(org, path, version)
            if held:
                raise VersionsHeld(held)
            if version is None:
                cur = await self.db.execute(
                    "DELETE FROM versions WHERE org=? AND path=?", (org, path)
                )
            else:
                cur = await self.db.execute(
                    "DELETE FROM versions WHERE org=? AND path=? AND version=?",
                    (org, path, version),
                )
            await self.db.commit()
            return cur.rowcount

    # Holds -----------------------------------------------------------------------------

    async def _live_holds(self, org: str, path: str, version: int | None) -> list[HoldRow]:
        sql = "SELECT path, version, holder FROM holds WHERE org=? AND path=? AND expires_at>?"
        params: list[Any] = [org, path, time.time()]
        if version is not None:
            sql += " AND version=?"
            params.append(version)
        rows = await self.db.execute_fetchall(sql + " ORDER BY version, holder", params)
        return [HoldRow(*r) for r in rows]

    async def live_holds(self, org: str, path: str, version: int | None) -> list[HoldRow]:
        async with self._lock:
            return await self._live_holds(org, path, version)

    async def add_hold(
        self, org: str, path: str, version: int, holder: str, expires_at: float
    ) -> bool:
        """Pin an existing version (renewing an existing hold); False if no such version.
        One statement checks the version and inserts, so a concurrent rm cannot slip in."""
        async with self._lock:
            cur = await self.db.execute(
                "INSERT OR REPLACE INTO holds SELECT org, path, version, ?, manifest, ?"
                " FROM versions WHERE org=? AND path=? AND version=?",
                (holder, expires_at, org, path, version),
            )
            await self.db.execute("DELETE FROM holds WHERE expires_at<?", (time.time(),))
            await self.db.commit()
            return cur.rowcount == 1

    async def release_holds(self, org: str, holder: str) -> int:
        async with self._lock:
            cur = await self.db.execute(
                "DELETE FROM holds WHERE org=? AND holder=?", (org, holder)
            )
            await self.db.commit()
            return cur.rowcount

    async def held_manifests(self) -> set[str]:
        rows = await self._rows(
            "SELECT DISTINCT manifest FROM holds WHERE expires_at>?", (time.time(),)
        )
        return {r[0] for r in rows}

    async def job_project(self, org: str, job_id: str) -> str | None:
        rows = await self._rows(
            "SELECT project FROM job_projects WHERE org=? AND job_id=?", (org, job_id)
        )
        return rows[0][0] if rows else None

    async def set_job_project(self, org: str, job_id: str, project: str) -> None:
        async with self._lock:
            await self.db.execute(
                "INSERT OR IGNORE INTO job_projects VALUES (?,?,?)", (org, job_id, project)
            )
            await self.db.commit()

    async def projects(self, org: str) -> set[str]:
        rows = await self._rows("SELECT DISTINCT project FROM job_projects WHERE org=?", (org,))
        names = {r[0] for r in rows}
        for v in await self.versions_like(org, "/projects/%"):
            names.add(v.path.split("/")[2])
        return names

    async def has_version_with(self, org: str, manifest: str) -> bool:
        rows = await self._rows(
            "SELECT 1 FROM versions WHERE org=? AND manifest=? LIMIT 1", (org, manifest)
        )
        return bool(rows)

    async def paths_with_manifest(self, org: str, manifest: str) -> list[str]:
        rows = await self._rows(
            "SELECT DISTINCT path FROM versions WHERE org=? AND manifest=?", (org, manifest)
        )
        return [r[0] for r in rows]

    # Garbage collection ----------------------------------------------------------------

    async def live_manifests(self) -> set[str]:
        return {r[0] for r in await self._rows("SELECT DISTINCT manifest FROM versions")}

    async def stale_blobs(self, cutoff: float) -> list[str]:
        return [
            r[0] for r in await self._rows("SELECT digest FROM blobs WHERE last_seen<?", (cutoff,))
        ]

    async def recent_manifests(self, cutoff: float) -> set[str]:
        """Manifests used within the grace period (a job that just fetched one still needs
        its blobs even if its version is removed meanwhile)."""
        rows = await self._rows(
            "SELECT b.digest FROM blobs b JOIN manifests m ON m.digest=b.digest"
            " WHERE b.last_seen>=?",
            (cutoff,),
        )
        return {r[0] for r in rows}

    async def all_blobs(self) -> set[str]:
        return {r[0] for r in await self._rows("SELECT digest FROM blobs")}

    async def forget_blob_if_stale(self, digest: str, cutoff: float) -> bool:
        """Drop the rows of a blob not touched since `cutoff`; True if it was dropped."""
        async with self._lock:
            cur = await self.db.execute(
                "DELETE FROM blobs WHERE digest=? AND last_seen<?", (digest, cutoff)
            )
            dropped = cur.rowcount == 1
            if dropped:
                await self.db.execute("DELETE FROM org_blobs WHERE digest=?", (digest,))
                await self.db.execute("DELETE FROM manifests WHERE digest=?", (digest,))
            await self.db.commit()
            return dropped
