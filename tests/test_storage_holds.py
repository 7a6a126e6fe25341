"""Holds: a dataset version a pending job mounts cannot be removed, and GC keeps its blobs.

Real storaged and a real coordinator in-process, sharing the coordinator's signing key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from c3 import manifest as mf
from c3.errors import FailedPrecondition, NotFound, PermissionDenied
from c3.grpcutil import bearer, channel
from c3.storage.client import StorageClient
from c3.tokens import ALL_OPERATIONS, HOLD, TokenClaims, TokenSigner
from c3.v1 import common_pb2
from c3.v1 import coordinator_pb2 as pb
from storaged.server import StoragedServer
from tests.harness.coordinator import Stack, config_for_test, spec, start_coordinator, start_stack
from tests.harness.coordinator import client as coordinator_client
from tests.harness.storage import MakeToken, start_storaged, text_bytes, write_file
from tests.harness.waiting import eventually

pytestmark = pytest.mark.unit


def _corpus(version: int, digest: str = "") -> common_pb2.DatasetMount:
    """A mount of /datasets/corpus at `version` (as a submit resolves it)."""
    return common_pb2.DatasetMount(
        ref="/datasets/corpus", mount="/data/corpus", resolved_path="/datasets/corpus",
        version=version, manifest_digest=digest,
    )  # fmt: skip


async def _upload(c: StorageClient, root: Path, name: str, files: dict[str, bytes]) -> str:
    blobs = [write_file(root / rel, data) for rel, data in files.items()]
    await c.push_files(blobs)
    manifest = mf.build(
        common_pb2.ManifestEntry(path=rel, digest=b.digest, size=b.size)
        for rel, b in zip(files, blobs, strict=True)
    )
    digest = await c.put_manifest(manifest)
    await c.commit(f"/datasets/{name}", digest)
    return digest


async def test_hold_refuses_rm_and_pins_blobs_until_release(
    server: StoragedServer, client: StorageClient, make_token: MakeToken, tmp_path: Path
) -> None:
    files = {"a.txt": b"alpha", "b.txt": text_bytes(3000)}
    await _upload(client, tmp_path / "t", "corpus", files)
    await _upload(client, tmp_path / "t", "corpus", {"a.txt": b"alpha v2"})
    # Client tokens never carry the hold operation.
    with pytest.raises(PermissionDenied, match="hold"):
        await client.hold("/datasets/corpus", 1, "job:j-1")
    async with StorageClient(server.address, make_token(operations=(HOLD,))) as coord:
        with pytest.raises(NotFound, match="no version v9"):
            await coord.hold("/datasets/corpus", 9, "job:j-1")
        await coord.hold("/datasets/corpus", 1, "job:j-1", ttl_seconds=600)
        await coord.hold("/datasets/corpus", 1, "job:j-1", ttl_seconds=600)  # renewal
        msg = "/datasets/corpus v1 is mounted by job j-1 (pending or running); cancel it"
        for path, recursive in (("/datasets/corpus@v1", False), ("/datasets/corpus", True),
                                ("/datasets", True)):  # fmt: skip
            with pytest.raises(FailedPrecondition, match=msg.replace("(", r"\(").replace(")", r"\)")):
                await client.remove(path, recursive=recursive)
        # The unheld version goes; the held one stays with all its blobs through GC.
        assert await client.remove("/datasets/corpus@v2") == 1
        await server.collect_garbage(0)
        got = [b.digest async for b in client.get_blobs([mf.sha256_bytes(d) for d in files.values()])]
        assert len(got) == 2
        assert await coord.release("job:j-1") == 1
    assert await client.remove("/datasets/corpus", recursive=True) == 1
    stats = await server.collect_garbage(0)
    assert stats.blobs_removed >= 3  # two files and the manifest are reclaimed now


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """storaged (no periodic GC) and a coordinator that holds what its jobs mount."""
    async with start_stack(tmp_path / "coord", storage_dir=tmp_path / "store", storage_gc=False) as s:
        yield s


async def test_rm_of_a_dataset_a_pending_job_mounts_is_refused_until_it_ends(
    stack: Stack, tmp_path: Path
) -> None:
    srv, app, boot, signer = stack.storaged, stack.app, stack.boot, stack.signer
    token = signer.sign(TokenClaims(org_id=boot.org_id, operations=ALL_OPERATIONS))
    files = {"x.bin": text_bytes(4000, seed=3)}
    async with StorageClient(srv.address, token) as user, channel(app.address) as ch:
        digest = await _upload(user, tmp_path / "d", "corpus", files)
        mount = _corpus(1, digest)
        stub = coordinator_client(ch)
        md = bearer(boot.api_key)
        job = (await stub.SubmitJob(pb.SubmitJobRequest(spec=spec(datasets=[mount])), metadata=md)).job
        assert job.state == common_pb2.JOB_STATE_PENDING  # no agent: it waits

        async def held() -> bool:
            return bool(await srv.store.meta.live_holds(boot.org_id, "/datasets/corpus", 1))

        assert await held()  # in place the moment SubmitJob returns: no window for an rm
        with pytest.raises(FailedPrecondition) as refused:
            await user.remove("/datasets/corpus", recursive=True)
        assert str(refused.value).splitlines() == [
            f"/datasets/corpus v1 is mounted by job {job.id} (pending or running);"
            " cancel it or wait until it ends"
        ]
        await srv.collect_garbage(0)
        assert [b.digest async for b in user.get_blobs([mf.sha256_bytes(files["x.bin"])])]

        await stub.CancelJob(pb.CancelJobRequest(job_ids=[job.id]), metadata=md)

        async def released() -> bool:
            return not await held()

        await eventually(released, what="the hold is released")
        assert await user.remove("/datasets/corpus", recursive=True) == 1


async def test_submit_mounting_a_version_removed_just_before_is_refused_and_creates_no_job(
    stack: Stack, tmp_path: Path
) -> None:
    srv, app, boot, signer = stack.storaged, stack.app, stack.boot, stack.signer
    token = signer.sign(TokenClaims(org_id=boot.org_id, operations=ALL_OPERATIONS))
    async with StorageClient(srv.address, token) as user, channel(app.address) as ch:
        await _upload(user, tmp_path / "d", "corpus", {"x.bin": b"one"})
        digest = await _upload(user, tmp_path / "d", "corpus", {"x.bin": b"two"})
        # The client resolved v2; it is removed before the submit reaches the coordinator.
        assert await user.remove("/datasets/corpus@v2") == 1
        mount = _corpus(2, digest)
        stub = coordinator_client(ch)
        md = bearer(boot.api_key)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SubmitJob(pb.SubmitJobRequest(spec=spec(datasets=[mount])), metadata=md)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.details() == (
            "/datasets/corpus v2 no longer exists; deploy again to mount the latest"
        )
        assert not (await stub.ListJobs(pb.ListJobsRequest(), metadata=md)).jobs
        assert not app.jobs.jobs
        # Nothing was left pinned: the remaining version can still be removed.
        assert await user.remove("/datasets/corpus", recursive=True) == 1


async def test_submit_with_mounts_is_refused_while_storage_is_unreachable(
    stack,  # type: ignore[no-untyped-def]
) -> None:
    srv, app, boot = stack.storaged, stack.app, stack.boot
    await srv.stop(0)
    mount = _corpus(1)
    async with channel(app.address) as ch:
        stub = coordinator_client(ch)
        md = bearer(boot.api_key)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SubmitJob(pb.SubmitJobRequest(spec=spec(datasets=[mount])), metadata=md)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "unreachable" in (refused.value.details() or "")
        assert not (await stub.ListJobs(pb.ListJobsRequest(), metadata=md)).jobs
        # A job without mounts does not need storage at all.
        job = (await stub.SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=md)).job
        assert job.state == common_pb2.JOB_STATE_PENDING


async def test_a_sweep_with_one_unmountable_entry_creates_no_job_and_pins_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    srv, app, boot, signer = stack.storaged, stack.app, stack.boot, stack.signer
    token = signer.sign(TokenClaims(org_id=boot.org_id, operations=ALL_OPERATIONS))
    async with StorageClient(srv.address, token) as user, channel(app.address) as ch:
        one = await _upload(user, tmp_path / "d", "corpus", {"x.bin": b"one"})
        two = await _upload(user, tmp_path / "d", "corpus", {"x.bin": b"two"})
        assert await user.remove("/datasets/corpus@v2") == 1

        entries = [pb.SubmitJobRequest(spec=spec(datasets=[_corpus(1, one)])),
                   pb.SubmitJobRequest(spec=spec(datasets=[_corpus(2, two)]))]  # fmt: skip
        stub, md = coordinator_client(ch), bearer(boot.api_key)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SubmitJobs(pb.SubmitJobsRequest(jobs=entries), metadata=md)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.details() == (
            "jobs[1]: /datasets/corpus v2 no longer exists; deploy again to mount the latest"
        )
        assert not app.jobs.jobs

        async def v1_unpinned() -> bool:  # the first entry's pin was given back
            return not await srv.store.meta.live_holds(boot.org_id, "/datasets/corpus", 1)

        await eventually(v1_unpinned, what="the first entry's hold is released")
        assert await user.remove("/datasets/corpus", recursive=True) == 1


async def test_an_array_pins_every_members_mounts_before_any_job_exists(
    stack: Stack, tmp_path: Path
) -> None:
    srv, app, boot, signer = stack.storaged, stack.app, stack.boot, stack.signer
    token = signer.sign(TokenClaims(org_id=boot.org_id, operations=ALL_OPERATIONS))
    async with StorageClient(srv.address, token) as user, channel(app.address) as ch:
        digest = await _upload(user, tmp_path / "d", "corpus", {"x.bin": b"data"})
        mount = _corpus(1, digest)
        entries = [pb.SubmitJobRequest(spec=spec(datasets=[mount])) for _ in range(40)]
        stub, md = coordinator_client(ch), bearer(boot.api_key)
        jobs = (await stub.SubmitJobs(pb.SubmitJobsRequest(jobs=entries), metadata=md)).jobs
        holds = await srv.store.meta.live_holds(boot.org_id, "/datasets/corpus", 1)
        assert sorted(h.holder for h in holds) == sorted(f"job:{j.id}" for j in jobs)


async def test_a_release_lost_while_storage_was_down_is_redone_at_restart(tmp_path: Path) -> None:
    """The job ended while storaged was unreachable, so its hold stayed. The release is
    recorded with the job's end; the restarted coordinator redoes it, even though the
    finished job is no longer kept in memory, and then forgets it."""
    coord_dir = tmp_path / "coord"
    signer = TokenSigner.load_or_create(coord_dir / "signing-key.pem")
    srv = await start_storaged(tmp_path / "store", signer, gc=False)
    address = srv.address
    config = config_for_test(coord_dir, storage_address=address, keep_finished_s=0)
    app, boot = await start_coordinator(config)
    token = signer.sign(TokenClaims(org_id=boot.org_id, operations=ALL_OPERATIONS))
    async with StorageClient(address, token) as user:
        digest = await _upload(user, tmp_path / "d", "corpus", {"x.bin": text_bytes(2000, seed=5)})
    mount = _corpus(1, digest)
    md = bearer(boot.api_key)
    async with channel(app.address) as ch:
        stub = coordinator_client(ch)
        job = (await stub.SubmitJob(pb.SubmitJobRequest(spec=spec(datasets=[mount])), metadata=md)).job
        await srv.stop(0)
        await stub.CancelJob(pb.CancelJobRequest(job_ids=[job.id]), metadata=md)
    assert await app.repo.pending_releases() == [(job.id, boot.org_id)]
    await app.stop()

    srv = await start_storaged(tmp_path / "store", signer, listen=address, gc=False)
    try:
        assert await srv.store.meta.live_holds(boot.org_id, "/datasets/corpus", 1)  # still held
        app, _ = await start_coordinator(config)
        assert job.id not in app.jobs.jobs  # finished, so not loaded into memory

        async def released() -> bool:
            return not await srv.store.meta.live_holds(boot.org_id, "/datasets/corpus", 1)

        await eventually(released, what="the restarted coordinator releases the hold")

        async def recorded_done() -> bool:
            return not await app.repo.pending_releases()

        await eventually(recorded_done, what="the release is recorded as done")
        await app.stop()
    finally:
        await srv.stop(0)
