"""Local-first history and gap-free follow through the real daemon: a follow survives a
coordinator crash and restart with every line exactly once, and logs of a finished job
are served by c3d even when the coordinator is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.cli import LineReader, c3ctl, clean_env, running_stack

RUN_SH = """#!/usr/bin/env bash
for i in $(seq 1 40); do echo "tick $i"; sleep 0.1; done
echo "after restart marker"
"""


@pytest.mark.faults
@pytest.mark.faults
@pytest.mark.faults
@pytest.mark.faults
def test_follow_survives_coordinator_restart_without_gap(tmp_path: Path) -> None:
    with running_stack(tmp_path / "home") as env:
        project = tmp_path / "ticker"
        project.mkdir()
        (project / ".c3").write_text("project: ticker\nscript: run.sh\n")
        (project / "run.sh").write_text(RUN_SH)
        submitted = c3ctl(env, "deploy", "--json", cwd=project)
        assert submitted.returncode == 0, submitted.stderr
        job_id = json.loads(submitted.stdout)["id"]

        follower = subprocess.Popen(
            [sys.executable, "-m", "c3ctl.main", "logs", "-f", job_id], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        reader = LineReader(follower)
        reader.wait_for("tick 3")

        # Crash the coordinator mid-stream, then bring it back on the same address.
        stack = json.loads((Path(env["C3_HOME"]) / "data" / "stack" / "stack.json").read_text())
        os.kill(stack["pids"]["coordinator"], signal.SIGKILL)
        reader.wait_for("connection to the coordinator lost")
        up = c3ctl(env, "up")
        assert up.returncode == 0, up.stderr
        reader.wait_for("reconnected")
        reader.wait_for("after restart marker")
        out, err = reader.rest()
        assert follower.wait(timeout=60) == 0, err
        lines = out.splitlines()
        ticks = [line for line in lines if line.startswith("tick ")]
        assert ticks == [f"tick {i}" for i in range(1, 41)], ticks

        # Offline: with the whole stack down, c3d still has the finished job's log.
        assert c3ctl(env, "down").returncode == 0
        offline = c3ctl(env, "logs", job_id)
        assert offline.returncode == 0, offline.stderr
        assert offline.stdout.count("tick 40") == 1 and "after restart marker" in offline.stdout


@pytest.mark.integration
@pytest.mark.integration
@pytest.mark.integration
@pytest.mark.integration
def test_deploy_fails_fast_when_coordinator_unreachable(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "home")
    env["C3_COORDINATOR"] = "127.0.0.1:9"  # nothing listens on the discard port
    env["C3_API_KEY"] = "c3_key_nobody_secret"
    project = tmp_path / "p"
    project.mkdir()
    (project / ".c3").write_text("script: run.sh\n")
    (project / "run.sh").write_text("echo hi\n")
    try:
        result = c3ctl(env, "deploy", cwd=project, timeout=30)
        assert result.returncode == 3, result.stderr
        assert "unreachable" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        c3ctl(env, "daemon", "stop")
