"""The daemon's live index: after changes reported by the watcher it yields exactly the
manifest a full scan would, hashing only what changed; editor temp files and ignored
paths never count as changes; a watcher that cannot start falls back to polling."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from c3 import workspace
from c3.errors import PermissionDenied
from c3.storage.hashindex import HashIndex
from c3d.hotindex import ProjectIndex
from c3d.projects import Projects
from tests.harness.git import git
from tests.harness.waiting import eventually

pytestmark = pytest.mark.unit


@pytest.fixture
async def hashes(tmp_path: Path) -> AsyncIterator[HashIndex]:
    async with HashIndex(tmp_path / "index.sqlite") as index:
        yield index


def make_tree(root: Path) -> None:
    (root / "src" / "deep").mkdir(parents=True)
    (root / ".gitignore").write_text("*.log\nbuild/\n")
    (root / "run.sh").write_text("echo hi\n")
    for i in range(30):
        (root / "src" / f"m{i}.py").write_text(f"x = {i}\n")
    (root / "src" / "deep" / "a.txt").write_text("a\n")


async def full_manifest(root: Path, hashes: HashIndex) -> list[tuple[str, str, int]]:
    files = await asyncio.to_thread(workspace.scan, root)
    entries, _ = await hashes.digests(root, [(f.path, f.stat) for f in files])
    return [(e.path, e.digest, e.size) for e in entries]


def as_tuples(tree) -> list[tuple[str, str, int]]:  # type: ignore[no-untyped-def]
    return [(e.path, e.digest, e.size) for e in tree.entries]


async def test_incremental_changes_match_full_scan(tmp_path: Path, hashes: HashIndex) -> None:
    root = tmp_path / "p"
    root.mkdir()
    make_tree(root)
    index = ProjectIndex(root, hashes)
    tree, stats = await index.manifest()
    assert stats.files_scanned == 33 and as_tuples(tree) == await full_manifest(root, hashes)

    (root / "src" / "m1.py").write_text("x = 'changed'\n")
    (root / "src" / "new.py").write_text("new\n")
    (root / "src" / "m2.py").unlink()
    (root / "debug.log").write_text("ignored\n")
    relevant = index.note_changes({str(root / p) for p in ("src/m1.py", "src/new.py", "src/m2.py", "debug.log")})
    assert relevant == {"src/m1.py", "src/new.py", "src/m2.py"}
    tree, stats = await index.manifest()
    assert stats.files_hashed == 2  # m1 and new; nothing else re-read
    assert as_tuples(tree) == await full_manifest(root, hashes)

    # A removed directory drops everything below it.
    for child in (root / "src" / "deep").iterdir():
        child.unlink()
    (root / "src" / "deep").rmdir()
    index.note_changes({str(root / "src" / "deep")})
    tree, _ = await index.manifest()
    assert not any(e.path.startswith("src/deep/") for e in tree.entries)
    assert as_tuples(tree) == await full_manifest(root, hashes)

    # A new .gitignore rule changes the file set: the index rescans.
    (root / ".gitignore").write_text("*.log\nbuild/\nsrc/m3.py\n")
    assert index.note_changes({str(root / ".gitignore")})
    tree, _ = await index.manifest()
    assert "src/m3.py" not in [e.path for e in tree.entries]
    assert as_tuples(tree) == await full_manifest(root, hashes)


async def test_editor_temp_files_are_not_changes(tmp_path: Path, hashes: HashIndex) -> None:
    root = tmp_path / "p"
    root.mkdir()
    make_tree(root)
    index = ProjectIndex(root, hashes)
    await index.manifest()
    for name in (".run.sh.swp", "4913", "run.sh~", ".DS_Store", "#run.sh#"):
        (root / name).write_text("junk")
    assert index.note_changes({str(root / n) for n in (".run.sh.swp", "4913", "run.sh~", ".DS_Store", "#run.sh#")}) == set()


async def test_unreadable_file_is_one_clear_error(
    tmp_path: Path, hashes: HashIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "p"
    root.mkdir()
    make_tree(root)
    (root / "secret.txt").write_text("x")
    (root / "secret.txt").chmod(0)
    if os.getuid() == 0:
        # Root reads any file whatever its mode: make the read fail as it would for a user.
        import c3.storage.hashindex

        real = c3.storage.hashindex.sha256_file

        def refuse(path):  # type: ignore[no-untyped-def]
            if str(path).endswith("secret.txt"):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(c3.storage.hashindex, "sha256_file", refuse)
    with pytest.raises(PermissionDenied, match=r"secret\.txt: Permission denied"):
        await ProjectIndex(root, hashes).manifest()


async def test_live_watcher_feeds_the_index(tmp_path: Path, hashes: HashIndex) -> None:
    root = tmp_path / "p"
    root.mkdir()
    make_tree(root)
    projects = Projects(hashes)
    try:
        project = await projects.get(root)
        await project.index.manifest()
        seen: asyncio.Queue[set[str]] = asyncio.Queue()
        project.listeners.add(seen.put_nowait)
        (root / "src" / "m5.py").write_text("x = 'saved'\n")
        changed = await asyncio.wait_for(seen.get(), timeout=10)
        assert changed == {"src/m5.py"}
        tree, stats = await project.index.manifest()
        assert stats.files_hashed == 1
        assert as_tuples(tree) == await full_manifest(root, hashes)
    finally:
        await projects.close()


class _FailingThenPolling:
    """A watcher factory whose native watcher fails (as at the inotify limit)."""

    def __init__(self) -> None:
        self.polling_started = False

    def __call__(self, root: Path, force_polling: bool):  # type: ignore[no-untyped-def]
        factory = self

        class W:
            def start(self, loop, on_change):  # type: ignore[no-untyped-def]
                if not force_polling:
                    raise OSError(28, "inotify watch limit reached")
                factory.polling_started = True

            def stop(self) -> None:
                pass

        return W()


async def test_watch_limit_falls_back_to_polling_with_a_warning(tmp_path: Path, hashes: HashIndex) -> None:
    factory = _FailingThenPolling()
    projects = Projects(hashes, watcher_factory=factory)
    project = await projects.get(tmp_path)
    assert project.polling and factory.polling_started
    assert any("falling back to polling" in w and "max_user_watches" in w for w in projects.warnings)
    await projects.close()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
@pytest.mark.parametrize("below", ["", "exps/one"])
async def test_git_add_force_and_rm_cached_move_a_file_in_and_out(
    tmp_path: Path, hashes: HashIndex, below: str
) -> None:
    """The live index follows git's index: `git add -f` of an ignored file makes it ship,
    `git rm --cached` leaves it out again; listeners hear of exactly that file, and the
    tree is not walked again. Also when git's index lies outside the watched project."""
    repo = tmp_path / "repo"
    root = repo / below if below else repo
    root.mkdir(parents=True)
    git(repo, "init", "-q")
    make_tree(root)
    (root / ".gitignore").write_text("*.log\nbuild/\n*.json\n")
    (root / "config").mkdir()
    (root / "config" / "local.json").write_text('{"lr": 0.1}\n')
    (root / "config" / "other.json").write_text("{}\n")
    lead = below + "/" if below else ""
    projects = Projects(hashes)
    try:
        project = await projects.get(root)
        tree, _ = await project.index.manifest()
        assert "config/local.json" not in [e.path for e in tree.entries]
        walks = 0
        real_walk = project.index.matcher.walk

        def counting_walk(**kwargs):  # type: ignore[no-untyped-def]
            nonlocal walks
            walks += 1
            return real_walk(**kwargs)

        project.index.matcher.walk = counting_walk  # type: ignore[method-assign]
        heard: list[set[str]] = []
        project.listeners.add(heard.append)

        async def heard_of_local_json() -> bool:
            return any("config/local.json" in paths for paths in heard)

        async def ships_local_json() -> bool:
            tree, _ = await project.index.manifest()
            return "config/local.json" in [e.path for e in tree.entries]

        git(repo, "add", "--", f"{lead}run.sh")  # an index change that moves nothing
        git(repo, "add", "-f", "--", f"{lead}config/local.json")
        await eventually(heard_of_local_json, what="listeners told of config/local.json joining")
        assert set().union(*heard) == {"config/local.json"}
        tree, stats = await project.index.manifest()
        assert stats.files_hashed == 1 and "config/other.json" not in [e.path for e in tree.entries]
        assert as_tuples(tree) == await full_manifest(root, hashes)

        heard.clear()
        git(repo, "rm", "-q", "--cached", "--", f"{lead}config/local.json")
        await eventually(heard_of_local_json, what="listeners told of config/local.json leaving")

        async def left_out() -> bool:
            return not await ships_local_json()

        await eventually(left_out, what="config/local.json left out after git rm --cached")
        assert as_tuples((await project.index.manifest())[0]) == await full_manifest(root, hashes)
        assert walks == 0  # followed without rescanning the tree
    finally:
        await projects.close()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
async def test_deploy_right_after_git_add_sees_it(tmp_path: Path, hashes: HashIndex) -> None:
    """A snapshot taken before the watcher's follow-up ran still reads git's index first."""
    root = tmp_path / "p"
    root.mkdir()
    git(root, "init", "-q")
    make_tree(root)
    (root / "trace.log").write_text("kept\n")
    index = ProjectIndex(root, hashes)
    await index.manifest()
    git(root, "add", "-f", "trace.log")
    assert index.note_changes({str(root / ".git" / "index")}) == set()
    tree, stats = await index.manifest()
    assert "trace.log" in [e.path for e in tree.entries] and stats.files_hashed == 1
    assert as_tuples(tree) == await full_manifest(root, hashes)
