"""Fixtures shared by test modules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc import aio

from c3.grpcutil import channel
from coordinator.app import Coordinator
from coordinator.testing import Bootstrap, config_for_test, start_coordinator


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[Coordinator, Bootstrap, aio.Channel]]:
    """A real coordinator on a free port (in this process), its bootstrap credentials and
    a client channel to it."""
    app, boot = await start_coordinator(config_for_test(tmp_path))
    ch = channel(app.address)
    yield app, boot, ch
    await ch.close()
    await app.stop()
