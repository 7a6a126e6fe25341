"""Reusing a project's previous workspace, so a redeploy rewrites only what changed.

Creating files is the dominant cost of materialising a workspace (hundreds of µs each on
many disks), so after a job its workspace is kept, per org and project, together with
what was written: path -> (digest, inode, size, mtime_ns, executable). The next job of
that project takes the tree over (a rename) and reconciles it with its manifest: a file
is kept only if the manifest wants the same digest there and `lstat` shows the very file
written (same inode, size and mtime — anything the previous job edited or replaced
differs); everything else, including what the job created, is removed. What is missing
is then written as usual.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

from c3.v1 import common_pb2

STATE_FILE = "state.json"
TREE_DIR = "tree"
MAX_WARM_TREES = 4

Record = list  # [digest, inode, size, mtime_ns, executable]


def _key(org_id: str, project: str) -> str:
    return hashlib.sha256(f"{org_id}\0{project}".encode()).hexdigest()[:24]


def _stamp(path: Path, digest: str, executable: bool) -> Record:
    st = os.lstat(path)
    return [digest, st.st_ino, st.st_size, st.st_mtime_ns, executable]


class WarmTrees:
    def __init__(self, root: Path, max_trees: int = MAX_WARM_TREES) -> None:
        self.root = root
        self.max_trees = max_trees

    def take(self, org_id: str, project: str, manifest: common_pb2.Manifest, dest: Path
             ) -> tuple[list[common_pb2.ManifestEntry], dict[str, Record]]:
        """Move the project's kept tree to `dest` (which must not exist) and prune it to
        what `manifest` wants. Returns (entries still to write, records of kept files).
        Without a kept tree: (every entry, {}) and `dest` is created empty. Blocking."""
        slot = self.root / _key(org_id, project)
        records: dict[str, Record] = {}
        try:
            records = json.loads((slot / STATE_FILE).read_text())
            os.rename(slot / TREE_DIR, dest)
        except (OSError, ValueError):
            records = {}
        shutil.rmtree(slot, ignore_errors=True)
        if not records:
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            return list(manifest.entries), {}
        wanted = {e.path: e for e in manifest.entries}
        try:
            kept = _prune(dest, wanted, records)
        except OSError:  # something odd left by the job: start from scratch
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            return list(manifest.entries), {}
        return [e for e in manifest.entries if e.path not in kept], kept

    def keep(self, org_id: str, project: str, workspace: Path,
             records: dict[str, Record]) -> Path | None:
        """Keep `workspace` (a finished job's) for the project's next job; returns where
        it now is. Blocking."""
        self.root.mkdir(parents=True, exist_ok=True)
        slot = self.root / _key(org_id, project)
        shutil.rmtree(slot, ignore_errors=True)
        slot.mkdir()
        try:
            os.rename(workspace, slot / TREE_DIR)
            (slot / STATE_FILE).write_text(json.dumps(records))
        except OSError:
            shutil.rmtree(slot, ignore_errors=True)
            return None
        slots = sorted((p for p in self.root.iterdir() if p.is_dir()),
                       key=lambda p: p.stat().st_mtime)
        for old in slots[:-self.max_trees]:
            shutil.rmtree(old, ignore_errors=True)
        return slot / TREE_DIR


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


def _prune(root: Path, wanted: dict[str, common_pb2.ManifestEntry],
           records: dict[str, Record]) -> dict[str, Record]:
    kept: dict[str, Record] = {}
    stack = [("", str(root))]
    while stack:
        prefix, directory = stack.pop()
        with os.scandir(directory) as entries:
            for item in entries:
                rel = f"{prefix}{item.name}"
                st = item.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((rel + "/", item.path))
                    continue
                want, had = wanted.get(rel), records.get(rel)
                if (want is not None and had is not None and stat.S_ISREG(st.st_mode)
                        and had == [want.digest, st.st_ino, st.st_size, st.st_mtime_ns,
                                    want.executable]
                        and bool(st.st_mode & 0o100) == want.executable):
                    kept[rel] = had
                else:
                    os.unlink(item.path)
    _remove_unwanted_dirs(root, wanted)
    return kept


def _remove_unwanted_dirs(root: Path, wanted: dict[str, common_pb2.ManifestEntry]) -> None:
    """Drop directories no wanted file lives in (the previous job's own output dirs)."""
    needed = {"."}
    for path in wanted:
        parent = os.path.dirname(path)
        while parent and parent not in needed:
            needed.add(parent)
            parent = os.path.dirname(parent)
    for directory, _, _ in sorted(os.walk(root), key=lambda t: -len(t[0])):
        rel = os.path.relpath(directory, root)
        if rel not in needed:
            shutil.rmtree(directory, ignore_errors=True)
