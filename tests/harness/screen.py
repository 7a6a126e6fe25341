"""A real terminal for tests: a tmux session on its own server socket (so parallel runs
never meet), read back with `capture-pane`."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

TMUX = shutil.which("tmux") or "/usr/bin/tmux"
EXITED = "[c3 exited "


class Screen:
    """`argv` running in a fresh tmux server; when it exits the pane says `[c3 exited N]`
    and stays, so the screen can still be read."""

    def __init__(self, argv: list[str], *, env: dict[str, str], cwd: Path,
                 width: int = 220, height: int = 50) -> None:
        self.socket = f"c3-test-{uuid.uuid4().hex[:12]}"
        self.env = env
        shell = f"{shlex.join(argv)}; echo \"{EXITED}$?]\"; sleep 3600"
        self._tmux("new-session", "-d", "-x", str(width), "-y", str(height), "-c", str(cwd),
                   shell)

    def _tmux(self, *args: str) -> str:
        result = subprocess.run([TMUX, "-L", self.socket, "-f", "/dev/null", *args],
                                env=self.env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def lines(self, *, escapes: bool = False) -> list[str]:
        """The screen's non-empty lines (wrapped lines joined; with `escapes`, colours as
        escape sequences)."""
        out = self._tmux("capture-pane", "-p", "-J", *(["-e"] if escapes else []), "-t", "0")
        return [line.rstrip() for line in out.splitlines() if line.strip()]

    def wait_until(self, done: Callable[[list[str]], bool], what: str, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if done(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never showed {what}:\n" + "\n".join(lines))
            time.sleep(0.05)

    def exit_code(self, timeout: float = 60) -> int:
        lines = self.wait_until(lambda ls: any(line.startswith(EXITED) for line in ls),
                                "the command exit", timeout)
        line = next(line for line in lines if line.startswith(EXITED))
        return int(line[len(EXITED):-1])

    def send_keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "0", *keys)

    def close(self) -> None:
        subprocess.run([TMUX, "-L", self.socket, "kill-server"], env=self.env,
                       capture_output=True, timeout=30)

    def __enter__(self) -> Screen:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
