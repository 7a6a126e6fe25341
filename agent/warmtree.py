"""Reusing a project's previous workspace, so a redeploy rewrites only what changed.

Creating files is the dominant cost of materialising a workspace (hundreds of µs each on
many disks), so after a job its workspace is kept, per org and project, together with
what was written: path -> (digest, inode, size, mtime_ns, executable).

Two steps, so that the next job's startup pays only for what its manifest changed:

- `keep` (when a job ends) moves the tree into the project's slot (a rename), and `tidy`
  (right after, off the job's reporting path) makes the tree exactly its records: a file
  stays only if `lstat` shows the very file written (same inode, size, mtime and
  executable bit — anything the job edited or replaced differs); everything else the job
  left, files, links and directories, is removed.
- `take` (when the next job starts) moves the tidy tree to the new workspace and
  reconciles it by diffing the kept records with the new manifest: only paths whose
  digest or mode changed, or that are gone, are touched; the rest of the tree is not
  even looked at. A tree that is not known to be tidy (a restart of the agent, a `tidy`
  that has not run yet) is tidied first, inside `take`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

from c3.v1 import common_pb2

STATE_FILE = "state.json"
TREE_DIR = "tree"
MAX_WARM_TREES = 4

Record = list[Any]  # [digest, inode, size, mtime_ns, executable], as state.json keeps it


def _key(org_id: str, project: str) -> str:
    return hashlib.sha256(f"{org_id}\0{project}".encode()).hexdigest()[:24]


def _stamp(path: Path, digest: str, executable: bool) -> Record:
    st = os.lstat(path)
    return [digest, st.st_ino, st.st_size, st.st_mtime_ns, executable]


class WarmTrees:
    """Kept trees under `root/<key>/{tree,state.json}`. Thread-safe (one lock)."""

    def __init__(self, root: Path, max_trees: int = MAX_WARM_TREES) -> None:
        self.root = root
        self.max_trees = max_trees
        self._lock = threading.Lock()
        # Slots whose tree is known (in this process) to be exactly their records.
        self._tidy: dict[str, dict[str, Record]] = {}
        # Slots kept but not tidied yet: their records (saved to disk by `tidy`).
        self._untidy: dict[str, dict[str, Record]] = {}

    def take(self, org_id: str, project: str, manifest: common_pb2.Manifest, dest: Path
             ) -> tuple[list[common_pb2.ManifestEntry], dict[str, Record]]:
        """Move the project's kept tree to `dest` (absent or an empty directory) and make
        it match `manifest` where it can. Returns (entries still to write, records of the
        kept files). Without a kept tree: (every entry, {}) and `dest` is created empty.
        Blocking."""
        key = _key(org_id, project)
        with self._lock:
            records = self._tidy.pop(key, None)
            if records is None:
                records = self._tidy_slot(key, save=False)  # the slot goes right away
            slot = self.root / key
            try:
                if records:
                    os.rename(slot / TREE_DIR, dest)
            except OSError:
                records = None
            shutil.rmtree(slot, ignore_errors=True)
        if not records:
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            return list(manifest.entries), {}
        try:
            kept = _reconcile(dest, manifest, records)
        except OSError:  # something odd in the tree: start from scratch
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            return list(manifest.entries), {}
        return [e for e in manifest.entries if e.path not in kept], kept

    def keep(self, org_id: str, project: str, workspace: Path,
             records: dict[str, Record]) -> Path | None:
        """Keep `workspace` (a finished job's) for the project's next job; returns where
        it now is. Only a rename: call `tidy` next, when time allows. Blocking."""
        key = _key(org_id, project)
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            slot = self.root / key
            self._tidy.pop(key, None)
            shutil.rmtree(slot, ignore_errors=True)
            slot.mkdir()
            try:
                os.rename(workspace, slot / TREE_DIR)
                self._untidy[key] = records
            except OSError:
                shutil.rmtree(slot, ignore_errors=True)
                return None
            slots = sorted((p for p in self.root.iterdir() if p.is_dir()),
                           key=lambda p: p.stat().st_mtime)
            for old in slots[:-self.max_trees]:
                shutil.rmtree(old, ignore_errors=True)
                self._tidy.pop(old.name, None)
                self._untidy.pop(old.name, None)
        return slot / TREE_DIR

    def tidy(self, org_id: str, project: str) -> None:
        """Remove from the kept tree whatever the job changed or created. Blocking."""
        key = _key(org_id, project)
        with self._lock:
            if key not in self._tidy:
                records = self._tidy_slot(key)
                if records:
                    self._tidy[key] = records

    def _tidy_slot(self, key: str, save: bool = True) -> dict[str, Record] | None:
        """The slot's records after pruning its tree to them; None when unusable."""
        slot = self.root / key
        records = self._untidy.pop(key, None)
        try:
            if records is None:  # kept by an earlier run of the agent
                records = json.loads((slot / STATE_FILE).read_text())
            clean = _prune(slot / TREE_DIR, records)
            if save:  # the tree outlives a restart of the agent
                _save(slot, clean)
        except (OSError, ValueError):
            shutil.rmtree(slot, ignore_errors=True)
            return None
        return clean


def stamp_written(workspace: Path, entries: list[common_pb2.ManifestEntry]
                  ) -> dict[str, Record]:
    """Records of files just written (blocking)."""
    found = {}
    for entry in entries:
        try:
            found[entry.path] = _stamp(workspace / entry.path, entry.digest, entry.executable)
        except OSError:
            continue
    return found


def _save(slot: Path, records: dict[str, Record]) -> None:
    tmp = slot / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(records))
    os.replace(tmp, slot / STATE_FILE)


