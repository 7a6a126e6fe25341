"""A job token reads only its own inputs and outputs, even within its org (issue 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from c3 import manifest as mf
from c3.errors import PermissionDenied
from c3.storage.client import StorageClient
from c3.storage.wire import SMALL_BLOB_MAX
from c3.tokens import READ, WRITE
from c3.v1 import common_pb2
from storaged.server import StoragedServer
from tests.harness.storage import MakeToken, random_bytes, text_bytes, write_file

pytestmark = pytest.mark.unit


async def _tree(c: StorageClient, root: Path, files: dict[str, bytes]) -> tuple[str, list[str]]:
    blobs = [write_file(root / rel, data) for rel, data in files.items()]
    await c.push_files(blobs)
    manifest = mf.build(
        common_pb2.ManifestEntry(path=rel, digest=b.digest, size=b.size)
        for rel, b in zip(files, blobs, strict=True)
    )
    return await c.put_manifest(manifest), [b.digest for b in blobs]


async def _fetch(c: StorageClient, digests: list[str]) -> list[str]:
    return [b.digest async for b in c.get_blobs(digests)]


async def test_job_token_reads_its_inputs_and_outputs_only(
    server: StoragedServer, client: StorageClient, make_token: MakeToken, tmp_path: Path
) -> None:
    workspace, ws_blobs = await _tree(client, tmp_path / "ws", {"run.sh": b"echo hi\n"})
    corpus, corpus_blobs = await _tree(client, tmp_path / "c", {"c.txt": text_bytes(2000, 1)})
    await client.commit("/datasets/corpus", corpus)
    secret, secret_blobs = await _tree(
        client, tmp_path / "s", {"s.txt": text_bytes(2000, 2), "big.bin": random_bytes(SMALL_BLOB_MAX + 10)}
    )
    await client.commit("/datasets/secret", secret)
    out, out_blobs = await _tree(client, tmp_path / "o", {"model.pt": text_bytes(500, 4)})
    await client.commit("/jobs/j-1", out)

    job_token = make_token(
        operations=(READ, WRITE),
        read_prefixes=("/jobs/j-1/", "/datasets/corpus"),
        write_prefixes=("/jobs/j-1/",),
        read_manifests=(workspace, corpus),
        subject="job:j-1",
    )
    async with StorageClient(server.address, job_token) as job:
        assert await _fetch(job, ws_blobs) == ws_blobs
        wanted = [*corpus_blobs, corpus]
        assert await _fetch(job, wanted) == wanted
        assert await _fetch(job, out_blobs) == out_blobs  # its own /jobs/j-1/ version
        for digest in (secret, *secret_blobs):
            with pytest.raises(PermissionDenied, match=f"may not read blob {digest[:12]}"):
                await _fetch(job, [digest])
        with pytest.raises(PermissionDenied):  # one forbidden digest spoils a batch
            await _fetch(job, [*ws_blobs, secret_blobs[0]])
        big = secret_blobs[1]
        with pytest.raises(PermissionDenied):
            async for _ in job.get_blob_stream(big):
                pass
    # The org's own client token still reads everything.
    assert await _fetch(client, secret_blobs[:1]) == secret_blobs[:1]
