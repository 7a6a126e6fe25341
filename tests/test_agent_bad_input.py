"""Hostile or broken jobs on one real agent, one after another: a fork bomb, a memory hog,
a disk filler, 100,000 tiny artifacts, a 1 TiB sparse artifact, symlinks to `/` and out of
the job, a FIFO and a socket among the artifacts, a name with a newline. Each ends with a
reason that names what happened, and after each the agent takes the next job."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agent.cgroups import detect_cgroups
from c3.storage.client import StorageClient
from c3.v1 import common_pb2
from c3.v1 import coordinator_pb2 as pb
from tests.harness.coordinator import (
    Stack,
    events_until_done,
    push_workspace,
    start_agent_stack,
    submit_and_wait,
)
from tests.harness.waiting import eventually

S = common_pb2
CGROUPS, CGROUP_PROBLEM = detect_cgroups()
needs_cgroups = pytest.mark.skipif(CGROUPS is None, reason=CGROUP_PROBLEM or "cgroups")

SCRIPTS = {
    "ok.sh": "echo fine\n",
    "forkbomb.sh": "bomb() { bomb | bomb & }; bomb\nsleep 60\n",
    "hog.sh": "python3 -c \"b = bytearray(256 << 20); b[::4096] = b'x' * len(b[::4096])\"\n",
    "fill.sh": "head -c 100000000 /dev/zero > big.bin\nsleep 60\n",
    "many.sh": ("python3 -c \"import os\nfor i in range(100000): "
                "open(os.environ['C3_ARTIFACTS_DIR'] + f'/{i}', 'w').close()\"\necho written\n"),
    "sparse.sh": 'truncate -s 1T "$C3_ARTIFACTS_DIR/huge.bin"\necho truncated\n',
    "odd.sh": (
        'cd "$C3_ARTIFACTS_DIR"\n'
        "ln -s / root\nln -s /etc/passwd passwd\nln -s .. up\nln -s . self\nmkfifo pipe\n"
        "python3 -c \"import socket; socket.socket(socket.AF_UNIX).bind('sock')\"\n"
        "printf x > 'bad\nname'\nprintf x > \"$(printf 'esc\\033[31mname')\"\n"
        "echo good > good.txt\n"
    ),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    for name, text in SCRIPTS.items():
        (ws / name).write_text(text)
    return ws


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with start_agent_stack(tmp_path, "--pids-max", "64", "--memory", "96M",
                                 "--disk-limit", "64M", "--disk-check-seconds", "0.2") as s:
        yield s


async def _run(stack: Stack, workspace: Path, script: str) -> tuple[S.Job, list[str]]:
    job, events = await submit_and_wait(stack, script=script,
                                        workspace_manifest_digest=await push_workspace(stack, workspace))
    return job, [e.log.text for e in events if e.HasField("log")]


async def _next_job_runs(stack: Stack, workspace: Path) -> None:
    ok, lines = await _run(stack, workspace, "ok.sh")
    assert ok.state == S.JOB_STATE_COMPLETED and "fine" in lines, (ok.message, lines)


@pytest.mark.integration
@needs_cgroups
async def test_fork_bomb_memory_hog_and_disk_filler_each_name_their_limit(
        stack: Stack, workspace: Path) -> None:
    bomb, lines = await _run(stack, workspace, "forkbomb.sh")
    assert (bomb.state, bomb.failure_reason) == (S.JOB_STATE_FAILED, S.FAILURE_REASON_PIDS_LIMIT), (
        bomb.message, lines[-5:])
    assert "limit of 64 processes" in bomb.message
    await _next_job_runs(stack, workspace)
    hog, lines = await _run(stack, workspace, "hog.sh")
    assert (hog.state, hog.failure_reason) == (S.JOB_STATE_FAILED, S.FAILURE_REASON_OOM), (
        hog.message, lines[-5:])
    assert "96 MiB" in hog.message
    await _next_job_runs(stack, workspace)
    full, _ = await _run(stack, workspace, "fill.sh")
    assert (full.state, full.failure_reason) == (S.JOB_STATE_FAILED, S.FAILURE_REASON_DISK_LIMIT)
    assert "over its disk limit of 64.0 MiB" in full.message
    await _next_job_runs(stack, workspace)


@pytest.mark.integration
async def test_100000_tiny_artifacts_are_refused_by_count_at_once(
        stack: Stack, workspace: Path) -> None:
    many, lines = await _run(stack, workspace, "many.sh")
    assert "written" in lines
    assert (many.state, many.failure_reason) == (S.JOB_STATE_FAILED, S.FAILURE_REASON_UPLOAD_ERROR)
    assert "more than 20000 artifact files" in many.message and "tar" in many.message
    await _next_job_runs(stack, workspace)


@pytest.mark.integration
async def test_a_1_tib_sparse_artifact_fails_in_seconds_naming_the_file(
        stack: Stack, workspace: Path) -> None:
    started = time.monotonic()
    huge, lines = await _run(stack, workspace, "sparse.sh")
    elapsed = time.monotonic() - started
    assert (huge.state, huge.failure_reason) == (S.JOB_STATE_FAILED,
                                                 S.FAILURE_REASON_UPLOAD_ERROR), lines
    assert "huge.bin: 1.0 TiB, over the per-file limit of 64.0 GiB" in huge.message, huge.message
    assert elapsed < 5, f"{elapsed:.1f}s: the file was read instead of refused by its size"
    await _next_job_runs(stack, workspace)


@pytest.mark.integration
async def test_symlinks_fifos_sockets_and_control_characters_are_left_out_with_a_note(
        stack: Stack, workspace: Path, tmp_path: Path) -> None:
    odd, lines = await _run(stack, workspace, "odd.sh")
    assert odd.state == S.JOB_STATE_COMPLETED, (odd.message, lines)
    notes = [ln for ln in lines if ln.startswith("c3: artifact skipped: ")]
    expected = {"root: symlink points outside the job", "passwd: symlink points outside the job",
                "up: symlink points outside the job", "self: directory symlink not followed",
                "pipe: a FIFO", "sock: a socket",
                "bad\\nname: control characters", "esc\\x1b[31mname: control characters"}
    for fragment in expected:
        assert any(fragment in note for note in notes), (fragment, notes)
    assert all("\n" not in line and "\x1b" not in line for line in lines)
    c, md = stack.c, stack.md
    token = (await c.IssueStorageToken(pb.IssueStorageTokenRequest(), metadata=md)).token
    async with StorageClient(stack.storage_address, token) as storage:
        version = await storage.resolve(f"/jobs/{odd.id}")
        manifest = await storage.get_manifest(version.manifest_digest)
    assert [e.path for e in manifest.entries] == ["good.txt"]
    await _next_job_runs(stack, workspace)


@pytest.mark.integration
async def test_an_output_path_with_dotdot_is_refused_at_submit(stack: Stack, workspace: Path) -> None:
    c, md = stack.c, stack.md
    digest = await push_workspace(stack, workspace)
    with pytest.raises(grpc.RpcError) as refused:
        await c.SubmitJob(pb.SubmitJobRequest(spec=S.JobSpec(
            project="demo", script="ok.sh", workspace_manifest_digest=digest,
            output=["../../etc"])), metadata=md)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output" in (refused.value.details() or "")
    await _next_job_runs(stack, workspace)


@pytest.mark.integration
async def test_cancel_while_a_big_artifact_is_collected_ends_the_job_within_2s(
        stack: Stack, workspace: Path, tmp_path: Path) -> None:
    ws = tmp_path / "big"
    ws.mkdir()
    # 16 GiB of zeros (sparse: no disk) take ~10 s to hash on these machines.
    (ws / "run.sh").write_text('truncate -s 16G "$C3_ARTIFACTS_DIR/big.bin"\necho made\n')
    c, md = stack.c, stack.md
    job = (await c.SubmitJob(pb.SubmitJobRequest(spec=S.JobSpec(
        project="demo", script="run.sh", workspace_manifest_digest=await push_workspace(stack, ws))),
        metadata=md)).job
    stream = c.StreamJobEvents(pb.StreamJobEventsRequest(job_id=job.id, follow=True), metadata=md)
    canceled_at = 0.0
    async for event in stream:
        if event.HasField("log") and event.log.text == "made" and not canceled_at:
            await asyncio.sleep(0.5)  # the script is over: its artifact is being hashed
            canceled_at = time.monotonic()
            await c.CancelJob(pb.CancelJobRequest(job_ids=[job.id]), metadata=md)
        if event.HasField("status") and event.status.state in (
                S.JOB_STATE_CANCELED, S.JOB_STATE_FAILED, S.JOB_STATE_COMPLETED):
            ended = time.monotonic()
            assert event.status.state == S.JOB_STATE_CANCELED, event.status
            break
    assert canceled_at and ended - canceled_at < 2.0, f"{ended - canceled_at:.2f}s after cancel"
    await _next_job_runs(stack, workspace)


SLOW_BACKEND = '''"""A PEP 517 backend whose metadata is instant and whose wheel never comes."""
import subprocess


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    import os
    info = os.path.join(metadata_directory, "slowpkg-0.1.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\\nName: slowpkg\\nVersion: 0.1\\n")
    return "slowpkg-0.1.dist-info"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    subprocess.run(["sleep", "TOKEN"])
    raise SystemExit("never")
'''


def _slow_env_project(root: Path, token: str) -> None:
    pkg = root / "slowpkg"
    pkg.mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "slowbackend"\nbackend-path = ["."]\n'
        '[project]\nname = "slowpkg"\nversion = "0.1"\n')
    (pkg / "slowbackend.py").write_text(SLOW_BACKEND.replace("TOKEN", token))
    (root / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["slowpkg"]\n[tool.uv.sources]\nslowpkg = { path = "slowpkg" }\n')
    (root / "run.sh").write_text("echo never-runs\n")


def _sleepers(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", token.encode()]:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.integration
@pytest.mark.parametrize("how", ["cancel", "time_limit"])
async def test_an_environment_build_stops_within_2s_of_cancel_or_time_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    from agent.envs import find_uv

    if find_uv() is None:
        pytest.skip("uv is not installed")
    monkeypatch.setenv("UV_OFFLINE", "1")
    token = f"{int(time.time() * 1000) % 10**7 + 3000}.5"
    project = tmp_path / "proj"
    _slow_env_project(project, token)
    lock = await asyncio.create_subprocess_exec(find_uv() or "uv", "lock", "--offline",
                                                cwd=project)
    assert await lock.wait() == 0
    async with start_agent_stack(tmp_path) as stack:
        c, md = stack.c, stack.md
        limit = 3 if how == "time_limit" else 0
        job = (await c.SubmitJob(pb.SubmitJobRequest(spec=S.JobSpec(
            project="demo", script="run.sh", python_project=".", time_limit_seconds=limit,
            workspace_manifest_digest=await push_workspace(stack, project))), metadata=md)).job
        events: list[S.JobEvent] = []
        done = asyncio.create_task(events_until_done(stack, job.id, events))
        await eventually(lambda: bool(_sleepers(token)), 60, "the environment build to start")
        stopped_at = time.monotonic()
        if how == "cancel":
            await c.CancelJob(pb.CancelJobRequest(job_ids=[job.id]), metadata=md)
        state = await asyncio.wait_for(done, 30)
        ended = time.monotonic()
        want = S.JOB_STATE_CANCELED if how == "cancel" else S.JOB_STATE_TIMED_OUT
        assert state == want, events[-1]
        if how == "cancel":
            assert stopped_at and ended - stopped_at < 2.0, f"{ended - stopped_at:.2f}s"
        else:  # the limit counts from pickup, which came before the build started
            picked = (await c.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)).job
            assert "time limit of 3s" in picked.message, picked.message
            assert ended - stopped_at < 3 + 2.0, f"{ended - stopped_at:.2f}s"
        # uv and the build it started are gone with the job.
        deadline = time.monotonic() + 10
        while _sleepers(token):
            assert time.monotonic() < deadline, "the environment build outlived the job"
            await asyncio.sleep(0.05)


class HangingStorage:
    """A storaged that accepts the job's first call and never answers it."""

    def __init__(self) -> None:
        self.called = asyncio.Event()

    def set_token(self, token: str) -> None:
        pass

    async def close(self) -> None:
        pass

    async def get_manifest(self, digest: str) -> None:
        self.called.set()
        await asyncio.Event().wait()


