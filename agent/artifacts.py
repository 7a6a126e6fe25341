"""After a job: everything in its artifacts dir and its `output:` dirs, uploaded through the
dedup transfer and committed as /jobs/<id>.

Symlinks are followed only when they stay inside the job's own directories; directory
symlinks are never followed (no cycles, no escape).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from c3 import manifest as manifests
from c3.errors import InvalidArgument
from c3.storage.client import LocalBlob, StorageClient
from c3.v1 import common_pb2, storage_pb2

log = logging.getLogger(__name__)


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


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real == r or r in real.parents for r in roots)


def collect(sources: list[tuple[Path, str]], allowed_roots: tuple[Path, ...]) -> Collection:
    """Walk (directory, manifest prefix) pairs and hash every regular file (blocking).

    The first source to claim a manifest path wins; later duplicates are noted.
    """
    roots = tuple(Path(os.path.realpath(r)) for r in allowed_roots)
    files: dict[str, CollectedFile] = {}
    skipped: list[str] = []
    for directory, prefix in sources:
        if not directory.is_dir() or directory.is_symlink() or not _inside(directory, roots):
            continue
        for current, dirnames, filenames in os.walk(directory, followlinks=False):
            base = Path(current)
            for name in list(dirnames):
                if (base / name).is_symlink():
                    dirnames.remove(name)
                    skipped.append(f"{base / name}: directory symlink not followed")
            for name in filenames:
                path = base / name
                relative = (f"{prefix}/" if prefix else "") + path.relative_to(directory).as_posix()
                if path.is_symlink() and not _inside(path, roots):
                    skipped.append(f"{relative}: symlink points outside the job; not followed")
                    continue
                try:
                    st = path.stat()
                    manifests.check_relative_path(relative)
                except (OSError, InvalidArgument) as exc:
                    skipped.append(f"{relative}: {exc}")
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                if relative in files:
                    skipped.append(f"{relative}: also in an earlier source; kept the first")
                    continue
                digest, size = manifests.sha256_file(path)
                files[relative] = CollectedFile(relative, path, digest, size,
                                                bool(st.st_mode & 0o111))
    # "a" as a file and "a/b" from another source cannot both be in one manifest.
    names = set(files)
    for relative in sorted(files):
        parent = relative.rpartition("/")[0]
        while parent:
            if parent in names:
                skipped.append(f"{relative}: lies under file {parent}; left out")
                files.pop(relative, None)
                break
            parent = parent.rpartition("/")[0]
    return Collection(tuple(files[k] for k in sorted(files)), tuple(skipped))


async def upload(client: StorageClient, job_id: str, project: str, artifacts_dir: Path,
                 workspace: Path, outputs: list[str]) -> tuple[storage_pb2.VersionInfo, Collection]:
    sources: list[tuple[Path, str]] = [(artifacts_dir, "")]
    for output in outputs:
        relative = output.strip("/")
        manifests.check_relative_path(relative)
        sources.append((workspace / relative, relative))
    collection = await asyncio.to_thread(collect, sources, (artifacts_dir, workspace))
    blobs = [LocalBlob(f.path, f.digest, f.size) for f in collection.files]
    if blobs:
        await client.push_files(blobs)
    manifest = manifests.build(
        common_pb2.ManifestEntry(path=f.relative, digest=f.digest, size=f.size,
                                 executable=f.executable)
        for f in collection.files
    )
    digest = await client.put_manifest(manifest)
    version = await client.commit(f"/jobs/{job_id}", digest,
                                  message=f"artifacts of job {job_id}", project=project)
    return version, collection
