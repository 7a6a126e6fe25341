"""Manifest validation: what a store and every reader refuse, and what they accept."""

from __future__ import annotations

import random

import pytest

from c3 import manifest as mf
from c3.errors import DataLoss, InvalidArgument
from c3.storage import codec
from c3.storage.client import _checked_manifest
from c3.v1 import common_pb2, storage_pb2

pytestmark = pytest.mark.unit


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


def _outcome(manifest: common_pb2.Manifest) -> str:
    try:
        mf.validate(manifest)
    except InvalidArgument as exc:
        return f"refused: {exc}"
    return "valid"


def test_the_fast_whole_list_check_agrees_with_the_entry_by_entry_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(7)
    cases = []
    for _ in range(3000):
        paths = []
        for _ in range(rng.randint(1, 5)):
            path = "".join(rng.choices("ab/", weights=(4, 4, 1), k=rng.randint(1, 6)))
            if rng.random() < 0.2:  # now and then something unsafe somewhere
                at = rng.randint(0, len(path))
                path = path[:at] + rng.choice([".", "..", "/", "\\", "\x00", "-"]) + path[at:]
            paths.append(path)
        if rng.random() < 0.8:
            paths.sort()
        digest = DIGEST if rng.random() < 0.9 else rng.choice([DIGEST.upper(), DIGEST[:63], DIGEST[:63] + "g"])
        cases.append(_manifest(*paths, digest=digest))
    fast = [_outcome(m) for m in cases]
    monkeypatch.setattr(mf, "_quickly_valid", lambda paths, digests: False)
    careful = [_outcome(m) for m in cases]
    assert fast == careful
    assert 300 < fast.count("valid") < 2900  # both kinds were exercised


def test_a_plain_workspace_manifest_takes_the_fast_check() -> None:
    paths = sorted(f"src{i // 200:03d}/mod_{i:05d}.py" for i in range(2000))
    assert mf._quickly_valid(paths, [DIGEST] * len(paths))
    assert not mf._quickly_valid(["a", "a/b"], [DIGEST] * 2)


def test_a_manifest_reply_is_decompressed_and_checked_against_its_digest() -> None:
    manifest = _manifest("a", "b/c")
    data = mf.to_bytes(manifest)
    digest = mf.sha256_bytes(data)
    compression, payload = codec.compress(data)
    reply = storage_pb2.GetManifestResponse(data=payload, compression=compression, size=len(data))  # type: ignore[arg-type]
    assert _checked_manifest(digest, reply) == manifest
    other = mf.sha256_bytes(b"another manifest")
    with pytest.raises(DataLoss, match="does not match its digest"):
        _checked_manifest(other, reply)
    truncated = storage_pb2.GetManifestResponse(data=data[:-1], size=len(data))
    with pytest.raises(DataLoss):
        _checked_manifest(digest, truncated)
