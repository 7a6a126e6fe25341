"""What a `.c3` file may say: its fields, the patterns their values must match, and the
parsed result (`ProjectConfig`)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from c3.errors import ConfigError

FILE_NAME = ".c3"
FIELDS = ("project", "script", "gpu", "provider", "time", "job_name", "python", "docker",
          "datasets", "output")
PROJECT_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
GPU_RE = re.compile(r"^[a-z0-9]+(?:[-_.][a-z0-9]+)*$")
PROVIDER_RE = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
TIME_RE = re.compile(r"^(\d{1,4}):([0-5]\d):([0-5]\d)$")
# Docker reference: [registry[:port]/]path[:tag][@sha256:...]; repository path is lowercase.
DOCKER_RE = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
VERSION = r"(?:@(?:v\d+|latest))?"
# Namespace refs; the `name` group is what an omitted mount is derived from.
NAMESPACE_RES = (
    re.compile(rf"^/datasets/(?P<name>{NAME}){VERSION}/?$"),
    re.compile(rf"^/jobs/(?P<name>{NAME}){VERSION}/?$"),
    re.compile(rf"^/projects/{NAME}/data/(?P<name>{NAME}){VERSION}/?$"),
    re.compile(rf"^/projects/{NAME}/jobs/(?P<name>{NAME}){VERSION}/?$"),
)
NAMESPACE_ROOTS = ("/datasets/", "/jobs/", "/projects/")
DATA_ROOT = "/data"
WORKSPACE_MOUNT = "/workspace"
# Mounting over these would break the sandbox or hide the job's own files.
FORBIDDEN_UNDER = ("/proc", "/dev", "/sys", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32",
                   "/lib64", "/libx32", "/boot", "/run", "/var", "/tmp", "/root", WORKSPACE_MOUNT)
FORBIDDEN_EXACT = ("/", "/home", "/opt", "/mnt", "/media", "/srv")


@dataclass(frozen=True)
class DatasetRef:
    ref: str
    mount: str
    # Set when `ref` names a local directory: it must be uploaded before the job runs.
    local_dir: Path | None = None


@dataclass(frozen=True)
class ProjectConfig:
    path: Path
    root: Path
    project: str
    script: str
    gpu: str = ""
    provider: str = ""
    time_limit_seconds: int = 0
    job_name: str = ""
    python_project: str = ""
    docker_image: str = ""
    datasets: tuple[DatasetRef, ...] = ()
    output: tuple[str, ...] = ()

    def env_hash(self) -> str:
        """Identity of the Python environment: the project dir and its uv.lock bytes."""
        if not self.python_project:
            return ""
        lock = self.root / self.python_project / "uv.lock"
        try:
            data = lock.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"{self.path}:1: python.project: cannot read {lock} ({exc.strerror}); "
                f"run `uv lock` in {lock.parent}"
            ) from exc
        return env_hash(self.python_project, data)


def normalise_project_name(name: str) -> str:
    """A valid project name made from a folder name ("My Model_v2" -> "my-model-v2")."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63].strip("-")
    return slug or "project"


def env_hash(python_project: str, lock_bytes: bytes) -> str:
    """Identity of a Python environment: its project dir and uv.lock bytes. The client
    computes it for placement and the agent for its environment cache: one formula."""
    return hashlib.sha256(python_project.encode() + b"\0" + lock_bytes).hexdigest()
