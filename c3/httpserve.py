"""An HTTP listener for an ASGI app inside a server's own event loop (uvicorn, no workers).

Every c3 server that has an HTTP side (the coordinator's dashboard and `/api/v1`, and the
`/metrics` endpoints) runs it through `HttpListener`, so binding, TLS, the bound port and a
clean stop work one way. The listener never touches signal handlers: the process that
embeds it owns SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from c3.errors import FailedPrecondition, InvalidArgument

STOP_GRACE_S = 2.0


@dataclass(frozen=True)
class HttpTls:
    """Server certificate and key (PEM); `client_ca` asks clients for certificates."""

    cert: Path
    key: Path
    client_ca: Path | None = None


def split_listen(address: str) -> tuple[str, int]:
    """("host", port) of "HOST:PORT" ("[::1]:PORT" for IPv6); a bad one is one clear line."""
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise InvalidArgument(f"HTTP listen address {address!r} must be HOST:PORT, e.g. 127.0.0.1:7432")
    return host, int(port_text)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise FailedPrecondition(
                f"HTTP port {host}:{port} is already in use; choose another with --http-listen"
            ) from None
        raise FailedPrecondition(f"cannot listen for HTTP on {host}:{port}: {exc.strerror}") from None
    return sock


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's server without its signal handling, and with an event for 'listening'."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


class HttpListener:
    """`async with HttpListener(app, "127.0.0.1:0") as http:` serves `app`; `http.port`
    is the bound port and `http.url` the base URL. Stop is idempotent."""

    def __init__(self, app: Any, listen: str, tls: HttpTls | None = None) -> None:
        self._app = app
        self._host, self._requested_port = split_listen(listen)
        self._tls = tls
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        if self._task is not None:
            return
        tls: dict[str, Any] = {}
        if self._tls is not None:
            tls = {"ssl_certfile": str(self._tls.cert), "ssl_keyfile": str(self._tls.key)}
            if self._tls.client_ca is not None:
                tls |= {"ssl_ca_certs": str(self._tls.client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        config = uvicorn.Config(
            self._app, lifespan="off", log_level="warning", access_log=False,
            server_header=False, timeout_graceful_shutdown=int(STOP_GRACE_S), **tls,
        )
        sock = _bind(self._host, self._requested_port)
        self.port = sock.getsockname()[1]
        server = _EmbeddedServer(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"http {self._host}:{self.port}")
        listening = asyncio.create_task(server.listening.wait())
        try:
            await asyncio.wait({task, listening}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            listening.cancel()
        if task.done():
            sock.close()
            error = task.exception() if not task.cancelled() else None
            raise FailedPrecondition(f"HTTP listener on {self._host}:{self.port} did not start: {error}")
        self._server, self._task = server, task

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=STOP_GRACE_S + 1.0)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> HttpListener:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
