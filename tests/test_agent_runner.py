"""The agent's script runner, driven directly (no coordinator): environment, sandbox,
process-group stop, time limit and log streaming, with real processes and real bwrap."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from agent.logbatch import LogBatcher
from agent.runner import Ending, RunResult, ScriptRun, run_script
from agent.sandbox import (
    SANDBOX_ARTIFACTS,
    SANDBOX_WORKSPACE,
    JobLayout,
    LaunchSpec,
    ReadOnlyMount,
    SandboxPolicy,
)
from c3.v1 import agent_pb2, common_pb2
from tests.harness.sandbox import host_sandbox

pytestmark = pytest.mark.integration


# Variables bash itself defines in every script; not inherited from the agent.
BASH_OWN = {"PWD", "SHLVL", "_", "OLDPWD"}
DOCUMENTED = {
    "C3_JOB_WORKDIR", "C3_ARTIFACTS_DIR", "PYTHONUNBUFFERED", "TERM", "HOME", "PATH",
    "TMPDIR", "CUDA_VISIBLE_DEVICES",
}
# Only for a member of a job array (`deploy --array N`).
ARRAY_VARIABLES = {"C3_ARRAY_INDEX", "C3_ARRAY_SIZE"}


class Collected:
    def __init__(self) -> None:
        self.batches: list[agent_pb2.LogBatch] = []
        self.changed = asyncio.Event()

    async def send(self, batch: agent_pb2.LogBatch) -> None:
        self.batches.append(batch)
        self.changed.set()

    def lines(self, stream: int | None = None) -> list[str]:
        return [ln.text for b in self.batches for ln in b.lines if stream is None or ln.stream == stream]

    async def wait_for(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.lines():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{text!r} never arrived; got {self.lines()}"
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass


@pytest.fixture(scope="module")
def bwrap_ok() -> bool:
    return host_sandbox() is not None


@pytest.fixture(params=[False, True], ids=["unsandboxed", "bwrap"])
def sandboxed(request: pytest.FixtureRequest, bwrap_ok: bool) -> bool:
    if request.param and not bwrap_ok:
        pytest.skip("bubblewrap cannot run on this host")
    return bool(request.param)


def policy(sandboxed: bool) -> SandboxPolicy | None:
    return host_sandbox() if sandboxed else None


def make_job(tmp_path: Path, script: str, workdir: str = "") -> JobLayout:
    layout = JobLayout.under(tmp_path / "job")
    layout.create()
    target = layout.workspace / workdir / "run.sh" if workdir else layout.workspace / "run.sh"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(script)
    return layout


async def run(layout: JobLayout, sandboxed: bool, **kw: object) -> tuple[RunResult, Collected]:
    out = Collected()
    logs = LogBatcher("job-1", out.send)
    logs.start()
    spec = LaunchSpec(layout=layout, script=str(kw.pop("script", "run.sh")),
                      workdir=str(kw.pop("workdir", "")), cuda_visible_devices="0",
                      datasets=kw.pop("datasets", ()),  # type: ignore[arg-type]
                      array_index=int(kw.pop("array_index", 0)),  # type: ignore[call-overload]
                      array_size=int(kw.pop("array_size", 0)))  # type: ignore[call-overload]
    result = await run_script(spec, sandbox=policy(sandboxed), logs=logs, **kw)  # type: ignore[arg-type]
    await logs.close()
    return result, out


async def test_environment_is_exactly_documented_and_hides_host_secrets(
    tmp_path: Path, sandboxed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("C3_AGENT_SECRET", "s3cr3t-provisioning")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    layout = make_job(tmp_path, 'env -0 | tr "\\0" "\\n" | grep -v "^$"; echo "cwd=$(pwd)"\n'
                      'touch "$C3_ARTIFACTS_DIR/made" && echo tmp-ok > "$TMPDIR/x" && echo wrote\n',
                      workdir="sub")
    result, out = await run(layout, sandboxed, script="sub/run.sh", workdir="sub")
    assert result.ending is Ending.EXITED and result.exit_code == 0, out.lines()
    env = dict(line.split("=", 1) for line in out.lines(common_pb2.LOG_STREAM_STDOUT) if "=" in line
               and not line.startswith("cwd="))
    assert set(env) - BASH_OWN == DOCUMENTED
    assert "s3cr3t-provisioning" not in "\n".join(out.lines())
    assert "hunter2" not in "\n".join(out.lines())
    assert env["PYTHONUNBUFFERED"] == "1" and env["TERM"] == "dumb"
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    workspace = SANDBOX_WORKSPACE if sandboxed else str(layout.workspace)
    assert env["HOME"] == workspace
    assert env["C3_JOB_WORKDIR"] == f"{workspace}/sub"
    assert f"cwd={workspace}/sub" in out.lines()
    assert env["C3_ARTIFACTS_DIR"] == (SANDBOX_ARTIFACTS if sandboxed else str(layout.artifacts))
    assert (layout.artifacts / "made").exists()
    assert "wrote" in out.lines()


async def test_array_member_also_sees_its_place_in_the_array(tmp_path: Path, sandboxed: bool) -> None:
    layout = make_job(tmp_path, 'env -0 | tr "\\0" "\\n" | grep -v "^$"\n')
    result, out = await run(layout, sandboxed, array_index=2, array_size=5)
    assert result.ending is Ending.EXITED and result.exit_code == 0, out.lines()
    env = dict(line.split("=", 1) for line in out.lines(common_pb2.LOG_STREAM_STDOUT) if "=" in line)
    assert set(env) - BASH_OWN == DOCUMENTED | ARRAY_VARIABLES
    assert (env["C3_ARRAY_INDEX"], env["C3_ARRAY_SIZE"]) == ("2", "5")


async def test_sandbox_hides_agent_state_and_mounts_dataset_read_only(
    tmp_path: Path, bwrap_ok: bool
) -> None:
    if not bwrap_ok:
        pytest.skip("bubblewrap cannot run on this host")
    dataset = tmp_path / "cache" / "ds"
    dataset.mkdir(parents=True)
    (dataset / "train.csv").write_text("a,b\n1,2\n")
    secret_file = tmp_path / "agent-credential.json"
    secret_file.write_text("{}")
    layout = make_job(tmp_path, f"""
