"""The workspace file set equals what git sees, plus .c3ignore and built-in exclusions."""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import pytest

from c3.errors import NotFound
from c3.workspace import IgnoreMatcher, is_editor_temp, scan, scan_with_ignored
from tests.harness.git import git, git_files, git_init

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(shutil.which("git") is None, reason="git not installed"),
]

ROOT_GITIGNORE = """\
# comment line
*.log
!important.log
/build/
data
**/cache/
docs/**/*.tmp
*.o
!keep.o
[Tt]emp*
foo\\ bar
trailing   \n\
\\#hash
\\!bang
*.py[co]
logs/**
!logs/keep/
nested/deep/
a/**/z.txt
[!a-m]x.md
"""
SUB_GITIGNORES = {
    "a": "!data\n*.txt\n/local-only\n",
    "a/b": "!*.log\nsub*/\n",
    "src": "*\n!*/\n!*.py\n",
    "docs/x": "!*.tmp\n",
    "c/d": "!/e\ne/*\n!e/keep*\n",
}
INFO_EXCLUDE = "secret*\n!secretok\n"
DIRS = ["", "a", "a/data", "a/b", "a/b/data", "a/b/sub1", "a/b/q", "build", "src", "src/build",
        "src/cache", "src/pkg", "docs", "docs/x", "docs/x/y", "logs", "logs/keep", "logs/other",
        "nested/deep", "nested/x", "Temp", "c", "c/d", "c/d/e", "c/d/e/f"]
NAMES = ["x.txt", "y.log", "important.log", "m.o", "keep.o", "Temporary.md", "temp.md", "foo bar",
         "#hash", "!bang", "z.tmp", "q.pyc", "mod.py", "README", "local-only", "secret1", "secretok",
         "trailing", "a b [c].txt", "z.txt", "nx.md", "ax.md", "keepme", "data", "cache"]


def make_tree(root: Path, seed: int) -> None:
    rng = random.Random(seed)
    for directory in DIRS:
        (root / directory).mkdir(parents=True, exist_ok=True)
    for directory in DIRS:
        for name in rng.sample(NAMES, k=rng.randint(6, len(NAMES))):
            target = root / directory / name
            if not target.exists():
                target.write_text(f"{directory}/{name}\n")
    (root / ".gitignore").write_text(ROOT_GITIGNORE)
    for directory, text in SUB_GITIGNORES.items():
        (root / directory / ".gitignore").write_text(text)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scan_matches_git_ls_files(tmp_path: Path, seed: int) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    git_init(root)
    make_tree(root, seed)
    (root / ".git" / "info").mkdir(exist_ok=True)
    (root / ".git" / "info" / "exclude").write_text(INFO_EXCLUDE)
    ours = [f.path for f in scan(root)]
    expected = git_files(root)
    assert len(expected) > 60
    assert ours == expected
    # The incremental matcher agrees with the walk on every path in the tree.
    matcher = IgnoreMatcher(root)
    shipped = set(ours)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            assert matcher.is_ignored(rel, False) == (rel not in shipped), rel


def test_project_inside_a_larger_repository(tmp_path: Path) -> None:
    """Enclosing .gitignore files and info/exclude apply to a project in a subdirectory."""
    repo = tmp_path / "repo"
    project = repo / "exps" / "one"
    project.mkdir(parents=True)
    git_init(repo)
    (repo / ".gitignore").write_text("*.ckpt\n/exps/one/only-here\n")
    (repo / "exps" / ".gitignore").write_text("one/scratch/\n")
    (repo / ".git" / "info" / "exclude").write_text("*.secret\n")
    for name in ["run.sh", "m.ckpt", "only-here", "k.secret", "scratch/a", "ok/only-here"]:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(name)
    expected = [p.removeprefix("exps/one/") for p in git_files(repo) if p.startswith("exps/one/")]
    assert [f.path for f in scan(project)] == expected == ["ok/only-here", "run.sh"]
    _, ignored = scan_with_ignored(project)
    assert {i.path: i.rule for i in ignored}["m.ckpt"] == "../../.gitignore:1: *.ckpt"


