"""`local`: agent processes on this host, tracked and stopped by the coordinator."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.providers.base import AgentLaunch, ProvisionError, last_line

log = logging.getLogger(__name__)

_STOP_WAIT_S = 10.0


@dataclass(eq=False)
class LocalAgent:
    """The handle of one started agent process."""

    proc: asyncio.subprocess.Process
    log_file: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


def _how_it_ended(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
        return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class LocalProvider:
    name = "local"

    def __init__(self, launch: AgentLaunch, extra_args: tuple[str, ...] = ()) -> None:
        self._launch = launch
        self._extra = extra_args
        self._counter = itertools.count(1)
        self._procs: set[asyncio.subprocess.Process] = set()

    async def provision(self, profile: str, gpu_count: int, launch_id: str) -> LocalAgent:
        n = next(self._counter)
        data_dir = self._launch.work_dir / f"local-{profile}-{n}"
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = self._launch.argv(self.name, profile, str(data_dir), launch_id) + list(self._extra)
        log_file = data_dir / "agent.log"
        out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise ProvisionError(f"cannot start {argv[0]}: {exc}") from exc
        finally:
            os.close(out)
        self._procs.add(proc)
        log.info("local agent pid %d started for %s (%s)", proc.pid, profile, data_dir)
        return LocalAgent(proc, log_file)

    async def watch_start(self, handle: Any, on_progress: Callable[[str], None]) -> None:
        agent: LocalAgent = handle
        # The process's exit is an event (asyncio's child watcher): nothing polls here.
        returncode = await agent.proc.wait()
        last = await asyncio.to_thread(last_line, agent.log_file)
        raise ProvisionError(
            f"local agent pid {agent.pid} {_how_it_ended(returncode)} before registering"
            + (f": {last}" if last else "")
            + f"; see {agent.log_file}"
        )

    async def release(self, handle: Any) -> None:
        proc = handle.proc
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), _STOP_WAIT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._procs.discard(proc)

    def describe(self, handle: Any) -> str:
        return f"local agent pid {handle.pid}"

    def running(self) -> int:
        return sum(1 for p in self._procs if p.returncode is None)
