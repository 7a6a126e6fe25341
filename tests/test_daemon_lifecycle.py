"""c3d's lifecycle as c3ctl sees it: autostart, one daemon per user, stale and foreign
sockets, version mismatch, the socket's permissions, and the systemd unit."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.cli import c3ctl, clean_env, processes_mentioning


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = clean_env(tmp_path / "home")
    yield env
    c3ctl(env, "daemon", "stop")
    deadline = time.monotonic() + 10
    while processes_mentioning(env["C3_HOME"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in processes_mentioning(env["C3_HOME"]):
        os.kill(pid, 9)


def socket_path(env: dict[str, str]) -> Path:
    return Path(env["C3_HOME"]) / "run" / "c3d.sock"


def daemon_pid(env: dict[str, str]) -> int:
    out = c3ctl(env, "status", "--json")
    assert out.returncode == 0, out.stderr
    import json

    return int(json.loads(out.stdout)["daemon_pid"] or 0)


@pytest.mark.integration
@pytest.mark.integration
@pytest.mark.integration
@pytest.mark.integration
def test_autostart_private_socket_and_single_instance(env: dict[str, str]) -> None:
    assert daemon_pid(env) == 0
    started = c3ctl(env, "daemon", "restart")
    assert started.returncode == 0, started.stderr
    pid = daemon_pid(env)
    assert pid > 0
    mode = stat.S_IMODE(socket_path(env).stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert stat.S_IMODE(socket_path(env).parent.stat().st_mode) == 0o700

    second = subprocess.run(
        [sys.executable, "-m", "c3d.main"], env=env, capture_output=True, text=True, timeout=30
    )
    assert second.returncode != 0
    assert "already listening" in second.stderr
    assert daemon_pid(env) == pid  # the first one is untouched


@pytest.mark.integration
@pytest.mark.integration
@pytest.mark.integration
@pytest.mark.integration
def test_stale_socket_is_replaced(env: dict[str, str]) -> None:
    path = socket_path(env)
    path.parent.mkdir(parents=True, mode=0o700)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # a socket file nobody listens on: a crashed daemon's leftover
    dead.close()
    assert path.exists()
    ls = c3ctl(env, "daemon", "restart")
    assert ls.returncode == 0, ls.stderr
    assert daemon_pid(env) > 0


@pytest.mark.integration
@pytest.mark.integration
@pytest.mark.integration
@pytest.mark.integration
@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the socket to another user")
def test_socket_of_another_user_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    path = socket_path(env)
    path.parent.mkdir(parents=True, mode=0o700)
    path.write_text("")
    os.chown(path, 65534, 65534)
    project = tmp_path / "p"
    project.mkdir()
    (project / ".c3").write_text("script: run.sh\n")
    (project / "run.sh").write_text("echo hi\n")
    result = c3ctl(env, "deploy", cwd=project)
    assert result.returncode == 1
    assert "belongs to uid 65534" in result.stderr and "Traceback" not in result.stderr
    assert path.exists()  # not deleted behind the owner's back


@pytest.mark.integration
@pytest.mark.integration
@pytest.mark.integration
@pytest.mark.integration
def test_daemon_of_another_version_is_restarted(env: dict[str, str], tmp_path: Path) -> None:
    old = subprocess.Popen(
        [sys.executable, "-c",
         "import c3; c3.__version__ = '0.0.1-old'\nfrom c3d.main import main\nmain()"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while not socket_path(env).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    project = tmp_path / "p"
    project.mkdir()
    (project / ".c3").write_text("script: run.sh\n")
    (project / "run.sh").write_text("echo hi\n")
    result = c3ctl(env, "ls-files", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "c3d 0.0.1-old is running but this is c3ctl" in result.stderr
    assert "run.sh" in result.stdout
    old.wait(timeout=20)  # it was asked to stop
    status = c3ctl(env, "daemon", "status")
    assert "0.0.1-old" not in status.stdout and "c3d 0.1.0" in status.stdout


@pytest.mark.integration
@pytest.mark.integration
@pytest.mark.integration
@pytest.mark.integration
def test_daemon_install_prints_unit_without_systemd(env: dict[str, str]) -> None:
    result = c3ctl(env, "daemon", "install", "--print")
    assert result.returncode == 0
    assert "ExecStart=" in result.stdout and "-m c3d.main" in result.stdout
    assert f"Environment=C3_HOME={env['C3_HOME']}" in result.stdout


@pytest.mark.faults
@pytest.mark.faults
@pytest.mark.faults
@pytest.mark.faults
def test_daemon_that_stops_answering_is_named_and_restart_replaces_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = socket_path(env)
    path.parent.mkdir(parents=True, mode=0o700)
    pid_file = Path(env["C3_HOME"]) / "state" / "c3d" / "c3d.pid"
    pid_file.parent.mkdir(parents=True)
    # A "c3d" that accepts connections and never answers (a hung daemon).
    hung = subprocess.Popen(
        [sys.executable, "-c",
         "import socket, sys, time  # c3d.main stand-in\n"
         "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)\n"
         "print('ready', flush=True)\ntime.sleep(600)\n", str(path)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert hung.stdout is not None and hung.stdout.readline().strip() == "ready"
        pid_file.write_text(f"{hung.pid}\n")
        project = tmp_path / "p"
        project.mkdir()
        (project / ".c3").write_text("script: run.sh\n")
        (project / "run.sh").write_text("echo hi\n")
        stuck = c3ctl(env, "ls-files", cwd=project)
        assert stuck.returncode == 3
        assert f"(pid {hung.pid})" in stuck.stderr and "does not answer" in stuck.stderr
        assert "c3ctl daemon restart" in stuck.stderr and "Traceback" not in stuck.stderr

        restarted = c3ctl(env, "daemon", "restart")
        assert restarted.returncode == 0, restarted.stderr
        assert hung.wait(timeout=15) != 0  # it was killed
        assert daemon_pid(env) not in (0, hung.pid)
    finally:
        if hung.poll() is None:
            hung.kill()
