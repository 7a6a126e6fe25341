"""CLI behaviour that needs no services: usage errors, init, project discovery, completion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.cli import c3ctl, clean_env

pytestmark = pytest.mark.integration


def test_json_and_follow_is_a_usage_error(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "home")
    (tmp_path / ".c3").write_text("script: run.sh\n")
    (tmp_path / "run.sh").write_text("echo hi\n")
    result = c3ctl(env, "deploy", "--json", "-f", cwd=tmp_path)
    assert result.returncode == 2
    assert "--json cannot be combined with -f" in result.stderr


def test_unknown_command_is_usage_error(tmp_path: Path) -> None:
    result = c3ctl(clean_env(tmp_path / "home"), "frobnicate")
    assert result.returncode == 2 and "No such command" in result.stderr


def test_no_project_file_says_where_it_looked(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    result = c3ctl(clean_env(tmp_path / "home"), "deploy", cwd=nested)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert ".c3" in result.stderr and str(nested) in result.stderr


def test_init_writes_a_loadable_project_and_refuses_to_overwrite(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "home")
    project = tmp_path / "My Project"
    project.mkdir()
    first = c3ctl(env, "init", cwd=project)
    assert first.returncode == 0, first.stderr
    assert os.access(project / "run.sh", os.X_OK)
    before = (project / ".c3").read_text()
    assert "project: my-project" in before
    again = c3ctl(env, "init", cwd=project)
    assert again.returncode == 1 and "already" in again.stderr
    assert (project / ".c3").read_text() == before
    listed = c3ctl(env, "ls-files", cwd=project)
    try:
        assert listed.returncode == 0, listed.stderr
        assert {line.split()[-1] for line in listed.stdout.splitlines()} == {".c3", "run.sh"}
    finally:
        c3ctl(env, "daemon", "stop")


def test_completion_scripts(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "home")
    for shell, marker in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "--command c3ctl")):
        result = c3ctl(env, "completion", shell)
        assert result.returncode == 0 and marker in result.stdout, shell
    env.update(COMP_WORDS="c3ctl sq", COMP_CWORD="1", _C3CTL_COMPLETE="bash_complete")
    done = subprocess.run([sys.executable, "-m", "c3ctl.main"], env=env, capture_output=True, text=True)
    assert "squeue" in done.stdout


def test_help_lists_every_documented_verb(tmp_path: Path) -> None:
    result = c3ctl(clean_env(tmp_path / "home"), "--help")
    for verb in ("init", "deploy", "squeue", "logs", "cancel", "pull", "data", "list", "balance",
                 "apikey", "whoami", "watch", "run", "ls-files", "status", "up", "down", "daemon"):
        assert f"  {verb} " in result.stdout, verb


def test_local_file_error_is_one_line(tmp_path: Path) -> None:
    # /proc refuses new files even to root: a local write that fails, as a user would meet it.
    result = c3ctl(clean_env(tmp_path / "home"), "init", cwd=Path("/proc"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "/proc/" in lines[0] and "permissions" in lines[0]
