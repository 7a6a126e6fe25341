"""Manifests: sorted (path, digest, size, executable) entries, stored as blobs themselves.

Paths are validated wherever a manifest is read: relative POSIX, no `..`, no empty or
absolute components, no duplicates. `safe_join` refuses anything that would escape a root,
including through a symlink already on disk.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from c3.errors import InvalidArgument
from c3.v1 import common_pb2

DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()
HASH_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(hex digest, size) of a file; blocking, run it off the event loop."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def check_digest(digest: str) -> str:
    if not DIGEST_RE.match(digest):
        raise InvalidArgument(f"invalid digest {digest!r}: expected 64 lowercase hex characters")
    return digest


def check_relative_path(path: str) -> str:
    """Validate one manifest path; return it unchanged."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        raise InvalidArgument(f"unsafe path in manifest: {path!r} (must be relative POSIX)")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidArgument(f"unsafe path in manifest: {path!r} (no '.', '..' or empty parts)")
    return path


def build(entries: Iterable[common_pb2.ManifestEntry]) -> common_pb2.Manifest:
    """A validated manifest with entries sorted by path."""
    manifest = common_pb2.Manifest(entries=sorted(entries, key=lambda e: e.path))
    validate(manifest)
    return manifest


def validate(manifest: common_pb2.Manifest) -> None:
    seen: set[str] = set()
    previous = ""
    for entry in manifest.entries:
        check_relative_path(entry.path)
        check_digest(entry.digest)
        if entry.path in seen:
            raise InvalidArgument(f"duplicate path in manifest: {entry.path!r}")
        if entry.path < previous:
            raise InvalidArgument("manifest entries are not sorted by path")
        seen.add(entry.path)
        previous = entry.path
    # A file may not also be a directory of another entry ("a" and "a/b").
    for entry in manifest.entries:
        parent = PurePosixPath(entry.path).parent
        while str(parent) != ".":
            if str(parent) in seen:
                raise InvalidArgument(
                    f"manifest path {entry.path!r} lies under file {str(parent)!r}"
                )
            parent = parent.parent


def to_bytes(manifest: common_pb2.Manifest) -> bytes:
    return manifest.SerializeToString(deterministic=True)


def digest_of(manifest: common_pb2.Manifest) -> str:
    return sha256_bytes(to_bytes(manifest))


def from_bytes(data: bytes) -> common_pb2.Manifest:
    manifest = common_pb2.Manifest()
    try:
        manifest.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, a bare Exception subclass
        raise InvalidArgument(f"corrupt manifest: {exc}") from exc
    validate(manifest)
    return manifest


def total_size(manifest: common_pb2.Manifest) -> int:
    return sum(e.size for e in manifest.entries)


def safe_join(root: Path, relative: str) -> Path:
    """`root/relative`, refusing paths that escape `root` (also through existing symlinks)."""
    check_relative_path(relative)
    root_real = Path(os.path.realpath(root))
    target = root_real / relative
    parent_real = Path(os.path.realpath(target.parent))
    if parent_real != root_real and root_real not in parent_real.parents:
        raise InvalidArgument(f"path {relative!r} escapes {root} through a symlink")
    if target.is_symlink():
        raise InvalidArgument(f"path {relative!r} is a symlink in {root}; refusing to write through it")
    return target
