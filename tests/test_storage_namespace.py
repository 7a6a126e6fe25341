"""Namespace and versions against a real storaged: commit, resolve, ls, log, rm, du, scopes."""

from __future__ import annotations

from pathlib import Path

import pytest

from c3 import manifest as mf
from c3.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from c3.storage.client import LocalBlob, StorageClient
from c3.v1 import common_pb2
from storaged.server import StoragedServer
from tests.harness.storage import MakeToken, text_bytes, write_file

pytestmark = pytest.mark.unit


async def _push_tree(client: StorageClient, files: dict[str, bytes], root: Path) -> str:
    blobs: dict[str, LocalBlob] = {rel: write_file(root / rel, data) for rel, data in files.items()}
    await client.push_files(list(blobs.values()))
    manifest = mf.build(
        common_pb2.ManifestEntry(path=rel, digest=b.digest, size=b.size) for rel, b in blobs.items()
    )
    return await client.put_manifest(manifest)


async def test_versions_resolve_ls_log_du_rm(client: StorageClient, tmp_path: Path) -> None:
    v1_digest = await _push_tree(
        client, {"a.txt": b"alpha", "sub/b.txt": text_bytes(5000)}, tmp_path / "t1"
    )
    v2_digest = await _push_tree(
        client, {"a.txt": b"alpha", "sub/b.txt": text_bytes(5000), "c.txt": b"new"}, tmp_path / "t2"
    )
    v1 = await client.commit("/datasets/mnist", v1_digest, message="first")
    v2 = await client.commit("/datasets/mnist", v2_digest)
    assert (v1.version, v2.version) == (1, 2)
    assert (v1.files, v1.size) == (2, 5005)

    assert (await client.resolve("/datasets/mnist")).version == 2
    assert (await client.resolve("/datasets/mnist@latest")).manifest_digest == v2_digest
    assert (await client.resolve("/datasets/mnist@v1")).manifest_digest == v1_digest
    with pytest.raises(NotFound, match="no version v7"):
        await client.resolve("/datasets/mnist@v7")
    with pytest.raises(NotFound, match="no such path /datasets/nope"):
        await client.resolve("/datasets/nope")

    top = await client.list("/datasets")
    assert [(e.name, e.is_dir, e.latest_version) for e in top.entries] == [("mnist", True, 2)]
    files = await client.list("/datasets/mnist")
    assert [(e.name, e.is_dir) for e in files.entries] == [
        ("a.txt", False),
        ("c.txt", False),
        ("sub", True),
    ]
    old = await client.list("/datasets/mnist@v1/sub")
    assert [(e.name, e.size) for e in old.entries] == [("b.txt", 5000)]
    with pytest.raises(NotFound):
        await client.list("/datasets/mnist/missing-dir")

    log = await client.log("/datasets/mnist")
    assert [(v.version, v.files, v.message) for v in log] == [(1, 2, "first"), (2, 3, "")]

    du = await client.disk_usage("/datasets/mnist")
    assert du.versions == 2 and du.files == 5 and du.logical_bytes == 5005 + 5008
    # Shared files are stored once and text is compressed: far below the logical size.
    assert 0 < du.stored_bytes < du.logical_bytes

    with pytest.raises(FailedPrecondition, match="use -r"):
        await client.remove("/datasets/mnist")
    assert await client.remove("/datasets/mnist@v1") == 1
    assert [v.version for v in await client.log("/datasets/mnist")] == [2]
    assert await client.remove("/datasets/mnist", recursive=True) == 1
    with pytest.raises(NotFound):
        await client.log("/datasets/mnist")
    # Once every version is gone the path is free again and starts over at v1.
    assert (await client.commit("/datasets/mnist", v1_digest)).version == 1