def _prune(root: Path, records: dict[str, Record]) -> dict[str, Record]:
    """Delete everything under `root` that is not exactly a recorded file, and the
    directories that hold none; returns the records still true."""
    kept: dict[str, Record] = {}
    stack = [("", str(root))]
    holders: set[str] = set()  # directories (relative) with a kept file somewhere below
    seen_dirs: list[tuple[str, str]] = []
    while stack:
        prefix, directory = stack.pop()
        with os.scandir(directory) as entries:
            for item in entries:
                rel = f"{prefix}{item.name}"
                st = item.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((rel + "/", item.path))
                    seen_dirs.append((rel, item.path))
                    continue
                had = records.get(rel)
                if (had is not None and stat.S_ISREG(st.st_mode)
                        and had[1:4] == [st.st_ino, st.st_size, st.st_mtime_ns]
                        and bool(st.st_mode & 0o100) == bool(had[4])):
                    kept[rel] = had
                    parent = os.path.dirname(rel)
                    while parent and parent not in holders:
                        holders.add(parent)
                        parent = os.path.dirname(parent)
                else:
                    os.unlink(item.path)
    for rel, path in sorted(seen_dirs, key=lambda d: -len(d[0])):
        if rel not in holders:
            shutil.rmtree(path, ignore_errors=True)
    return kept


def _reconcile(root: Path, manifest: common_pb2.Manifest, records: dict[str, Record]
               ) -> dict[str, Record]:
    """`root` is exactly `records` (tidy): keep the files `manifest` wants as they are,
    remove the others. Only changed or removed paths are touched."""
    kept: dict[str, Record] = {}
    needed: set[str] = set()  # directories the files still to write go into
    for entry in manifest.entries:
        had = records.get(entry.path)
        if had is not None and had[0] == entry.digest and bool(had[4]) == entry.executable:
            kept[entry.path] = had
        else:
            parent = os.path.dirname(entry.path)
            while parent and parent not in needed:
                needed.add(parent)
                parent = os.path.dirname(parent)
    emptied: set[str] = set()
    for rel in records:
        if rel not in kept:
            try:
                os.unlink(root / rel)
            except FileNotFoundError:
                pass
            emptied.add(os.path.dirname(rel))
    # Directories left empty go unless a new file goes there (a new file may want the
    # name of one); deepest first, then up while they empty.
    for directory in sorted(emptied, key=len, reverse=True):
        while directory and directory not in needed:
            try:
                os.rmdir(root / directory)
            except FileNotFoundError:
                pass
            except OSError:  # not empty: neither are its parents
                break
            directory = os.path.dirname(directory)
    return kept
