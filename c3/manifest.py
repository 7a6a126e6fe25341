"""Manifests: sorted (path, digest, size, executable) entries, stored as blobs themselves.

Paths are validated wherever a manifest is read: relative POSIX, no `..`, no empty or
absolute components, no duplicates. `safe_join` refuses anything that would escape a root,
including through a symlink already on disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from c3.errors import InvalidArgument
from c3.v1 import common_pb2

DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_DIGEST_MATCH = DIGEST_RE.match
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()
HASH_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_buffers = threading.local()


def _chunk_buffer() -> bytearray:
    """This thread's read buffer: hashing a large file allocates nothing per MiB (fresh
    memory for every chunk costs page faults)."""
    buffer = getattr(_buffers, "chunk", None)
    if buffer is None:
        buffer = _buffers.chunk = bytearray(HASH_CHUNK)
    return buffer


def sha256_file(path: str | os.PathLike[str],
                stop: Callable[[], bool] | None = None) -> tuple[str, int]:
    """(hex digest, size) of a file, read in 1 MiB chunks into a reused buffer; blocking,
    run it off the event loop. `stop`, checked between chunks, aborts it (InterruptedError)."""
    buffer = _chunk_buffer()
    view = memoryview(buffer)
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            if stop is not None and stop():
                raise InterruptedError(f"hashing {path} was stopped")
            sha.update(view[:n])
            size += n
    return sha.hexdigest(), size


def check_digest(digest: str) -> str:
    if not DIGEST_RE.match(digest):
        raise InvalidArgument(f"invalid digest {digest!r}: expected 64 lowercase hex characters")
    return digest


def _plainly_safe(path: str) -> bool:
    """Cheap test that accepts most safe paths; anything else gets the full check."""
    return (
        bool(path)
        and path[0] != "/"
        and path[-1] not in "/."
        and path[0] != "."
        and "//" not in path
        and "/." not in path
        and "\\" not in path
        and "\x00" not in path
    )


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


_HEX_DIGITS = b"0123456789abcdef"
# With the paths joined by NUL (which no path may hold) and NUL at both ends, each of
# these marks a path `_plainly_safe` would not pass.
_NOT_PLAINLY_SAFE = ("\x00\x00", "\x00/", "\x00.", "/\x00", ".\x00", "//", "/.", "\\")


def _quickly_valid(paths: list[str], digests: list[str]) -> bool:
    """True when `validate` would pass, decided with whole-list operations that run at C
    speed (a workspace manifest is checked on every job start); False: look closer."""
    if not paths:
        return True
    joined = "\x00" + "\x00".join(paths) + "\x00"
    if joined.count("\x00") != len(paths) + 1 or any(m in joined for m in _NOT_PLAINLY_SAFE):
        return False
    if not all(map(str.__lt__, paths, paths[1:])):  # sorted and unique
        return False
    if set(map(len, digests)) != {64} or "".join(digests).encode().translate(None, _HEX_DIGITS):
        return False
    ancestors: set[str] = set()  # every directory some path lies in
    for parent in {path.rpartition("/")[0] for path in paths}:
        while parent and parent not in ancestors:
            ancestors.add(parent)
            parent = parent.rpartition("/")[0]
    return ancestors.isdisjoint(paths)  # no file is also a directory


def validate(manifest: common_pb2.Manifest) -> None:
    """Safe, sorted, unique paths, and no file that is also another entry's directory.

    O(n): with entries sorted, the entries under "a/" follow "a" after at most other
    entries that start with "a" and a byte below "/" ("a-b", "a.txt"), so a conflict is
    found by scanning forward from "a" only while the next paths still start with "a"."""
    entries = manifest.entries
    paths = [e.path for e in entries]
    digests = [e.digest for e in entries]
    if _quickly_valid(paths, digests):
        return
    previous = ""
    for i, digest in enumerate(digests):
        path = paths[i]
        if not _plainly_safe(path):
            check_relative_path(path)
        if not _DIGEST_MATCH(digest):
            check_digest(digest)
        if i and path <= previous:
            if path == previous:
                raise InvalidArgument(f"duplicate path in manifest: {path!r}")
            raise InvalidArgument("manifest entries are not sorted by path")
        previous = path
    count = len(paths)
    for i, path in enumerate(paths):
        j = i + 1
        while j < count and paths[j].startswith(path):
            if paths[j][len(path)] == "/":
                raise InvalidArgument(f"manifest path {paths[j]!r} lies under file {path!r}")
            if paths[j][len(path)] > "/":
                break  # sorted: nothing after this can start with path + "/"
            j += 1


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
