"""Shared fixtures for the storage tests: a real storaged on port 0 with a real signer."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from c3.storage.client import LocalBlob, StorageClient
from c3.tokens import ALL_OPERATIONS, TokenClaims, TokenSigner, TokenVerifier
from storaged.server import StoragedConfig, StoragedServer

MakeToken = Callable[..., str]
# Long ago: the stat index trusts such files (not "racily clean") and does not rehash them.
OLD_NS = 1_600_000_000 * 10**9


@pytest.fixture
def signer(tmp_path: Path) -> TokenSigner:
    return TokenSigner.load_or_create(tmp_path / "keys" / "signing.pem")


@pytest.fixture
def make_token(signer: TokenSigner) -> MakeToken:
    def make(
        org: str = "org-a",
        operations: tuple[str, ...] = ALL_OPERATIONS,
        read_prefixes: tuple[str, ...] = ("/",),
        write_prefixes: tuple[str, ...] = ("/",),
        **extra: object,
    ) -> str:
        return signer.sign(
            TokenClaims(
                org_id=org,
                operations=operations,
                read_prefixes=read_prefixes,
                write_prefixes=write_prefixes,
                **extra,  # type: ignore[arg-type]
            )
        )

    return make


@pytest.fixture
async def server(tmp_path: Path, signer: TokenSigner) -> AsyncIterator[StoragedServer]:
    config = StoragedConfig(
        data_dir=tmp_path / "store", listen="127.0.0.1:0", gc_interval_seconds=0
    )
    srv = await StoragedServer.start(config, TokenVerifier.from_pem(signer.public_key_pem()))
    yield srv
    await srv.stop(0)


@pytest.fixture
async def client(server: StoragedServer, make_token: MakeToken) -> AsyncIterator[StorageClient]:
    async with StorageClient(server.address, make_token()) as c:
        yield c


def write_file(path: Path, data: bytes) -> LocalBlob:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return LocalBlob(path, hashlib.sha256(data).hexdigest(), len(data))


def text_bytes(n: int, seed: int = 0) -> bytes:
    line = f"line {seed} of some compressible text for c3\n".encode()
    return (line * (n // len(line) + 1))[:n]


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def settled_tree(root: Path, files: dict[str, bytes]) -> list[tuple[str, os.stat_result]]:
    """Write `files` under `root`, last modified long ago; (path, stat) in sorted order."""
    for rel, data in files.items():
        write_file(root / rel, data)
        os.utime(root / rel, ns=(OLD_NS, OLD_NS))
    return stat_tree(root, files)


def stat_tree(root: Path, files: dict[str, bytes]) -> list[tuple[str, os.stat_result]]:
    return [(rel, os.stat(root / rel)) for rel in sorted(files)]
