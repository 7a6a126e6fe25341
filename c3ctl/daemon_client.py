"""Reaching c3d: connect to its socket, starting it in the background when needed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import c3
from c3 import grpcutil
from c3.errors import C3Error, PermissionDenied, Unavailable
from c3.paths import c3_paths, ensure_private_dir
from c3.unixsock import socket_accepts
from c3.v1 import daemon_pb2, daemon_pb2_grpc

START_TIMEOUT_S = 15.0


async def _answers(stub: daemon_pb2_grpc.DaemonAsyncStub) -> daemon_pb2.DaemonStatusResponse | None:
    try:
        return await stub.Status(daemon_pb2.DaemonStatusRequest(), timeout=2.0)
    except C3Error:
        return None


def _spawn_daemon() -> subprocess.Popen[bytes]:
    paths = c3_paths()
    ensure_private_dir(paths.daemon_state_dir)
    log = open(paths.daemon_log, "ab")
    try:
        env = {k: v for k, v in os.environ.items() if k != "C3_API_KEY"}
        return subprocess.Popen(
            [sys.executable, "-m", "c3d.main"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )
    finally:
        log.close()


class DaemonConnection:
    def __init__(self) -> None:
        self.socket = c3_paths().daemon_socket
        self.channel = grpcutil.channel(
            f"unix:{self.socket}",
            service="c3d",
            hint="`c3ctl daemon status` checks it; `c3ctl daemon logs` shows why it stopped",
        )
        self.stub = daemon_pb2_grpc.DaemonStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> DaemonConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_owner(self) -> None:
        """Refuse a socket someone else owns: talking to it would hand them our API key."""
        try:
            owner = self.socket.lstat().st_uid
        except FileNotFoundError:
            return
        if owner != os.getuid():
            raise PermissionDenied(
                f"{self.socket} belongs to uid {owner}, not to you (uid {os.getuid()}); "
                "remove it, or set C3_HOME to a directory of your own"
            )

    async def status(self) -> daemon_pb2.DaemonStatusResponse | None:
        if not self.socket.exists():
            return None
        self._check_owner()
        return await _answers(self.stub)

    async def ensure_running(self) -> daemon_pb2.DaemonStatusResponse:
        """Connect, starting c3d in the background on first use (and restarting one of
        another c3 version, so CLI and daemon always speak the same contract)."""
        status = await self.status()
        if status is not None and status.version == c3.__version__:
            return status
        if status is None and self.socket.exists() and socket_accepts(self.socket):
            pid = _daemon_pid()
            raise Unavailable(
                f"c3d{f' (pid {pid})' if pid else ''} accepts connections on {self.socket} but "
                "does not answer; restart it with `c3ctl daemon restart`"
            )
        if status is not None:
            sys.stderr.write(
                f"c3d {status.version} is running but this is c3ctl {c3.__version__}: restarting it\n"
            )
            await self.shutdown()
        proc = _spawn_daemon()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise Unavailable(
                    f"c3d exited at start (code {proc.returncode}); see {c3_paths().daemon_log}"
                )
            if self.socket.exists():
                status = await _answers(self.stub)
                if status is not None:
                    return status
            await asyncio.sleep(0.05)
        raise Unavailable(
            f"c3d did not answer on {self.socket} within {START_TIMEOUT_S:.0f}s; "
            "restart it with `c3ctl daemon restart`"
        )

    async def shutdown(self, *, force: bool = False) -> bool:
        """Ask c3d to stop; with `force`, a daemon that does not answer is killed by the
        pid it recorded."""
        status = await self.status()
        if status is None:
            if force and self.socket.exists() and socket_accepts(self.socket):
                return await asyncio.to_thread(_kill_unresponsive, self.socket)
            return False
        await self.stub.Shutdown(daemon_pb2.ShutdownRequest(), timeout=5.0)
        # Gone once it removed its socket (it does so as its last act) or stopped answering.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and self.socket.exists() and socket_accepts(self.socket):  # noqa: ASYNC110 - another process; nothing to await
            await asyncio.sleep(0.02)
        return True


def _daemon_pid() -> int:
    try:
        return int(c3_paths().daemon_pid_file.read_text().strip())
    except (OSError, ValueError):
        return 0


def _kill_unresponsive(sock: Path) -> bool:
    """SIGTERM, then SIGKILL, the c3d that recorded its pid (blocking)."""
    pid = _daemon_pid()
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not pid or (cmdline.exists() and b"c3d" not in cmdline.read_bytes()):
        raise Unavailable(
            f"c3d on {sock} does not answer and its pid is unknown; stop it by hand and "
            f"remove {sock}"
        )
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if not _alive(pid):
            break
    sock.unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())
