"""The client's persistent stat index: (path, size, mtime_ns, ctime_ns, inode) -> digest, so
an unchanged file is never hashed twice; plus the digests known to be on a server, so a
re-deploy of unchanged files can skip find-missing altogether.

Racy entries: a file modified within the timestamp granularity of when it was hashed can
change again without its stat changing. Such an entry is stored but trusted only once
its mtime is older than `racy_window_ns` before the hash (then it is simply rehashed).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiosqlite

from c3.manifest import HASH_CHUNK, sha256_file
from c3.sqlite import open_database
from c3.storage.batching import batches
from c3.v1 import common_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
  root TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
  ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, digest TEXT NOT NULL,
  hashed_at_ns INTEGER NOT NULL, PRIMARY KEY(root, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS present(
  server TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY(server, digest)) WITHOUT ROWID;
"""
# Files are hashed in groups of about this many bytes per thread-pool task.
_GROUP_BYTES = 8 << 20


@dataclass
class HashStats:
    files_scanned: int = 0
    files_hashed: int = 0
    bytes_hashed: int = 0


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


@dataclass(frozen=True, slots=True)
class Hashed:
    """One file read and hashed: `data` holds its bytes when it was small enough to keep
    (so a push can send them without reading the file again)."""

    digest: str
    size: int
    stable: bool
    data: bytes | None


