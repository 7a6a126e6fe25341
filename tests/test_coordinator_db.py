"""Group commit: repeated upserts of one row collapse, and only the newest state lands."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coordinator.db import Database
from coordinator.repo import _RESIDENT_JOBS

pytestmark = pytest.mark.unit


_UPSERT = "INSERT OR REPLACE INTO orgs VALUES (?,?,?,?,?)"


async def test_upserts_of_one_row_collapse_into_one_durable_newest_state(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "c.db")
    state = {"balance": 0}
    row = lambda: ("o1", "acme", "free", state["balance"], 1.0)  # noqa: E731
    futures = []
    for balance in range(1, 501):
        state["balance"] = balance
        futures.append(db.write_latest(_UPSERT, "o1", row))
    futures.append(db.write(_UPSERT, ("o2", "other", "pro", 7, 2.0)))
    await asyncio.gather(*futures)
    assert db.commits <= 2  # one burst, one transaction (two if the writer woke mid-burst)
    await db.close()

    reopened = await Database.open(tmp_path / "c.db")
    rows = await reopened.fetchall("SELECT id, balance_minor FROM orgs ORDER BY id")
    await reopened.close()
    assert [tuple(r) for r in rows] == [("o1", 500), ("o2", 7)]


async def test_a_cancelled_writer_does_not_cancel_the_commit_others_wait_on(tmp_path: Path) -> None:
    """Writes of one commit share a future: a client that hangs up mid-wait (its task is
    cancelled) must not fail or lose the writes of everyone else in that commit."""
    db = await Database.open(tmp_path / "c.db")
    await db.barrier()  # the writer is idle: the next writes form one commit together

    async def write_and_wait(org_id: str) -> None:
        await db.write(_UPSERT, (org_id, org_id, "free", 1, 1.0))

    hung_up = asyncio.create_task(write_and_wait("o-gone"))
    patient = asyncio.create_task(write_and_wait("o-kept"))
    await asyncio.sleep(0)  # both writes are queued before either commit can finish
    hung_up.cancel()
    await asyncio.wait_for(patient, 10)  # resolves normally: the shared commit was not cancelled
    with pytest.raises(asyncio.CancelledError):
        await hung_up
    await db.close()

    reopened = await Database.open(tmp_path / "c.db")
    rows = await reopened.fetchall("SELECT id FROM orgs ORDER BY id")
    await reopened.close()
    assert [r[0] for r in rows] == ["o-gone", "o-kept"]  # the cancelled caller's write landed too


async def test_a_large_commit_keeps_every_row_and_the_last_write_of_each_key(tmp_path: Path) -> None:
    """Big commits go out as multi-row statements in chunks: across chunk boundaries no
    row may be lost and, for a key written twice, the later write must win."""
    db = await Database.open(tmp_path / "c.db")
    await db.barrier()
    futures = [db.write(_UPSERT, (f"o{i:03d}", f"first-{i}", "free", i, 1.0)) for i in range(300)]
    # Rewrite every seventh org later in the same commit (crossing chunk boundaries).
    futures += [db.write(_UPSERT, (f"o{i:03d}", f"second-{i}", "pro", -i, 2.0)) for i in range(0, 300, 7)]
    await asyncio.gather(*futures)
    await db.close()

    reopened = await Database.open(tmp_path / "c.db")
    rows = await reopened.fetchall("SELECT id, name, balance_minor FROM orgs ORDER BY id")
    await reopened.close()
    assert len(rows) == 300
    for i, (org_id, name, balance) in enumerate(rows):
        assert org_id == f"o{i:03d}"
        rewritten = i % 7 == 0
        assert name == (f"second-{i}" if rewritten else f"first-{i}")
        assert balance == (-i if rewritten else i)


async def test_restart_finds_its_jobs_through_indexes_not_by_reading_every_row(
    tmp_path: Path,
) -> None:
    """The query that picks the jobs to load at start must search jobs_live and
    jobs_finished_at: a scan would make restart time grow with every job ever run."""
    db = await Database.open(tmp_path / "c.db")
    try:
        plan = await db.fetchall("EXPLAIN QUERY PLAN " + _RESIDENT_JOBS, (0.0,))
    finally:
        await db.close()
    steps = " / ".join(str(row[3]) for row in plan)
    assert "INDEX jobs_live" in steps and "INDEX jobs_finished_at" in steps, steps
    assert "SCAN" not in steps, steps
