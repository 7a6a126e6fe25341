"""Every project c3d has seen: its live index and its watcher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from c3.storage.hashindex import HashIndex
from c3.workspace_git import git_index_file
from c3d.hotindex import ProjectIndex
from c3d.watcher import RustWatcher, Watcher, inotify_watch_limit

log = logging.getLogger(__name__)

Listener = Callable[[set[str]], None]
WatcherFactory = Callable[[Path, bool], Watcher]


def _rust_watcher(root: Path, force_polling: bool) -> Watcher:
    # Git's index decides which ignored files ship (`git add -f`); when the project is a
    # subdirectory of the repository it lies outside the tree, so it is watched as well.
    index = git_index_file(root)
    also = []
    if index is not None and not index.is_relative_to(root) and index.parent.is_dir():
        also.append(index.parent)
    return RustWatcher(root, force_polling=force_polling, also=also)


class Project:
    def __init__(self, root: Path, index: ProjectIndex) -> None:
        self.root = root
        self.index = index
        self.watcher: Watcher | None = None
        self.polling = False
        self.listeners: set[Listener] = set()
        self._git_follower: asyncio.Task[None] | None = None

    def on_change(self, paths: set[str]) -> None:
        relevant = self.index.note_changes(paths)
        if relevant:
            self._tell(relevant)
        if self.index.git_index_changed and self._git_follower is None:
            self._git_follower = asyncio.get_running_loop().create_task(self._follow_git_index())

    def _tell(self, relevant: set[str]) -> None:
        for listener in list(self.listeners):
            listener(relevant)

    async def _follow_git_index(self) -> None:
        """Re-read git's index (off the loop) until no change is left over; listeners hear
        only of files that joined or left the workspace by it."""
        try:
            while self.index.git_index_changed:
                affected = await self.index.reread_git_index()
                if affected:
                    self._tell(affected)
        except Exception:  # never silently: the next index change tries again
            log.exception("reading git's index for %s failed", self.root)
        finally:
            self._git_follower = None

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        follower = self._git_follower
        if follower is not None:  # may be called from a thread (Projects.close)
            follower.get_loop().call_soon_threadsafe(follower.cancel)


class Projects:
    def __init__(self, hashes: HashIndex, watcher_factory: WatcherFactory = _rust_watcher) -> None:
        self.hashes = hashes
        self.watcher_factory = watcher_factory
        self._by_root: dict[Path, Project] = {}
        self.warnings: list[str] = []

    def known(self) -> list[Path]:
        return sorted(self._by_root)

    async def get(self, root: Path) -> Project:
        """The project at `root`, watched from now on (the watch starts before any scan)."""
        root = root.resolve()
        project = self._by_root.get(root)
        if project is not None:
            return project
        project = Project(root, ProjectIndex(root, self.hashes))
        loop = asyncio.get_running_loop()
        try:
            watcher = self.watcher_factory(root, False)
            await asyncio.to_thread(watcher.start, loop, project.on_change)
        except OSError as exc:
            limit = inotify_watch_limit()
            message = (
                f"cannot watch {root} with inotify ({exc}); falling back to polling"
                + (f" (fs.inotify.max_user_watches={limit}: raise it with sysctl)" if limit else "")
            )
            log.warning(message)
            self.warnings.append(message)
            watcher = self.watcher_factory(root, True)
            await asyncio.to_thread(watcher.start, loop, project.on_change)
            project.polling = True
        project.watcher = watcher
        self._by_root[root] = project
        return project

    def forget(self, root: Path) -> None:
        project = self._by_root.pop(root.resolve(), None)
        if project is not None:
            project.close()

    async def close(self) -> None:
        for root in list(self._by_root):
            await asyncio.to_thread(self.forget, root)
