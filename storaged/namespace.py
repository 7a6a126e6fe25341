"""Namespace paths of one org.

Leaves (things with versions):
  /datasets/{name}             /projects/{p}/data/{name}
  /jobs/{jobId}                /projects/{p}/jobs/{jobId}   (same data as /jobs/{jobId})
Directories: /, /datasets, /jobs, /projects, /projects/{p}, /projects/{p}/data,
/projects/{p}/jobs. A leaf may carry `@latest` / `@vN` and, for listing, a path inside
its tree: `/datasets/mnist@v2/train`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from c3.errors import InvalidArgument

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_VERSION_RE = re.compile(r"^v([1-9][0-9]{0,8})$")
FORMS = "/datasets/<name>, /jobs/<id>, /projects/<p>/data/<name>, /projects/<p>/jobs/<id>"


@dataclass(frozen=True)
class NsPath:
    """A parsed path. `canonical` is where a leaf's versions are stored (None for dirs)."""

    display: str  # normalized, without version or subpath
    dir_kind: str = ""  # "", "root", "datasets", "jobs", "projects", "project", "data", "pjobs"
    canonical: str | None = None
    project: str = ""
    job_id: str = ""
    version: int | None = None  # None: latest
    subpath: str = ""

    @property
    def is_leaf(self) -> bool:
        return self.canonical is not None


def check_name(name: str, what: str) -> str:
    if name in ("", ".", "..") or ".." in name or not _NAME_RE.match(name):
        raise InvalidArgument(
            f"invalid {what} name {name!r}: use letters, digits, '.', '_' and '-'"
            " (no '/' or '..', at most 128 characters)"
        )
    return name


def _split_version(name: str, text: str) -> tuple[str, int | None]:
    if "@" not in name:
        return name, None
    base, _, tag = name.partition("@")
    if tag == "latest":
        return base, None
    m = _VERSION_RE.match(tag)
    if not m:
        raise InvalidArgument(f"bad version {tag!r} in {text!r}: use @latest or @v1, @v2, …")
    return base, int(m.group(1))


def parse(text: str, *, allow_version: bool = True, allow_subpath: bool = True) -> NsPath:
    if not text.startswith("/"):
        raise InvalidArgument(f"path {text!r} must be absolute, one of {FORMS}")
    parts = [p for p in text.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise InvalidArgument(f"path {text!r} may not contain '.' or '..'")
    head = parts[0] if parts else ""
    if not parts:
        return NsPath("/", "root")
    if head in ("datasets", "jobs"):
        if len(parts) == 1:
            return NsPath(f"/{head}", head)
        leaf_at, kind = 1, "dataset" if head == "datasets" else "job"
        prefix, project = f"/{head}", ""
    elif head == "projects":
        if len(parts) == 1:
            return NsPath("/projects", "projects")
        project = check_name(parts[1], "project")
        if len(parts) == 2:
            return NsPath(f"/projects/{project}", "project", project=project)
        if parts[2] not in ("data", "jobs"):
            raise InvalidArgument(f"unknown path {text!r}: expected one of {FORMS}")
        sub = parts[2]
        if len(parts) == 3:
            return NsPath(
                f"/projects/{project}/{sub}", "data" if sub == "data" else "pjobs", project=project
            )
        leaf_at, kind = 3, "dataset" if sub == "data" else "job"
        prefix = f"/projects/{project}/{sub}"
    else:
        raise InvalidArgument(f"unknown path {text!r}: expected one of {FORMS}")

    name, version = _split_version(parts[leaf_at], text)
    if version is not None and not allow_version:
        raise InvalidArgument(f"{text!r}: a version cannot be given here")
    rest = parts[leaf_at + 1 :]
    if rest and not allow_subpath:
        raise InvalidArgument(
            f"invalid {kind} name {'/'.join(parts[leaf_at:])!r} in {text!r}: names may not contain '/'"
        )
    check_name(name, "job id" if kind == "job" else "dataset")
    display = f"{prefix}/{name}"
    canonical = f"/jobs/{name}" if kind == "job" else display
    return NsPath(
        display,
        canonical=canonical,
        project=project,
        job_id=name if kind == "job" else "",
        version=version,
        subpath="/".join(rest),
    )


def leaf_name(canonical: str) -> str:
    return canonical.rsplit("/", 1)[1]
