"""The whole loop on real processes: up → deploy -f → live logs → pull → redeploy → down.

Everything runs through the installed `c3ctl` entry point in a private C3_HOME, with the
coordinator and storaged on free ports.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PAYLOAD = "".join(f"payload line {i}\n" for i in range(2000))

RUN_SH = """#!/usr/bin/env bash
set -euo pipefail
echo "first line from the job"
for i in $(seq 0 1999); do echo "payload line $i"; done > "$C3_ARTIFACTS_DIR/data.txt"
# Stay running a moment so the test can observe RUNNING after the first line arrived.
sleep 3
echo "last line from the job"
"""


def c3ctl(env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "c3ctl.main", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )


def processes_mentioning(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    home = tmp_path / "c3home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("C3_")}
    env.update(C3_HOME=str(home), NO_COLOR="1", PYTHONUNBUFFERED="1")
    up = c3ctl(env, "up", "--coordinator-port", "0", "--storage-port", "0", timeout=90)
    assert up.returncode == 0, up.stderr
    try:
        yield env
    finally:
        c3ctl(env, "down")
        c3ctl(env, "daemon", "stop")
        deadline = time.monotonic() + 15
        while processes_mentioning(str(home)) and time.monotonic() < deadline:
            time.sleep(0.05)
        stray = processes_mentioning(str(home))
        for pid in stray:
            os.kill(pid, 9)
        assert not stray, f"processes left behind: {stray}"


def test_deploy_streams_live_pulls_and_dedups(stack_env: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / ".c3").write_text("project: e2e-demo\nscript: run.sh\ntime: '00:02:00'\n")
    (project / "run.sh").write_text(RUN_SH)
    (project / "src" / "model.py").write_text("print('hi')\n" * 100)
    (project / ".gitignore").write_text("*.log\n")
    (project / "debug.log").write_text("never shipped\n")

    # Deploy from a subdirectory: the nearest .c3 upward is found.
    proc = subprocess.Popen(
        [sys.executable, "-m", "c3ctl.main", "deploy", "-f"],
        env=stack_env, cwd=project / "src", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    first_line = ""
    while time.monotonic() < deadline and not first_line:
        if sel.select(timeout=1):
            line = proc.stdout.readline()
            if not line:
                break
            if "first line from the job" in line:
                first_line = line
    assert first_line, "the job's first output line never arrived"

    # The line arrived while the job was still running.
    queue = c3ctl(stack_env, "squeue", "--json")
    assert queue.returncode == 0, queue.stderr
    jobs = json.loads(queue.stdout)["jobs"]
    assert len(jobs) == 1 and jobs[0]["status"] == "RUNNING", jobs
    job_id = jobs[0]["id"]

    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "last line from the job" in rest
    assert "COMPLETED" in err
    # .c3, .gitignore, run.sh, src/model.py; debug.log is ignored
    assert "4 files" in err and "4 new" in err

    pulled = c3ctl(stack_env, "pull", cwd=project)
    assert pulled.returncode == 0, pulled.stderr
    data = project / "c3-artifacts" / job_id / "data.txt"
    assert data.read_text() == PAYLOAD

    queue = json.loads(c3ctl(stack_env, "squeue", "--json").stdout)["jobs"]
    assert queue[0]["status"] == "SYNCED"

    # Re-deploying the unchanged project moves nothing.
    again = c3ctl(stack_env, "deploy", cwd=project)
    assert again.returncode == 0, again.stderr
    assert "0 new" in again.stderr and "0 B sent" in again.stderr

    logs = c3ctl(stack_env, "logs", job_id)
    assert logs.returncode == 0, logs.stderr
    assert "first line from the job" in logs.stdout and "last line from the job" in logs.stdout


def test_failed_job_exits_nonzero_with_exit_code(stack_env: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "failing"
    project.mkdir()
    (project / ".c3").write_text("script: run.sh\n")
    (project / "run.sh").write_text("echo about to fail\nexit 7\n")
    result = c3ctl(stack_env, "deploy", "-f", cwd=project)
    assert result.returncode == 1
    assert "about to fail" in result.stdout
    assert "EXIT_CODE 7" in result.stderr


def test_config_error_is_one_line_without_traceback(stack_env: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "bad"
    project.mkdir()
    (project / ".c3").write_text("script: run.sh\ngpus: l40\n")
    (project / "run.sh").write_text("echo hi\n")
    result = c3ctl(stack_env, "deploy", "-f", cwd=project)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert ".c3:2" in result.stderr and "gpus" in result.stderr
