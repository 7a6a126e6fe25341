"""Which files c3 ships: what git would see (tracked plus untracked-not-ignored).

The tree is walked with os.scandir. `.gitignore` files (at every level), and when the
project sits inside a git repository its `.git/info/exclude`, the user's own ignore file
(`core.excludesFile`, by default `~/.config/git/ignore`) and the `.gitignore` files of
enclosing directories up to the repository top, apply exactly as in git; see
`c3.workspace_ignore` for the matching. `.c3ignore` files use the same syntax and are read
after `.gitignore` of the same directory, so they can add exclusions and also re-include
(`!pattern`) what git ignores. An excluded directory is never entered, so nothing below it
can be re-included, as in git.

Files git tracks ship even when a git ignore rule matches them (`git add -f`), as in git:
the one thing read from git itself is which tracked files an ignore rule matches (see
`c3.workspace_git`); below an ignored directory only those tracked files ship. A `.c3ignore`
rule still leaves a tracked file out: that is how a user says "don't ship this".

Always excluded, tracked or not: `.git`, `.c3.local`, `c3-artifacts/` (pulled outputs), virtualenvs (a directory holding `pyvenv.cfg` or
`conda-meta`, or named `.venv`/`venv`), caches, and editor temp files.

Symlinks: a link to a regular file inside the project ships as that file's content; links
to directories are not followed, and links leading outside the project or nowhere are
skipped. All of these are reported by `scan_with_ignored`.
"""

from __future__ import annotations

import os
import re
import stat as stat_mod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from c3.errors import NotFound, PermissionDenied
from c3.workspace_git import GitIndex, TrackedIgnored, git_common_dir, global_excludes_file
from c3.workspace_ignore import Level, Pattern, decide, parse_file