def test_deeper_negation_does_not_reinclude_below_a_matching_directory(tmp_path: Path) -> None:
    """A deeper `!data` decides for the directory only, not for files inside it (this is
    where pathspec-style descendant matching goes wrong)."""
    git_init(tmp_path)
    (tmp_path / "a" / "data").mkdir(parents=True)
    (tmp_path / ".gitignore").write_text("data\n*.txt\n")
    (tmp_path / "a" / ".gitignore").write_text("!data\n")
    (tmp_path / "a" / "data" / "f.txt").write_text("")
    (tmp_path / "a" / "data" / "f.bin").write_text("")
    assert [f.path for f in scan(tmp_path)] == git_files(tmp_path) == [
        ".gitignore", "a/.gitignore", "a/data/f.bin"]


def test_excluded_directory_cannot_be_reincluded(tmp_path: Path) -> None:
    git_init(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("")
    (tmp_path / ".gitignore").write_text("out/\n!out/keep.txt\n")
    assert [f.path for f in scan(tmp_path)] == git_files(tmp_path) == [".gitignore"]


def test_c3ignore_adds_and_reincludes(tmp_path: Path) -> None:
    for name in ["run.sh", "big.bin", "sub/weights.pt", "sub/notes.md", "gen/model.onnx", "gen/x"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / ".gitignore").write_text("*.onnx\n")
    (tmp_path / ".c3ignore").write_text("*.bin\n!*.onnx\n")
    (tmp_path / "sub" / ".c3ignore").write_text("*.pt\n")
    files, ignored = scan_with_ignored(tmp_path)
    assert [f.path for f in files] == [
        ".c3ignore", ".gitignore", "gen/model.onnx", "gen/x", "run.sh", "sub/.c3ignore", "sub/notes.md"]
    rules = {i.path: i.rule for i in ignored}
    assert rules == {"big.bin": ".c3ignore:1: *.bin", "sub/weights.pt": "sub/.c3ignore:1: *.pt"}


def test_builtin_exclusions(tmp_path: Path) -> None:
    git_init(tmp_path)
    paths = ["run.sh", ".c3.local", "sub/.c3.local", "pkg/__pycache__/m.pyc", ".mypy_cache/x",
             ".pytest_cache/x", ".ruff_cache/x", "node_modules/p/i.js", ".venv/bin/python",
             "venv/lib/x.py", "env311/pyvenv.cfg", "env311/lib/site.py", "conda/conda-meta/h.json",
             ".run.sh.swp", ".run.sh.swo", "4913", ".DS_Store", "run.sh~", "#run.sh#",
             ".#run.sh", "src/model.py", "src/.model.py.swp"]
    for name in paths:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    files, ignored = scan_with_ignored(tmp_path)
    assert [f.path for f in files] == ["run.sh", "src/model.py"]
    rules = {i.path: i.rule for i in ignored}
    assert rules[".git/"] == "built-in: .git/"
    assert rules[".venv/"] == "built-in: .venv/"
    assert rules["env311/"] == "built-in: virtualenv"
    assert rules["conda/"] == "built-in: virtualenv"
    assert rules["pkg/__pycache__/"] == "built-in: __pycache__/"
    assert rules[".c3.local"] == "built-in: .c3.local"
    assert rules["4913"] == "built-in: editor temp file"
    matcher = IgnoreMatcher(tmp_path)
    assert matcher.explain("env311/lib/site.py", False) == "built-in: virtualenv"
    assert matcher.explain("sub/.c3.local", False) == "built-in: .c3.local"
    assert matcher.explain("src/model.py", False) is None


@pytest.mark.parametrize(("name", "temp"), [
    (".x.py.swp", True), (".x.swx", True), ("4913", True), (".DS_Store", True), ("a.py~", True),
    ("#a.py#", True), (".#a.py", True), ("a.py___jb_tmp___", True), ("a.py", False),
    ("swp", False), ("x.swp", False), ("49130", False), ("#a", False),
])
def test_is_editor_temp(name: str, temp: bool) -> None:
    assert is_editor_temp(name) is temp


def test_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / "real").mkdir(parents=True)
    (root / "real" / "f.txt").write_text("content")
    (root / "tool.sh").write_text("#!/bin/sh\n")
    (root / "tool.sh").chmod(0o755)
    (tmp_path / "outside.txt").write_text("secret")
    os.symlink("real/f.txt", root / "link.txt")
    os.symlink("tool.sh", root / "tool-link")
    os.symlink("real", root / "dirlink")
    os.symlink(tmp_path / "outside.txt", root / "escape.txt")
    os.symlink("nowhere", root / "dangling")
    files, ignored = scan_with_ignored(root)
    by_path = {f.path: f for f in files}
    assert sorted(by_path) == ["link.txt", "real/f.txt", "tool-link", "tool.sh"]
    assert by_path["link.txt"].stat.st_size == len("content")
    assert by_path["tool-link"].executable and not by_path["link.txt"].executable
    rules = {i.path: i.rule for i in ignored}
    assert rules == {"dirlink": "symlink: to a directory (not followed)",
                     "escape.txt": "symlink: points outside the project",
                     "dangling": "symlink: broken"}