async def test_bad_paths_and_commits_are_refused(client: StorageClient, tmp_path: Path) -> None:
    digest = await _push_tree(client, {"f": b"data"}, tmp_path)
    for bad in ("/datasets/a/b", "/datasets/..", "/datasets/a..b", "datasets/x", "/elsewhere/x"):
        with pytest.raises(InvalidArgument):
            await client.commit(bad, digest)
    with pytest.raises(InvalidArgument, match="cannot commit to directory"):
        await client.commit("/datasets", digest)
    # A manifest whose blobs were never pushed cannot be committed.
    ghost = mf.build(
        [common_pb2.ManifestEntry(path="ghost", digest=mf.sha256_bytes(b"never sent"), size=10)]
    )
    ghost_digest = await client.put_manifest(ghost)
    with pytest.raises(FailedPrecondition, match="'ghost'"):
        await client.commit("/datasets/ghost", ghost_digest)
    with pytest.raises(FailedPrecondition, match="not in the store"):
        await client.commit("/datasets/ghost", mf.sha256_bytes(b"no such manifest"))


async def test_job_paths_are_shared_with_projects(client: StorageClient, tmp_path: Path) -> None:
    digest = await _push_tree(client, {"out.txt": b"result"}, tmp_path)
    await client.commit("/jobs/j-1", digest, project="vision")
    await client.commit("/projects/vision/jobs/j-2", digest)
    await client.commit("/projects/vision/data/imgs", digest)
    assert (await client.resolve("/projects/vision/jobs/j-1")).manifest_digest == digest
    assert (await client.resolve("/jobs/j-2")).version == 1
    with pytest.raises(NotFound):
        await client.resolve("/projects/other/jobs/j-1")
    jobs = await client.list("/projects/vision/jobs")
    assert [e.name for e in jobs.entries] == ["j-1", "j-2"]
    assert [e.name for e in (await client.list("/projects")).entries] == ["vision"]
    assert [e.name for e in (await client.list("/projects/vision/data")).entries] == ["imgs"]
    du = await client.disk_usage("/projects/vision")
    assert du.versions == 3


async def test_namespaces_are_isolated_per_org(
    server: StoragedServer, make_token: MakeToken, tmp_path: Path
) -> None:
    async with (
        StorageClient(server.address, make_token("org-a")) as a,
        StorageClient(server.address, make_token("org-b")) as b,
    ):
        digest = await _push_tree(a, {"secret.txt": b"org a only"}, tmp_path)
        await a.commit("/datasets/shared-name", digest)
        assert list((await b.list("/datasets")).entries) == []
        with pytest.raises(NotFound):
            await b.resolve("/datasets/shared-name")
        with pytest.raises(NotFound):
            await b.get_manifest(digest)
        # B cannot commit A's manifest either: it never uploaded it.
        with pytest.raises(FailedPrecondition):
            await b.commit("/datasets/stolen", digest)


async def test_token_scope_limits_paths(
    server: StoragedServer, make_token: MakeToken, tmp_path: Path
) -> None:
    job_token = make_token(
        operations=("read", "write"),
        read_prefixes=("/datasets/in/",),
        write_prefixes=("/jobs/j-9/",),
    )
    async with StorageClient(server.address, make_token()) as admin:
        digest = await _push_tree(admin, {"x": b"input"}, tmp_path / "in")
        await admin.commit("/datasets/in", digest)
        await admin.commit("/datasets/private", digest)
    async with StorageClient(server.address, job_token) as job:
        out = await _push_tree(job, {"artifact": b"out"}, tmp_path / "out")
        assert (await job.commit("/jobs/j-9", out)).version == 1
        with pytest.raises(PermissionDenied, match="write on /jobs/j-10"):
            await job.commit("/jobs/j-10", out)
        with pytest.raises(PermissionDenied):
            await job.commit("/datasets/in", out)
        assert (await job.resolve("/datasets/in")).manifest_digest == digest
        with pytest.raises(PermissionDenied):
            await job.resolve("/datasets/private")
        with pytest.raises(PermissionDenied):
            await job.remove("/jobs/j-9", recursive=True)  # no delete operation
