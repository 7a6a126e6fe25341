"""Coordinator client API against the real server: auth, keys, tokens, isolation, lifecycle."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from c3.errors import FailedPrecondition
from c3.grpcutil import bearer
from c3.tokens import TokenVerifier
from c3.v1 import common_pb2
from c3.v1 import coordinator_pb2 as pb
from coordinator.lifecycle import State, check_transition
from tests.harness.coordinator import client, spec
from tests.harness.rpc import expect_code

pytestmark = pytest.mark.unit


async def test_bad_or_missing_key_is_unauthenticated(stack) -> None:  # type: ignore[no-untyped-def]
    _app, boot, ch = stack.app, stack.boot, stack.channel
    c = client(ch)
    await expect_code(grpc.StatusCode.UNAUTHENTICATED, c.WhoAmI(pb.WhoAmIRequest()))
    forged = boot.api_key[:-4] + "0000"
    await expect_code(
        grpc.StatusCode.UNAUTHENTICATED, c.ListJobs(pb.ListJobsRequest(), metadata=bearer(forged))
    )
    await expect_code(
        grpc.StatusCode.UNAUTHENTICATED,
        c.SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=bearer("c3_key_nope")),
    )


async def test_whoami_keys_create_list_revoke(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _app, boot, ch = stack.app, stack.boot, stack.channel
    c = client(ch)
    me = await c.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(boot.api_key))
    assert me.org_id == boot.org_id and me.org_name == "local" and me.admin
    created = await c.CreateApiKey(pb.CreateApiKeyRequest(name="ci"), metadata=bearer(boot.api_key))
    assert created.secret.startswith(f"c3_key_{created.key.id}_")
    listed = await c.ListApiKeys(pb.ListApiKeysRequest(), metadata=bearer(created.secret))
    assert {k.name for k in listed.keys} == {"local-admin", "ci"}
    assert all(created.secret not in str(k) for k in listed.keys)
    # The secret is stored only as a salted hash.
    assert created.secret.split("_")[-1].encode() not in (tmp_path / "coordinator.db").read_bytes()
    await c.RevokeApiKey(
        pb.RevokeApiKeyRequest(key_id=created.key.id), metadata=bearer(boot.api_key)
    )
    details = await expect_code(
        grpc.StatusCode.UNAUTHENTICATED,
        c.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(created.secret)),
    )
    assert "revoked" in details
    await expect_code(
        grpc.StatusCode.INVALID_ARGUMENT,
        c.CreateApiKey(pb.CreateApiKeyRequest(name=""), metadata=bearer(boot.api_key)),
    )


async def test_storage_token_is_scoped_to_the_org(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _app, boot, ch = stack.app, stack.boot, stack.channel
    reply = await client(ch).IssueStorageToken(
        pb.IssueStorageTokenRequest(), metadata=bearer(boot.api_key)
    )
    assert reply.storage_address == "127.0.0.1:7431"
    pem = (tmp_path / "signing-key.pem").read_bytes()
    from c3.tokens import TokenSigner

    verifier = TokenVerifier.from_pem(
        TokenSigner.load_or_create(tmp_path / "signing-key.pem").public_key_pem()
    )
    assert pem  # the key the storaged side loads
    claims = verifier.verify(reply.token)
    assert claims.org_id == boot.org_id
    assert claims.allows("write", "/datasets/x") and claims.allows("delete", "/jobs/j-1")
    assert time.time() < claims.expires_at < time.time() + 3600


async def test_orgs_never_see_each_other(stack) -> None:  # type: ignore[no-untyped-def]
    app, boot, ch = stack.app, stack.boot, stack.channel
    c = client(ch)
    other_org = await app.accounts.create_org("other", "free")
    _, other_key = await app.accounts.create_key(other_org.id, "theirs")
    mine = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=bearer(boot.api_key))).job
    theirs = bearer(other_key)
    await expect_code(
        grpc.StatusCode.NOT_FOUND, c.GetJob(pb.GetJobRequest(job_id=mine.id), metadata=theirs)
    )
    await expect_code(
        grpc.StatusCode.NOT_FOUND,
        c.CancelJob(pb.CancelJobRequest(job_ids=[mine.id]), metadata=theirs),
    )
    events = c.StreamJobEvents(pb.StreamJobEventsRequest(job_id=mine.id), metadata=theirs)
    await expect_code(grpc.StatusCode.NOT_FOUND, events.read())
    assert (await c.ListJobs(pb.ListJobsRequest(), metadata=theirs)).jobs == []
    await expect_code(
        grpc.StatusCode.NOT_FOUND,
        c.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=boot.api_key.split("_")[2]), metadata=theirs),
    )
    # Still PENDING: nothing the other org did touched it.
    job = (await c.GetJob(pb.GetJobRequest(job_id=mine.id), metadata=bearer(boot.api_key))).job
    assert job.state == common_pb2.JOB_STATE_PENDING


async def test_submit_validation_and_pending_reason(stack) -> None:  # type: ignore[no-untyped-def]
    _app, boot, ch = stack.app, stack.boot, stack.channel
    c, md = client(ch), bearer(boot.api_key)
    for bad, needle in [
        (spec(script=""), "script"),
        (spec(script="../escape.sh"), "script"),
        (spec(workspace_manifest_digest=""), "workspace_manifest_digest"),
        (spec(gpu="tpu9"), "unknown gpu 'tpu9'"),
        (spec(provider="aws"), "unknown provider 'aws'"),
        (spec(project="Bad Name"), "spec.project"),
    ]:
        details = await expect_code(
            grpc.StatusCode.INVALID_ARGUMENT,
            c.SubmitJob(pb.SubmitJobRequest(spec=bad), metadata=md),
        )
        assert needle in details
    job = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec(gpu="l40")), metadata=md)).job
    assert job.state == common_pb2.JOB_STATE_PENDING
    assert job.message == "no capacity for gpu class l40"
    listed = await c.ListJobs(
        pb.ListJobsRequest(states=[common_pb2.JOB_STATE_PENDING]), metadata=md
    )
    assert [j.id for j in listed.jobs] == [job.id]


async def test_illegal_transitions_are_refused(stack) -> None:  # type: ignore[no-untyped-def]
    _app, boot, ch = stack.app, stack.boot, stack.channel
    c, md = client(ch), bearer(boot.api_key)
    with pytest.raises(FailedPrecondition):
        check_transition("j", State.COMPLETED, State.RUNNING)
    with pytest.raises(FailedPrecondition):
        check_transition("j", State.PENDING, State.COMPLETED)
    job = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec()), metadata=md)).job
    details = await expect_code(
        grpc.StatusCode.FAILED_PRECONDITION,
        c.MarkSynced(pb.MarkSyncedRequest(job_id=job.id), metadata=md),
    )
    assert "PENDING" in details and "SYNCED" in details
    canceled = (await c.CancelJob(pb.CancelJobRequest(job_ids=[job.id]), metadata=md)).jobs[0]
    assert canceled.state == common_pb2.JOB_STATE_CANCELED
    assert [t.state for t in canceled.transitions] == [
        common_pb2.JOB_STATE_PENDING,
        common_pb2.JOB_STATE_CANCELED,
    ]
    assert all(t.at.seconds > 0 for t in canceled.transitions)
    await expect_code(
        grpc.StatusCode.FAILED_PRECONDITION,
        c.CancelJob(pb.CancelJobRequest(job_ids=[job.id]), metadata=md),
    )
    await expect_code(
        grpc.StatusCode.NOT_FOUND,
        c.CancelJob(pb.CancelJobRequest(job_ids=["j-missing"]), metadata=md),
    )


async def test_list_hardware_from_catalog(stack) -> None:  # type: ignore[no-untyped-def]
    _app, boot, ch = stack.app, stack.boot, stack.channel
    reply = await client(ch).ListHardware(pb.ListHardwareRequest(), metadata=bearer(boot.api_key))
    classes = {p.gpu_class for p in reply.profiles}
    assert {"l40", "a100", "h100", "cpu"} <= classes
    h100 = next(p for p in reply.profiles if p.code == "h100-1x")
    assert h100.vram_gb == 80 and h100.price_per_hour_minor > 0 and h100.available == 0
