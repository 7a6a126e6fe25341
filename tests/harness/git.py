"""Git for tests, isolated from this machine's git configuration (no global or system
config, no user ignore file) unless a test sets its own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ISOLATED = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, **ISOLATED})


def git_init(root: Path) -> None:
    subprocess.run(["git", "init", "-q", str(root)], check=True, env={**os.environ, **ISOLATED})


def git_files(root: Path, env: dict[str, str] | None = None) -> list[str]:
    """What git would ship at `root`: tracked plus untracked-not-ignored (by default with
    no user ignore file)."""
    env = env or {**os.environ, **ISOLATED, "HOME": str(root), "XDG_CONFIG_HOME": str(root / ".nohome")}
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, env=env, check=True, capture_output=True).stdout
    return sorted(p for p in out.decode("utf-8", "surrogateescape").split("\0") if p)
