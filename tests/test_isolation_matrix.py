"""Two orgs on one real stack: every read and write across the boundary is refused, job
tokens stay inside their job, and secrets never leak into logs, `ps` or a job's env."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from c3 import manifest as mf
from c3.grpcutil import bearer, channel, storage_metadata
from c3.storage import codec
from c3.tokens import READ, WRITE, TokenClaims, TokenSigner
from c3.v1 import coordinator_pb2, coordinator_pb2_grpc, storage_pb2, storage_pb2_grpc
from tests.harness.cli import c3ctl, running_stack
from tests.harness.rpc import code_of

pytestmark = pytest.mark.e2e


RUN_SH = """#!/usr/bin/env bash
echo "secret-free job of org A"
env | sort
echo "artifact" > "$C3_ARTIFACTS_DIR/a.txt"
"""


@pytest.fixture(scope="module")
def two_orgs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    home = tmp_path_factory.mktemp("c3home")
    with running_stack(home) as env_a:
        made = c3ctl(env_a, "admin", "org", "create", "rival", "--json")
        assert made.returncode == 0, made.stderr
        key_b = json.loads(made.stdout)["admin_key"]
        env_b = {**env_a, "C3_API_KEY": key_b}
        project = tmp_path_factory.mktemp("proj-a")
        (project / ".c3").write_text("project: alpha\nscript: run.sh\n")
        (project / "run.sh").write_text(RUN_SH)
        deployed = c3ctl(env_a, "deploy", "-f", cwd=project, timeout=120)
        assert deployed.returncode == 0, deployed.stderr
        jobs = json.loads(c3ctl(env_a, "squeue", "--json").stdout)["jobs"]
        [job_a] = [j["id"] for j in jobs if j["project"] == "alpha"]
        stack_dir = home / "data" / "stack"
        boot = json.loads((stack_dir / "bootstrap.json").read_text())
        yield {"env_a": env_a, "env_b": env_b, "key_a": boot["api_key"], "key_b": key_b,
               "agent_secret": boot["agent_secret"], "job_a": job_a, "home": home,
               "stack_dir": stack_dir, "coordinator": _address(env_a)}


def _address(env: dict[str, str]) -> str:
    out = c3ctl(env, "whoami", "--json")
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["coordinator"])


def test_cli_reads_and_writes_across_orgs_are_refused(two_orgs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env_b, job_a = two_orgs["env_b"], two_orgs["job_a"]
    who = json.loads(c3ctl(env_b, "whoami", "--json").stdout)
    assert who["org"] == "rival" and who["source"] == "C3_API_KEY"
    queue = json.loads(c3ctl(env_b, "squeue", "--json").stdout)["jobs"]
    assert job_a not in {j["id"] for j in queue}
    for args in (("logs", job_a), ("cancel", job_a), ("pull", job_a)):
        refused = c3ctl(env_b, *args, cwd=tmp_path)
        assert refused.returncode != 0, args
        assert f"no job '{job_a}'" in refused.stderr, (args, refused.stderr)
        assert "Traceback" not in refused.stderr
    # Mounting org A's job output in org B's .c3: the submit is refused (nothing to mount).
    project = tmp_path / "proj-b"
    project.mkdir()
    (project / ".c3").write_text(f"project: beta\nscript: run.sh\ndatasets:\n  - /jobs/{job_a}\n")
    (project / "run.sh").write_text("cat /data/*/a.txt\n")
    mounted = c3ctl(env_b, "deploy", cwd=project, timeout=120)
    assert mounted.returncode != 0 and f"no such path /jobs/{job_a}" in mounted.stderr, mounted.stderr
    assert not [j for j in json.loads(c3ctl(env_b, "squeue", "--json").stdout)["jobs"]
                if j["project"] == "beta"]  # fmt: skip
    # Org A still sees its job, untouched.
    mine = json.loads(c3ctl(two_orgs["env_a"], "squeue", "--json").stdout)["jobs"]
    assert next(j for j in mine if j["id"] == job_a)["status"] == "COMPLETED"


async def _token(address: str, key: str) -> coordinator_pb2.IssueStorageTokenResponse:
    async with channel(address) as ch:
        stub = coordinator_pb2_grpc.CoordinatorStub(ch)
        return await stub.IssueStorageToken(coordinator_pb2.IssueStorageTokenRequest(), metadata=bearer(key))


def test_storage_across_orgs_and_job_token_scope(two_orgs) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(_storage_matrix(two_orgs))


async def _storage_matrix(o: dict) -> None:  # type: ignore[type-arg]
    job_a = o["job_a"]
    tok_a = await _token(o["coordinator"], o["key_a"])
    tok_b = await _token(o["coordinator"], o["key_b"])
    denied = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED}
    async with channel(tok_a.storage_address) as ch:
        st = storage_pb2_grpc.StorageStub(ch)
        md_a, md_b = storage_metadata(tok_a.token), storage_metadata(tok_b.token)
        version = (await st.Resolve(storage_pb2.ResolveRequest(ref=f"/jobs/{job_a}"), metadata=md_a)).version
        reply = await st.GetManifest(storage_pb2.GetManifestRequest(digest=version.manifest_digest), metadata=md_a)
        manifest = mf.from_bytes(codec.decompress(version.manifest_digest, reply.size, reply.compression, reply.data))
        digests = [e.digest for e in manifest.entries] + [version.manifest_digest]
        # data ls / log / du / rm / cp(read) across the boundary
        listing = await st.List(storage_pb2.ListRequest(path="/jobs"), metadata=md_b)
        assert job_a not in str(listing)
        assert await code_of(st.Resolve(storage_pb2.ResolveRequest(ref=f"/jobs/{job_a}"), metadata=md_b)) in denied
        try:
            log_b = await st.Log(storage_pb2.LogRequest(path=f"/jobs/{job_a}"), metadata=md_b)
            assert not log_b.versions
        except grpc.RpcError as exc:
            assert exc.code() in denied
        du = await st.DiskUsage(storage_pb2.DiskUsageRequest(path="/"), metadata=md_b)
        assert du.files == 0 and du.logical_bytes == 0
        assert await code_of(st.Remove(storage_pb2.RemoveRequest(path=f"/jobs/{job_a}"), metadata=md_b)) in denied
        assert await code_of(st.GetManifest(storage_pb2.GetManifestRequest(digest=version.manifest_digest), metadata=md_b)) in denied
        assert await code_of(st.GetBlobs(storage_pb2.GetBlobsRequest(digests=digests), metadata=md_b)) in denied
        # find-missing probing: every one of A's digests looks missing to B
        missing = await st.FindMissing(storage_pb2.FindMissingRequest(digests=digests), metadata=md_b)
        assert set(missing.missing) == set(digests)
        # A's data is intact after B's attempts
        assert (await st.Resolve(storage_pb2.ResolveRequest(ref=f"/jobs/{job_a}"), metadata=md_a)).version.version == version.version

        # A job token (as the scheduler signs them) writes only /jobs/<id>/.
        signer = TokenSigner.load_or_create(o["stack_dir"] / "signing-key.pem")
        org_a = json.loads((o["stack_dir"] / "bootstrap.json").read_text())["org_id"]
        job_token = signer.sign(TokenClaims(
            org_id=org_a, operations=(READ, WRITE), read_prefixes=(f"/jobs/{job_a}/",),
            write_prefixes=(f"/jobs/{job_a}/",), expires_at=time.time() + 60,
            subject=f"job:{job_a}", read_manifests=(version.manifest_digest,)))  # fmt: skip
        md_job = storage_metadata(job_token)
        for path in ("/jobs/j-someoneelse", "/datasets/stolen", "/projects/alpha/data/x"):
            commit = storage_pb2.CommitRequest(path=path, manifest_digest=version.manifest_digest)
            assert await code_of(st.Commit(commit, metadata=md_job)) == grpc.StatusCode.PERMISSION_DENIED, path
        assert await code_of(st.Remove(storage_pb2.RemoveRequest(path=f"/jobs/{job_a}"), metadata=md_job)) == grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(st.List(storage_pb2.ListRequest(path="/datasets"), metadata=md_job)) == grpc.StatusCode.PERMISSION_DENIED
        ok = await st.Commit(storage_pb2.CommitRequest(path=f"/jobs/{job_a}", manifest_digest=version.manifest_digest), metadata=md_job)
        assert ok.version.version == version.version + 1
        # Forged and expired tokens: UNAUTHENTICATED.
        forged = TokenSigner.load_or_create(o["home"] / "other-key.pem").sign(TokenClaims(org_id=org_a, operations=(READ,)))
        expired = signer.sign(TokenClaims(org_id=org_a, operations=(READ,), expires_at=time.time() - 1))
        for bad in (forged, expired, "garbage", ""):
            assert await code_of(st.List(storage_pb2.ListRequest(path="/"), metadata=storage_metadata(bad))) == grpc.StatusCode.UNAUTHENTICATED


def test_secrets_never_leak(two_orgs) -> None:  # type: ignore[no-untyped-def]
    secrets = [two_orgs["key_a"], two_orgs["key_b"], two_orgs["agent_secret"]]
    secret_parts = [s.rsplit("_", 1)[1] for s in secrets]
    logs = c3ctl(two_orgs["env_a"], "logs", two_orgs["job_a"])
    assert logs.returncode == 0 and "secret-free job of org A" in logs.stdout
    assert "C3_JOB_WORKDIR=" in logs.stdout  # the env dump really ran
    for marker in ("c3_key_", "c3_agent_", "c3_prov_", *secret_parts):
        assert marker not in logs.stdout, marker
    log_files = [p for p in Path(two_orgs["home"]).rglob("*.log") if p.is_file()]
    assert any(p.name == "coordinator.log" for p in log_files), log_files
    for path in log_files:
        text = path.read_text(errors="replace")
        for part in secret_parts:
            assert part not in text, f"secret in {path}"
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            for part in secret_parts:
                assert part not in cmdline, f"secret in the cmdline of pid {proc.name}"
