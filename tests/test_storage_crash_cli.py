"""storaged dies (kill -9) while `c3 data cp` moves bytes: the user reads one line naming
the storage service and its address, with exit code 3, never the transport's own text."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.cli import c3ctl, processes_mentioning, running_stack

pytestmark = pytest.mark.faults

TRANSPORT_TEXT = re.compile(
    r"HTTP transport|Socket closed|Stream removed|Connection reset|RST_STREAM|GOAWAY|"
    r"debug_error_string|Traceback",
    re.IGNORECASE,
)


def _storaged_pid(home: Path) -> int:
    pids = [p for p in processes_mentioning(str(home)) if b"storaged.main" in _cmdline(p)]
    assert len(pids) == 1, pids
    return pids[0]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _data_dir(pid: int) -> Path:
    args = _cmdline(pid).split(b"\0")
    return Path(args[args.index(b"--data-dir") + 1].decode())


def _size(root: Path) -> int:
    total = 0
    for p in root.rglob("*"):
        try:
            total += p.stat().st_size if p.is_file() else 0
        except OSError:  # a staging file renamed meanwhile
            continue
    return total


def _assert_one_clear_line(result: subprocess.CompletedProcess[str], address: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3, result.stderr
    assert len(lines) == 1, result.stderr
    assert not TRANSPORT_TEXT.search(result.stderr), result.stderr
    assert f"storage at {address} is unreachable" in lines[0], lines[0]


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_storaged_killed_mid_copy_is_one_line_naming_it(tmp_path: Path, direction: str) -> None:
    home = tmp_path / "home"
    data = tmp_path / "big"
    data.mkdir()
    for i in range(6):  # large files travel as streams of 1 MiB chunks
        (data / f"part{i}.bin").write_bytes(os.urandom(32 << 20))
    with running_stack(home) as env:
        if direction == "download":
            assert c3ctl(env, "data", "cp", str(data), "/datasets/big", timeout=120).returncode == 0
        status = c3ctl(env, "status", "--json").stdout
        address = re.search(r'"storage": "(127\.0\.0\.1:\d+)"', status)
        pid = _storaged_pid(home)
        args = (
            ["cp", str(data), "/datasets/big2"]
            if direction == "upload"
            else ["cp", "/datasets/big", str(tmp_path / "out")]
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "c3ctl.main", "data", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Kill once the bytes are moving: storaged has stored (upload) or the client has
        # written (download) a few MiB of the 192.
        receiver = _data_dir(pid) if direction == "upload" else tmp_path / "out"
        start = _size(receiver)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if _size(receiver) - start > (8 << 20):
                break
            time.sleep(0.002)
        assert proc.poll() is None, "the copy ended before storaged could be killed"
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=60)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert address is not None, status
        _assert_one_clear_line(result, address.group(1))
