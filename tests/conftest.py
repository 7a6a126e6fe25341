"""Fixtures shared by test modules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from c3.grpcutil import channel
from coordinator.app import Coordinator
from coordinator.testing import Bootstrap, Stack, config_for_test, start_coordinator


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[Coordinator, Bootstrap, aio.Channel]]:
    """A real coordinator on a free port (in this process), its bootstrap credentials and
    a client channel to it."""
    app, boot = await start_coordinator(config_for_test(tmp_path))
    ch = channel(app.address)
    yield app, boot, ch
    await ch.close()
    await app.stop()


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[Any]:
    """Starts a Stack on `tmp_path` with config overrides; a second call on the same data
    is a restart. Every stack still running is stopped at the end."""
    made: list[Stack] = []

    async def make(**overrides: Any) -> Stack:
        app, boot = await start_coordinator(config_for_test(tmp_path, **overrides))
        stack = Stack(app, boot, channel(app.address))
        made.append(stack)
        return stack

    yield make
    for stack in made:
        await stack.close()
