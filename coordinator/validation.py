"""Checks a submitted JobSpec before it becomes a job; each error names the field."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from pathlib import PurePosixPath

from c3.dockerref import validate_image
from c3.errors import InvalidArgument
from c3.limits import MAX_JOBS_PER_SUBMIT
from c3.v1 import common_pb2

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
# A command's argv in all (bytes of its arguments): well under the kernel's ARG_MAX.
MAX_COMMAND_BYTES = 128 * 1024
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _relative(field: str, value: str) -> None:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\\" in value:
        raise InvalidArgument(
            f"spec.{field} {value!r} must be a relative path inside the workspace"
        )


def validate_spec(
    spec: common_pb2.JobSpec,
    gpu_names: Collection[str],
    providers: Collection[str],
) -> None:
    if not _PROJECT.match(spec.project):
        raise InvalidArgument(
            f"spec.project {spec.project!r} must be lowercase letters, digits and hyphens"
        )
    if spec.command:
        _check_command(spec.command)
    elif not spec.script:
        raise InvalidArgument("spec.script is empty: set `script:` in .c3")
    if spec.script:
        _relative("script", spec.script)
    if spec.workdir:
        _relative("workdir", spec.workdir)
    if not _DIGEST.match(spec.workspace_manifest_digest):
        raise InvalidArgument(
            "spec.workspace_manifest_digest must be the 64-hex SHA-256 of the uploaded "
            "workspace manifest"
        )
    if spec.gpu and spec.gpu not in gpu_names:
        known = ", ".join(sorted(gpu_names))
        raise InvalidArgument(
            f"unknown gpu {spec.gpu!r}: use a class or profile ({known}); see `c3ctl list -al`"
        )
    if spec.provider and spec.provider not in providers:
        raise InvalidArgument(
            f"unknown provider {spec.provider!r}: use one of {', '.join(sorted(providers))}"
        )
    if spec.python_project and spec.docker_image:
        raise InvalidArgument("spec sets both python_project and docker_image; choose one")
    if spec.docker_image:
        validate_image(spec.docker_image)
    for i, mount in enumerate(spec.datasets):
        if not mount.mount.startswith("/") or ".." in PurePosixPath(mount.mount).parts:
            raise InvalidArgument(f"spec.datasets[{i}].mount {mount.mount!r} must be absolute")
        if mount.manifest_digest and not _DIGEST.match(mount.manifest_digest):
            raise InvalidArgument(f"spec.datasets[{i}].manifest_digest is not a SHA-256 digest")
    for out in spec.output:
        _relative("output", out)
    _check_array(spec)


def _check_command(command: Sequence[str]) -> None:
    if not command[0]:
        raise InvalidArgument("spec.command[0] is empty: name the program to run")
    for i, arg in enumerate(command):
        if "\0" in arg:
            raise InvalidArgument(
                f"spec.command[{i}] contains a NUL byte, which no program can receive"
            )
    size = sum(len(arg.encode()) + 1 for arg in command)
    if size > MAX_COMMAND_BYTES:
        raise InvalidArgument(
            f"spec.command is {size} bytes, over the limit of {MAX_COMMAND_BYTES}: put long "
            "arguments in a file in the project and pass its path"
        )


def _check_array(spec: common_pb2.JobSpec) -> None:
    if spec.array_size == 0:
        if spec.array_index != 0:
            raise InvalidArgument(
                f"spec.array_index is {spec.array_index} but spec.array_size is 0 (not an "
                "array): set array_size to the number of jobs in the array, or leave both 0"
            )
        return
    if spec.array_size > MAX_JOBS_PER_SUBMIT:
        raise InvalidArgument(
            f"spec.array_size {spec.array_size} is over the limit of {MAX_JOBS_PER_SUBMIT} jobs "
            "per array"
        )
    if spec.array_index >= spec.array_size:
        raise InvalidArgument(
            f"spec.array_index {spec.array_index} is out of range for spec.array_size "
            f"{spec.array_size}: it must be 0 .. {spec.array_size - 1}"
        )