def _read_and_hash(
    path: str, expected: int, keep_max: int
) -> tuple[str, int, bytes | None, os.stat_result]:
    """One open: the content of a file of up to `keep_max` bytes (kept), hashed as it is
    read; a longer one (it grew since its scan) is hashed in chunks and not kept. The first
    read asks for the size the scan saw plus one byte (a larger buffer per small file would
    cost an mmap and its page faults); when it brings exactly that size and fstat agrees,
    that is the whole file. Plain os.read: no buffered file object per small file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        first = os.read(fd, expected + 1)
        if len(first) == expected <= keep_max:
            after = os.fstat(fd)
            if after.st_size == expected:  # all of it: no read just to see the end
                return hashlib.sha256(first).hexdigest(), expected, first, after
        sha = hashlib.sha256(first)
        size = len(first)
        parts: list[bytes] | None = [first] if size <= keep_max else None
        while got := os.read(fd, HASH_CHUNK):
            sha.update(got)
            size += len(got)
            if parts is not None:
                parts.append(got)
                if size > keep_max:
                    parts = None  # too big to keep after all
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if parts is None:
        return sha.hexdigest(), size, None, after
    return sha.hexdigest(), size, parts[0] if len(parts) == 1 else b"".join(parts), after


def hash_files(
    root: Path, group: list[tuple[str, os.stat_result]], keep_max: int = -1
) -> list[Hashed]:
    """Read and hash `group` (relative paths with the stat they were scanned with), keeping
    the bytes of files up to `keep_max` bytes (-1: none). Blocking: run it in a pool."""
    base = str(root)
    out = []
    for rel, before in group:
        path = f"{base}/{rel}"
        if before.st_size <= keep_max:
            digest, size, data, after = _read_and_hash(path, before.st_size, keep_max)
        else:
            digest, size = sha256_file(path)
            after, data = os.stat(path), None
        out.append(Hashed(digest, size, _key(after) == _key(before) and size == before.st_size, data))
    return out


def entries_for(
    files: Sequence[tuple[str, os.stat_result]], digests: dict[str, str]
) -> list[common_pb2.ManifestEntry]:
    """Manifest entries, sorted by path, for scanned files whose digests are known."""
    return [
        common_pb2.ManifestEntry(
            path=rel,
            digest=digests[rel],
            size=st.st_size,
            executable=bool(st.st_mode & stat.S_IXUSR),
        )
        for rel, st in sorted(files, key=lambda f: f[0])
    ]


@dataclass
class Lookup:
    """What the index knows about a scan: digests of unchanged files, and the rest."""

    root_key: str
    digests: dict[str, str]
    misses: list[tuple[str, os.stat_result]]


class HashIndex:
    def __init__(self, db_path: Path, *, racy_window_ns: int = 1_000_000_000) -> None:
        self.db_path = db_path
        self.racy_window_ns = racy_window_ns
        self._db: aiosqlite.Connection | None = None
        self._pool = ThreadPoolExecutor(
            max_workers=min(8, os.cpu_count() or 2), thread_name_prefix="c3-hash"
        )

    async def open(self) -> HashIndex:
        self._db = await open_database(self.db_path, _SCHEMA)
        return self

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> HashIndex:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("HashIndex is not open: use `async with HashIndex(...)` or open()")
        return self._db

    async def digests(
        self, root: Path, files: Sequence[tuple[str, os.stat_result]]
    ) -> tuple[list[common_pb2.ManifestEntry], HashStats]:
        """Manifest entries (sorted by path) for `files` (relative POSIX paths under `root`
        with their stat), hashing only files whose stat changed since the last time."""
        stats = HashStats(files_scanned=len(files))
        found = await self.lookup(root, files)
        digests = found.digests
        if found.misses:
            hashed_at = time.time_ns()
            results = await self._hash_all(root, found.misses)
            rows = []
            for (rel, st), h in zip(found.misses, results, strict=True):
                digests[rel] = h.digest
                stats.files_hashed += 1
                stats.bytes_hashed += h.size
                if h.stable:  # not changed while it was being hashed: worth remembering
                    rows.append((rel, st, h.digest))
            await self.remember(found.root_key, rows, hashed_at)
        return entries_for(files, digests), stats

    async def lookup(self, root: Path, files: Sequence[tuple[str, os.stat_result]]) -> Lookup:
        """Split `files` into those whose digest the index can vouch for (same stat as when
        hashed, and not racy) and those that must be hashed."""
        root_key = str(root.absolute())
        known = await self._rows(root_key, files)
        digests: dict[str, str] = {}
        misses: list[tuple[str, os.stat_result]] = []
        window = self.racy_window_ns
        for rel, st in files:
            row = known.get(rel)
            if row is not None and row[:4] == _key(st) and st.st_mtime_ns + window < row[5]:
                digests[rel] = row[4]
            else:
                misses.append((rel, st))
        return Lookup(root_key, digests, misses)

    async def remember(
        self, root_key: str, rows: Sequence[tuple[str, os.stat_result, str]], hashed_at_ns: int
    ) -> None:
        """Record (path, stat when scanned, digest) of files hashed since `hashed_at_ns`
        (taken before the first of them was read)."""
        if not rows:
            return
        await self._write(
            "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)",
            [(root_key, rel, *_key(st), digest, hashed_at_ns) for rel, st, digest in rows],
        )

    # Up to this many paths are looked up by name (SQLite allows 32,766 variables since 3.32).
    _TARGETED_LOOKUP_MAX = 8192

    async def _rows(
        self, root_key: str, files: Sequence[tuple[str, os.stat_result]]
    ) -> dict[str, tuple[int, int, int, int, str, int]]:
        """Stored rows for `files`: the whole root for a big request, else just those paths
        (a watcher's handful of changed files must not read every row of a large tree)."""
        columns = "path, size, mtime_ns, ctime_ns, inode, digest, hashed_at_ns"
        if len(files) > self._TARGETED_LOOKUP_MAX:
            async with self.db.execute(
                f"SELECT {columns} FROM files WHERE root=?", (root_key,)
            ) as cur:
                return {r[0]: r[1:] for r in await cur.fetchall()}
        marks = ",".join("?" * len(files))
        async with self.db.execute(
            f"SELECT {columns} FROM files WHERE root=? AND path IN ({marks})",
            [root_key, *(rel for rel, _ in files)],
        ) as cur:
            return {r[0]: r[1:] for r in await cur.fetchall()}

    async def _hash_all(self, root: Path, misses: list[tuple[str, os.stat_result]]) -> list[Hashed]:
        groups = batches(misses, _GROUP_BYTES, len(misses), lambda f: f[1].st_size)
        loop = asyncio.get_running_loop()
        parts = await asyncio.gather(
            *(loop.run_in_executor(self._pool, hash_files, root, g) for g in groups)
        )
        return [h for part in parts for h in part]

    # Digests known to be on a server (key: server address + org) ----------------------

    async def known_present(self, server_key: str, digests: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(digests))
        if not wanted:
            return set()
        # One query however many digests: a JSON array joined in SQLite.
        rows = await self.db.execute_fetchall(
            "SELECT digest FROM present WHERE server=? AND digest IN (SELECT value FROM json_each(?))",
            (server_key, json.dumps(wanted)),
        )
        return {r[0] for r in rows}

    async def mark_present(self, server_key: str, digests: Iterable[str]) -> None:
        rows = [(server_key, d) for d in set(digests)]
        if rows:
            await self._write("INSERT OR IGNORE INTO present VALUES (?,?)", rows)

    async def forget_present(self, server_key: str, digests: Iterable[str] | None = None) -> None:
        """Drop knowledge about a server (all of it, or some digests): call it when the
        server reports blobs missing that we believed present (e.g. after its GC)."""
        if digests is None:
            await self._write("DELETE FROM present WHERE server=?", [(server_key,)])
        else:
            await self._write(
                "DELETE FROM present WHERE server=? AND digest=?",
                [(server_key, d) for d in set(digests)],
            )

    async def _write(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        """One statement over `rows`, committed; the cursor is closed on the database's
        own thread (a push writes from many concurrent groups)."""
        async with self.db.executemany(sql, rows):
            pass
        await self.db.commit()
