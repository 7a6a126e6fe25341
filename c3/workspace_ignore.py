"""gitignore patterns compiled to regexes that match one path exactly, as git does.

Why not `pathspec.GitIgnoreSpec` for matching: its regexes also match every path *below*
a matching directory (`data` matches `data/x.txt`). That is right for a flat list of
paths, but wrong once several ignore files stack up: a deeper `.gitignore` holding
`!data` would then re-include `a/data/x.txt` even when the root file says `*.txt`, which git
does not. Git evaluates each path on its own (a directory's exclusion is enforced by not
descending into it), so we do the same: one regex per pattern, matched against the entry
itself. The translation follows git's wildmatch with WM_PATHNAME (`*`, `?`, `[...]` with
POSIX classes, `**/`, `/**/`, `/**`, backslash escapes).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

NEVER = re.compile(r"(?!)")
_CLASSES = {
    "alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "blank": " \\t", "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9", "graph": "\\x21-\\x7e", "lower": "a-z", "print": "\\x20-\\x7e",
    "punct": "".join("\\" + c for c in string.punctuation), "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z", "xdigit": "0-9a-fA-F",
}


@dataclass(frozen=True)
class Pattern:
    regex: re.Pattern[str]
    negated: bool
    dir_only: bool
    # No slash in the pattern: it is matched against the entry's name only.
    basename_only: bool
    # Where it came from, for `ls-files --ignored`: "sub/.gitignore:3: *.log".
    source: str
    # From a .c3ignore: it leaves a file out even when git tracks it (git's own ignore
    # rules never apply to tracked files).
    c3ignore: bool = False


@dataclass(frozen=True)
class Level:
    """The patterns of one ignore-file directory. An entry's root-relative path `rel` is
    made relative to that directory as `lead + rel[strip:]`."""

    lead: str
    strip: int
    patterns: tuple[Pattern, ...]


def _trim_trailing_spaces(line: str) -> str:
    # Same as git's trim_trailing_spaces: a backslash protects the character after it.
    last_space = None
    i = 0
    while i < len(line):
        char = line[i]
        if char == " ":
            if last_space is None:
                last_space = i
        else:
            last_space = None
            if char == "\\":
                i += 1
                if i >= len(line):
                    return line
        i += 1
    return line if last_space is None else line[:last_space]


def _class_char(char: str) -> str:
    return "\\" + char if char in "\\]^-[" else char


def _class(pattern: str, i: int) -> tuple[str, int] | None:
    """Translate a bracket expression starting after `[`; None when unterminated."""
    out: list[str] = []
    negate = i < len(pattern) and pattern[i] in "!^"
    if negate:
        i += 1
    first = True
    while i < len(pattern):
        char = pattern[i]
        if char == "]" and not first:
            body = "".join(out)
            # Under WM_PATHNAME a bracket never matches '/'.
            return (f"(?!/)[^{body}]" if negate else f"(?!/)[{body}]"), i + 1
        first = False
        if char == "[" and pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            if end != -1 and pattern[i + 2:end] in _CLASSES:
                out.append(_CLASSES[pattern[i + 2:end]])
                i = end + 2
                continue
        if char == "\\" and i + 1 < len(pattern):
            i += 1
            char = pattern[i]
        lo = _class_char(char)
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            hi = pattern[i + 2]
            if hi == "\\" and i + 3 < len(pattern):
                i += 1
                hi = pattern[i + 2]
            out.append(f"{lo}-{_class_char(hi)}")
            i += 3
            continue
        out.append(lo)
        i += 1
    return None


def translate(pattern: str) -> re.Pattern[str]:
    """Regex (for fullmatch) of one wildmatch pattern with WM_PATHNAME semantics."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                j = i
                while j < n and pattern[j] == "*":
                    j += 1
                at_start = i == 0 or pattern[i - 1] == "/"
                if at_start and j == n:
                    out.append(".*")
                    i = j
                    continue
                if at_start and pattern[j] == "/":
                    out.append("(?:.*/)?")
                    i = j + 1
                    continue
                i = j  # any other run of stars is a plain star
            else:
                i += 1
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            translated = _class(pattern, i + 1)
            if translated is None:
                return NEVER  # git aborts the match on an unterminated bracket
            out.append(translated[0])
            i = translated[1]
        elif char == "\\":
            if i + 1 < n:
                out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(char))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def parse_line(line: str, source: str, *, c3ignore: bool = False) -> Pattern | None:
    """One line of an ignore file; None for blanks and comments."""
    line = line.rstrip("\n").removesuffix("\r")
    if not line or line.startswith("#"):
        return None
    text = _trim_trailing_spaces(line)
    negated = text.startswith("!")
    body = text[1:] if negated else text
    dir_only = body.endswith("/")
    body = body.rstrip("/") if dir_only else body
    if not body:
        return None
    basename_only = "/" not in body
    body = body.removeprefix("/")
    return Pattern(translate(body), negated, dir_only, basename_only, f"{source}: {text}", c3ignore)


def parse_file(text: str, source_name: str, *, c3ignore: bool = False) -> tuple[Pattern, ...]:
    text = text.removeprefix("\ufeff")
    patterns = []
    for number, line in enumerate(text.split("\n"), start=1):
        pattern = parse_line(line, f"{source_name}:{number}", c3ignore=c3ignore)
        if pattern is not None:
            patterns.append(pattern)
    return tuple(patterns)


def decide(
    levels: tuple[Level, ...], rel: str, name: str, is_dir: bool, *, tracked: bool = False
) -> Pattern | None:
    """The pattern that decides `rel` (deepest ignore file first, last match within a file
    wins), or None when nothing matches. The path is ignored if that pattern isn't negated.

    `tracked`: git tracks the path, so git's exclusions do not apply to it, only .c3ignore
    exclusions (and any negation) do. A path shipped untracked is therefore shipped tracked
    too: tracking a file can only add it."""
    for level in reversed(levels):
        sub = level.lead + rel[level.strip:]
        for pattern in reversed(level.patterns):
            if pattern.dir_only and not is_dir:
                continue
            if tracked and not (pattern.negated or pattern.c3ignore):
                continue
            if pattern.regex.fullmatch(name if pattern.basename_only else sub):
                return pattern
    return None
