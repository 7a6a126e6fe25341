"""`c3ctl init`: a commented .c3 and a run.sh."""

from __future__ import annotations

from pathlib import Path

import click

from c3.scaffold import init_project
from c3ctl import render


@click.command()
@click.option("--project", default=None, help="Project name (default: from the folder name).")
def init(project: str | None) -> None:
    """Write a commented .c3 and run.sh here (never overwrites an existing .c3)."""
    written = init_project(Path.cwd(), project=project)
    for path in written:
        render.err.print(f"wrote {path.relative_to(Path.cwd())}")
    render.err.print("next: edit run.sh, then `c3ctl deploy -f`")
