"""The `.c3.local` key file must never reach git: warn when git would not ignore it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from c3.userconfig import LOCAL_FILE
from c3ctl import render


def local_key_exposed(project_root: Path) -> bool:
    """True when `project_root` is in a git work tree and git does not ignore .c3.local."""
    git = shutil.which("git")
    if git is None:
        return False
    try:
        inside = subprocess.run(
            [git, "-C", str(project_root), "rev-parse", "--is-inside-work-tree"],
            capture_output=True, text=True, timeout=5,
        )  # fmt: skip
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return False
        ignored = subprocess.run(
            [git, "-C", str(project_root), "check-ignore", "-q", LOCAL_FILE],
            capture_output=True, timeout=5,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return ignored.returncode == 1


def warn_if_local_key_not_ignored(project_root: Path) -> None:
    if local_key_exposed(project_root):
        render.err.print(
            f"warning: {project_root / LOCAL_FILE} holds an API key but git does not ignore it; "
            f"add `{LOCAL_FILE}` to .gitignore so the key is never committed"
        )
