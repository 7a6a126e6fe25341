"""Group commit: repeated upserts of one row collapse, and only the newest state lands."""

from __future__ import annotations

import asyncio
from pathlib import Path

from coordinator.db import Database

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
