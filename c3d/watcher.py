"""File-system change notification, behind a small interface so tests can drive it.

The native boundary is watchfiles' Rust notifier. It is created synchronously (so the
watches exist before `start` returns and no change can slip between "watching" and the
first scan) and runs its blocking wait in a thread; batches reach the event loop through
`call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from watchfiles._rust_notify import RustNotify

log = logging.getLogger(__name__)

# Interactive settling: a batch is delivered STEP_MS after the last change in it, and never
# later than DEBOUNCE_MS after the first (watchfiles' default is 1,600 ms).
DEBOUNCE_MS = 150
STEP_MS = 15

ChangeCallback = Callable[[set[str]], None]


class Watcher(Protocol):
    def start(self, loop: asyncio.AbstractEventLoop, on_change: ChangeCallback) -> None: ...
    def stop(self) -> None: ...


class RustWatcher:
    """Recursive watcher of one directory tree, plus `also`: directories outside it whose
    own entries matter (the repository's git directory, for its `index`), watched without
    their subdirectories (a git directory's objects/ would cost hundreds of watches and a
    flood of events on every fetch). Nothing is filtered here: every path reaches
    `on_change`, which decides what matters."""

    def __init__(
        self, root: Path, *, force_polling: bool = False, poll_delay_ms: int = 300,
        also: list[Path] | None = None,
    ) -> None:
        self.root = root
        self.also = also or []
        self.force_polling = force_polling
        self.poll_delay_ms = poll_delay_ms
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._notifiers: list[RustNotify] = []

    def start(self, loop: asyncio.AbstractEventLoop, on_change: ChangeCallback) -> None:
        watches = [([self.root], True)] + ([(self.also, False)] if self.also else [])
        for paths, recursive in watches:
            notify = RustNotify(
                [str(p) for p in paths], False, self.force_polling, self.poll_delay_ms,
                recursive, True,
            )  # fmt: skip
            self._notifiers.append(notify)
            thread = threading.Thread(
                target=self._run, args=(notify, loop, on_change), name=f"watch:{self.root}",
                daemon=True,
            )  # fmt: skip
            self._threads.append(thread)
            thread.start()

    def _run(
        self, notify: RustNotify, loop: asyncio.AbstractEventLoop, on_change: ChangeCallback
    ) -> None:
        while not self._stop.is_set():
            try:
                result = notify.watch(DEBOUNCE_MS, STEP_MS, 0, self._stop)
            except Exception:  # the notifier died (tree removed, too many watches)
                log.exception("watcher for %s stopped", self.root)
                loop.call_soon_threadsafe(on_change, {str(self.root)})
                return
            if isinstance(result, set):
                paths = {path for _, path in result}
                if paths:
                    loop.call_soon_threadsafe(on_change, paths)
            elif result == "stop":
                return

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        for notify in self._notifiers:
            notify.close()
        self._threads, self._notifiers = [], []


def inotify_watch_limit() -> int | None:
    """The per-user inotify watch limit on Linux (None elsewhere)."""
    try:
        return int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    except (OSError, ValueError):
        return None
