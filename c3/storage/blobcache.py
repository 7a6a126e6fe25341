"""A local, verified blob cache with LRU eviction (the GPU agent keeps one per host).

Blobs are stored uncompressed at `root/ab/cdef…`, read-only, and only after their bytes
matched the digest. `link_into` puts a cached blob into a job's tree:

* Hardlinks share one inode, so anything that can write the linked file (or chmod it:
  the job runs as the same user) would silently corrupt the cache for every later job.
  We therefore hardlink only files that must stay read-only — datasets, which the agent
  mounts read-only inside the sandbox — and whose mode matches the cache's (0444, not
  executable: the exec bit lives on the shared inode too).
* Everything else (the workspace, which jobs may edit in place; executables) is copied.
  Copies are cheap for workspaces (source files) and a copy can never reach back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

from c3.errors import DataLoss, NotFound
from c3.manifest import check_digest, sha256_file


class BlobCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._tmp = root / "tmp"
        self._entries: OrderedDict[str, int] = OrderedDict()  # digest -> size, oldest first
        self._total = 0
        self._lock = threading.Lock()
        self._loaded = False

    async def open(self) -> BlobCache:
        await asyncio.to_thread(self._load)
        return self

    async def __aenter__(self) -> BlobCache:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def _load(self) -> None:
        """Index what is on disk, oldest use first (file mtime records the last use)."""
        with self._lock:
            if self._loaded:
                return
            self._tmp.mkdir(parents=True, exist_ok=True)
            for leftover in self._tmp.iterdir():
                leftover.unlink(missing_ok=True)
            found: list[tuple[float, str, int]] = []
            for fan in self.root.iterdir():
                if len(fan.name) != 2 or not fan.is_dir():
                    continue
                for entry in os.scandir(fan):
                    st = entry.stat()
                    found.append((st.st_mtime, fan.name + entry.name, st.st_size))
            for _, digest, size in sorted(found):
                self._entries[digest] = size
                self._total += size
            self._loaded = True

    @property
    def total_bytes(self) -> int:
        return self._total

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        self._load()
        return digest in self._entries

    def tmp_path(self) -> Path:
        """A fresh temp file name on the cache's filesystem (for streamed downloads)."""
        self._load()
        return self._tmp / uuid.uuid4().hex

    async def add_bytes(self, digest: str, data: bytes) -> Path:
        return await asyncio.to_thread(self.add_bytes_now, digest, data)

    async def add_file(
        self, src: Path, digest: str, *, move: bool = False, verified: bool = False
    ) -> Path:
        """Add a file's content; `move` renames it in (same filesystem), `verified` skips
        rehashing a file the caller has just checked."""
        return await asyncio.to_thread(self._add_file, src, digest, move, verified)

    def add_bytes_now(self, digest: str, data: bytes, verified: bool = False) -> Path:
        """`add_bytes`, blocking (for callers already off the event loop); `verified` skips
        rehashing content the caller has just checked."""
        if not verified and hashlib.sha256(data).hexdigest() != digest:
            raise DataLoss(f"refusing to cache blob {digest[:12]}: content does not match")
        tmp = self.tmp_path()
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return self._adopt(tmp, digest, len(data))
        finally:
            tmp.unlink(missing_ok=True)

    def _add_file(self, src: Path, digest: str, move: bool, verified: bool) -> Path:
        if not verified:
            if sha256_file(src)[0] != digest:
                raise DataLoss(f"refusing to cache {src}: content does not match {digest[:12]}")
        tmp = self.tmp_path()
        try:
            if move:
                os.replace(src, tmp)
            else:
                shutil.copyfile(src, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            return self._adopt(tmp, digest, os.stat(tmp).st_size)
        finally:
            tmp.unlink(missing_ok=True)

    def _adopt(self, tmp: Path, digest: str, size: int) -> Path:
        target = self.path(digest)
        target.parent.mkdir(exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
        with self._lock:
            if digest not in self._entries:
                self._total += size
            self._entries[digest] = size
            self._entries.move_to_end(digest)
        self._evict(keep=digest)
        return target

    def _evict(self, keep: str) -> None:
        victims: list[str] = []
        with self._lock:
            for digest in list(self._entries):
                if self._total <= self.max_bytes:
                    break
                if digest == keep:
                    continue
                self._total -= self._entries.pop(digest)
                victims.append(digest)
        for digest in victims:
            # Hardlinks into job trees keep their data; only the cache's name goes.
            self.path(digest).unlink(missing_ok=True)

    def link_into(
        self, digest: str, dest: Path, executable: bool, *, writable: bool = True
    ) -> None:
        """Put a cached blob at `dest` (replacing a file there). Blocking."""
        source = self.path(digest)
        with self._lock:
            if digest not in self._entries:
                raise NotFound(f"blob {digest[:12]} is not in the cache")
            self._entries.move_to_end(digest)
        with contextlib.suppress(OSError):
            os.utime(source)  # last use, for LRU order after a restart
        tmp = dest.with_name(f".{dest.name}.c3-{uuid.uuid4().hex[:8]}")
        try:
            if writable or executable or not self._try_link(source, tmp):
                shutil.copyfile(source, tmp)
                os.chmod(
                    tmp,
                    (0o755 if executable else 0o644)
                    if writable
                    else (0o555 if executable else 0o444),
                )
            if dest.is_symlink():
                raise OSError(errno.ELOOP, f"refusing to replace symlink {dest}")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _try_link(source: Path, tmp: Path) -> bool:
        try:
            os.link(source, tmp)
            return True
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                return False
            raise
