"""Opening the SQLite files c3 keeps (indexes, histories, metadata) the same way everywhere."""

from __future__ import annotations

from pathlib import Path

import aiosqlite


async def open_database(path: Path, schema: str) -> aiosqlite.Connection:
    """An aiosqlite connection in WAL mode (readers never wait for the writer; NORMAL
    sync is durable at checkpoints and safe against corruption) with `schema` applied;
    the schema must be idempotent (CREATE … IF NOT EXISTS)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.executescript(schema)
    await db.commit()
    return db
