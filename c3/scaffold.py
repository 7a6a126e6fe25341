"""What `c3 init` writes: a commented `.c3` with sensible defaults and an executable `run.sh`."""

from __future__ import annotations

import os
from pathlib import Path

from c3.config import FILE_NAME, PROJECT_RE, load_project, normalise_project_name
from c3.errors import ConfigError

SCRIPT_NAME = "run.sh"

C3_TEMPLATE = """\
# c3 project file. `c3 deploy` (from this folder or any folder below it) runs `script`
# on a remote GPU. Paths are relative to this file.

# Project name: lowercase letters, digits and hyphens.
project: {project}

# The bash script that runs your job.
script: {script}

# GPU: a class (l40, a100, h100, or cpu for no GPU), or an exact profile code from
# `c3 list -al` such as l40-1x or a100-80gb-2x. Leave it out to take any GPU.
# gpu: l40

# Maximum runtime (HH:MM:SS). You only pay for what the job actually uses.
time: "01:00:00"

# Display name shown by `c3 squeue`.
# job_name: first-run

# Environment (pick at most one):
# python:
#   project: ./          # a directory holding pyproject.toml and uv.lock (`uv lock`)
# docker:
#   image: pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime

# Datasets mounted read-only into the job. `ref` is a storage path (upload with
# `c3 data cp ./local-data/ /datasets/my-dataset/`) or a local directory to upload first.
# `mount` defaults to /data/<name>; a relative mount like `mydata` means /data/mydata.
# datasets:
#   - ref: /datasets/my-dataset
#   - ref: /datasets/my-dataset@v2
#     mount: /data/pinned
#   - ref: /jobs/<job-id>          # an earlier job's artifacts

# Directories collected as artifacts after the run (besides $C3_ARTIFACTS_DIR);
# `c3 pull` downloads them.
output:
  - ./results
"""

RUN_TEMPLATE = """\
#!/bin/bash
# Runs on the remote machine. $C3_JOB_WORKDIR is your project; anything written to
# $C3_ARTIFACTS_DIR (or to an `output:` directory from .c3) comes back with `c3 pull`.
set -euo pipefail

echo "hello from c3 on $(hostname)"
nvidia-smi || echo "no GPU visible"
mkdir -p results
date > "$C3_ARTIFACTS_DIR/started.txt"
"""


def init_project(directory: Path, *, project: str | None = None) -> list[Path]:
    """Write `.c3` (and `run.sh` unless one exists) into `directory`; returns what was written.

    Refuses when `.c3` already exists. `project` defaults to the normalised folder name.
    """
    directory = Path(os.path.abspath(directory))
    config_path = directory / FILE_NAME
    if os.path.lexists(config_path):
        raise ConfigError(
            f"{config_path}:1: {FILE_NAME}: already exists; edit it, or delete it first to start over"
        )
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory; create it first (mkdir -p {directory})")
    name = project if project is not None else normalise_project_name(directory.name)
    if not PROJECT_RE.match(name):
        raise ConfigError(
            f"{config_path}:1: project: {name!r} is not a valid name (lowercase letters, digits and "
            f"hyphens, at most 63); use e.g. {normalise_project_name(name)!r}"
        )
    written: list[Path] = []
    script = directory / SCRIPT_NAME
    if not os.path.lexists(script):
        script.write_text(RUN_TEMPLATE, encoding="utf-8")
        script.chmod(0o755)
        written.append(script)
    try:
        # "x": never clobber a .c3 that appeared since the check above.
        with open(config_path, "x", encoding="utf-8") as f:
            f.write(C3_TEMPLATE.format(project=name, script=SCRIPT_NAME))
    except FileExistsError as exc:
        raise ConfigError(f"{config_path}:1: {FILE_NAME}: already exists; edit it instead") from exc
    written.append(config_path)
    load_project(config_path)  # what we wrote must load cleanly
    return written
