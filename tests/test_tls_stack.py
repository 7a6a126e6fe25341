"""`c3ctl up --tls`: the whole local stack over TLS; deploy -f and pull work end to end."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from c3 import grpcutil, tls
from c3.userconfig import load_user_config
from c3ctl.cmd_admin import parse_amount
from tests.harness.cli import c3ctl, running_stack

pytestmark = pytest.mark.e2e


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hello"


def test_up_tls_deploy_and_pull(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with running_stack(home, tls=True) as env:
        import os

        os.environ["C3_HOME"] = str(home)
        try:
            config = load_user_config(home / "config" / "config.yaml", apply_env=False)
        finally:
            del os.environ["C3_HOME"]
        assert config.tls.enabled and Path(config.tls.ca_file).is_file()
        creds = tls.channel_credentials(config.tls.ca_file)
        assert asyncio.run(grpcutil.check_health(config.coordinator, 2.0, creds))
        # The same port does not speak plaintext: TLS really is on.
        assert not asyncio.run(grpcutil.check_health(config.coordinator, 2.0))
        project = tmp_path / "hello"
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("c3-artifacts"))
        deployed = c3ctl(env, "deploy", "-f", cwd=project, timeout=120)
        assert deployed.returncode == 0, deployed.stderr
        assert "hello from c3" in deployed.stdout + deployed.stderr
        pulled = c3ctl(env, "pull", cwd=project)
        assert pulled.returncode == 0, pulled.stderr
        assert list((project / "c3-artifacts").rglob("hello.txt"))
        assert "warning: plaintext" not in deployed.stderr + pulled.stderr


def test_plaintext_to_a_remote_address_warns(capsys) -> None:  # type: ignore[no-untyped-def]
    assert tls.warn_if_plaintext("10.1.2.3:7430", None)
    assert "plaintext" in capsys.readouterr().err
    assert not tls.warn_if_plaintext("127.0.0.1:7430", None)
    assert not tls.warn_if_plaintext("localhost:7430", None)


def test_topup_amounts_are_parsed_to_minor_units() -> None:
    import pytest

    from c3.errors import InvalidArgument

    assert parse_amount("5") == 500 and parse_amount("2.50") == 250 and parse_amount("0.01") == 1
    for bad in ("-5", "0", "abc", "1.001", "nan", "inf", ""):
        with pytest.raises(InvalidArgument):
            parse_amount(bad)
