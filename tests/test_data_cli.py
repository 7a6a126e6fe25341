"""`c3ctl data …` against the real local stack (coordinator + storaged on free ports)."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.harness.cli import c3ctl

pytestmark = pytest.mark.e2e


def _ok(env: dict[str, str], *args: str) -> tuple[str, str]:
    result = c3ctl(env, "data", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def _fails_cleanly(env: dict[str, str], *args: str, match: str) -> None:
    result = c3ctl(env, "data", *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(match, lines[0]), lines[0]


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _make_dataset(root: Path) -> None:
    (root / "train").mkdir(parents=True)
    (root / "train" / "a.txt").write_text("alpha\n" * 5000)
    (root / "train" / "b.bin").write_bytes(os.urandom(200_000))
    (root / "labels.csv").write_text("id,label\n" + "".join(f"{i},{i % 10}\n" for i in range(3000)))
    # Old enough that the stat index trusts them (racy-window rule) on the second upload.
    past = time.time() - 60
    for p in root.rglob("*"):
        os.utime(p, (past, past))


def test_cp_twice_makes_two_versions_and_moves_only_the_change(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "mnist"
    _make_dataset(src)
    v1_tree = _tree(src)

    _, err = _ok(stack_env, "cp", str(src), "/datasets/mnist")
    assert "/datasets/mnist@v1" in err
    assert "3 files scanned" in err and "3 new" in err

    new_labels = b"id,label\n0,1\n"
    (src / "labels.csv").write_bytes(new_labels)
    _, err = _ok(stack_env, "cp", str(src), "/datasets/mnist")
    assert "/datasets/mnist@v2" in err
    assert "1 hashed" in err and "1 new" in err
    sent = re.search(r"new, (\d+) B sent", err)
    assert sent is not None and int(sent.group(1)) < 200, err  # a 13-byte file, not 200 KB

    log = json.loads(_ok(stack_env, "log", "--json", "/datasets/mnist")[0])
    assert [v["version"] for v in log["versions"]] == [1, 2]
    assert [v["files"] for v in log["versions"]] == [3, 3]
    table = _ok(stack_env, "log", "/datasets/mnist")[0]
    assert table.split()[:4] == ["VERSION", "CREATED", "FILES", "SIZE"]
    assert "v1" in table and "v2" in table

    assert "mnist/" in _ok(stack_env, "ls", "/datasets")[0].split()
    listing = json.loads(_ok(stack_env, "ls", "--json", "/datasets/mnist@v1")[0])
    names = {e["name"]: e for e in listing["entries"]}
    assert set(names) == {"labels.csv", "train"} and names["train"]["is_dir"]
    assert names["labels.csv"]["size"] == len(v1_tree["labels.csv"])
    long = _ok(stack_env, "ls", "-l", "/datasets/mnist/train")[0]
    assert "a.txt" in long and "b.bin" in long and "MODIFIED" in long

    usage = json.loads(_ok(stack_env, "du", "--json", "/datasets/mnist")[0])
    logical_v1 = sum(len(b) for b in v1_tree.values())
    assert usage["versions"] == 2 and usage["files"] == 6
    assert usage["logical_bytes"] == logical_v1 + logical_v1 - len(v1_tree["labels.csv"]) + len(new_labels)
    # Stored once and compressed: well under the logical size of the two versions.
    assert 200_000 < usage["stored_bytes"] < usage["logical_bytes"] // 2 + 50_000

    # Download v1 and latest: byte-for-byte what was uploaded.
    out1 = tmp_path / "out1"
    _, err = _ok(stack_env, "cp", "/datasets/mnist@v1", str(out1))
    assert _tree(out1) == v1_tree
    out2 = tmp_path / "out2"
    _ok(stack_env, "cp", "/datasets/mnist", str(out2))
    assert _tree(out2) == _tree(src)


def test_rm_needs_r_for_a_dataset(stack_env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "scratch"
    _make_dataset(src)
    _ok(stack_env, "cp", str(src), "/datasets/scratch")
    _fails_cleanly(stack_env, "rm", "/datasets/scratch", match=r"-r")
    assert "scratch/" in _ok(stack_env, "ls", "/datasets")[0].split()
    _, err = _ok(stack_env, "rm", "-r", "/datasets/scratch")
    assert "removed 1 version" in err
    assert "scratch/" not in _ok(stack_env, "ls", "/datasets")[0].split()
    _fails_cleanly(stack_env, "log", "/datasets/scratch", match=r"no such path /datasets/scratch")


def test_bad_input_is_one_line(stack_env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "d"
    _make_dataset(src)
    _fails_cleanly(stack_env, "cp", str(src), "/datasets/a..b", match=r"invalid dataset name")
    _fails_cleanly(stack_env, "cp", str(src), "/datasets/x/y", match=r"cannot upload to")
    _fails_cleanly(stack_env, "cp", str(tmp_path / "nope"), "/datasets/x", match=r"not a directory")
    (src / ".gitignore").write_text("*.tmp\n")
    (src / "junk.tmp").write_text("scratch\n")
    _, err = _ok(stack_env, "cp", str(src), "/datasets/known")
    assert "1 path(s) left out by ignore rules" in err and "junk.tmp" in err
    _fails_cleanly(
        stack_env, "cp", "/datasets/known@v9", str(tmp_path / "o"), match=r"has no version v9"
    )
    _fails_cleanly(stack_env, "ls", "/datasets/unknown", match=r"no such path")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
