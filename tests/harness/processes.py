"""c3's servers as real child processes: started on free ports, ready when their ready
file names the address they serve, stopped with SIGTERM (or killed)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READY_DEADLINE_S = 60.0


async def start_server_process(
    module: str, ready_file: Path, *args: str, wrap: Sequence[str] = (), stderr: int | None = None
) -> tuple[asyncio.subprocess.Process, str, float]:
    """`python -m module --listen 127.0.0.1:0 --ready-file F ARGS` (under `wrap`, e.g. a
    profiler; `stderr` as for asyncio's subprocesses): the process, the address it
    serves and the seconds until it served. RuntimeError if it exits first or is not ready
    within READY_DEADLINE_S."""
    ready_file.unlink(missing_ok=True)
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *wrap, "-m", module, "--listen", "127.0.0.1:0",
        "--ready-file", str(ready_file), *args, cwd=ROOT, stderr=stderr,
    )
    deadline = time.monotonic() + READY_DEADLINE_S
    while not (address := _read(ready_file)):
        if proc.returncode is not None or time.monotonic() > deadline:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise RuntimeError(f"{module} did not start (exit status {proc.returncode})")
        await asyncio.sleep(0.01)
    return proc, address, time.perf_counter() - started


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


async def start_coordinator_process(
    work: Path, *args: str, wrap: Sequence[str] = (), stderr: int | None = None
) -> tuple[asyncio.subprocess.Process, str, float]:
    """A `c3-coordinator` with its data under `work/data`, bootstrap credentials in
    `work/bootstrap.json` and no plan limit on concurrent jobs."""
    return await start_server_process(
        "coordinator.main", work / "ready", "--data-dir", str(work / "data"),
        "--bootstrap-file", str(work / "bootstrap.json"), "--log-level", "WARNING",
        "--concurrency-limits", "free=0", *args, wrap=wrap, stderr=stderr,
    )


async def start_storaged_process(
    data_dir: Path, public_key: Path, ready_file: Path, *args: str
) -> tuple[asyncio.subprocess.Process, str, float]:
    """A `c3-storaged` on `data_dir` trusting tokens of the key in `public_key` (PEM)."""
    return await start_server_process(
        "storaged.main", ready_file, "--data-dir", str(data_dir), "--token-public-key",
        str(public_key), "--log-level", "WARNING", *args,
    )


async def stop_processes(*procs: asyncio.subprocess.Process) -> None:
    """SIGTERM each one still running, then wait for all of them."""
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        await proc.wait()


async def start_agent_process(
    coordinator: str, coordinator_dir: Path, data_dir: Path, args: Sequence[str]
) -> subprocess.Popen[bytes]:
    """A real `c3-agent` enrolled with the secret in the coordinator's bootstrap file. Its
    environment carries a decoy secret (C3_AGENT_SECRET) that must never reach a job."""
    env = dict(os.environ, C3_AGENT_SECRET="host-secret-must-not-leak")
    return await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "agent.main", "--coordinator", coordinator,
         "--secret-file", str(coordinator_dir / "bootstrap.json"), "--data-dir", str(data_dir),
         "--grace-seconds", "1", "--allow-unsandboxed", *args],
        env=env,
    )


def kill_now(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
