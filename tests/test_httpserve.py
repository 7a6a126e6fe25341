"""The embedded HTTP listener: serves an ASGI app on a free port inside the caller's loop,
over TLS when given certificates, refuses a taken port in one line, leaves the process's
signal handlers alone, and stops idempotently with the port released."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from c3 import certs
from c3.errors import FailedPrecondition, InvalidArgument
from c3.httpserve import HttpListener, HttpTls, split_listen

pytestmark = pytest.mark.unit


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.query_params.get('who', '')}")


APP = Starlette(routes=[Route("/hello", hello)])


def fetch(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10, context=context) as reply:
        return reply.status, reply.read().decode()


async def test_serves_on_a_free_port_and_releases_it_on_stop() -> None:
    before = signal.getsignal(signal.SIGINT)
    listener = HttpListener(APP, "127.0.0.1:0")
    async with listener as http:
        assert http.port > 0
        assert await asyncio.to_thread(fetch, f"{http.url}/hello?who=c3") == (200, "hello c3")
        assert signal.getsignal(signal.SIGINT) is before
    await listener.stop()  # a second stop is a no-op
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(fetch, f"{listener.url}/hello")
    with socket.socket() as probe:  # the port is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", listener.port))


async def test_tls(tmp_path: Path) -> None:
    files = certs.generate(tmp_path / "certs")
    tls = HttpTls(cert=files.server_cert, key=files.server_key)
    async with HttpListener(APP, "127.0.0.1:0", tls) as http:
        assert http.url.startswith("https://")
        trusting = ssl.create_default_context(cafile=str(files.ca_cert))
        assert await asyncio.to_thread(fetch, f"{http.url}/hello", trusting) == (200, "hello ")
        with pytest.raises(urllib.error.URLError):  # an untrusting client refuses the server
            await asyncio.to_thread(fetch, f"{http.url}/hello", ssl.create_default_context())


async def test_a_taken_port_is_one_clear_line() -> None:
    async with HttpListener(APP, "127.0.0.1:0") as first:
        with pytest.raises(FailedPrecondition, match=rf"127.0.0.1:{first.port} is already in use"):
            await HttpListener(APP, f"127.0.0.1:{first.port}").start()
        # the first listener is unharmed
        assert (await asyncio.to_thread(fetch, f"{first.url}/hello"))[0] == 200


@pytest.mark.parametrize("bad", ["7432", "localhost:", ":80", "host:99999", "host:http"])
def test_bad_listen_address(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="must be HOST:PORT"):
        split_listen(bad)
