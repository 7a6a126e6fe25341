"""Reaching c3d: connect to its socket, starting it in the background when needed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import grpc

import c3
from c3 import grpcutil
from c3.errors import PermissionDenied, Unavailable
from c3.paths import c3_paths, ensure_private_dir
from c3.unixsock import socket_accepts
from c3.v1 import daemon_pb2, daemon_pb2_grpc

START_TIMEOUT_S = 15.0


async def _answers(stub: daemon_pb2_grpc.DaemonStub) -> daemon_pb2.DaemonStatusResponse | None:
    try:
        return await stub.Status(daemon_pb2.DaemonStatusRequest(), timeout=2.0)
    except grpc.RpcError:
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
        self.channel = grpcutil.channel(f"unix:{self.socket}")
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

    async def shutdown(self) -> bool:
        status = await self.status()
        if status is None:
            return False
        await self.stub.Shutdown(daemon_pb2.ShutdownRequest(), timeout=5.0)
        # Gone once it removed its socket (it does so as its last act) or stopped answering.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and self.socket.exists() and socket_accepts(self.socket):  # noqa: ASYNC110 - another process; nothing to await
            await asyncio.sleep(0.02)
        return True