def test_stat_carries_size_and_executable_bit(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("echo hi\n")
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "data.txt").write_text("abc")
    files = {f.path: f for f in scan(tmp_path)}
    assert files["run.sh"].executable and files["run.sh"].stat.st_size == 8
    assert not files["data.txt"].executable and files["data.txt"].stat.st_size == 3


def test_matcher_notices_rule_changes(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.log").write_text("")
    matcher = IgnoreMatcher(tmp_path)
    assert not matcher.is_ignored("sub/a.log", False)
    (tmp_path / "sub" / ".gitignore").write_text("*.log\n")
    assert not matcher.is_ignored("sub/a.log", False)  # cached until told
    assert matcher.notify_changed("sub/.gitignore") is True
    assert matcher.explain("sub/a.log", False) == "sub/.gitignore:1: *.log"
    assert matcher.notify_changed("sub/a.log") is False
    (tmp_path / "sub" / "pyvenv.cfg").write_text("")
    assert matcher.notify_changed("sub/pyvenv.cfg") is True
    assert matcher.explain("sub/x.py", False) == "built-in: virtualenv"
    assert matcher.is_ignored(".git/HEAD", False)
    assert matcher.is_ignored("x/.y.py.swp", False)


def test_unreadable_directory_is_reported(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read any directory")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "f").write_text("")
    (tmp_path / "locked").chmod(0)
    try:
        _, ignored = scan_with_ignored(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert [i.path for i in ignored] == ["locked/"] and "unreadable" in ignored[0].rule


def test_scan_speed_20k_files(tmp_path: Path) -> None:
    root = tmp_path / "big"
    for d in range(200):
        directory = root / f"pkg{d:03d}" / "mod"
        directory.mkdir(parents=True)
        for f in range(100):
            (directory / f"f{f:03d}.py").write_bytes(b"")
    (root / ".gitignore").write_text("*.log\nbuild/\n!keep.log\n[Tt]mp*\n")
    (root / "pkg000" / ".gitignore").write_text("*.tmp\n")
    started = time.perf_counter()
    files = scan(root)
    elapsed = time.perf_counter() - started
    print(f"\nscan of {len(files)} files: {elapsed * 1000:.0f} ms")
    assert len(files) == 20_002
    assert elapsed < 3.0  # typically ~0.2 s; generous for slow CI disks


def test_missing_root_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="project directory does not exist"):
        scan(tmp_path / "gone")
    (tmp_path / "file").write_text("")
    with pytest.raises(NotFound, match="not a directory"):
        scan(tmp_path / "file")


# -- files git tracks although an ignore rule matches them (`git add -f`) ------------------

TRACKED_IGNORED = ["config/local.json", "build/keep.bin", "build/deep/kept.txt",
                   "data files/my config.json", "données/naïve.json", "odd\nname.json", "app.log"]
UNTRACKED_IGNORED = ["config/other.json", "build/junk.bin", "build/deep/junk.txt",
                     "build/other/x.txt", "run.log", "data files/their config.json"]


@pytest.mark.parametrize("below", ["", "exps/one"])
def test_tracked_ignored_files_ship_as_in_git(tmp_path: Path, below: str) -> None:
    """Tracked files ship whatever .gitignore says (also below an ignored directory);
    untracked ignored ones do not; the project may be a subdirectory of the repository."""
    repo = tmp_path / "repo"
    project = repo / below if below else repo
    project.mkdir(parents=True)
    git_init(repo)
    (repo / ".gitignore").write_text("*.log\n")
    (project / ".gitignore").write_text("*.json\nbuild/\n" + ("*.log\n" if not below else ""))
    for name in [*TRACKED_IGNORED, *UNTRACKED_IGNORED, "src/main.py", "src/util.py", "README"]:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(name)
    git(repo, "add", "src/main.py" if not below else f"{below}/src/main.py")
    git(repo, "add", "-f", "--", *(f"{below}/{p}" if below else p for p in TRACKED_IGNORED))
    lead = below + "/" if below else ""
    expected = [p.removeprefix(lead) for p in git_files(repo) if p.startswith(lead)]
    assert set(TRACKED_IGNORED) <= set(expected)
    assert not set(UNTRACKED_IGNORED) & set(expected)

    files, ignored = scan_with_ignored(project)
    assert [f.path for f in files] == expected
    rules = {i.path: i.rule for i in ignored}
    # Below an ignored directory only tracked files ship; the rest is left out by its rule.
    assert rules["build/junk.bin"] == rules["build/other/"] == ".gitignore:2: build/"
    assert rules["config/other.json"] == ".gitignore:1: *.json"
    matcher = IgnoreMatcher(project)
    for dirpath, dirnames, filenames in os.walk(project):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), project)
            assert matcher.is_ignored(rel, False) == (rel not in expected), rel
    assert matcher.explain("build/deep/junk.txt", False) == ".gitignore:2: build/"
    assert matcher.explain("build/deep/kept.txt", False) is None

    # `git rm --cached` makes the file ignored again; explain sees git's index as it is now.
    git(repo, "rm", "-q", "--cached", "--", f"{lead}config/local.json")
    assert "config/local.json" not in [f.path for f in scan(project)]
    assert matcher.explain("config/local.json", False) == ".gitignore:1: *.json"
    assert matcher.explain("config/local.json", False, fresh=False) is None  # as last read
    assert matcher.read_git_index() == {"config/local.json"}
    assert matcher.explain("config/local.json", False, fresh=False) == ".gitignore:1: *.json"


