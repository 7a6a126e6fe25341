"""Running the real local stack and the real CLI from tests (imported by test modules)."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def c3ctl(
    env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "c3ctl.main", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )


def processes_mentioning(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("C3_")}
    env.update(C3_HOME=str(home), NO_COLOR="1", PYTHONUNBUFFERED="1")
    return env


@contextmanager
def running_stack(home: Path, *, tls: bool = False) -> Iterator[dict[str, str]]:
    """`c3ctl up` on free ports in a private C3_HOME (`--tls` with tls=True); on exit,
    down + daemon stop, and a check that no process of this installation is left."""
    env = clean_env(home)
    extra = ("--tls",) if tls else ()
    up = c3ctl(env, "up", "--coordinator-port", "0", "--storage-port", "0", *extra, timeout=90)
    assert up.returncode == 0, up.stderr
    try:
        yield env
    finally:
        c3ctl(env, "down")
        c3ctl(env, "daemon", "stop")
        deadline = time.monotonic() + 15
        while processes_mentioning(str(home)) and time.monotonic() < deadline:
            time.sleep(0.05)
        stray = processes_mentioning(str(home))
        for pid in stray:
            os.kill(pid, 9)
        assert not stray, f"processes left behind: {stray}"


class LineReader:
    """Reads a child's stdout/stderr line by line with a deadline (never blocks forever)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.selector = selectors.DefaultSelector()
        self.selector.register(proc.stdout, selectors.EVENT_READ, "out")
        self.selector.register(proc.stderr, selectors.EVENT_READ, "err")
        self.seen: list[tuple[str, str]] = []

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for key, _ in self.selector.select(timeout=max(0.0, deadline - time.monotonic())):
                line = key.fileobj.readline()  # type: ignore[union-attr]
                if not line:
                    self.selector.unregister(key.fileobj)
                    continue
                self.seen.append((key.data, line))
                if text in line:
                    return str(line)
            if not self.selector.get_map():
                break
        raise AssertionError(f"never saw {text!r}; output so far:\n" + "".join(line for _, line in self.seen))
