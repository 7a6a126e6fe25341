"""Manifest validation: what a store and every reader refuse, and what they accept."""

from __future__ import annotations

import pytest

from c3 import manifest as mf
from c3.errors import InvalidArgument
from c3.v1 import common_pb2

DIGEST = "ab" * 32


def _manifest(*paths: str, digest: str = DIGEST) -> common_pb2.Manifest:
    return common_pb2.Manifest(
        entries=[common_pb2.ManifestEntry(path=p, digest=digest) for p in paths]
    )


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (("a", "a/b"), r"'a/b' lies under file 'a'"),
        # Entries sorting between "a" and "a/…" ('-' and '.' sort before '/') must not hide it.
        (("a", "a-b", "a.txt", "a/b"), r"'a/b' lies under file 'a'"),
        (("x/a", "x/a-1", "x/a/c/d"), r"'x/a/c/d' lies under file 'x/a'"),
        (("a", "a"), r"duplicate path"),
        (("b", "a"), r"not sorted"),
        (("../etc/passwd",), r"unsafe path"),
        (("a/../../b",), r"unsafe path"),
        (("/abs",), r"unsafe path"),
        (("a//b",), r"unsafe path"),
        (("dir/",), r"unsafe path"),
        ((".",), r"unsafe path"),
        (("a/./b",), r"unsafe path"),
        (("a\\b",), r"unsafe path"),
        (("nul\x00",), r"unsafe path"),
    ],
)
def test_bad_manifests_are_refused_with_the_path(paths: tuple[str, ...], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        mf.validate(_manifest(*paths))


def test_bad_digest_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="invalid digest"):
        mf.validate(_manifest("a", digest="AB" * 32))


def test_tricky_but_valid_paths_pass() -> None:
    tricky = ["a-b", "a.txt", "a0", "ab/c", "b", "x/.gitignore", "x/..data", "y.d/z"]
    mf.validate(_manifest(*sorted(tricky)))
    many = sorted(f"src{i // 200:03d}/f{i:05d}.txt" for i in range(20_000))
    mf.validate(_manifest(*many))