@pytest.mark.unit
@pytest.mark.parametrize("how", ["cancel", "time_limit"])
async def test_a_hung_workspace_fetch_ends_within_2s_of_cancel_or_time_limit(
        tmp_path: Path, how: str) -> None:
    from agent.discovery import HostInfo
    from agent.jobs import JobExecutor
    from c3.v1 import agent_pb2

    storage = HangingStorage()
    finals: list[agent_pb2.JobStatusUpdate] = []
    over = asyncio.Event()

    def emit(message: agent_pb2.AgentMessage) -> None:
        if message.HasField("status") and message.status.state in (
                S.JOB_STATE_CANCELED, S.JOB_STATE_TIMED_OUT, S.JOB_STATE_FAILED):
            finals.append(message.status)
            over.set()

    executor = JobExecutor(data_dir=tmp_path, host=HostInfo((), "host"),
                           sandbox=None, unsandboxed_ok=True, emit=emit,
                           storage_factory=lambda address, token: storage)
    spec = S.JobSpec(project="demo", script="run.sh", workspace_manifest_digest="ab" * 32,
                     time_limit_seconds=1 if how == "time_limit" else 0)
    executor.assign(agent_pb2.Assignment(job=S.Job(id="j-fetch", spec=spec),
                                         storage_address="storage:1", storage_token="t"))
    await asyncio.wait_for(storage.called.wait(), 10)
    stopped = time.monotonic()
    if how == "cancel":
        executor.cancel("j-fetch", S.JOB_STATE_CANCELED, "the user asked")
    await asyncio.wait_for(over.wait(), 3 if how == "time_limit" else 2)
    want = S.JOB_STATE_CANCELED if how == "cancel" else S.JOB_STATE_TIMED_OUT
    assert [f.state for f in finals] == [want]
    assert time.monotonic() - stopped < 2.0 + (1 if how == "time_limit" else 0)
    assert executor.running_job_ids() == []
    await executor.shutdown()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.integration
async def test_a_job_swapping_a_fetched_file_for_dev_zero_cannot_tie_up_the_agent(
        stack: Stack, tmp_path: Path, workspace: Path) -> None:
    """The agent caches a first job's fetched files while it runs; a job that replaces one
    with a symlink to (the host's) /dev/zero or a FIFO must not leave it reading forever."""
    ws = tmp_path / "swap"
    ws.mkdir()
    for i in range(300):
        (ws / f"f{i:03d}.bin").write_bytes(os.urandom(32 << 10))
    (ws / "run.sh").write_text(
        "rm -f f298.bin f299.bin; ln -s /dev/zero f299.bin; mkfifo f298.bin\n"
        "echo swapped\nsleep 3\n")
    job, lines = await _run(stack, ws, "run.sh")
    assert job.state == S.JOB_STATE_COMPLETED and "swapped" in lines, (job.message, lines)
    await _next_job_runs(stack, workspace)
    before = _cpu_seconds(stack.agent.pid)
    await asyncio.sleep(2)
    assert _cpu_seconds(stack.agent.pid) - before < 0.5, "the agent kept a CPU busy after the job"
    # Nor a thread blocked on the FIFO: the agent still stops when asked.
    stack.agent.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(stack.agent.wait, 15) == 0
