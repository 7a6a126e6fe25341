"""The whole loop on real processes: up → deploy -f → live logs → pull → redeploy → down.

Everything runs through the installed `c3ctl` entry point in a private C3_HOME, with the
coordinator and storaged on free ports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.cli import LineReader, c3ctl

pytestmark = pytest.mark.e2e


PAYLOAD = "".join(f"payload line {i}\n" for i in range(2000))

RUN_SH = """#!/usr/bin/env bash
set -euo pipefail
echo "first line from the job"
for i in $(seq 0 1999); do echo "payload line $i"; done > "$C3_ARTIFACTS_DIR/data.txt"
# Stay running a moment so the test can observe RUNNING after the first line arrived.
sleep 3
echo "last line from the job"
"""


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
    reader = LineReader(proc)
    reader.wait_for("first line from the job")

    # The line arrived while the job was still running.
    queue = c3ctl(stack_env, "squeue", "--json")
    assert queue.returncode == 0, queue.stderr
    jobs = [j for j in json.loads(queue.stdout)["jobs"] if j["project"] == "e2e-demo"]
    assert len(jobs) == 1 and jobs[0]["status"] == "RUNNING", jobs
    job_id = jobs[0]["id"]

    rest, err = reader.rest()
    assert proc.wait(timeout=60) == 0, err
    assert "last line from the job" in rest
    # Compact: a header, the timing line, the footer, and nothing else of c3's own.
    header, timing, footer = err.splitlines()
    # .c3, .gitignore, run.sh, src/model.py; debug.log is ignored
    assert header.startswith(f"── {job_id} · 4 files") and "sent ──" in header
    assert timing.startswith("first output ") and "after the command (push " in timing
    assert footer.startswith(f"● COMPLETED {job_id} · ")
    assert footer.endswith(f"1 artifact file: c3 pull {job_id}")

    pulled = c3ctl(stack_env, "pull", cwd=project)
    assert pulled.returncode == 0, pulled.stderr
    data = project / "c3-artifacts" / job_id / "data.txt"
    assert data.read_text() == PAYLOAD

    queue = json.loads(c3ctl(stack_env, "squeue", "--json").stdout)["jobs"]
    assert next(j for j in queue if j["id"] == job_id)["status"] == "SYNCED"

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
    assert result.returncode == 7, result.stderr  # the script's own exit code
    assert "about to fail" in result.stdout
    assert "(EXIT_CODE 7)" in result.stderr.splitlines()[-1]


def test_config_error_is_one_line_without_traceback(stack_env: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "bad"
    project.mkdir()
    (project / ".c3").write_text("script: run.sh\ngpus: l40\n")
    (project / "run.sh").write_text("echo hi\n")
    result = c3ctl(stack_env, "deploy", "-f", cwd=project)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert ".c3:2" in result.stderr and "gpus" in result.stderr


def test_up_twice_is_harmless_and_status_shows_the_stack(stack_env: dict[str, str]) -> None:
    before = json.loads(c3ctl(stack_env, "status", "--json").stdout)
    assert all(part["running"] for part in before["stack"].values())
    again = c3ctl(stack_env, "up")
    assert again.returncode == 0, again.stderr
    after = json.loads(c3ctl(stack_env, "status", "--json").stdout)
    assert after["stack"] == before["stack"]  # same processes, nothing restarted
    assert after["coordinator_healthy"]


def test_ctrl_c_detaches_without_cancelling(stack_env: dict[str, str], tmp_path: Path) -> None:
    import signal

    project = tmp_path / "detach"
    project.mkdir()
    (project / ".c3").write_text("project: detach\nscript: run.sh\n")
    (project / "run.sh").write_text('echo "started"\nsleep 2\necho "finished anyway"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "c3ctl.main", "deploy", "-f"], env=stack_env, cwd=project,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    reader = LineReader(proc)
    reader.wait_for("started")
    proc.send_signal(signal.SIGINT)
    _, err = reader.rest(timeout=30)
    assert proc.wait(timeout=30) == 130
    assert "detached" in err and "keeps running" in err and "Traceback" not in err
    job_id = err.splitlines()[0].split()[1]  # the header: "── j-… · 2 files …"
    assert f"logs -f {job_id}" in err
    logs = c3ctl(stack_env, "logs", "-f", job_id)
    assert "finished anyway" in logs.stdout
    jobs = json.loads(c3ctl(stack_env, "squeue", "--json").stdout)["jobs"]
    assert next(j for j in jobs if j["id"] == job_id)["status"] == "COMPLETED"