IGNORE_FILES = (".gitignore", ".c3ignore")
BUILTIN_DIRS = frozenset({
    ".git", ".venv", "venv", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache",
    ".ipynb_checkpoints", ".tox", "node_modules",
    # Where `c3 pull` puts artifacts: shipping them back would feed outputs in as inputs.
    "c3-artifacts",
})
BUILTIN_FILES = frozenset({".c3.local", ".git"})
VENV_MARKERS = ("pyvenv.cfg", "conda-meta")
_EDITOR_TEMP = re.compile(
    r"^(?:\..*\.sw[a-px]|4913|\.DS_Store|.*~|#.*#|\.#.*|.*___jb_(?:tmp|old)___|\.goutputstream-.*)$",
    re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class WorkspaceFile:
    path: str  # relative POSIX
    stat: os.stat_result  # of the file itself (of the target for a followed symlink)

    @property
    def executable(self) -> bool:
        return bool(self.stat.st_mode & 0o111)


@dataclass(frozen=True)
class IgnoredPath:
    path: str  # relative POSIX; directories end with "/"
    rule: str  # ".gitignore:3: *.log", "built-in: .git/", "symlink: points outside the project"


def is_editor_temp(name: str) -> bool:
    """Swap/backup/lock files editors write next to the real file; never shipped, never a trigger."""
    return bool(_EDITOR_TEMP.match(name))


def _builtin_rule(name: str, is_dir: bool) -> str | None:
    if is_dir:
        return f"built-in: {name}/" if name in BUILTIN_DIRS else None
    if name in BUILTIN_FILES:
        return f"built-in: {name}"
    if is_editor_temp(name):
        return "built-in: editor temp file"
    return None


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return None  # like git: an unreadable ignore file is skipped


def _rule_for(
    tracked: TrackedIgnored, levels: tuple[Level, ...], rel: str, name: str, is_dir: bool,
    hidden_by: str | None,
) -> tuple[str | None, str | None]:
    """The ignore-rule verdict on one path, shared by `walk` and `explain`: (the rule that
    leaves it out, or None; the git rule of an ignored directory it is below or is, which
    only tracked paths pass). `hidden_by` is that git rule for its parent."""
    held = rel in (tracked.dirs if is_dir else tracked.files)
    if hidden_by is not None and not held:
        return hidden_by, hidden_by
    pattern = decide(levels, rel, name, is_dir)
    if pattern is None or pattern.negated:
        return None, hidden_by
    if not held:
        return pattern.source, hidden_by
    own = decide(levels, rel, name, is_dir, tracked=True)  # git tracks it: only .c3ignore counts
    if own is not None and not own.negated:
        return own.source, hidden_by
    return None, hidden_by or pattern.source


class IgnoreMatcher:
    """Ignore decisions for one project root, with per-directory rule files cached.

    Used by `scan` and, incrementally, by the watcher: call `notify_changed` for each
    changed path; when it returns True the rules changed and the caller should rescan.
    When git's index changes, call `read_git_index` (blocking) and look again at the paths
    it returns.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self._real_root = os.path.realpath(self.root)
        self._levels: dict[str, Level | None] = {}
        self._venv: dict[str, bool] = {}
        self._git = GitIndex(self.root)
        # Rules from outside the tree, read on first use. Finding the user's git ignore file
        # runs `git config`, which only callers allowed to block do (walks, fresh explains);
        # the constructor and notify_changed, which run on c3d's event loop, only forget.
        self._base_read: tuple[Level, ...] | None = None
        self._user_file: Path | None = None
        self._user_file_asked = False

    def _rules_outside(self, may_run_git: bool) -> tuple[Level, ...]:
        if may_run_git and not self._user_file_asked:
            top = self._git.top
            self._user_file = None if top is None else global_excludes_file(top)
            self._user_file_asked = True
            self._base_read = None
        if self._base_read is None:
            self._base_read = self._base_levels()
        return self._base_read

    def _base_levels(self) -> tuple[Level, ...]:
        """Rules from outside the tree walk: the user's git ignore file, info/exclude and
        enclosing .gitignore files."""
        top = self._git.top
        if top is None:
            return ()
        levels: list[Level] = []
        below = self.root.relative_to(top).as_posix()
        lead = "" if below == "." else below + "/"
        # Lowest precedence first, as in git: the user's own file, info/exclude, .gitignore.
        user_file = self._user_file
        if user_file is not None and (text := _read_text(str(user_file))) is not None:
            levels.append(Level(lead, 0, parse_file(text, str(user_file))))
        common = git_common_dir(top)
        exclude = None if common is None else common / "info" / "exclude"
        if exclude is not None and (text := _read_text(str(exclude))) is not None:
            source = os.path.relpath(exclude, top) if exclude.is_relative_to(top) else str(exclude)
            levels.append(Level(lead, 0, parse_file(text, source)))
        directory = top
        for part in ([] if lead == "" else below.split("/")):
            text = _read_text(str(directory / ".gitignore"))
            rel_dir = directory.relative_to(top).as_posix()
            inner = self.root.relative_to(directory).as_posix() + "/"
            if text is not None:
                name = ".gitignore" if rel_dir == "." else f"{rel_dir}/.gitignore"
                levels.append(Level(inner, 0, parse_file(text, f"{os.path.relpath(top / name, self.root)}")))
            directory = directory / part
        return tuple(levels)

    def reload(self) -> None:
        """Forget every cached rule file (after changes the watcher may have missed) and
        read git's index again (blocking: runs git)."""
        self._levels.clear()
        self._venv.clear()
        self._git.locate()
        self._base_read, self._user_file_asked = None, False
        self._git.read()

    def read_git_index(self) -> set[str]:
        """Ask git again which files it tracks although ignored (blocking: runs git);
        returns the paths that joined or left that set."""
        return self._git.read()

    @property
    def git_index(self) -> str | None:
        """Git's index file (None outside a repository): a change to it can change what ships."""
        return self._git.index_file

    @staticmethod
    def is_rule_file(rel_path: str) -> bool:
        name = rel_path.rsplit("/", 1)[-1]
        return name in IGNORE_FILES or name in VENV_MARKERS or rel_path == ".git/info/exclude"

    def notify_changed(self, rel_path: str) -> bool:
        """Drop caches `rel_path` affects; True when ignore rules may have changed."""
        if rel_path in (".git/info/exclude", ".git"):
            # A repository appeared or went away, or its exclude file changed.
            self._git.locate()
            self._base_read, self._user_file_asked = None, False
            self._git.stale = True
            return True
        parent = rel_path.rsplit("/", 1)[0] if "/" in rel_path else ""
        name = rel_path.rsplit("/", 1)[-1]
        if name in IGNORE_FILES:
            self._levels.pop(parent, None)
            self._git.stale = self._git.stale or name == ".gitignore"
            return True
        if name in VENV_MARKERS:
            self._venv.pop(parent, None)
            return True
        # A directory removed or replaced: forget what was cached for it and below.
        prefix = rel_path + "/"
        for cache in (self._levels, self._venv):
            for key in [k for k in cache if k == rel_path or k.startswith(prefix)]:
                del cache[key]
        return False

    def _level_from_texts(self, rel_dir: str, texts: list[tuple[str, str]]) -> Level | None:
        patterns: list[Pattern] = []
        for file_name, text in texts:
            source = f"{rel_dir}/{file_name}" if rel_dir else file_name
            patterns.extend(parse_file(text, source, c3ignore=file_name == ".c3ignore"))
        if not patterns:
            return None
        return Level("", len(rel_dir) + 1 if rel_dir else 0, tuple(patterns))

    def level(self, rel_dir: str, present: frozenset[str] | None = None) -> Level | None:
        """The rules of `rel_dir`'s own ignore files. `present` (names a scandir found)
        saves the stat calls and refreshes the cache."""
        if present is None and rel_dir in self._levels:
            return self._levels[rel_dir]
        abs_dir = os.path.join(self.root, rel_dir)
        texts = []
        for file_name in IGNORE_FILES:
            if present is not None and file_name not in present:
                continue
            path = os.path.join(abs_dir, file_name)
            if os.path.islink(path):
                continue  # git does not follow symlinked .gitignore files
            text = _read_text(path)
            if text is not None:
                texts.append((file_name, text))
        level = self._level_from_texts(rel_dir, texts)
        self._levels[rel_dir] = level
        return level

    def _is_venv(self, rel_dir: str) -> bool:
        if rel_dir not in self._venv:
            abs_dir = os.path.join(self.root, rel_dir)
            self._venv[rel_dir] = any(os.path.lexists(os.path.join(abs_dir, m)) for m in VENV_MARKERS)
        return self._venv[rel_dir]

    def explain(self, rel_path: str, is_dir: bool, *, fresh: bool = True) -> str | None:
        """The rule that excludes `rel_path` (or one of its parent directories), else None.
        `fresh=False` never runs git: it uses git's index as last read (for callers on an
        event loop)."""
        tracked = self._git.now(fresh)
        parts = rel_path.strip("/").split("/")
        levels = self._rules_outside(may_run_git=fresh)
        root_level = self.level("")
        if root_level is not None:
            levels = (*levels, root_level)
        hidden_by: str | None = None  # the git rule of an ignored directory we are below
        for index, name in enumerate(parts):
            rel = "/".join(parts[: index + 1])
            last = index == len(parts) - 1
            directory = is_dir or not last
            rule = _builtin_rule(name, directory)
            if rule is None and directory and self._is_venv(rel):
                rule = "built-in: virtualenv"
            if rule is not None:
                return rule
            rule, hidden_by = _rule_for(tracked, levels, rel, name, directory, hidden_by)
            if rule is not None:
                return rule
            if not last:
                own = self.level(rel)
                if own is not None:
                    levels = (*levels, own)
        return None

    def is_ignored(self, rel_path: str, is_dir: bool, *, fresh: bool = True) -> bool:
        return self.explain(rel_path, is_dir, fresh=fresh) is not None

    def scan(self, *, report_ignored: bool = True) -> tuple[list[WorkspaceFile], list[IgnoredPath]]:
        """Walk the tree (blocking). Files sorted by path; ignored paths in walk order."""
        files: list[WorkspaceFile] = []
        ignored: list[IgnoredPath] = []
        for item in self.walk(report_ignored=report_ignored):
            if isinstance(item, WorkspaceFile):
                files.append(item)
            else:
                ignored.append(item)
        files.sort(key=lambda f: f.path)
        return files, ignored

    def walk(self, *, report_ignored: bool = True) -> Iterator[WorkspaceFile | IgnoredPath]:
        """The files that ship (and, with report_ignored, what is left out), in walk order,
        one at a time: a caller indexing a huge tree never holds all of it at once."""
        try:
            if not stat_mod.S_ISDIR(os.stat(self.root).st_mode):
                raise NotFound(f"{self.root}: not a directory; the project folder must be a directory")
        except FileNotFoundError as exc:
            raise NotFound(f"{self.root}: project directory does not exist (moved or deleted?)") from exc
        except OSError as exc:
            raise PermissionDenied(f"{self.root}: cannot read project directory ({exc.strerror})") from exc
        self.reload()
        tracked = self._git.tracked
        # (directory, its path, the rules above it, the git rule of an ignored directory
        # it is below: there only tracked files ship).
        stack: list[tuple[str, str, tuple[Level, ...], str | None]] = [(str(self.root), "", self._rules_outside(may_run_git=True), None)]
        while stack:
            abs_dir, rel_dir, levels, hidden_by = stack.pop()
            try:
                with os.scandir(abs_dir) as it:
                    entries = list(it)
            except OSError as exc:
                yield IgnoredPath(rel_dir + "/", f"unreadable directory: {exc.strerror}")
                continue
            names = frozenset(e.name for e in entries)
            if rel_dir and not names.isdisjoint(VENV_MARKERS):
                yield IgnoredPath(rel_dir + "/", "built-in: virtualenv")
                continue
            own = self.level(rel_dir, names & frozenset(IGNORE_FILES))
            if own is not None:
                levels = (*levels, own)
            for entry in entries:
                name = entry.name
                rel = f"{rel_dir}/{name}" if rel_dir else name
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                below = hidden_by
                rule = _builtin_rule(name, is_dir)
                if rule is None:
                    rule, below = _rule_for(tracked, levels, rel, name, is_dir, hidden_by)
                if rule is not None:
                    if report_ignored:
                        yield IgnoredPath(rel + "/" if is_dir else rel, rule)
                    continue
                if is_dir:
                    stack.append((entry.path, rel, levels, below))
                    continue
                shipped, problem = self._file(entry)
                if shipped is not None:
                    yield WorkspaceFile(rel, shipped)
                elif report_ignored:
                    yield IgnoredPath(rel, problem)

    def _file(self, entry: os.DirEntry[str]) -> tuple[os.stat_result | None, str]:
        try:
            st = entry.stat(follow_symlinks=False)
            if stat_mod.S_ISREG(st.st_mode):
                return st, ""
            if not stat_mod.S_ISLNK(st.st_mode):
                return None, "built-in: not a regular file"
            target = os.path.realpath(entry.path)
            if os.path.commonpath([target, self._real_root]) != self._real_root:
                return None, "symlink: points outside the project"
            st = os.stat(target)
        except FileNotFoundError:
            return None, "symlink: broken"
        except OSError as exc:
            return None, f"unreadable: {exc.strerror}"
        if stat_mod.S_ISDIR(st.st_mode):
            return None, "symlink: to a directory (not followed)"
        if not stat_mod.S_ISREG(st.st_mode):
            return None, "built-in: not a regular file"
        return st, ""


def scan_with_ignored(root: Path) -> tuple[list[WorkspaceFile], list[IgnoredPath]]:
    """Files that ship (sorted by path) and what was left out with the rule that did it."""
    files, ignored = IgnoreMatcher(root).scan()
    ignored.sort(key=lambda i: i.path)
    return files, ignored


def scan(root: Path) -> list[WorkspaceFile]:
    """Files that ship, sorted by path. Blocking: run it in a thread from async code."""
    return IgnoreMatcher(root).scan(report_ignored=False)[0]
