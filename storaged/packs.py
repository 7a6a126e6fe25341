"""Append-only pack files for small blobs: one write and one group sync per batch instead
of one file (create + rename) per blob.

Layout: `root/packs/pack-00000001.pack` plus an index `root/packs/index.sqlite` mapping
digest -> (pack, offset, length, compression). The index is the only truth:

- A batch's bytes are appended under a short lock, made durable (the caller's group sync),
  and only then are its index rows inserted, in one transaction. A crash mid-append leaves
  unreferenced tail bytes, which no reader can reach; startup truncates every pack to the
  end of its last indexed blob and deletes packs with no indexed blob at all.
- Deleting a packed blob drops its index row (a tombstone: its bytes are dead).
  `compact` rewrites a sealed pack whose live fraction fell below a threshold: the live
  blobs are copied byte for byte into a new pack, synced, the index switched in one
  transaction, synced, and only then is the old pack deleted. Compaction never drops a
  blob that has an index row, so it cannot remove anything an upload or a job needs; what
  is deleted at all is decided by GC's grace rules before `delete` is called.

All methods block: they run on the store's thread pool.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Stored (compressed) payloads up to this size go into packs; bigger ones get a file each.
PACK_MAX_BLOB = 256 << 10
# A pack stops taking appends once it holds this many bytes.
PACK_ROLL_BYTES = 256 << 20
# `compact` rewrites a sealed pack when less than this share of its bytes is still live.
MIN_LIVE_FRACTION = 0.5

_NAME = re.compile(r"pack-(\d{8})\.pack")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS packed(
  digest TEXT PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL,
  length INTEGER NOT NULL, compression INTEGER NOT NULL, stored_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS packed_by_pack ON packed(pack, offset);
"""


@dataclass(frozen=True)
class PackedBlob:
    digest: str
    compression: int
    pack: int
    offset: int
    length: int


@dataclass
class CompactStats:
    packs_rewritten: int = 0
    packs_deleted: int = 0
    bytes_freed: int = 0


@dataclass
class _Writer:
    pack: int
    fd: int
    size: int


