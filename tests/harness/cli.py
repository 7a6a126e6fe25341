"""The real CLI and the real local stack (`c3 up`) from tests, in a private C3_HOME."""

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
    """Reads a child's stdout/stderr line by line with a deadline (never blocks forever).

    Reads the raw pipes itself: a buffered readline() can swallow several lines at once,
    after which select() sees nothing more on the pipe and the later lines would wait
    until the child writes again."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.selector = selectors.DefaultSelector()
        self._partial: dict[str, bytes] = {}
        for name, pipe in (("out", proc.stdout), ("err", proc.stderr)):
            self.selector.register(pipe.fileno(), selectors.EVENT_READ, name)
            self._partial[name] = b""
        self._ready: list[tuple[str, str]] = []
        self.seen: list[tuple[str, str]] = []

    def _read_some(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout=timeout):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                self.selector.unregister(key.fd)
                rest = self._partial.pop(key.data)
                if rest:
                    self._ready.append((key.data, rest.decode(errors="replace")))
                continue
            data = self._partial[key.data] + chunk
            *lines, self._partial[key.data] = data.split(b"\n")
            self._ready += [(key.data, line.decode(errors="replace") + "\n") for line in lines]

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """The first line containing `text`, already seen or still to come: stdout and
        stderr are separate pipes, so a line may have been read while waiting for
        another on the other stream."""
        for _, line in self.seen:
            if text in line:
                return line
        deadline = time.monotonic() + timeout
        while True:
            while self._ready:
                stream, line = self._ready.pop(0)
                self.seen.append((stream, line))
                if text in line:
                    return line
            if not self.selector.get_map() or time.monotonic() >= deadline:
                break
            self._read_some(max(0.0, deadline - time.monotonic()))
        raise AssertionError(f"never saw {text!r}; output so far:\n" + "".join(line for _, line in self.seen))

    def rest(self, timeout: float = 60) -> tuple[str, str]:
        """Everything still to come on (stdout, stderr) until the child closes both."""
        deadline = time.monotonic() + timeout
        while self.selector.get_map() and time.monotonic() < deadline:
            self._read_some(max(0.0, deadline - time.monotonic()))
        self.seen += self._ready
        self._ready = []
        return (
            "".join(line for stream, line in self.seen if stream == "out"),
            "".join(line for stream, line in self.seen if stream == "err"),
        )
