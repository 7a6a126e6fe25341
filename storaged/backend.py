"""Where blob bytes live. `BlobBackend` is the small interface the service needs, so an
object store can replace the local disk later; `LocalDiskBackend` is the disk version:
small blobs appended to pack files (storaged/packs.py), large ones one file each.

All methods block: callers run them in a thread pool. Payloads are stored exactly as
verified (zstd or raw); the compression is part of the file name so a file describes itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import itertools
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from c3.storage.codec import NONE, ZSTD
from storaged.packs import (
    MIN_LIVE_FRACTION,
    PACK_MAX_BLOB,
    PACK_ROLL_BYTES,
    CompactStats,
    PackStore,
    PendingAppend,
    pwrite_all,
)

_SUFFIX: dict[int, str] = {NONE: ".raw", ZSTD: ".zst"}


@dataclass(frozen=True)
class StoredBlob:
    digest: str
    compression: int
    stored_size: int


class BlobBackend(Protocol):
    def stat(self, digest: str) -> StoredBlob | None: ...
    def open(self, digest: str) -> tuple[StoredBlob, BinaryIO]: ...
    def put_many(self, blobs: list[tuple[str, int, bytes]]) -> None:
        """Store (digest, compression, payload) durably and atomically per blob."""
        ...

    def partial_size(self, key: str) -> int: ...
    def open_partial(self, key: str, offset: int) -> PartialWriter:
        """A writer appending to the partial upload `key` from `offset` (anything held
        past it is dropped)."""
        ...

    def read_partial(self, key: str) -> BinaryIO: ...
    def commit_partial(self, key: str, digest: str, compression: int) -> None: ...
    def drop_partial(self, key: str) -> None: ...
    def delete(self, digest: str) -> None: ...
    def iter_blobs(self) -> Iterator[tuple[str, float]]:
        """(digest, modified time) of every stored blob."""
        ...

    def drop_partials_older_than(self, cutoff: float) -> int: ...
    def drop_temps_older_than(self, cutoff: float) -> int: ...
    def compact(self, min_live_fraction: float = MIN_LIVE_FRACTION) -> CompactStats:
        """Give back the space of deleted blobs where the backend keeps them together."""
        ...

    def close(self) -> None: ...


class PartialWriter:
    """Appends the chunks of one streamed upload to its partial file, kept open for the
    whole stream. Blocking."""

    def __init__(self, fd: int, offset: int) -> None:
        self._fd = fd
        self.offset = offset

    def write(self, data: bytes | memoryview) -> int:
        """Append `data`; returns the new length of the partial file."""
        start = self.offset
        pwrite_all(self._fd, data, start)
        self.offset = start + len(data)
        # Start writing these bytes back now (without waiting), so the fsync when the
        # upload completes has little left to do.
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, start, len(data), os.POSIX_FADV_DONTNEED)
        return self.offset

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


_libc: ctypes.CDLL | None = None


def _syncfs(fd: int) -> None:
    """Flush the whole filesystem once (one journal commit for a batch of small files)
    instead of one fsync per file; falls back to sync() where syncfs is missing."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        if _libc.syncfs(fd) == 0:
            return
    except (OSError, AttributeError):
        pass
    os.sync()


