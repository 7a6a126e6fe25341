"""The `.c3` project file: parse, validate, and turn into a JobSpec.

The file is composed into a YAML node tree (not loaded into plain dicts) so that every
error can name the line it is about. Every problem is a `ConfigError` whose message is one
line: `<path>:<line>: <field>: <problem>; <how to fix>`.

Paths in the file are relative to the directory holding `.c3` (the project root). Paths in
the resulting JobSpec are relative to the workspace root, i.e. prefixed with `workdir`.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import yaml

from c3.config_parse import Parser, fail
from c3.config_rules import (
    FILE_NAME,
    PROJECT_RE,
    DatasetRef,
    ProjectConfig,
    normalise_project_name,
)
from c3.errors import ConfigError
from c3.v1 import common_pb2

__all__ = [
    "FILE_NAME", "PROJECT_RE", "DatasetRef", "ProjectConfig", "find_project_file",
    "job_spec", "load_project", "normalise_project_name",
]  # fmt: skip


def find_project_file(start: Path) -> Path:
    """The nearest `.c3` file in `start` or any directory above it."""
    here = Path(os.path.abspath(start))
    if here.is_file():
        here = here.parent
    looked = [here, *here.parents]
    for directory in looked:
        candidate = directory / FILE_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{here}: no {FILE_NAME} file found here or in any parent directory (looked in "
        f"{looked[0]} up to {looked[-1]}); run `c3 init` in your project folder to create one"
    )


def load_project(path: Path) -> ProjectConfig:
    path = Path(os.path.abspath(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        fail(path, 1, FILE_NAME, "file is not UTF-8 text", "save it as UTF-8")
    except OSError as exc:
        fail(path, 1, FILE_NAME, f"cannot read file ({exc.strerror})", "check it exists and is readable")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        fail(path, line, "yaml", f"invalid YAML: {problem}", "fix the syntax (indentation, quoting, colons)")
    except yaml.YAMLError as exc:
        fail(path, 1, "yaml", f"invalid YAML: {' '.join(str(exc).split())}", "fix the syntax")
    return Parser(path).parse(node)


def job_spec(cfg: ProjectConfig, *, workspace_manifest_digest: str, workdir: str = "") -> common_pb2.JobSpec:
    """The JobSpec for `cfg`; `workdir` is the .c3 directory relative to the workspace root."""
    workdir = workdir.strip("/")

    def in_workspace(rel: str) -> str:
        return posixpath.normpath(posixpath.join(workdir, rel)) if workdir else rel

    return common_pb2.JobSpec(
        project=cfg.project,
        script=in_workspace(cfg.script),
        gpu=cfg.gpu,
        provider=cfg.provider,
        time_limit_seconds=cfg.time_limit_seconds,
        job_name=cfg.job_name,
        python_project=in_workspace(cfg.python_project) if cfg.python_project else "",
        docker_image=cfg.docker_image,
        datasets=[common_pb2.DatasetMount(ref=d.ref, mount=d.mount) for d in cfg.datasets],
        output=[in_workspace(o) for o in cfg.output],
        workspace_manifest_digest=workspace_manifest_digest,
        env_hash=cfg.env_hash(),
        workdir=workdir,
    )
