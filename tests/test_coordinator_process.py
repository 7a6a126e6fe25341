"""`c3-coordinator` as a real process: ready file, bootstrap credentials, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
from pathlib import Path

import pytest

from c3.grpcutil import bearer, channel, check_health
from c3.v1 import coordinator_pb2 as pb
from coordinator.main import parse_args
from tests.harness.coordinator import client
from tests.harness.processes import ROOT, start_coordinator_process

pytestmark = pytest.mark.integration


async def start(tmp_path: Path) -> tuple[asyncio.subprocess.Process, str]:
    proc, address, _ = await start_coordinator_process(
        tmp_path, "--storage-address", "127.0.0.1:7431", "--signing-key",
        str(tmp_path / "key.pem"), "--heartbeat-ms", "500", stderr=asyncio.subprocess.PIPE,
    )
    return proc, address


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr


async def test_process_serves_bootstraps_and_stops_cleanly(tmp_path: Path) -> None:
    proc, address = await start(tmp_path)
    assert address.startswith("127.0.0.1:") and not address.endswith(":0")
    assert await check_health(address)
    boot_file = tmp_path / "bootstrap.json"
    assert stat.S_IMODE(os.stat(boot_file).st_mode) == 0o600
    boot = json.loads(boot_file.read_text())
    assert boot["api_key"].startswith("c3_key_") and boot["agent_secret"] and boot["org_id"]
    async with channel(address) as ch:
        me = await client(ch).WhoAmI(pb.WhoAmIRequest(), metadata=bearer(boot["api_key"]))
        assert me.org_name == "local" and me.org_id == boot["org_id"]
        balance = await client(ch).GetBalance(
            pb.GetBalanceRequest(), metadata=bearer(boot["api_key"])
        )
        assert balance.balance_minor == 1000 and balance.currency == "GBP"
    await stop(proc)

    # Second start on the same data: the same org and key still work, the file is untouched.
    proc, address = await start(tmp_path)
    assert json.loads(boot_file.read_text()) == boot
    async with channel(address) as ch:
        me = await client(ch).WhoAmI(pb.WhoAmIRequest(), metadata=bearer(boot["api_key"]))
        assert me.org_id == boot["org_id"]
    await stop(proc)


async def test_missing_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coordinator.main", "--listen", "127.0.0.1:0",
        cwd=ROOT, stderr=asyncio.subprocess.PIPE, env={**os.environ, "C3_COORDINATOR_DATA_DIR": ""},
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"--data-dir is required" in stderr and b"Traceback" not in stderr


def test_keep_finished_is_checked_and_read_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["--data-dir", str(tmp_path)]
    for value, said in (("-1", "--keep-finished-s must be 0 or more"), ("soon", "invalid float")):
        with pytest.raises(SystemExit) as exited:
            parse_args([*base, "--keep-finished-s", value])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err
    monkeypatch.setenv("C3_KEEP_FINISHED_S", "42.5")
    assert parse_args(base).keep_finished_s == 42.5
    assert parse_args([*base, "--keep-finished-s", "0"]).keep_finished_s == 0
