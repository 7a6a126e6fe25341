"""Deploy on save through the real daemon and stack: a save starts a new run, the
previous run is cancelled, and pause/resume hold changes back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.cli import LineReader, c3ctl
from tests.harness.waiting import eventually_blocking

pytestmark = pytest.mark.e2e


RUN_SH = """#!/usr/bin/env bash
echo "running version $(cat version.txt)"
sleep 60
"""


def jobs_of(env: dict[str, str], project: str) -> list[dict[str, object]]:
    out = c3ctl(env, "squeue", "--json")
    assert out.returncode == 0, out.stderr
    return [j for j in json.loads(out.stdout)["jobs"] if j["project"] == project]


def test_save_supersedes_previous_run(stack_env: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "watched"
    project.mkdir()
    (project / ".c3").write_text("project: watched\nscript: run.sh\n")
    (project / "run.sh").write_text(RUN_SH)
    (project / "version.txt").write_text("1\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "c3ctl.main", "watch"], env=stack_env, cwd=project,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        reader = LineReader(proc)
        reader.wait_for("running version 1")
        first = jobs_of(stack_env, "watched")
        assert [j["status"] for j in first] == ["RUNNING"]

        # An editor's swap file changes nothing.
        (project / ".version.txt.swp").write_text("junk")
        (project / "version.txt").write_text("2\n")
        reader.wait_for("── run 2")
        reader.wait_for("running version 2")
        jobs = eventually_blocking(
            lambda: (js := jobs_of(stack_env, "watched")) and
            {j["id"]: j["status"] for j in js}.get(first[0]["id"]) == "CANCELED" and js,
            what="the first run to be cancelled",
        )
        statuses = sorted(j["status"] for j in jobs)
        assert statuses == ["CANCELED", "RUNNING"], jobs
        assert not any("run 3" in line for _, line in reader.seen), "the swap file triggered a run"

        # Paused: saves pile up; resume deploys once.
        paused = c3ctl(stack_env, "watch", "--pause", cwd=project)
        assert paused.returncode == 0, paused.stderr
        (project / "version.txt").write_text("3\n")
        (project / "version.txt").write_text("4\n")
        resumed = c3ctl(stack_env, "watch", "--resume", cwd=project)
        assert resumed.returncode == 0, resumed.stderr
        reader.wait_for("running version 4")
        assert not any("running version 3" in line for _, line in reader.seen)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for job in jobs_of(stack_env, "watched"):
            if job["status"] in ("RUNNING", "PENDING", "SCHEDULING"):
                c3ctl(stack_env, "cancel", str(job["id"]))


def test_pause_without_watch_says_so(stack_env: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "idle"
    project.mkdir()
    (project / ".c3").write_text("script: run.sh\n")
    (project / "run.sh").write_text("echo hi\n")
    result = c3ctl(stack_env, "watch", "--pause", cwd=project)
    assert result.returncode == 1
    assert "not being watched" in result.stderr
    assert os.path.exists(project / ".c3")


def test_deleting_a_watched_project_ends_watch_with_one_line(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    import shutil

    project = tmp_path / "doomed"
    project.mkdir()
    (project / ".c3").write_text("project: doomed\nscript: run.sh\n")
    (project / "run.sh").write_text("echo doomed run\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "c3ctl.main", "watch"], env=stack_env, cwd=project,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    reader = LineReader(proc)
    reader.wait_for("doomed run")
    shutil.rmtree(project)
    reader.wait_for("was deleted or moved")
    assert proc.wait(timeout=30) == 1
    assert not any("Traceback" in line for _, line in reader.seen)
