"""The client's persistent stat index: (path, size, mtime_ns, ctime_ns, inode) -> digest, so
an unchanged file is never hashed twice; plus the digests known to be on a server, so a
re-deploy of unchanged files can skip find-missing altogether.

Racy entries: a file modified within the timestamp granularity of when it was hashed can
change again without its stat changing. Such an entry is stored but trusted only once
its mtime is older than `racy_window_ns` before the hash (then it is simply rehashed).
"""

from __future__ import annotations

import asyncio
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

from c3.manifest import sha256_file
from c3.sqlite import open_database
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


def _hash_group(root: Path, group: list[tuple[str, os.stat_result]]) -> list[tuple[str, int, bool]]:
    """(digest, size, stable) per file; `stable` is False when the file changed while it
    was being hashed (the digest is then not remembered)."""
    out = []
    for rel, before in group:
        path = root / rel
        digest, size = sha256_file(path)
        after = os.stat(path)
        out.append((digest, size, _key(after) == _key(before) and size == before.st_size))
    return out


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
        root_key = str(root.absolute())
        stats = HashStats(files_scanned=len(files))
        known = await self._rows(root_key, files)
        digests: dict[str, str] = {}
        misses: list[tuple[str, os.stat_result]] = []
        for rel, st in files:
            row = known.get(rel)
            if (
                row is not None
                and row[:4] == _key(st)
                and st.st_mtime_ns + self.racy_window_ns < row[5]
            ):
                digests[rel] = row[4]
            else:
                misses.append((rel, st))
        if misses:
            hashed_at = time.time_ns()
            results = await self._hash_all(root, misses)
            rows = []
            for (rel, st), (digest, size, stable) in zip(misses, results, strict=True):
                digests[rel] = digest
                stats.files_hashed += 1
                stats.bytes_hashed += size
                if stable:
                    rows.append((root_key, rel, *_key(st), digest, hashed_at))
            await self.db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)", rows)
            await self.db.commit()
        entries = [
            common_pb2.ManifestEntry(
                path=rel,
                digest=digests[rel],
                size=st.st_size,
                executable=bool(st.st_mode & stat.S_IXUSR),
            )
            for rel, st in sorted(files, key=lambda f: f[0])
        ]
        return entries, stats

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

    async def _hash_all(
        self, root: Path, misses: list[tuple[str, os.stat_result]]
    ) -> list[tuple[str, int, bool]]:
        groups: list[list[tuple[str, os.stat_result]]] = [[]]
        group_bytes = 0
        for item in misses:
            if groups[-1] and group_bytes + item[1].st_size > _GROUP_BYTES:
                groups.append([])
                group_bytes = 0
            groups[-1].append(item)
            group_bytes += item[1].st_size
        loop = asyncio.get_running_loop()
        parts = await asyncio.gather(
            *(loop.run_in_executor(self._pool, _hash_group, root, g) for g in groups)
        )
        return [r for part in parts for r in part]

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
        await self.db.executemany(
            "INSERT OR IGNORE INTO present VALUES (?,?)", [(server_key, d) for d in set(digests)]
        )
        await self.db.commit()

    async def forget_present(self, server_key: str, digests: Iterable[str] | None = None) -> None:
        """Drop knowledge about a server (all of it, or some digests): call it when the
        server reports blobs missing that we believed present (e.g. after its GC)."""
        if digests is None:
            await self.db.execute("DELETE FROM present WHERE server=?", (server_key,))
        else:
            await self.db.executemany(
                "DELETE FROM present WHERE server=? AND digest=?",
                [(server_key, d) for d in set(digests)],
            )
        await self.db.commit()
