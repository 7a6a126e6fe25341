"""The live file set of one project: scanned once, then kept current from watch events.

A deploy after a save re-stats only the paths that changed and hashes only files whose
(size, mtime, ctime, inode) moved, so producing the manifest of a large tree costs little
more than sorting it.
"""

from __future__ import annotations

import asyncio
import os
import stat as stat_mod
from dataclasses import dataclass
from pathlib import Path

from c3.errors import FailedPrecondition, PermissionDenied
from c3.hashindex import HashIndex
from c3.v1 import common_pb2
from c3.workspace import IgnoreMatcher, is_editor_temp


def stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode & 0o111)


@dataclass
class IndexStats:
    files_scanned: int = 0
    files_hashed: int = 0


class ProjectIndex:
    def __init__(self, root: Path, hashes: HashIndex) -> None:
        self.root = root
        self.hashes = hashes
        self.matcher = IgnoreMatcher(root)
        self._files: dict[str, os.stat_result] | None = None  # None: a full scan is due
        self._dirty: set[str] = set()
        self._entries: dict[str, tuple[tuple[int, int, int, int, int], common_pb2.ManifestEntry]] = {}
        self._lock = asyncio.Lock()
        self.generation = 0  # bumped on every relevant change

    def invalidate(self) -> None:
        self._files = None
        self.generation += 1

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
            was_known = self._files is not None and (rel in self._files or self._has_below(rel))
            if not was_known and self.matcher.is_ignored(rel, os.path.isdir(path)):
                continue
            self._dirty.add(rel)
            # Same-size rewrites within one timestamp tick keep their stat: rehash regardless.
            self._entries.pop(rel, None)
            relevant.add(rel)
        if relevant:
            self.generation += 1
        return relevant

    def _has_below(self, rel: str) -> bool:
        assert self._files is not None
        prefix = rel + "/"
        return any(p.startswith(prefix) for p in self._files)

    def _refresh(self) -> None:
        """Bring the file set up to date (blocking: runs in a thread)."""
        if self._files is None:
            files, _ = self.matcher.scan(report_ignored=False)
            self._files = {f.path: f.stat for f in files}
            self._dirty.clear()
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
                    self._files.pop(rel, None)
                else:
                    self._files[rel] = st
            else:
                # A directory appeared or moved in, or a symlink changed: rare, rescan.
                files, _ = self.matcher.scan(report_ignored=False)
                self._files = {f.path: f.stat for f in files}
                return

    def _drop(self, rel: str) -> None:
        assert self._files is not None
        self._files.pop(rel, None)
        prefix = rel + "/"
        for path in [p for p in self._files if p.startswith(prefix)]:
            del self._files[path]

    async def manifest(self) -> tuple[common_pb2.Manifest, IndexStats]:
        """The current manifest, hashing only what changed since the last one."""
        async with self._lock:
            await asyncio.to_thread(self._refresh)
            files = self._files
            assert files is not None
            stale = [
                (rel, st) for rel, st in files.items()
                if (cached := self._entries.get(rel)) is None or cached[0] != stat_key(st)
            ]
            stats = IndexStats(files_scanned=len(files))
            if stale:
                try:
                    fresh, hash_stats = await self.hashes.digests(self.root, stale)
                except FileNotFoundError as exc:
                    # Vanished between the scan and the read: the next manifest rescans.
                    self.invalidate()
                    raise FailedPrecondition(
                        f"{exc.filename}: deleted while it was being read; deploy again"
                    ) from None
                except OSError as exc:
                    raise PermissionDenied(
                        f"cannot read {exc.filename or self.root}: {exc.strerror}; fix its "
                        "permissions or leave it out with .c3ignore"
                    ) from None
                stats.files_hashed = hash_stats.files_hashed
                by_path = dict(stale)
                for entry in fresh:
                    self._entries[entry.path] = (stat_key(by_path[entry.path]), entry)
            for rel in [p for p in self._entries if p not in files]:
                del self._entries[rel]
            entries = [self._entries[p][1] for p in sorted(files) if p in self._entries]
            tree = common_pb2.Manifest(entries=entries)
            return tree, stats

