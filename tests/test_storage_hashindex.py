"""The client's stat index: unchanged files are never rehashed; known-present digests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from c3.storage.hashindex import HashIndex
from tests.harness.storage import OLD_NS, settled_tree, stat_tree

pytestmark = pytest.mark.unit


async def test_unchanged_files_are_not_rehashed(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    files = {"a.py": b"print(1)\n", "pkg/b.py": b"x = 2\n", "run.sh": b"#!/bin/sh\n"}
    scanned = settled_tree(root, files)
    os.chmod(root / "run.sh", 0o755)
    scanned = stat_tree(root, files)
    async with HashIndex(tmp_path / "index.sqlite") as index:
        entries, stats = await index.digests(root, scanned)
        assert (stats.files_scanned, stats.files_hashed) == (3, 3)
        assert [e.path for e in entries] == ["a.py", "pkg/b.py", "run.sh"]
        assert entries[0].digest == hashlib.sha256(b"print(1)\n").hexdigest()
        assert [e.executable for e in entries] == [False, False, True]
        # Survives a restart: a fresh HashIndex on the same file hashes nothing.
    async with HashIndex(tmp_path / "index.sqlite") as index:
        again, stats = await index.digests(root, stat_tree(root, files))
        assert (stats.files_scanned, stats.files_hashed) == (3, 0)
        assert again == entries
        # Editing one file rehashes exactly that one.
        (root / "a.py").write_bytes(b"print(2)\n")
        os.utime(root / "a.py", ns=(OLD_NS + 10**9, OLD_NS + 10**9))
        changed, stats = await index.digests(root, stat_tree(root, files))
        assert stats.files_hashed == 1
        assert changed[0].digest == hashlib.sha256(b"print(2)\n").hexdigest()


async def test_freshly_modified_files_are_rehashed_until_they_settle(tmp_path: Path) -> None:
    # Same size, fresh mtime: a second edit within the timestamp granularity could keep
    # the stat identical, so such an entry is not trusted yet.
    root = tmp_path / "proj"
    root.mkdir()
    (root / "f").write_bytes(b"one")
    async with HashIndex(tmp_path / "index.sqlite") as index:
        _, stats = await index.digests(root, [("f", os.stat(root / "f"))])
        assert stats.files_hashed == 1
        (root / "f").write_bytes(b"two")  # same size, likely same coarse mtime
        entries, stats = await index.digests(root, [("f", os.stat(root / "f"))])
        assert stats.files_hashed == 1
        assert entries[0].digest == hashlib.sha256(b"two").hexdigest()


async def test_known_present_is_per_server(tmp_path: Path) -> None:
    async with HashIndex(tmp_path / "index.sqlite") as index:
        digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(1200)]
        await index.mark_present("127.0.0.1:7431/org-a", digests[:1000])
        assert await index.known_present("127.0.0.1:7431/org-a", digests) == set(digests[:1000])
        assert await index.known_present("127.0.0.1:7431/org-b", digests) == set()
        await index.forget_present("127.0.0.1:7431/org-a", digests[:10])
        assert len(await index.known_present("127.0.0.1:7431/org-a", digests)) == 990
