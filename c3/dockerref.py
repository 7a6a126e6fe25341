"""`docker.image` references: Docker Hub only.

Accepted: `ubuntu`, `ubuntu:22.04`, `pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime`,
`docker.io/library/python:3.11`, `index.docker.io/...`, optionally pinned `@sha256:<64 hex>`.
Anything naming another registry (a first component with a `.` or `:` or `localhost`) is
refused. The coordinator checks at submit; the agent checks again before it pulls.
"""

from __future__ import annotations

import re

from c3.errors import InvalidArgument

DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def validate_image(reference: str) -> str:
    """The canonical Docker Hub reference (`docker.io/<ns>/<name>[:tag|@digest]`), or
    InvalidArgument saying what is wrong and what is accepted."""
    ref = reference.strip()
    if not ref:
        raise InvalidArgument("docker.image is empty; give a Docker Hub image such as python:3.11")
    rest, _, digest = ref.partition("@")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        if first.lower() not in DOCKER_HUB_HOSTS:
            raise InvalidArgument(
                f"docker.image {reference!r} names the registry {first!r}; only Docker Hub "
                "images are accepted (e.g. python:3.11, pytorch/pytorch:2.3.0-cuda12.1-"
                "cudnn8-runtime or docker.io/library/ubuntu:22.04)")
        rest = remainder
    name, tag = rest, ""
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        name, tag = rest[:colon], rest[colon + 1:]
    if not _NAME.match(name):
        raise InvalidArgument(
            f"docker.image {reference!r}: {name!r} is not a valid image name (lowercase "
            "letters, digits and separators, e.g. pytorch/pytorch)")
    if tag and not _TAG.match(tag):
        raise InvalidArgument(f"docker.image {reference!r}: invalid tag {tag!r}")
    if digest and not _DIGEST.match(digest):
        raise InvalidArgument(
            f"docker.image {reference!r}: digest must be sha256:<64 hex digits>")
    if "/" not in name:
        name = f"library/{name}"
    canonical = f"docker.io/{name}"
    if tag:
        canonical += f":{tag}"
    if digest:
        canonical += f"@{digest}"
    return canonical
