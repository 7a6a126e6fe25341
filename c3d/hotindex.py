"""The live file set of one project: scanned once, then kept current from watch events.

A deploy after a save re-stats only the paths that changed, hashes only files whose
(size, mtime, ctime, inode, mode) moved, and patches the kept manifest in place, so the
manifest of a large tree after one change costs a copy, not a rebuild. Per file it keeps
one small tuple (digest, size, stat fingerprint): a 100,000-file project stays small.

Git's index file counts as a change too: `git add -f` of an ignored file makes it ship and
`git rm --cached` stops that. On such a change only the tracked-but-ignored set is asked of
git again (off the event loop), and only the paths that joined or left it are looked at:
no rescan of the tree.
"""

from __future__ import annotations

import asyncio
import bisect
import ctypes
import gc
import os
import stat as stat_mod
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from c3.errors import FailedPrecondition, PermissionDenied
from c3.storage.hashindex import HashIndex
from c3.storage.treepush import FileInfo
from c3.v1 import common_pb2
from c3.workspace import IgnoredPath, IgnoreMatcher, WorkspaceFile, is_editor_temp

# Files hashed per round of a big (re)index: bounds the memory of one round.
HASH_ROUND = 4096
# After indexing this many files, hand freed heap back to the OS (glibc keeps it otherwise).
TRIM_AFTER = 20_000


def fingerprint(st: os.stat_result) -> int:
    """One int standing for the stat fields that tell a file changed."""
    return hash((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode & 0o111))


@dataclass
class IndexStats:
    files_scanned: int = 0
    files_hashed: int = 0


@dataclass
class Snapshot:
    """What ships right now. `tree` is a private copy, safe to hold across awaits."""

    tree: common_pb2.Manifest
    # path -> (digest, size, executable, stat fingerprint): `tree` as a dict, cheap to
    # scan from Python.
    files: dict[str, FileInfo]
    stats: IndexStats = field(default_factory=IndexStats)


