"""What the workspace needs from git itself: where the repository is, and which files its
index tracks although an ignore rule matches them (`git add -f`).

Git ships a tracked file whatever `.gitignore` says. Only the tracked files an ignore rule
matches can change c3's answer, so that is all we ask git for (`--ignored`): usually a
handful of paths, so a 100,000-file repository costs no memory here. The answer depends on
the ignore rules as well as the index, so it is read again after either changes. Without
git, outside a work tree, or when git fails, the set is empty: the workspace is then what
the ignore rules alone say, as before.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Variables that would point git at another repository or index than the one at the top.
_LOCATION_VARS = frozenset({
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY",
    "GIT_NAMESPACE", "GIT_PREFIX",
})
# A hung git (a network filesystem) must not wedge a scan for ever.
GIT_TIMEOUT_S = 60


@dataclass(frozen=True)
class TrackedIgnored:
    """Paths (relative to the project root) git tracks although an ignore rule matches
    them, and every directory above one of them (a walk must enter those)."""

    files: frozenset[str] = frozenset()
    dirs: frozenset[str] = frozenset()

    @classmethod
    def of(cls, files: frozenset[str]) -> TrackedIgnored:
        dirs: set[str] = set()
        for path in files:
            parent = path.rpartition("/")[0]
            while parent and parent not in dirs:
                dirs.add(parent)
                parent = parent.rpartition("/")[0]
        return cls(files, frozenset(dirs))


NOTHING_TRACKED = TrackedIgnored()


def find_git_top(root: Path) -> Path | None:
    """The nearest directory at or above `root` holding `.git` (a directory, or a file
    pointing elsewhere as in worktrees and submodules)."""
    for directory in (root, *root.parents):
        if os.path.lexists(directory / ".git"):
            return directory
    return None


def git_dir(top: Path) -> Path | None:
    """The repository directory of the work tree at `top`: `.git`, or where a `.git` file's
    `gitdir:` line points."""
    dot = top / ".git"
    if dot.is_dir():
        return dot
    try:
        text = dot.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    return Path(os.path.normpath(top / text[len("gitdir:"):].strip()))


def git_common_dir(top: Path) -> Path | None:
    """Where the repository of the work tree at `top` keeps what its work trees share
    (`info/exclude` among it): `.git` itself, or for a linked work tree (`git worktree
    add`) the directory its `commondir` file names."""
    directory = git_dir(top)
    if directory is None:
        return None
    try:
        common = (directory / "commondir").read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return directory
    return Path(os.path.normpath(directory / common.strip()))


def git_index_file(root: Path) -> Path | None:
    """Git's index file for a project at `root` (a file git replaces on `git add`/`rm`),
    or None outside a repository."""
    top = find_git_top(root)
    directory = None if top is None else git_dir(top)
    return None if directory is None else directory / "index"


def _git_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in _LOCATION_VARS}


def global_excludes_file(top: Path) -> Path | None:
    """The user's own ignore file that git applies in the repository at `top`:
    `core.excludesFile` when configured, else `$XDG_CONFIG_HOME/git/ignore` (by default
    `~/.config/git/ignore`); None when there is none. Blocking: one `git config`."""
    configured = ""
    try:
        done = subprocess.run(
            ["git", "config", "--path", "--get", "core.excludesFile"], cwd=top, env=_git_env(),
            stdin=subprocess.DEVNULL, capture_output=True, timeout=GIT_TIMEOUT_S, check=False,
        )  # fmt: skip
        if done.returncode == 0:
            configured = os.fsdecode(done.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # no git: its default place still holds the user's rules
    if configured:
        path = top / os.path.expanduser(configured)  # an absolute path replaces `top`
    else:
        config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        path = Path(config_home) / "git" / "ignore"
    return path if path.is_file() else None


def read_tracked_ignored(top: Path, below: str) -> frozenset[str]:
    """Files under `below` (the project root relative to `top`, "" for the top itself) that
    git's index tracks although an ignore rule matches them, relative to the project root.
    Blocking: one `git ls-files` in the top-level. Empty when git is missing or fails."""
    lead = "" if below in ("", ".") else below + "/"
    command = ["git", "--literal-pathspecs", "ls-files", "-z", "--cached", "--ignored",
               "--exclude-standard"]
    if lead:
        command += ["--", lead]
    try:
        done = subprocess.run(
            command, cwd=top, env=_git_env(), stdin=subprocess.DEVNULL, capture_output=True,
            timeout=GIT_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    if done.returncode != 0:
        return frozenset()
    prefix = os.fsencode(lead)
    return frozenset(
        # Same decoding as os.scandir's names, so undecodable bytes compare equal.
        os.fsdecode(path[len(prefix):])
        for path in done.stdout.split(b"\0")
        if path.startswith(prefix) and len(path) > len(prefix)
    )


class GitIndex:
    """Git's say for one project root: where its index file is, and which files it tracks
    although ignored. Read on first use and on every walk; stale once an ignore rule changes
    (git's answer depends on the rules as well as on the index)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tracked = NOTHING_TRACKED
        self.stale = True
        self._seen: tuple[int, int, int] | None = None  # the index file when last read
        self.locate()

    def locate(self) -> None:
        self.top = find_git_top(self.root)
        directory = None if self.top is None else git_dir(self.top)
        # Compared with watch-event paths, which are built from the same root.
        self.index_file = None if directory is None else str(directory / "index")

    def read(self) -> set[str]:
        """Ask git again (blocking); returns the paths that joined or left the set."""
        seen = self._signature()
        files = self._ask()
        before, self.tracked = self.tracked.files, TrackedIgnored.of(files)
        self._seen, self.stale = seen, False
        return set(before ^ files)

    def now(self, fresh: bool) -> TrackedIgnored:
        """The set; `fresh`: as git's index is now. When only the index file moved since it
        was read, the answer is read for this call alone: the owner (the daemon's live
        index) re-reads it when its watcher says so, and must then see what moved."""
        if not fresh:
            return self.tracked
        if self.stale:
            self.read()
        elif self._signature() != self._seen:
            return TrackedIgnored.of(self._ask())
        return self.tracked

    def _ask(self) -> frozenset[str]:
        top = self.top
        return frozenset() if top is None else read_tracked_ignored(top, self.root.relative_to(top).as_posix())

    def _signature(self) -> tuple[int, int, int] | None:
        if self.index_file is None:
            return None
        try:
            st = os.stat(self.index_file)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns
