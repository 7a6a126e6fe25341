"""A project's previous workspace is reused for its next job only where it is exactly
what was written: files the job edited, replaced or created are not carried over."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from agent.warmtree import WarmTrees, stamp_written
from c3.v1 import common_pb2

pytestmark = pytest.mark.unit


def entry(path: str, data: bytes, executable: bool = False) -> common_pb2.ManifestEntry:
    return common_pb2.ManifestEntry(path=path, digest=hashlib.sha256(data).hexdigest(),
                                    size=len(data), executable=executable)


def write(root: Path, entries: list[common_pb2.ManifestEntry], blobs: dict[str, bytes]) -> None:
    for e in entries:
        (root / e.path).parent.mkdir(parents=True, exist_ok=True)
        (root / e.path).write_bytes(blobs[e.path])
        os.chmod(root / e.path, 0o755 if e.executable else 0o644)


def test_only_untouched_wanted_files_are_kept(tmp_path: Path) -> None:
    blobs = {"a.py": b"a", "src/b.py": b"b", "src/c.py": b"c", "run.sh": b"echo"}
    first = sorted((entry(p, d, p == "run.sh") for p, d in blobs.items()), key=lambda e: e.path)
    ws = tmp_path / "job1"
    ws.mkdir()
    write(ws, first, blobs)
    warm = WarmTrees(tmp_path / "warm")
    records = stamp_written(ws, first)
    # What the job did: edited a file in place, created outputs and a symlink.
    (ws / "src/b.py").write_bytes(b"edited by the job")
    (ws / "results").mkdir()
    (ws / "results/out.txt").write_text("x")
    (ws / "link").symlink_to("/etc")
    assert warm.keep("org", "proj", ws, records) is not None and not ws.exists()

    second = sorted([entry("a.py", b"a"), entry("src/b.py", b"b"), entry("src/c.py", b"C2"),
                     entry("run.sh", b"echo", True)], key=lambda e: e.path)
    ws2 = tmp_path / "job2"
    todo, kept = warm.take("org", "proj", common_pb2.Manifest(entries=second), ws2)
    assert sorted(e.path for e in todo) == ["src/b.py", "src/c.py"]  # edited, changed
    assert sorted(kept) == ["a.py", "run.sh"]
    present = sorted(str(p.relative_to(ws2)) for p in ws2.rglob("*"))
    assert present == ["a.py", "run.sh", "src"]  # outputs, link and stale files gone
    # Another org's project of the same name never sees this tree.
    todo, kept = warm.take("other-org", "proj", common_pb2.Manifest(entries=second),
                           tmp_path / "job3")
    assert len(todo) == 4 and kept == {}


def test_tidied_tree_is_reconciled_by_manifest_diff(tmp_path: Path) -> None:
    blobs = {"a": b"file a", "d/x.py": b"x", "d/y.py": b"y", "keep.py": b"k"}
    first = sorted((entry(p, d) for p, d in blobs.items()), key=lambda e: e.path)
    ws = tmp_path / "job1"
    ws.mkdir()
    write(ws, first, blobs)
    warm = WarmTrees(tmp_path / "warm")
    records = stamp_written(ws, first)
    (ws / "made-by-job").mkdir()
    (ws / "made-by-job/out.bin").write_bytes(b"o")
    kept_at = warm.keep("org", "proj", ws, records)
    assert kept_at is not None
    warm.tidy("org", "proj")  # what the agent does once the job's status is out
    assert not (kept_at / "made-by-job").exists()
    inode = os.lstat(kept_at / "keep.py").st_ino

    # "a" becomes a directory, d/ loses all its files, keep.py is unchanged.
    second = [entry("a/b.txt", b"new"), entry("keep.py", b"k")]
    ws2 = tmp_path / "job2"
    todo, kept = warm.take("org", "proj", common_pb2.Manifest(entries=second), ws2)
    assert [e.path for e in todo] == ["a/b.txt"] and sorted(kept) == ["keep.py"]
    assert os.lstat(ws2 / "keep.py").st_ino == inode  # reused, not rewritten
    assert sorted(str(p.relative_to(ws2)) for p in ws2.rglob("*")) == ["keep.py"]