class ProjectIndex:
    def __init__(self, root: Path, hashes: HashIndex) -> None:
        self.root = root
        self.hashes = hashes
        self.matcher = IgnoreMatcher(root)
        self._scan_due = True
        self._dirty: set[str] = set()
        # Paths to look at again with their new stat (None: gone or now ignored).
        self._pending: dict[str, os.stat_result | None] = {}
        # What was hashed: path -> (digest, size, executable, fingerprint).
        self._files: dict[str, FileInfo] = {}
        self._dirs: set[str] = set()
        self._tree = common_pb2.Manifest()
        self._order: list[str] = []  # paths of self._tree.entries, sorted
        self._lock = asyncio.Lock()
        # Set when the watcher saw git's index file change; cleared by `reread_git_index`.
        self.git_index_changed = False

    def invalidate(self) -> None:
        self._scan_due = True

    def note_changes(self, abs_paths: set[str]) -> set[str]:
        """Record changed paths from the watcher; return those that affect what ships."""
        relevant: set[str] = set()
        root = str(self.root)
        for path in abs_paths:
            if path == self.matcher.git_index:
                # Which files ship may have changed, but only git can say (not on the loop).
                self.git_index_changed = True
                continue
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if rel == ".":
                self.invalidate()
                relevant.add(rel)
                continue
            if rel.startswith("../") or is_editor_temp(rel.rsplit("/", 1)[-1]):
                continue
            if self.matcher.notify_changed(rel):
                self.invalidate()
                relevant.add(rel)
                continue
            known = rel in self._files or rel in self._dirs
            if not known and self.matcher.is_ignored(rel, os.path.isdir(path), fresh=False):
                continue
            self._dirty.add(rel)
            relevant.add(rel)
        return relevant

    async def reread_git_index(self) -> set[str]:
        """After git's index changed: the paths that joined or left the workspace because
        git now tracks them or no longer does (they are looked at again by the next
        snapshot)."""
        async with self._lock:
            if not self.git_index_changed:  # a snapshot got there first
                return set()
            return await self._reread_git_index()

    async def _reread_git_index(self) -> set[str]:
        self.git_index_changed = False
        affected = await asyncio.to_thread(self._tracked_moves)
        self._dirty.update(affected)
        return affected

    def _tracked_moves(self) -> set[str]:
        """Blocking: runs git. Of the files that started or stopped being tracked-although-
        ignored, those whose shipping changes (in the index now, or shipping from now on)."""
        moved = self.matcher.read_git_index()
        return {
            rel for rel in moved
            if rel in self._files
            or (os.path.isfile(self.root / rel) and not self.matcher.is_ignored(rel, False, fresh=False))
        }

    # -- bringing the file set up to date ---------------------------------------------------

    def _refresh(self) -> None:
        """Re-stat what the watcher reported (blocking: runs in a thread)."""
        dirty, self._dirty = self._dirty, set()
        for rel in dirty:
            try:
                st = os.stat(self.root / rel, follow_symlinks=False)
            except FileNotFoundError:
                self._gone(rel)
                continue
            if stat_mod.S_ISREG(st.st_mode):
                # Always re-read: a same-size rewrite within one timestamp tick keeps its stat.
                # The live index follows git's index itself (git_index_changed): no git here.
                self._pending[rel] = None if self.matcher.is_ignored(rel, False, fresh=False) else st
                if self._pending[rel] is not None and rel in self._files:
                    digest, size, executable, _ = self._files[rel]
                    self._files[rel] = (digest, size, executable, 0)
            else:
                # A directory appeared or moved in, or a symlink changed: rare, rescan.
                self._scan_due = True
                return

    def _gone(self, rel: str) -> None:
        self._pending[rel] = None
        if rel in self._dirs:
            prefix = rel + "/"
            for path in self._files:
                if path.startswith(prefix):
                    self._pending[path] = None

    async def _rescan(self) -> int:
        """Walk the whole tree in rounds, hashing files whose stat moved; returns how many
        were hashed. Never holds more than one round of the walk in memory."""
        self._scan_due = False
        self._dirty.clear()  # the walk sees their current state; later changes re-note
        walker = self.matcher.walk(report_ignored=False)
        seen: set[str] = set()
        hashed = 0
        while chunk := await asyncio.to_thread(_take, walker, HASH_ROUND):
            stale = []
            for item in chunk:
                seen.add(item.path)
                held = self._files.get(item.path)
                if held is None or held[3] != fingerprint(item.stat):
                    stale.append((item.path, item.stat))
            del chunk
            if stale:
                entries = await self._hash(stale)
                hashed += len(entries)
                self._apply(entries, dict(stale))
        gone = [path for path in self._files if path not in seen]
        if gone:
            self._remove(gone)
        return hashed

    # -- snapshots -----------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """What ships now, hashing only what changed since the last snapshot."""
        async with self._lock:
            if self.git_index_changed:
                await self._reread_git_index()
            hashed = 0
            while True:
                if self._scan_due:
                    self._pending.clear()
                    hashed += await self._rescan()
                await asyncio.to_thread(self._refresh)
                if not self._scan_due:
                    break
            pending, self._pending = self._pending, {}
            stale = [
                (rel, st) for rel, st in pending.items()
                if st is not None
                and ((held := self._files.get(rel)) is None or held[3] != fingerprint(st))
            ]
            removed = [rel for rel, st in pending.items() if st is None and rel in self._files]
            del pending
            if stale:
                try:
                    entries = await self._hash(stale)
                except PermissionDenied:
                    self._pending.update(stale)  # looked at again next time
                    raise
                hashed += len(entries)
                self._apply(entries, dict(stale))
            if removed:
                self._remove(removed)
            if hashed or removed:
                self._rebuild_if_needed()
            if hashed >= TRIM_AFTER:
                gc.collect()
                _trim_heap()
            tree = common_pb2.Manifest()
            tree.CopyFrom(self._tree)
            return Snapshot(tree, dict(self._files), IndexStats(len(self._files), hashed))

    async def manifest(self) -> tuple[common_pb2.Manifest, IndexStats]:
        snap = await self.snapshot()
        return snap.tree, snap.stats

    async def _hash(self, chunk: list[tuple[str, os.stat_result]]) -> list[common_pb2.ManifestEntry]:
        try:
            entries, _ = await self.hashes.digests(self.root, chunk)
        except FileNotFoundError as exc:
            # Vanished between the scan and the read: the next snapshot rescans.
            self.invalidate()
            raise FailedPrecondition(
                f"{exc.filename}: deleted while it was being read; deploy again"
            ) from None
        except OSError as exc:
            raise PermissionDenied(
                f"cannot read {exc.filename or self.root}: {exc.strerror}; fix its "
                "permissions or leave it out with .c3ignore"
            ) from None
        return entries

    def _apply(
        self, entries: list[common_pb2.ManifestEntry], stats: dict[str, os.stat_result]
    ) -> None:
        """Record hashed files; patch the kept manifest in place where the path is known."""
        for entry in entries:
            path = entry.path
            known = path in self._files
            self._files[path] = (
                entry.digest, entry.size, entry.executable, fingerprint(stats[path])
            )
            if known and self._order:
                i = bisect.bisect_left(self._order, path)
                if i < len(self._order) and self._order[i] == path:
                    self._tree.entries[i].CopyFrom(entry)
                    continue
            self._order = []  # a new path: the manifest is rebuilt once at the end
            parent = path.rpartition("/")[0]
            while parent and parent not in self._dirs:
                self._dirs.add(parent)
                parent = parent.rpartition("/")[0]

    def _remove(self, removed: list[str]) -> None:
        for rel in removed:
            del self._files[rel]
        self._order = []

    def _rebuild_if_needed(self) -> None:
        if self._order or not self._files:
            if not self._files:
                self._tree = common_pb2.Manifest()
            return
        self._order = sorted(self._files)
        tree = common_pb2.Manifest()
        add = tree.entries.add
        for path in self._order:
            digest, size, executable, _ = self._files[path]
            add(path=path, digest=digest, size=size, executable=executable)
        self._tree = tree


def _take(walker: Iterator[WorkspaceFile | IgnoredPath], count: int) -> list[WorkspaceFile]:
    """The next `count` shipped files of a walk (blocking)."""
    out: list[WorkspaceFile] = []
    for item in walker:
        if isinstance(item, WorkspaceFile):
            out.append(item)
            if len(out) == count:
                break
    return out


def _trim_heap() -> None:
    """Give freed memory back to the OS after a big index (glibc only; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