@dataclass(frozen=True)
class PendingAppend:
    """Bytes appended but not yet indexed: `publish` it, then `release` it either way."""

    pack: int
    rows: list[tuple[str, int, int, int]]  # (digest, offset, length, compression)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class PackStore:
    def __init__(
        self, root: Path, durable: Callable[[], None], *, roll_bytes: int = PACK_ROLL_BYTES
    ) -> None:
        """`durable()` returns once everything written before the call is on stable
        storage (the backend's group sync)."""
        self.dir = root / "packs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._durable = durable
        self._roll_bytes = roll_bytes
        self._db = sqlite3.connect(
            self.dir / "index.sqlite", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # Commits are made durable by the group sync that follows them (syncfs covers the
        # WAL file), so SQLite need not fsync each one itself.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db_lock = threading.Lock()
        self._append_lock = threading.Lock()
        self._compact_lock = threading.Lock()
        self._writer: _Writer | None = None
        self._pending: Counter[int] = Counter()  # pack -> batches appended, not yet indexed
        self._next_id = self._recover() + 1

    def _path(self, pack: int) -> Path:
        return self.dir / f"pack-{pack:08d}.pack"

    def _pack_files(self) -> dict[int, Path]:
        found = {}
        for entry in os.scandir(self.dir):
            m = _NAME.fullmatch(entry.name)
            if m:
                found[int(m.group(1))] = Path(entry.path)
        return found

    def _recover(self) -> int:
        """Cut every pack back to its last indexed byte (a torn or unindexed tail from a
        crash), drop packs nothing indexes; returns the highest pack id seen."""
        ends = dict(
            self._db.execute("SELECT pack, MAX(offset + length) FROM packed GROUP BY pack")
        )
        files = self._pack_files()
        for pack, path in files.items():
            end = ends.get(pack)
            if end is None:
                path.unlink(missing_ok=True)
            elif path.stat().st_size > end:
                os.truncate(path, end)
        return int(max([*files, *ends, 0]))

    def close(self) -> None:
        with self._append_lock:
            if self._writer is not None:
                os.close(self._writer.fd)
                self._writer = None
        with self._db_lock:
            self._db.close()

    # Writes ------------------------------------------------------------------------------

    def _writer_for(self, nbytes: int) -> _Writer:
        w = self._writer
        if w is not None and w.size and w.size + nbytes > self._roll_bytes:
            os.close(w.fd)
            w = self._writer = None
        if w is None:
            pack = self._next_id
            self._next_id += 1
            fd = os.open(self._path(pack), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            w = self._writer = _Writer(pack, fd, 0)
        return w

    def append(self, blobs: list[tuple[str, int, bytes]]) -> PendingAppend:
        """Write (digest, compression, payload) to the current pack; nothing is visible
        until `publish` (after the caller's durability sync)."""
        data = b"".join(p for _, _, p in blobs)
        with self._append_lock:
            w = self._writer_for(len(data))
            start = w.size
            pwrite_all(w.fd, data, start)  # on failure the size stays: the bytes are dead
            w.size += len(data)
            self._pending[w.pack] += 1
            pack = w.pack
        rows, offset = [], start
        for digest, compression, payload in blobs:
            rows.append((digest, offset, len(payload), compression))
            offset += len(payload)
        return PendingAppend(pack, rows)

    def publish(self, pending: PendingAppend) -> None:
        """Make a durable append visible: its index rows, in one transaction."""
        now = time.time()
        with self._db_lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO packed VALUES (?,?,?,?,?,?)",
                    [(d, pending.pack, o, n, c, now) for d, o, n, c in pending.rows],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def release(self, pending: PendingAppend) -> None:
        """Done with an append (published or failed): its pack may now be compacted."""
        with self._append_lock:
            self._pending[pending.pack] -= 1
            if self._pending[pending.pack] <= 0:
                del self._pending[pending.pack]

    # Reads -------------------------------------------------------------------------------

    def locate(self, digest: str) -> PackedBlob | None:
        with self._db_lock:
            row = self._db.execute(
                "SELECT pack, offset, length, compression FROM packed WHERE digest=?", (digest,)
            ).fetchone()
        if row is None:
            return None
        return PackedBlob(digest, row[3], row[0], row[1], row[2])

    def read(self, digest: str) -> tuple[PackedBlob, bytes] | None:
        """The stored payload of a packed blob, or None when it is not in a pack."""
        for _ in range(3):  # a compaction may move the blob between lookup and open
            loc = self.locate(digest)
            if loc is None:
                return None
            try:
                fd = os.open(self._path(loc.pack), os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                data = os.pread(fd, loc.length, loc.offset)
            finally:
                os.close(fd)
            if len(data) != loc.length:
                raise OSError(f"pack {loc.pack} is shorter than its index says ({digest[:12]})")
            return loc, data
        raise FileNotFoundError(digest)

    def iter_blobs(self) -> Iterator[tuple[str, float]]:
        with self._db_lock:
            rows = self._db.execute("SELECT digest, stored_at FROM packed").fetchall()
        yield from rows

    # Deletion and compaction -------------------------------------------------------------

    def delete(self, digest: str) -> bool:
        """Tombstone a packed blob (its bytes stay until compaction); True if it was one."""
        with self._db_lock:
            cur = self._db.execute("DELETE FROM packed WHERE digest=?", (digest,))
            return cur.rowcount > 0

    def live_bytes(self) -> dict[int, int]:
        with self._db_lock:
            return dict(self._db.execute("SELECT pack, SUM(length) FROM packed GROUP BY pack"))

    def compact(self, min_live_fraction: float = MIN_LIVE_FRACTION) -> CompactStats:
        """Delete packs with nothing live and rewrite those below `min_live_fraction` live
        bytes, their live blobs together into fresh packs."""
        stats = CompactStats()
        with self._compact_lock:
            # Order matters: packs listed before the busy set is taken (a pack created later
            # is never touched), live bytes counted after it (a sealed, idle pack gains no
            # rows, so its count cannot go stale).
            files = self._pack_files()
            sizes = {pack: path.stat().st_size for pack, path in files.items()}
            before = self.live_bytes()  # only a hint, for sealing the current pack
            with self._append_lock:
                w = self._writer
                if w is not None and not self._pending[w.pack] and w.size:
                    if before.get(w.pack, 0) < w.size * min_live_fraction:
                        # Mostly dead and idle: seal it so it can be compacted now.
                        os.close(w.fd)
                        self._writer = w = None
                # Appends go to the current pack, and pending ones must be indexed where
                # they were written: both are off limits.
                busy = {p for p, n in self._pending.items() if n > 0}
                if w is not None:
                    busy.add(w.pack)
            live = self.live_bytes()
            rewrite = []
            for pack, path in sorted(files.items()):
                kept = live.get(pack, 0)
                if pack in busy:
                    continue
                if kept == 0:
                    path.unlink(missing_ok=True)
                    stats.packs_deleted += 1
                    stats.bytes_freed += sizes[pack]
                elif kept < sizes[pack] * min_live_fraction:
                    rewrite.append(pack)
            if rewrite:
                written = self._rewrite(rewrite, files)
                stats.packs_rewritten = len(rewrite)
                stats.bytes_freed += sum(sizes[p] for p in rewrite) - written
        return stats

    def _new_output(self) -> tuple[int, int]:
        with self._append_lock:
            pack = self._next_id
            self._next_id += 1
        return pack, os.open(self._path(pack), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)

    def _rewrite(self, old: list[int], files: dict[int, Path]) -> int:
        """Copy the live blobs of the `old` packs into fresh packs, switch the index in one
        transaction, then delete the old packs; returns the bytes written."""
        moved: list[tuple[int, int, str, int]] = []  # (new pack, offset, digest, old pack)
        created: list[int] = []
        written = 0
        out = -1
        try:
            pack, out = self._new_output()
            created.append(pack)
            position = 0
            for src_pack in old:
                with self._db_lock:
                    rows = self._db.execute(
                        "SELECT digest, offset, length FROM packed WHERE pack=? ORDER BY offset",
                        (src_pack,),
                    ).fetchall()
                src = os.open(files[src_pack], os.O_RDONLY)
                try:
                    for digest, offset, length in rows:
                        if position and position + length > self._roll_bytes:
                            os.close(out)
                            pack, out = self._new_output()
                            created.append(pack)
                            position = 0
                        data = os.pread(src, length, offset)
                        if len(data) != length:
                            raise OSError(f"pack {src_pack} is shorter than its index says")
                        pwrite_all(out, data, position)
                        moved.append((pack, position, digest, src_pack))
                        position += length
                        written += length
                finally:
                    os.close(src)
            os.close(out)
            out = -1
        except BaseException:
            if out >= 0:
                os.close(out)
            for pack in created:
                self._path(pack).unlink(missing_ok=True)
            raise
        self._durable()  # the copies are on disk before the index points at them
        with self._db_lock:
            self._db.execute("BEGIN")
            try:
                # A blob deleted meanwhile matches nothing: its copy is simply dead bytes.
                self._db.executemany(
                    "UPDATE packed SET pack=?, offset=? WHERE digest=? AND pack=?", moved
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._durable()  # the switch is on disk before the old bytes go
        for src_pack in old:
            files[src_pack].unlink(missing_ok=True)
        return written
