"""storaged in this process on a free port, and the files and trees tests store in it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from c3.storage.client import LocalBlob
from c3.tokens import TokenSigner, TokenVerifier
from storaged.server import StoragedConfig, StoragedServer

MakeToken = Callable[..., str]
# Long ago: the stat index trusts such files (not "racily clean") and does not rehash them.
OLD_NS = 1_600_000_000 * 10**9


async def start_storaged(
    data_dir: Path, signer: TokenSigner, *, listen: str = "127.0.0.1:0", gc: bool = True
) -> StoragedServer:
    """A real storaged (on a free port unless `listen` says otherwise) with its data in
    `data_dir`, trusting `signer`'s tokens; `gc=False`: no periodic collection."""
    config = StoragedConfig(data_dir=data_dir, listen=listen)
    if not gc:
        config = replace(config, gc_interval_seconds=0)
    return await StoragedServer.start(config, TokenVerifier.from_pem(signer.public_key_pem()))


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