class GroupSync:
    """Group commit for concurrent writers: `wait_durable()` returns once a filesystem sync
    that *started after the call* has finished. Writers that arrive while a sync runs
    share the next one, so N concurrent batches cost about two syncs, not N."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._cond = threading.Condition()
        self._started = 0
        self._done = 0
        self._running = False

    def wait_durable(self) -> None:
        with self._cond:
            needed = self._started + 1
            while self._done < needed:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                generation = self._started
                self._cond.release()
                try:
                    fd = os.open(self._directory, os.O_RDONLY)
                    try:
                        _syncfs(fd)
                    finally:
                        os.close(fd)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._done = generation
                    self._cond.notify_all()


class LocalDiskBackend:
    """Payloads up to `pack_max_blob` bytes in append-only packs under `root/packs`; larger
    ones in `root/blobs/ab/cdef….zst|.raw`, temp files in `root/tmp`, partial uploads in
    `root/uploads`. A stored file is read-only and appears only through rename."""

    def __init__(
        self,
        root: Path,
        *,
        pack_max_blob: int = PACK_MAX_BLOB,
        pack_roll_bytes: int = PACK_ROLL_BYTES,
    ) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        self.uploads = root / "uploads"
        for d in (self.blobs, self.tmp, self.uploads):
            d.mkdir(parents=True, exist_ok=True)
        # All 256 fan-out directories up front: no mkdir on the write path.
        for i in range(256):
            (self.blobs / f"{i:02x}").mkdir(exist_ok=True)
        self._sync = GroupSync(self.blobs)
        self.pack_max_blob = pack_max_blob
        # Packs live on the same filesystem as the blobs: one group sync covers both.
        self.packs = PackStore(root, self._sync.wait_durable, roll_bytes=pack_roll_bytes)
        # Temp names: a tag per process start plus a counter (cheaper than a uuid per file).
        self._tmp_tag = uuid.uuid4().hex[:12]
        self._tmp_seq = itertools.count()
        # Leftovers of a crash are never referenced: a temp file only becomes a blob by rename.
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)

    def _path(self, digest: str, compression: int) -> Path:
        return self.blobs / digest[:2] / (digest[2:] + _SUFFIX[compression])

    def close(self) -> None:
        self.packs.close()

    def stat(self, digest: str) -> StoredBlob | None:
        packed = self.packs.locate(digest)
        if packed is not None:
            return StoredBlob(digest, packed.compression, packed.length)
        for compression in (ZSTD, NONE):
            try:
                st = os.stat(self._path(digest, compression))
            except FileNotFoundError:
                continue
            return StoredBlob(digest, compression, st.st_size)
        return None

    def open(self, digest: str) -> tuple[StoredBlob, BinaryIO]:
        found = self.packs.read(digest)
        if found is not None:
            loc, payload = found
            return StoredBlob(digest, loc.compression, loc.length), io.BytesIO(payload)
        for compression in (ZSTD, NONE):
            path = self._path(digest, compression)
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                continue
            return StoredBlob(digest, compression, os.fstat(f.fileno()).st_size), f
        raise FileNotFoundError(digest)

    def _install(self, tmp: Path, digest: str, compression: int) -> None:
        os.replace(tmp, self._path(digest, compression))

    def put_many(self, blobs: list[tuple[str, int, bytes]]) -> None:
        if not blobs:
            return
        small = [b for b in blobs if len(b[2]) <= self.pack_max_blob]
        large = [b for b in blobs if len(b[2]) > self.pack_max_blob]
        pending = self.packs.append(small) if small else None
        try:
            self._put_files(large, pending)
        finally:
            if pending is not None:
                self.packs.release(pending)

    def _put_files(
        self, blobs: list[tuple[str, int, bytes]], pending: PendingAppend | None
    ) -> None:
        """Write the large blobs as files; one sync makes them and the pack append durable,
        then renames and the pack index make them visible, and a second sync the ack."""
        # Plain strings, not Path objects: this loop runs once per blob.
        base = str(self.blobs)
        staged: list[tuple[str, str]] = []
        installed = 0
        try:
            for digest, compression, payload in blobs:
                # The temp file lives in the blob's own fan-out directory: a same-directory
                # rename avoids the filesystem-wide lock a cross-directory rename takes
                # (4-5x faster with concurrent batches of small files).
                fan = f"{base}/{digest[:2]}/"
                tmp = f"{fan}.{digest[2:]}.{self._tmp_tag}{next(self._tmp_seq)}"
                # Created read-only: a stored blob is never opened for writing again.
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
                staged.append((tmp, f"{fan}{digest[2:]}{_SUFFIX[compression]}"))
                try:
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
            self._sync.wait_durable()  # contents durable before any rename makes them visible
            for tmp, final in staged:
                os.replace(tmp, final)
                installed += 1
            if pending is not None:
                self.packs.publish(pending)
            self._sync.wait_durable()  # and the renames themselves, before the caller acks
        finally:
            for tmp, _ in staged[installed:]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    # Resumable uploads: one partial file per key, appended in order.

    def _partial(self, key: str) -> Path:
        return self.uploads / key

    def partial_size(self, key: str) -> int:
        try:
            return os.stat(self._partial(key)).st_size
        except FileNotFoundError:
            return 0

    def open_partial(self, key: str, offset: int) -> PartialWriter:
        fd = os.open(self._partial(key), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, offset)
        except BaseException:
            os.close(fd)
            raise
        return PartialWriter(fd, offset)

    def read_partial(self, key: str) -> BinaryIO:
        return open(self._partial(key), "rb")

    def commit_partial(self, key: str, digest: str, compression: int) -> None:
        path = self._partial(key)
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(path, 0o444)
        self._install(path, digest, compression)
        fd = os.open(self._path(digest, compression).parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def drop_partial(self, key: str) -> None:
        self._partial(key).unlink(missing_ok=True)

    def delete(self, digest: str) -> None:
        self.packs.delete(digest)
        for compression in (ZSTD, NONE):
            self._path(digest, compression).unlink(missing_ok=True)

    def compact(self, min_live_fraction: float = MIN_LIVE_FRACTION) -> CompactStats:
        return self.packs.compact(min_live_fraction)

    def iter_blobs(self) -> Iterator[tuple[str, float]]:
        yield from self.packs.iter_blobs()
        for fan in self.blobs.iterdir():
            for entry in os.scandir(fan):
                if not entry.name.startswith("."):  # ".name.uuid": a temp file
                    yield fan.name + entry.name.rsplit(".", 1)[0], entry.stat().st_mtime

    def drop_temps_older_than(self, cutoff: float) -> int:
        """Temp files a crash left behind (never visible as blobs: they lack the name)."""
        dropped = 0
        for fan in self.blobs.iterdir():
            for entry in os.scandir(fan):
                with contextlib.suppress(FileNotFoundError):
                    if entry.name.startswith(".") and entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                        dropped += 1
        return dropped

    def drop_partials_older_than(self, cutoff: float) -> int:
        dropped = 0
        for entry in os.scandir(self.uploads):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    dropped += 1
        return dropped
