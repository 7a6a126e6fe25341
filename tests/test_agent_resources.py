"""A job's share of the host, enforced with cgroups: memory over the share ends the job
FAILED/OOM and the agent takes the next one; a fork bomb hits pids.max; cgroup dirs go
away after the job; the workspace disk watchdog fails a job that fills its disk. An agent
removes the job cgroups its own data dir left (at start, after every job) and never
another agent's; the tests check only the groups they made."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from agent.cgroups import CgroupManager, agent_key, detect_cgroups, enter_cgroup_argv
from agent.diskwatch import tree_bytes, watch_disk
from agent.logbatch import LogBatcher
from agent.resources import HostTotals, ResourceShare, ShareOverrides, compute_share, parse_size
from agent.runner import ScriptRun
from agent.sandbox import JobLayout, LaunchSpec
from c3.v1 import agent_pb2, common_pb2
from tests.harness.coordinator import Stack, push_workspace, start_agent_stack, submit_and_wait
from tests.harness.sandbox import host_sandbox
from tests.harness.waiting import eventually

S = common_pb2
HOST = HostTotals(memory_bytes=64 << 30, cpus=32, processes=32768, disk_bytes=1 << 40)
MANAGER, CGROUP_PROBLEM = detect_cgroups(f"t{os.getpid()}")
SANDBOX = host_sandbox()
needs_cgroups = pytest.mark.skipif(MANAGER is None, reason=CGROUP_PROBLEM or "cgroups")

ALLOC_128M = "import sys; b = bytearray(128 << 20); b[::4096] = b'x' * len(b[::4096]); print('survived')"


@pytest.mark.unit
def test_a_one_gpu_job_on_a_four_gpu_host_gets_a_quarter() -> None:
    share = compute_share(HOST, 1 / 4, ShareOverrides())
    assert share.memory_bytes == 16 << 30 and share.cpus == 8
    assert share.pids_max == 8192 and share.shm_bytes == 8 << 30
    assert share.disk_bytes == 1 << 38
    assert share.cpu_weight_v2 == 800 and share.cpu_shares_v1 == 8192
    # cpu profile: the host is one unit unless the operator says otherwise
    whole = compute_share(HOST, 1.0, ShareOverrides(memory_bytes=64 << 20, memory_burst=2))
    assert (whole.memory_high_bytes, whole.memory_bytes, whole.cpus) == (64 << 20, 128 << 20, 32)
    with pytest.raises(ValueError, match="fraction"):
        compute_share(HOST, 1.0, ShareOverrides(fraction=1.5))


@pytest.mark.unit
def test_sizes_parse_with_units_and_reject_nonsense() -> None:
    assert parse_size("64M") == 64 << 20 and parse_size("1.5g") == 3 << 29
    assert parse_size("4096") == 4096 and parse_size("2GiB") == 2 << 30
    with pytest.raises(ValueError, match="512M"):
        parse_size("lots")


@pytest.mark.unit
def test_v2_layout_writes_memory_cpu_weight_and_pids(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    (root / "agents" / "a1").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    proc = tmp_path / "self-cgroup"
    proc.write_text("0::/agents/a1\n")
    manager = CgroupManager.detect(root, proc)
    assert manager.version == 2
    assert (root / "agents/a1/cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    share = ResourceShare(0.5, 128 << 20, 64 << 20, 2.0, 100, 0, 0)
    group = manager.create("job-x", share)
    d = root / "agents/a1/c3-jobs/job-x"
    assert group.dirs == (d,)
    assert (d / "memory.max").read_text() == str(128 << 20)
    assert (d / "memory.high").read_text() == str(64 << 20)
    assert (d / "cpu.weight").read_text() == "200" and (d / "pids.max").read_text() == "100"
    (d / "memory.events").write_text("low 0\nhigh 3\nmax 2\noom 1\noom_kill 1\n")
    assert group.oom_killed()


@pytest.mark.unit
def test_without_usable_cgroups_detection_says_why(tmp_path: Path) -> None:
    proc = tmp_path / "self-cgroup"
    proc.write_text("0::/\n")
    with pytest.raises(OSError, match="no cgroup v1 memory controller"):
        CgroupManager.detect(tmp_path / "empty", proc)


async def _run(tmp_path: Path, script: str, share: ResourceShare) -> tuple[object, list[str], Path]:
    assert MANAGER is not None
    layout = JobLayout.under(tmp_path / "job")
    layout.create()
    (layout.workspace / "run.sh").write_text(script)
    lines: list[str] = []

    async def send(batch: agent_pb2.LogBatch) -> None:
        lines.extend(line.text for line in batch.lines)

    logs = LogBatcher("j", send)
    logs.start()
    group = MANAGER.create(MANAGER.job_group_name("test"), share)
    run = ScriptRun(LaunchSpec(layout=layout, script="run.sh", cgroup_view=group.view()),
                    sandbox=SANDBOX, logs=logs,
                    cgroup=group)
    await run.start()
    result = await run.wait()
    await logs.close()
    memory_dir = group.memory_dir
    group.remove()
    return result, lines, memory_dir


@pytest.mark.integration
@needs_cgroups
async def test_memory_over_the_share_is_an_oom_kill_and_the_group_is_removed(tmp_path: Path) -> None:
    share = ResourceShare(1.0, 64 << 20, 64 << 20, 1.0, 256, 0, 0)
    result, lines, memory_dir = await _run(tmp_path, f'python3 -c "{ALLOC_128M}"\n', share)
    assert result.oom_killed and result.exit_code != 0, (result, lines)  # type: ignore[attr-defined]
    assert "survived" not in lines
    assert not memory_dir.exists()


@pytest.mark.integration
@needs_cgroups
async def test_a_fork_bomb_is_stopped_by_pids_max(tmp_path: Path) -> None:
    share = ResourceShare(1.0, 256 << 20, 256 << 20, 1.0, 40, 0, 0)
    bomb = "\n".join([
        "python3 - <<'PY'",
        "import os, signal, time",
        "kids = []",
        "try:",
        "    for _ in range(500):",
        "        pid = os.fork()",
        "        if pid == 0:",
        "            time.sleep(30)",
        "            os._exit(0)",
        "        kids.append(pid)",
        "except BlockingIOError:",
        "    pass",
        "print(f'running={len(kids)}', flush=True)",
        "for kid in kids:",
        "    os.kill(kid, signal.SIGKILL)",
        "PY",
        "",
    ])
    result, lines, _ = await _run(tmp_path, bomb, share)
    running = [int(x.split("=")[1]) for x in lines if x.startswith("running=")]
    assert running and running[0] < 40, lines
    assert not result.oom_killed  # type: ignore[attr-defined]


@pytest.mark.unit
async def test_the_disk_watchdog_reports_a_tree_over_its_limit(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(os.urandom(3 << 20))
    assert tree_bytes(tmp_path) >= 3 << 20
    reasons: list[str] = []
    await asyncio.wait_for(watch_disk(tmp_path, 1 << 20, reasons.append, interval=0.01), 10)
    assert "over its disk limit of 1.0 MiB" in reasons[0]


@pytest.mark.integration
@needs_cgroups
async def test_agent_fails_a_job_over_its_memory_share_with_oom_then_runs_the_next(
    tmp_path: Path
) -> None:
    async with start_agent_stack(tmp_path, "--memory", "64M", "--disk-limit", "8M",
                                 "--disk-check-seconds", "0.1") as stack:
        await _oom_then_next(stack, tmp_path)


async def _oom_then_next(stack: Stack, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "hog.sh").write_text(f'echo start\npython3 -c "{ALLOC_128M}"\n')
    (ws / "ok.sh").write_text("echo fine\n")
    (ws / "fill.sh").write_text("head -c 20000000 /dev/zero > big.bin\nsleep 60\n")
    digest = await push_workspace(stack, ws)
    hog, events = await submit_and_wait(stack, script="hog.sh", workspace_manifest_digest=digest)
    text = [e.log.text for e in events if e.HasField("log")]
    assert (hog.state, hog.failure_reason) == (S.JOB_STATE_FAILED, S.FAILURE_REASON_OOM), (
        hog.message, text)
    assert "64 MiB" in hog.message and "survived" not in text
    ok, events = await submit_and_wait(stack, script="ok.sh", workspace_manifest_digest=digest)
    assert ok.state == S.JOB_STATE_COMPLETED
    assert "fine" in [e.log.text for e in events if e.HasField("log")]
    full, _ = await submit_and_wait(stack, script="fill.sh", workspace_manifest_digest=digest)
    assert (full.state, full.failure_reason) == (S.JOB_STATE_FAILED, S.FAILURE_REASON_DISK_LIMIT)
    assert "disk limit" in full.message
    # Only this agent's groups (its data dir's key): other agents' on this host are theirs.
    assert MANAGER is not None
    assert MANAGER.for_agent(agent_key(stack.agent_dir)).own_groups() == []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.integration
@needs_cgroups
async def test_an_agent_removes_the_job_cgroups_its_data_dir_left_and_no_one_elses(
    tmp_path: Path
) -> None:
    assert MANAGER is not None
    share = ResourceShare(1.0, 64 << 20, 64 << 20, 1.0, 64, 0, 0)
    mine = MANAGER.for_agent(agent_key(tmp_path / "agent"))  # the data dir start_agent_stack uses
    theirs = MANAGER.for_agent(f"other{os.getpid()}")  # another agent on this host, running
    killed = mine.create(mine.job_group_name("j-killed"), share)  # an agent killed mid-job
    foreign = theirs.create(theirs.job_group_name("j-running"), share)
    sleepers = [await asyncio.to_thread(
        subprocess.Popen, enter_cgroup_argv(group.procs_files, ["sleep", "300"]))
        for group in (killed, foreign)]
    late = None
    try:
        await eventually(lambda: all(g.pids() for g in (killed, foreign)), 10, "the sleepers")
        async with start_agent_stack(tmp_path) as stack:
            # At start: the killed agent's group and its process are gone.
            assert not any(d.exists() for d in killed.dirs)
            await eventually(lambda: not _alive(sleepers[0].pid), 10, "the stale job's process")
            # After any job: a group left meanwhile (a job whose process was stuck) goes too.
            late = mine.create(mine.job_group_name("j-stuck"), share)
            ws = tmp_path / "ws"
            ws.mkdir()
            (ws / "ok.sh").write_text("echo fine\n")
            ok, _ = await submit_and_wait(stack, script="ok.sh",
                                          workspace_manifest_digest=await push_workspace(stack, ws))
            assert ok.state == S.JOB_STATE_COMPLETED
            assert not any(d.exists() for d in late.dirs)
            assert mine.own_groups() == []
            # Another agent's groups and processes are never touched.
            assert all(d.exists() for d in foreign.dirs) and _alive(sleepers[1].pid)
    finally:
        for proc in sleepers:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        for group in (killed, foreign, late):
            if group is not None:
                group.remove()
