"""Staging a job's directories so the sandbox never names a host path.

A bind mount's root field in `/proc/self/mountinfo` is the source's path within its
filesystem, so binding `<data dir>/jobs/<id>/workspace` would tell the job where the
agent keeps its state. Instead the agent (root) first mounts each directory the job
sees as an overlay — a filesystem of its own — with one writable layer (the job dir) or
one read-only layer (a dataset, the venv), its layers named `/proc/self/fd/N` (the agent
passes open descriptors, so the mount options name no path either). The sandbox binds
those overlays: its mountinfo shows `/workspace` as a root and `upperdir=/proc/self/fd/4`.
Files land in the host directory itself (the upper layer), as plain files the agent
reads after the job, once the overlays are unmounted.

The mounts live under `/run/c3-<agent key>/<job dir name>/` for the job's lifetime only;
an agent removes what a killed run of it left there when it starts (`sweep`). One mount
syscall each, in a thread: about a millisecond for a job.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STAGE_PARENT = Path("/run")
EMPTY_DIR = ".c3-empty"
WORK_SUFFIX = ".c3-work"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MS_BIND, _MS_REC, _MNT_DETACH = 0x1000, 0x4000, 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def stage_root(key: str) -> Path:
    """Where one agent (by its data dir's key) stages its jobs' mounts."""
    return STAGE_PARENT / f"c3-{key}"


@dataclass(frozen=True)
class StagedDir:
    """`parent/name` shown to the sandbox at `<stage>/<target>`: an overlay, writable or
    read-only; or (`plain`) a bind, for host paths the job sees at their own path anyway,
    such as a venv's base interpreter under root's 0700 home."""

    parent: Path
    name: str
    target: str
    writable: bool
    plain: bool = False

    @property
    def source(self) -> Path:
        return self.parent / self.name


def can_stage(path: Path) -> bool:
    return bool(_SAFE_NAME.fullmatch(path.name)) and path.parent != path


def work_dir(path: Path) -> Path:
    """The overlay work dir of a writable staged `path` (remove it with the job)."""
    return path.parent / f"{path.name}{WORK_SUFFIX}"


def _mount(source: str, target: Path, fstype: str | None, flags: int, options: str) -> None:
    if _libc.mount(source.encode(), str(target).encode(),
                   fstype.encode() if fstype else None, flags,
                   options.encode() if options else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot stage {target} for the job's sandbox: {os.strerror(err)}")


@contextlib.contextmanager
def _opened(*paths: Path) -> Iterator[list[int]]:
    fds: list[int] = []
    try:
        for path in paths:
            fds.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW))
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def _mount_one(d: StagedDir, target: Path) -> None:
    if d.plain:
        _mount(str(d.source), target, None, _MS_BIND | _MS_REC, "")
        return
    (d.parent / EMPTY_DIR).mkdir(exist_ok=True)
    if d.writable:
        work_dir(d.source).mkdir(exist_ok=True)
        with _opened(d.parent / EMPTY_DIR, d.source, work_dir(d.source)) as (lower, upper, work):
            _mount("c3", target, "overlay", 0, f"lowerdir=/proc/self/fd/{lower},"
                   f"upperdir=/proc/self/fd/{upper},workdir=/proc/self/fd/{work}")
    else:
        # A read-only overlay needs two lower layers; the second is empty.
        with _opened(d.source, d.parent / EMPTY_DIR) as (lower, empty):
            _mount("c3", target, "overlay", 0,
                   f"lowerdir=/proc/self/fd/{lower}:/proc/self/fd/{empty}")


class Stage:
    """One job's staged mounts under `path` (blocking methods: call them off the loop)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.targets: list[Path] = []

    @classmethod
    def mount(cls, path: Path, dirs: list[StagedDir]) -> Stage:
        path.parent.mkdir(mode=0o711, exist_ok=True)
        os.chmod(path.parent, 0o711)  # the job's host uid may pass, not list
        path.mkdir(mode=0o755)
        stage = cls(path)
        try:
            for d in dirs:
                target = path / d.target
                target.mkdir(mode=0o755)
                _mount_one(d, target)
                stage.targets.append(target)
        except BaseException:
            stage.unmount()
            raise
        return stage

    def unmount(self) -> None:
        for target in reversed(self.targets):
            if _libc.umount2(str(target).encode(), _MNT_DETACH) != 0:
                err = ctypes.get_errno()
                if err not in (errno.EINVAL, errno.ENOENT):
                    log.warning("cannot unmount %s: %s", target, os.strerror(err))
        self.targets = []
        _remove_empty(self.path)
        with contextlib.suppress(OSError):  # the agent's stage root, when no job is staged
            os.rmdir(self.path.parent)


def _remove_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            with contextlib.suppress(OSError):
                os.rmdir(entry.path)
        os.rmdir(path)


def sweep(root: Path) -> list[str]:
    """Unmount and remove what a killed run of this agent staged under `root` (blocking).
    Directories are only ever rmdir'ed, never emptied: an overlay that is still mounted
    keeps its files."""
    removed = []
    with contextlib.suppress(OSError):
        for job in os.scandir(root):
            for entry in os.scandir(job.path):
                _libc.umount2(entry.path.encode(), _MNT_DETACH)
            _remove_empty(Path(job.path))
            removed.append(job.name)
        os.rmdir(root)
    return removed


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
