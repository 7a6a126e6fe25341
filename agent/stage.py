"""Staging a job's directories so the sandbox never names a host path.

A bind mount's root field in `/proc/self/mountinfo` is the source's path within its
filesystem, so binding `<data dir>/jobs/<id>/workspace` would tell the job where the
agent keeps its state. Instead, in a private mount namespace made for the job (it
vanishes with the job's last process, so nothing is left mounted after a crash), each
directory the job sees is first mounted as an overlay with a single writable layer (or
one read-only layer) named by a path *relative to its parent*: the overlay is a
filesystem of its own, so the sandbox's bind of it shows `/` or `/workspace` as its root,
and its options show only `upperdir=<job id>`. Files land in the host directory itself
(the overlay's upper layer), as plain files the agent reads after the job.

The staging runs as root before the sandbox's user namespace exists; it lives under a
tmpfs at `/run` of the private namespace only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

STAGE_ROOT = "/run"
STAGED = f"{STAGE_ROOT}/c3"
EMPTY_DIR = ".c3-empty"
WORK_SUFFIX = ".c3-work"
# Overlay options split on ',' and ':' and unescape '\\': names must hold none of them.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# $1 = stage root, $2 = mount, $3 = mkdir, then (kind dir name target) groups, "--", argv.
_SCRIPT = r"""set -e
root=$1 mount=$2 mkdir=$3; shift 3
"$mount" -t tmpfs -o mode=0755,size=1m c3-stage "$root"
"$mkdir" "$root/c3"
while [ "$1" != -- ]; do
  kind=$1 dir=$2 name=$3 target=$4; shift 4
  "$mkdir" "$root/c3/$target"
  cd "$dir"
  if [ "$kind" = bind ]; then
    "$mount" --bind "$dir/$name" "$root/c3/$target" || {
      echo "c3: cannot stage $dir/$name for the job" >&2; exit 125; }
    continue
  elif [ "$kind" = rw ]; then
    opts="lowerdir=.c3-empty,upperdir=$name,workdir=$name.c3-work"
  else
    opts="lowerdir=$name:.c3-empty"
  fi
  "$mount" -t overlay -o "$opts" c3 "$root/c3/$target" || {
    echo "c3: cannot stage the job's $target directory (overlay mount failed)" >&2; exit 125; }
done
shift
cd /
exec "$@"
"""


@dataclass(frozen=True)
class StagedDir:
    """`parent/name` shown to the sandbox at `/run/c3/<target>` (writable: an rw overlay,
    else a read-only one; `plain`: a bind, for host paths the job sees at their own path
    anyway, such as a venv's base interpreter under root's 0700 home)."""

    parent: Path
    name: str
    target: str
    writable: bool
    plain: bool = False

    @property
    def staged(self) -> str:
        return f"{STAGED}/{self.target}"


def can_stage(path: Path) -> bool:
    return bool(_SAFE_NAME.fullmatch(path.name)) and path.parent != path


def prepare_dirs(dirs: list[StagedDir]) -> None:
    """The empty lower layer and work dirs overlays need, beside each source (blocking)."""
    for d in dirs:
        if d.plain:
            continue
        (d.parent / EMPTY_DIR).mkdir(exist_ok=True)
        if d.writable:
            (d.parent / f"{d.name}{WORK_SUFFIX}").mkdir(exist_ok=True)


def work_dir(path: Path) -> Path:
    """The overlay work dir of a writable staged `path` (remove it with the job)."""
    return path.parent / f"{path.name}{WORK_SUFFIX}"


def stage_argv(unshare: str, sh: str, mount: str, mkdir: str, dirs: list[StagedDir],
               then: list[str]) -> list[str]:
    """Enter a private mount namespace, mount `dirs`, then exec `then`."""
    argv = [unshare, "--mount", "--propagation", "private", "--", sh, "-c", _SCRIPT,
            "c3-stage", STAGE_ROOT, mount, mkdir]
    for d in dirs:
        kind = "bind" if d.plain else "rw" if d.writable else "ro"
        argv += [kind, str(d.parent), d.name, d.target]
    return [*argv, "--", *then]


def hand_over(root: Path, uid: int, gid: int) -> None:
    """Make everything under `root` the job's own (the agent wrote it as root); blocking.
    Symlinks are changed, never followed (lchown)."""
    os.lchown(root, uid, gid)
    for current, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(current, name)
            st = os.lstat(path)
            if st.st_uid != uid or st.st_gid != gid:
                os.lchown(path, uid, gid)
