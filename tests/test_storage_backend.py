"""The local disk backend's group commit: concurrent batches share filesystem syncs, and
a batch is visible only after a sync that started after its bytes were written."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from c3.storage import codec
from storaged import backend as backend_mod
from storaged.backend import LocalDiskBackend

pytestmark = pytest.mark.unit


def test_concurrent_batches_share_syncs_and_all_land(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    in_sync = threading.Event()
    release = threading.Event()
    real = backend_mod._syncfs

    def slow_sync(fd: int) -> None:
        syncs.append(fd)
        in_sync.set()
        release.wait(timeout=10)  # hold the first sync until every writer is queued
        real(fd)

    monkeypatch.setattr(backend_mod, "_syncfs", slow_sync)
    store = LocalDiskBackend(tmp_path)
    batches = [
        [(hashlib.sha256(d).hexdigest(), codec.NONE, d) for d in (f"{b}-{i}".encode() for i in range(20))]
        for b in range(8)
    ]
    with ThreadPoolExecutor(len(batches)) as pool:
        futures = [pool.submit(store.put_many, batch) for batch in batches]
        assert in_sync.wait(timeout=10)
        # While the first sync runs, nothing of any batch is visible yet.
        assert all(store.stat(d) is None for batch in batches for d, _, _ in batch)
        release.set()
        for f in futures:
            f.result(timeout=30)
    for batch in batches:
        for digest, _, payload in batch:
            _, fh = store.open(digest)
            with fh:
                assert fh.read() == payload
    # 8 batches x 2 sync points would be 16 syncs one by one; grouped they share them.
    assert len(syncs) < 16, len(syncs)
