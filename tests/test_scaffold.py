"""`c3 init`: a commented .c3 that loads cleanly, an executable run.sh, never overwriting."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from c3.config import load_project
from c3.errors import ConfigError
from c3.scaffold import init_project

pytestmark = pytest.mark.unit


def test_init_writes_loadable_project(tmp_path: Path) -> None:
    root = tmp_path / "My Experiment"
    root.mkdir()
    written = init_project(root)
    assert written == [root / "run.sh", root / ".c3"]
    assert os.access(root / "run.sh", os.X_OK)
    text = (root / ".c3").read_text()
    assert text.count("#") > 10  # commented, documenting the options
    for option in ("gpu:", "python:", "docker:", "datasets:", "job_name:", "output:"):
        assert option in text
    cfg = load_project(root / ".c3")
    assert cfg.project == "my-experiment"
    assert cfg.script == "run.sh"
    assert cfg.time_limit_seconds == 3600
    assert cfg.output == ("results",)


def test_generated_script_runs(tmp_path: Path) -> None:
    init_project(tmp_path)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    result = subprocess.run(["bash", "run.sh"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "C3_ARTIFACTS_DIR": str(artifacts)}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "hello from c3" in result.stdout
    assert (artifacts / "started.txt").exists()


def test_init_keeps_existing_script_and_takes_project_name(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("echo mine\n")
    assert init_project(tmp_path, project="custom-name") == [tmp_path / ".c3"]
    assert (tmp_path / "run.sh").read_text() == "echo mine\n"
    assert load_project(tmp_path / ".c3").project == "custom-name"


def test_init_refuses_existing_c3(tmp_path: Path) -> None:
    (tmp_path / ".c3").write_text("script: mine.sh\n")
    with pytest.raises(ConfigError) as info:
        init_project(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / '.c3'}:1: .c3: already exists")
    assert (tmp_path / ".c3").read_text() == "script: mine.sh\n"
    assert not (tmp_path / "run.sh").exists()


def test_init_refuses_bad_project_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"project: 'Bad_Name' is not a valid name.*'bad-name'"):
        init_project(tmp_path, project="Bad_Name")
    assert not (tmp_path / ".c3").exists() and not (tmp_path / "run.sh").exists()


def test_init_in_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        init_project(tmp_path / "nope")