def test_a_new_ignore_rule_does_not_drop_a_tracked_file(tmp_path: Path) -> None:
    git_init(tmp_path)
    (tmp_path / "run.sh").write_text("echo\n")
    git(tmp_path, "add", "run.sh")
    matcher = IgnoreMatcher(tmp_path)
    assert matcher.explain("run.sh", False) is None
    (tmp_path / ".gitignore").write_text("*.sh\n")
    assert matcher.notify_changed(".gitignore")
    assert matcher.explain("run.sh", False) is None  # git still tracks it
    assert matcher.explain("other.sh", False) == ".gitignore:1: *.sh"
    assert [f.path for f in scan(tmp_path)] == git_files(tmp_path) == [".gitignore", "run.sh"]


def test_c3ignore_leaves_out_tracked_files(tmp_path: Path) -> None:
    git_init(tmp_path)
    for name in ["run.sh", "secret.json", "weights.pt", "cache/blob", "sub/keep.json", "sub/x.json"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / ".gitignore").write_text("*.json\ncache/\n")
    (tmp_path / ".c3ignore").write_text("secret.json\n*.pt\ncache/\nsub/*.json\n!sub/keep.json\n")
    git(tmp_path, "add", "run.sh", "weights.pt")
    git(tmp_path, "add", "-f", "secret.json", "cache/blob", "sub/keep.json", "sub/x.json")
    assert {"secret.json", "weights.pt", "cache/blob"} <= set(git_files(tmp_path))
    files, ignored = scan_with_ignored(tmp_path)
    assert [f.path for f in files] == [".c3ignore", ".gitignore", "run.sh", "sub/keep.json"]
    rules = {i.path: i.rule for i in ignored}
    assert rules == {".git/": "built-in: .git/",
                     "secret.json": ".c3ignore:1: secret.json", "weights.pt": ".c3ignore:2: *.pt",
                     "cache/": ".c3ignore:3: cache/", "sub/x.json": ".c3ignore:4: sub/*.json"}
    matcher = IgnoreMatcher(tmp_path)
    assert matcher.explain("secret.json", False) == ".c3ignore:1: secret.json"
    assert matcher.explain("cache/blob", False) == ".c3ignore:3: cache/"
    assert matcher.explain("sub/keep.json", False) is None


