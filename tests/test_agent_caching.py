"""Background caching of a job's fetched files waits while another job starts: its copies
and fsyncs would otherwise slow the startup a user is waiting on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.workspace import FetchStats, Foreground, cache_fetched
from c3.manifest import sha256_bytes
from c3.storage.blobcache import BlobCache
from c3.v1 import common_pb2

pytestmark = pytest.mark.unit


async def test_caching_pauses_while_a_job_starts_and_then_catches_up(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    entries = []
    for name in ("a.py", "b.py"):
        data = f"# {name}\n".encode()
        (tree / name).write_bytes(data)
        entries.append(common_pb2.ManifestEntry(path=name, digest=sha256_bytes(data), size=len(data)))
    cache = BlobCache(tmp_path / "blobs", 1 << 20)
    foreground = Foreground()
    stats = FetchStats(files=2, bytes_fetched=0, fetched=tuple(entries))
    looked_up: list[str] = []  # where() is asked right before each copy starts

    def where() -> Path:
        looked_up.append("tree")
        return tree

    with foreground.busy():
        caching = asyncio.create_task(cache_fetched(stats, where, cache, foreground))
        for _ in range(20):  # every chance to run: it must not start while a job starts
            await asyncio.sleep(0)
        assert looked_up == [] and not caching.done()
    await asyncio.wait_for(caching, 10)  # the startup is over: it catches up
    assert all(cache.has(e.digest) for e in entries) and len(looked_up) == 2

    # Nested startups: it waits for the last one.
    with foreground.busy():
        with foreground.busy():
            pass
        waiting = asyncio.create_task(foreground.idle())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
    await asyncio.wait_for(waiting, 1)