cat /data/mine/train.csv
if echo x > /data/mine/new 2>/dev/null; then echo dataset-writable; else echo dataset-readonly; fi
if rm /data/mine/train.csv 2>/dev/null; then echo dataset-deletable; fi
if test -e {secret_file}; then echo agent-state-visible; else echo agent-state-hidden; fi
if echo x > /usr/c3-probe 2>/dev/null; then echo usr-writable; else echo usr-readonly; fi
""")
    result, out = await run(layout, True, datasets=(ReadOnlyMount(dataset, "/data/mine"),))
    lines = out.lines()
    assert result.exit_code == 0, lines
    assert "1,2" in lines
    assert "dataset-readonly" in lines and "dataset-deletable" not in lines
    assert "agent-state-hidden" in lines
    assert "usr-readonly" in lines
    assert (dataset / "train.csv").exists() and not (dataset / "new").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        assert time.monotonic() < deadline, f"process {pid} survived the job"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("how", ["cancel", "time_limit"])
async def test_stop_kills_the_whole_process_group(tmp_path: Path, sandboxed: bool, how: str) -> None:
    # The script starts a background child that ignores nothing and would outlive bash.
    layout = make_job(tmp_path, "sleep 300 &\necho child=$!\nsleep 300\n")
    out = Collected()
    logs = LogBatcher("job-1", out.send)
    logs.start()
    run_ = ScriptRun(LaunchSpec(layout=layout, script="run.sh"), sandbox=policy(sandboxed), logs=logs,
                     time_limit_seconds=1.0 if how == "time_limit" else 0, grace_seconds=1.0)
    await run_.start()
    waiter = asyncio.create_task(run_.wait())
    deadline = time.monotonic() + 10
    while not any(ln.startswith("child=") for ln in out.lines()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    # Host pids of every process in the job's group (the pid printed inside bwrap is namespaced).
    pgid = run_.pid
    members = [int(p) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == pgid]
    assert len(members) >= 2
    if how == "cancel":
        run_.stop(Ending.CANCELED, "user asked")
    result = await asyncio.wait_for(waiter, 15)
    await logs.close()
    assert result.ending is (Ending.CANCELED if how == "cancel" else Ending.TIMED_OUT)
    for pid in members:
        await wait_gone(pid)


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return -1


async def test_exit_code_and_leftover_child_do_not_block(tmp_path: Path, sandboxed: bool) -> None:
    layout = make_job(tmp_path, "(sleep 300 >/dev/null 2>&1 &)\nsleep 300 &\necho bye\nexit 7\n")
    started = time.monotonic()
    result, out = await run(layout, sandboxed)
    assert result.ending is Ending.EXITED and result.exit_code == 7
    assert "bye" in out.lines()
    assert time.monotonic() - started < 8


async def test_logs_keep_order_batch_and_split(tmp_path: Path) -> None:
    layout = make_job(tmp_path, """
for i in $(seq 1 300); do echo "out $i"; done
echo "to stderr" >&2
head -c 40000 /dev/zero | tr '\\0' 'x'; echo
printf '\\xff\\xfe bad bytes\\n'
printf 'no newline at end'
""")
    result, out = await run(layout, False)
    assert result.exit_code == 0
    stdout = out.lines(common_pb2.LOG_STREAM_STDOUT)
    assert stdout[:300] == [f"out {i}" for i in range(1, 301)]
    assert "to stderr" in out.lines(common_pb2.LOG_STREAM_STDERR)
    long_parts = [ln for ln in stdout if set(ln) == {"x"}]
    assert sum(map(len, long_parts)) == 40000 and len(long_parts) >= 3
    assert "\ufffd\ufffd bad bytes" in stdout
    assert stdout[-1] == "no newline at end"
    # Batched: far fewer messages than lines, and timestamps never go backwards.
    assert len(out.batches) < 50
    stamps = [ln.at.ToNanoseconds() for b in out.batches for ln in b.lines]
    assert stamps == sorted(stamps)


async def test_bad_script_path_is_a_clear_error(tmp_path: Path) -> None:
    from c3.errors import InvalidArgument

    layout = make_job(tmp_path, "echo hi\n")
    with pytest.raises(InvalidArgument, match=r"missing\.sh"):
        await run(layout, False, script="missing.sh")
    with pytest.raises(InvalidArgument, match="not a file in the workspace"):
        await run(layout, False, script="../../etc/passwd")
