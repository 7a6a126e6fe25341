"""The live file set of one project: scanned once, then kept current from watch events.

A deploy after a save re-stats only the paths that changed, hashes only files whose
(size, mtime, ctime, inode, mode) moved, and patches the kept manifest in place, so the
manifest of a large tree after one change costs a copy, not a rebuild.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import stat as stat_mod
from dataclasses import dataclass, field
from pathlib import Path

from c3.errors import FailedPrecondition, PermissionDenied
from c3.hashindex import HashIndex
from c3.v1 import common_pb2
from c3.workspace import IgnoreMatcher, is_editor_temp

StatKey = tuple[int, int, int, int, int]


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode & 0o111)


@dataclass
class IndexStats:
    files_scanned: int = 0
    files_hashed: int = 0


@dataclass
class Snapshot:
    """What ships right now. `tree` is a private copy, safe to hold across awaits."""

    tree: common_pb2.Manifest
    # path -> (digest, size): the same content as `tree`, cheap to scan from Python.
    files: dict[str, tuple[str, int]]
    stats: IndexStats = field(default_factory=IndexStats)


class ProjectIndex:
    def __init__(self, root: Path, hashes: HashIndex) -> None:
        self.root = root
        self.hashes = hashes
        self.matcher = IgnoreMatcher(root)
        self._stats: dict[str, os.stat_result] | None = None  # None: a full scan is due
        self._dirty: set[str] = set()
        # Paths whose stat may differ from what was hashed (all of them after a scan).
        self._recheck: set[str] = set()
        self._keys: dict[str, StatKey] = {}
        self._files: dict[str, tuple[str, int]] = {}
        self._tree = common_pb2.Manifest()
        self._order: list[str] = []  # paths of self._tree.entries, sorted
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._stats = None

    def note_changes(self, abs_paths: set[str]) -> set[str]:
        """Record changed paths from the watcher; return those that affect what ships."""
        relevant: set[str] = set()
        root = str(self.root)
        for path in abs_paths:
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
            known = self._stats is not None and (rel in self._stats or self._has_below(rel))
            if not known and self.matcher.is_ignored(rel, os.path.isdir(path)):
                continue
            self._dirty.add(rel)
            # Same-size rewrites within one timestamp tick keep their stat: rehash regardless.
            self._keys.pop(rel, None)
            relevant.add(rel)
        return relevant

    def _has_below(self, rel: str) -> bool:
        assert self._stats is not None
        prefix = rel + "/"
        return any(p.startswith(prefix) for p in self._stats)

    def _scan(self) -> None:
        files, _ = self.matcher.scan(report_ignored=False)
        self._stats = {f.path: f.stat for f in files}
        self._dirty.clear()
        # Everything found, and everything shipped before (it may be gone or ignored now).
        self._recheck = set(self._stats) | set(self._files)

    def _refresh(self) -> None:
        """Bring the file set up to date (blocking: runs in a thread)."""
        if self._stats is None:
            self._scan()
            return
        dirty, self._dirty = self._dirty, set()
        for rel in dirty:
            try:
                st = os.stat(self.root / rel, follow_symlinks=False)
            except FileNotFoundError:
                self._drop(rel)
                continue
            if stat_mod.S_ISREG(st.st_mode):
                if self.matcher.is_ignored(rel, False):
                    self._stats.pop(rel, None)
                else:
                    self._stats[rel] = st
                self._recheck.add(rel)
            else:
                # A directory appeared or moved in, or a symlink changed: rare, rescan.
                self._scan()
                return

    def _drop(self, rel: str) -> None:
        assert self._stats is not None
        prefix = rel + "/"
        for path in [p for p in self._stats if p == rel or p.startswith(prefix)]:
            del self._stats[path]
            self._recheck.add(path)

    async def snapshot(self) -> Snapshot:
        """What ships now, hashing only what changed since the last snapshot."""
        async with self._lock:
            await asyncio.to_thread(self._refresh)
            stats_by_path = self._stats
            assert stats_by_path is not None
            recheck, self._recheck = self._recheck, set()
            stale = [
                (rel, stats_by_path[rel]) for rel in recheck
                if rel in stats_by_path and self._keys.get(rel) != stat_key(stats_by_path[rel])
            ]
            removed = [rel for rel in recheck if rel not in stats_by_path and rel in self._files]
            stats = IndexStats(files_scanned=len(stats_by_path))
            if stale:
                entries = await self._hash(stale)
                stats.files_hashed = len(entries)
            else:
                entries = []
            self._apply(entries, removed, {rel: st for rel, st in stale})
            snapshot = common_pb2.Manifest()
            snapshot.CopyFrom(self._tree)
            return Snapshot(snapshot, dict(self._files), stats)

    async def manifest(self) -> tuple[common_pb2.Manifest, IndexStats]:
        snap = await self.snapshot()
        return snap.tree, snap.stats

    async def _hash(self, stale: list[tuple[str, os.stat_result]]) -> list[common_pb2.ManifestEntry]:
        try:
            entries, _ = await self.hashes.digests(self.root, stale)
        except FileNotFoundError as exc:
            # Vanished between the scan and the read: the next snapshot rescans.
            self.invalidate()
            raise FailedPrecondition(
                f"{exc.filename}: deleted while it was being read; deploy again"
            ) from None
        except OSError as exc:
            self._recheck.update(rel for rel, _ in stale)
            raise PermissionDenied(
                f"cannot read {exc.filename or self.root}: {exc.strerror}; fix its "
                "permissions or leave it out with .c3ignore"
            ) from None
        return entries

    def _apply(
        self,
        entries: list[common_pb2.ManifestEntry],
        removed: list[str],
        stats: dict[str, os.stat_result],
    ) -> None:
        """Patch the kept manifest: in place for changed files, rebuilt when paths come or go."""
        added = False
        for entry in entries:
            self._keys[entry.path] = stat_key(stats[entry.path])
            if entry.path not in self._files:
                added = True
            self._files[entry.path] = (entry.digest, entry.size)
        for rel in removed:
            self._files.pop(rel, None)
            self._keys.pop(rel, None)
        if added or removed:
            self._order = sorted(self._files)
            by_path = {e.path: e for e in entries}
            rebuilt = common_pb2.Manifest()
            old = {e.path: e for e in self._tree.entries} if not by_path.keys() >= set(self._files) else {}
            for path in self._order:
                entry = by_path.get(path) or old[path]
                rebuilt.entries.add().CopyFrom(entry)
            self._tree = rebuilt
            return
        for entry in entries:
            i = bisect.bisect_left(self._order, entry.path)
            self._tree.entries[i].CopyFrom(entry)