def test_without_git_the_ignore_rules_alone_decide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a repository, no git on PATH, or git failing: the workspace is what the ignore
    rules say, with no error."""
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / ".gitignore").write_text("*.json\n")
    (plain / "a.json").write_text("{}")
    (plain / "run.sh").write_text("")
    assert [f.path for f in scan(plain)] == [".gitignore", "run.sh"]

    repo = tmp_path / "repo"
    repo.mkdir()
    git_init(repo)
    (repo / ".gitignore").write_text("*.json\n")
    (repo / "a.json").write_text("{}")
    git(repo, "add", "-f", "a.json")
    assert [f.path for f in scan(repo)] == [".gitignore", "a.json"]
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert [f.path for f in scan(repo)] == [".gitignore"]
    assert IgnoreMatcher(repo).explain("a.json", False) == ".gitignore:1: *.json"
    monkeypatch.undo()
    (repo / ".git" / "index").write_bytes(b"not an index")  # git refuses to read it
    assert [f.path for f in scan(repo)] == [".gitignore"]


def test_the_users_own_git_ignore_file_applies_inside_a_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """~/.config/git/ignore (or core.excludesFile) leaves files out as git does, e.g. a
    `.env` the user never wants anywhere; `.c3ignore` can still bring one back."""
    config = tmp_path / "config"
    (config / "git").mkdir(parents=True)
    user_file = config / "git" / "ignore"
    user_file.write_text(".env\n*.log\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    repo = tmp_path / "repo"
    git_init(repo)
    for name in ["run.sh", ".env", "src/.env", "train.log", "keep.log"]:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(name)
    (repo / ".c3ignore").write_text("!keep.log\n")
    files, ignored = scan_with_ignored(repo)
    assert [f.path for f in files] == [".c3ignore", "keep.log", "run.sh"]
    assert {i.path: i.rule for i in ignored}[".env"] == f"{user_file}:1: .env"
    as_git = git_files(repo, env=dict(os.environ))
    assert set(as_git) - {"keep.log"} == {".c3ignore", "run.sh"}  # git leaves out the same

    # A configured core.excludesFile takes the default file's place.
    mine = tmp_path / "mine.ignore"
    mine.write_text("train.log\n")
    git(repo, "config", "core.excludesFile", str(mine))
    assert [f.path for f in scan(repo)] == [".c3ignore", ".env", "keep.log", "run.sh", "src/.env"]
    assert set(git_files(repo, env=dict(os.environ))) == {".c3ignore", ".env", "keep.log", "run.sh", "src/.env"}

    # Outside a repository git applies no user file, and neither does c3.
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / ".env").write_text("x")
    assert [f.path for f in scan(plain)] == [".env"]


def test_a_linked_worktree_uses_the_repositorys_info_exclude(tmp_path: Path) -> None:
    main = tmp_path / "main"
    git_init(main)
    (main / "run.sh").write_text("echo\n")
    git(main, "add", "run.sh")
    git(main, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    (main / ".git" / "info").mkdir(exist_ok=True)
    (main / ".git" / "info" / "exclude").write_text("secret.txt\n")
    git(main, "worktree", "add", "-q", str(tmp_path / "wt"))
    tree = tmp_path / "wt"
    (tree / "secret.txt").write_text("x")
    (tree / "notes.txt").write_text("x")
    files, ignored = scan_with_ignored(tree)
    assert [f.path for f in files] == git_files(tree) == ["notes.txt", "run.sh"]
    exclude = main / ".git" / "info" / "exclude"
    assert {i.path: i.rule for i in ignored}["secret.txt"] == f"{exclude}:1: secret.txt"


def test_the_event_loop_paths_never_run_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """c3d builds its matcher, reports changes and asks `fresh=False` on its event loop:
    none of that may run git (a subprocess); walks, which run in a thread, may."""
    git_init(tmp_path)
    (tmp_path / "run.sh").write_text("echo\n")
    (tmp_path / "notes.log").write_text("x")
    (tmp_path / ".gitignore").write_text("*.log\n")
    import subprocess as sp

    def no_git(*args: object, **kwargs: object) -> object:
        raise AssertionError(f"git ran on a loop path: {args}")

    monkeypatch.setattr(sp, "run", no_git)
    matcher = IgnoreMatcher(tmp_path)
    assert matcher.notify_changed(".git")
    assert matcher.is_ignored("notes.log", False, fresh=False)
    assert not matcher.is_ignored("run.sh", False, fresh=False)
    monkeypatch.undo()
    assert [f.path for f in scan(tmp_path)] == [".gitignore", "run.sh"]
