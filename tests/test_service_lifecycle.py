"""Every long-running part starts and stops one way (c3/service.py): a start that fails at
any step leaves nothing behind (no listening socket, no open database or file, no task,
no thread), and stop is idempotent.

Each case starts the part once with a probe that records its steps, then once per step
with a probe that fails that step, and compares what the process holds with before.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.main import Agent, parse_args
from c3.grpcutil import check_health
from c3.service import Probe, Service
from c3.tokens import TokenVerifier
from c3d.main import Daemon
from coordinator.app import Coordinator
from storaged.server import StoragedConfig, StoragedServer
from tests.harness.coordinator import config_for_test, start_coordinator

pytestmark = pytest.mark.unit


class Injected(Exception):
    """The failure a probe injects."""


Held = tuple[collections.Counter[str], int, set[asyncio.Task[Any]]]


def _serving(task: asyncio.Task[Any]) -> bool:
    """A task of a gRPC server this test keeps running (the agent's coordinator)."""
    return "AioServer" in getattr(task.get_coro(), "__qualname__", "")


def held(skip_serving: bool = False) -> Held:
    """What this process holds: open fds (by target), threads, and unfinished tasks."""
    fds: collections.Counter[str] = collections.Counter()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            fds[os.readlink(f"/proc/self/fd/{fd}")] += 1
    tasks = {
        t
        for t in asyncio.all_tasks()
        if not t.done() and t is not asyncio.current_task() and not (skip_serving and _serving(t))
    }
    return fds, len([t for t in threading.enumerate() if not _default_executor(t)]), tasks


def _default_executor(thread: threading.Thread) -> bool:
    """A worker of the event loop's default executor: the loop owns these for its life and
    adds one lazily whenever more calls overlap, so a later start may hold one more."""
    return thread.name.startswith("asyncio_")


async def settled(before: Held, skip_serving: bool = False) -> str:
    """'' once the process holds what it held `before` (threads and fds close a moment
    after their owners say so); else what is still extra after a generous deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        fds, threads, tasks = held(skip_serving)
        extra_fds = fds - before[0]
        extra_tasks = tasks - before[2]
        if not extra_fds and threads <= before[1] and not extra_tasks:
            return ""
        if loop.time() > deadline:
            names = sorted(t.name for t in threading.enumerate())
            return (
                f"fds {dict(extra_fds)}, threads {threads} > {before[1]} ({names}),"
                f" tasks {extra_tasks}"
            )
        await asyncio.sleep(0.05)


Start = Callable[[Probe], Awaitable[Service]]


async def check_every_step(
    start: Start, expected_steps: set[str], skip_serving: bool = False
) -> list[str]:
    """Start once recording the steps, then fail each in turn; returns the steps."""
    warm = await start(lambda name: None)  # grpc's process-wide threads and fds exist now
    await warm.stop()
    before = held(skip_serving)
    steps: list[str] = []
    service = await start(steps.append)
    await asyncio.gather(service.stop(), service.stop())  # concurrent and repeated stops
    await service.stop()
    assert await settled(before, skip_serving) == ""
    assert expected_steps <= set(steps), steps
    for failing in steps:

        def probe(name: str, failing: str = failing) -> None:
            if name == failing:
                raise Injected(name)

        with pytest.raises(Injected):
            await start(probe)
        leaked = await settled(before, skip_serving)
        assert leaked == "", f"a start failing at step {failing!r} left {leaked}"
    return steps


POOLS = """
pools:
  - {profile: cpu, provider: local, baseline: 0, cap: 1}
"""


async def test_a_coordinator_that_fails_at_any_step_leaks_nothing(tmp_path: Path) -> None:
    pool_file = tmp_path / "pools.yaml"
    pool_file.write_text(POOLS)
    config = config_for_test(
        tmp_path / "coord", ready_file=tmp_path / "ready", pool_config=pool_file
    )
    addresses: list[str] = []

    async def start(probe: Probe) -> Service:
        app = await Coordinator.start(config, probe)
        addresses.append(app.address)
        assert await check_health(app.address)
        return app

    steps = await check_every_step(
        start, {"database", "storage", "jobs", "scheduler", "server", "pools", "ready file"}
    )
    assert steps.index("database") < steps.index("server") < steps.index("pools")
    for address in addresses:  # every port it bound is closed again
        assert not await check_health(address, timeout=0.5)


async def test_storaged_that_fails_at_any_step_leaks_nothing(tmp_path: Path) -> None:
    from c3.tokens import TokenSigner

    signer = TokenSigner.load_or_create(tmp_path / "key.pem")
    verifier = TokenVerifier.from_pem(signer.public_key_pem())
    config = StoragedConfig(
        data_dir=tmp_path / "data", listen="127.0.0.1:0", gc_interval_seconds=60
    )
    addresses: list[str] = []

    async def start(probe: Probe) -> Service:
        server = await StoragedServer.start(config, verifier, probe)
        addresses.append(server.address)
        return server

    await check_every_step(start, {"metadata", "blob store", "server", "garbage collection"})
    for address in addresses:
        assert not await check_health(address, timeout=0.5)


async def test_c3d_that_fails_at_any_step_leaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("C3_HOME", str(tmp_path / "home"))
    socket_path = tmp_path / "run" / "c3d.sock"

    async def start(probe: Probe) -> Service:
        daemon = await Daemon.start(socket_path, probe)
        assert socket_path.exists()
        return daemon

    await check_every_step(start, {"socket", "hash index", "history", "server", "pid file"})
    assert not socket_path.exists()
    from c3.paths import c3_paths

    assert not c3_paths().daemon_pid_file.exists()


async def test_an_agent_that_fails_at_any_step_leaks_nothing(tmp_path: Path) -> None:
    app, boot = await start_coordinator(config_for_test(tmp_path / "coord"))
    try:
        secret = tmp_path / "secret"
        secret.write_text(boot.agent_secret)
        args: argparse.Namespace = parse_args(
            [
                "--coordinator",
                app.address,
                "--secret-file",
                str(secret),
                "--data-dir",
                str(tmp_path / "agent"),
                "--no-cgroups",
                "--allow-unsandboxed",
            ]
        )

        async def start(probe: Probe) -> Service:
            agent = await Agent.start(args, probe)
            await asyncio.wait_for(agent.connection.connected.wait(), 30)
            return agent

        await check_every_step(start, {"host", "executor", "link"}, skip_serving=True)
    finally:
        await app.stop()
