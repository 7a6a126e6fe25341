"""After a job: everything in its artifacts dir and its `output:` dirs, uploaded through the
dedup transfer and committed as /jobs/<id>.

What a job leaves is hostile input, so collection decides from `lstat` alone, before
reading a byte: a file over the per-file limit (a `truncate -s 1T` sparse file included),
a FIFO, a socket, a device, a name with a control character (a newline, an escape
sequence for the user's terminal) is left out at once with one note each, and a job that
leaves more files than the limit is stopped counting at the limit. Symlinks are followed
only to regular files inside the job's own directories; directory symlinks never (no
cycles, no escape, a symlink to `/` is one note). Hashing stops the moment the job is
canceled (`stop`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from c3 import manifest as manifests
from c3.errors import C3Error, InvalidArgument
from c3.storage.client import LocalBlob, StorageClient
from c3.v1 import common_pb2, storage_pb2

log = logging.getLogger(__name__)

# The store's own default per-blob limit (storaged --max-blob-bytes).
DEFAULT_MAX_FILE_BYTES = 64 << 30
DEFAULT_MAX_FILES = 20_000


@dataclass(frozen=True)
class ArtifactLimits:
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_files: int = DEFAULT_MAX_FILES


@dataclass(frozen=True)
class CollectedFile:
    relative: str
    path: Path
    digest: str
    size: int
    executable: bool


@dataclass(frozen=True)
class Collection:
    files: tuple[CollectedFile, ...]
    skipped: tuple[str, ...]  # human-readable notes: why a path was left out
    # Why the artifacts cannot be committed whole (over a limit); empty when they can.
    refused: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Found:
    relative: str
    path: Path
    size: int
    executable: bool


def _gib(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def _shown(relative: str) -> str:
    """A path as a log line may show it: control characters escaped, one line always."""
    if relative.isprintable():
        return relative
    return repr(relative)[1:-1]


def _kind(mode: int) -> str:
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")


def _inside(real: str, roots: tuple[str, ...]) -> bool:
    return any(real == r or real.startswith(r + os.sep) for r in roots)


def survey(sources: list[tuple[Path, str]], allowed_roots: tuple[Path, ...],
           limits: ArtifactLimits = ArtifactLimits(),
           stop: threading.Event | None = None) -> tuple[list[_Found], list[str], list[str]]:
    """Walk (directory, manifest prefix) pairs with lstat only (blocking, reads no file).
    Returns (files to hash, notes, refusals). The first source to claim a path wins."""
    roots = tuple(os.path.realpath(r) for r in allowed_roots)
    found: dict[str, _Found] = {}
    notes: list[str] = []
    refused: list[str] = []
    for directory, prefix in sources:
        if directory.is_symlink() or not directory.is_dir():
            continue
        if not _inside(os.path.realpath(directory), roots):
            continue
        stack = [(directory, prefix)]
        while stack:
            if stop is not None and stop.is_set():
                raise InterruptedError("artifact collection was stopped")
            current, rel_dir = stack.pop()
            try:
                entries = sorted(os.scandir(current), key=lambda e: e.name)
            except OSError as exc:
                notes.append(f"{_shown(rel_dir or '.')}: cannot list: {exc.strerror}")
                continue
            for entry in entries:
                relative = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                shown = _shown(relative)
                if not entry.name.isprintable():
                    notes.append(f"{shown}: control characters in the name; left out")
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError as exc:
                    notes.append(f"{shown}: {exc.strerror}; left out")
                    continue
                path = Path(entry.path)
                if stat.S_ISLNK(st.st_mode):
                    real = os.path.realpath(path)
                    if not _inside(real, roots):
                        notes.append(f"{shown}: symlink points outside the job; not followed")
                        continue
                    try:
                        st = os.lstat(real)
                    except OSError:
                        notes.append(f"{shown}: dangling symlink; left out")
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        notes.append(f"{shown}: directory symlink not followed")
                        continue
                    path = Path(real)
                elif stat.S_ISDIR(st.st_mode):
                    stack.append((path, relative))
                    continue
                if not stat.S_ISREG(st.st_mode):
                    notes.append(f"{shown}: {_kind(st.st_mode)}; left out")
                    continue
                if st.st_size > limits.max_file_bytes:
                    why = (f"{shown}: {_gib(st.st_size)}, over the per-file limit of "
                           f"{_gib(limits.max_file_bytes)}; left out")
                    notes.append(why)
                    refused.append(why)
                    continue
                try:
                    manifests.check_relative_path(relative)
                except InvalidArgument as exc:
                    notes.append(f"{shown}: {exc}")
                    continue
                if relative in found:
                    notes.append(f"{shown}: also in an earlier source; kept the first")
                    continue
                if len(found) >= limits.max_files:
                    why = (f"more than {limits.max_files} artifact files (the limit); "
                           f"counting stopped at {shown}: pack them (tar) or write fewer")
                    notes.append(why)
                    refused.append(why)
                    return list(found.values()), notes, refused
                found[relative] = _Found(relative, path, st.st_size, bool(st.st_mode & 0o111))
    # "a" as a file and "a/b" from another source cannot both be in one manifest.
    names = set(found)
    for relative in sorted(found):
        parent = relative.rpartition("/")[0]
        while parent:
            if parent in names:
                notes.append(f"{_shown(relative)}: lies under file {_shown(parent)}; left out")
                found.pop(relative, None)
                break
            parent = parent.rpartition("/")[0]
    return [found[k] for k in sorted(found)], notes, refused


def collect(sources: list[tuple[Path, str]], allowed_roots: tuple[Path, ...],
            limits: ArtifactLimits = ArtifactLimits(),
            stop: threading.Event | None = None, partial: bool = False) -> Collection:
    """`survey`, then hash what it found (blocking). When a limit refuses the collection
    nothing is read, unless `partial` (a failed script: keep what is within the limits)."""
    found, notes, refused = survey(sources, allowed_roots, limits, stop)
    if refused and not partial:
        return Collection((), tuple(notes), tuple(refused))
    stopped = (lambda: stop.is_set()) if stop is not None else None
    files = []
    for f in found:
        try:  # the job's processes are gone: nothing can swap the file under us
            digest, size = manifests.sha256_file(f.path, stopped)
        except OSError as exc:
            if isinstance(exc, InterruptedError):
                raise
            notes.append(f"{_shown(f.relative)}: {exc.strerror or exc}; left out")
            continue
        files.append(CollectedFile(f.relative, f.path, digest, size, f.executable))
    return Collection(tuple(files), tuple(notes), tuple(refused))


def sources_of(artifacts_dir: Path, workspace: Path, outputs: list[str]
               ) -> list[tuple[Path, str]]:
    """The artifacts dir and each `output:` dir (raises InvalidArgument naming a bad one)."""
    sources: list[tuple[Path, str]] = [(artifacts_dir, "")]
    for output in outputs:
        relative = output.strip("/")
        try:
            manifests.check_relative_path(relative)
        except InvalidArgument:
            raise InvalidArgument(
                f"output {output!r} is not a directory inside the workspace; fix `output:` "
                "in .c3 (a relative path without '..')") from None
        sources.append((workspace / relative, relative))
    return sources


async def upload(client: StorageClient, job_id: str, project: str, collection: Collection
                 ) -> storage_pb2.VersionInfo:
    """Push the collected files the store lacks and commit them as /jobs/<job_id>."""
    blobs = [LocalBlob(f.path, f.digest, f.size) for f in collection.files]
    if blobs:
        await client.push_files(blobs)
    manifest = manifests.build(
        common_pb2.ManifestEntry(path=f.relative, digest=f.digest, size=f.size,
                                 executable=f.executable)
        for f in collection.files
    )
    digest = await client.put_manifest(manifest)
    return await client.commit(f"/jobs/{job_id}", digest,
                               message=f"artifacts of job {job_id}", project=project)


async def collect_off_loop(sources: list[tuple[Path, str]], roots: tuple[Path, ...],
                           limits: ArtifactLimits, partial: bool = False) -> Collection:
    """`collect` in a thread, stopped promptly when the awaiting task is cancelled."""
    stop = threading.Event()
    try:
        return await asyncio.to_thread(collect, sources, roots, limits, stop, partial)
    finally:
        stop.set()


@dataclass(frozen=True)
class Committed:
    path: str = ""
    version: int = 0
    # Why a successful script's artifacts were not committed (the job fails UPLOAD_ERROR).
    failure: str = ""


async def collect_and_commit(client: StorageClient, job_id: str, project: str,
                             artifacts_dir: Path, workspace: Path, outputs: list[str],
                             limits: ArtifactLimits, say: Callable[[str], None],
                             script_ok: bool) -> Committed:
    """After the script: collect, upload and commit the job's artifacts, saying what was
    left out and why. A successful script's artifacts over a limit fail it at once (before
    a byte is read); a failed script's keep what is within the limits."""
    try:
        sources = sources_of(artifacts_dir, workspace, outputs)
        collection = await collect_off_loop(sources, (artifacts_dir, workspace), limits,
                                            partial=not script_ok)
        for note in collection.skipped:
            say(f"c3: artifact skipped: {note}")
        if collection.refused and script_ok:
            why = "; ".join(collection.refused[:3])
            say(f"c3: artifacts not uploaded: {why}")
            return Committed(failure="the script succeeded but its artifacts are over a "
                                     f"limit: {why}")
        info = await upload(client, job_id, project, collection)
        say(f"c3: {len(collection.files)} artifact files committed to {info.path} "
            f"(v{info.version})")
        return Committed(info.path, info.version)
    except (C3Error, OSError) as exc:
        say(f"c3: artifact upload failed: {exc}")
        if script_ok:
            return Committed(failure="the script succeeded but its artifacts could not be "
                                     f"uploaded: {exc}")
        return Committed()
