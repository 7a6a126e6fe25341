"""User config file, env overrides, and where the API key comes from."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from c3.errors import ConfigError
from c3.paths import c3_paths
from c3.userconfig import (
    DEFAULT_COORDINATOR,
    TlsSettings,
    UserConfig,
    load_user_config,
    resolve_api_key,
    save_user_config,
    update_user_config,
)

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "c3home"
    monkeypatch.setenv("C3_HOME", str(home))
    for name in ("C3_API_KEY", "C3_COORDINATOR", "C3_TLS", "C3_TLS_CA", "C3_TLS_CERT",
                 "C3_TLS_KEY", "C3_TLS_SERVER_NAME"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_defaults_without_a_file() -> None:
    config = load_user_config()
    assert config == UserConfig()
    assert config.coordinator == DEFAULT_COORDINATOR == "127.0.0.1:7430"
    assert config.api_key == "" and config.tls == TlsSettings()


def test_save_is_private_and_round_trips() -> None:
    config = UserConfig(coordinator="gpu.example.org:7430", api_key="c3k_secret",
                        tls=TlsSettings(enabled=True, ca_file="/etc/c3/ca.pem", server_name="gpu"))
    path = save_user_config(config)
    assert path == c3_paths().config_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_user_config() == config
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temp file left


def test_update_keeps_other_fields_and_ignores_env(monkeypatch: pytest.MonkeyPatch) -> None:
    save_user_config(UserConfig(coordinator="a:1", api_key="k1"))
    monkeypatch.setenv("C3_COORDINATOR", "env:9")
    updated = update_user_config(api_key="k2")
    assert updated == UserConfig(coordinator="a:1", api_key="k2")
    assert load_user_config(apply_env=False).coordinator == "a:1"


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    save_user_config(UserConfig(coordinator="file:1"))
    monkeypatch.setenv("C3_COORDINATOR", "env-host:7430")
    monkeypatch.setenv("C3_TLS", "yes")
    monkeypatch.setenv("C3_TLS_CA", "/ca.pem")
    config = load_user_config()
    assert config.coordinator == "env-host:7430"
    assert config.tls.enabled and config.tls.ca_file == "/ca.pem"
    monkeypatch.setenv("C3_TLS", "maybe")
    with pytest.raises(ConfigError, match="C3_TLS: 'maybe' is not a boolean; set it to 1 or 0"):
        load_user_config()


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("coordinater: x:1\n", 1, "coordinater: unknown field; did you mean `coordinator`?"),
    ("api_key: k\ntls:\n  enable: true\n", 3, "tls.enable: unknown field; did you mean `enabled`?"),
    ("tls:\n  enabled: 3\n", 2, "tls.enabled: expected true or false"),
    ("api_key: [a]\n", 1, "api_key: expected a string"),
    ("api_key: 'x\n", 2, "yaml: invalid YAML"),
    ("- a\n", 1, "expected a mapping"),
])
def test_bad_user_config(text: str, line: int, fragment: str) -> None:
    path = c3_paths().config_file
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_user_config()
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ") and fragment in message and "\n" not in message


def test_api_key_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    assert resolve_api_key(project) == ("", "")
    save_user_config(UserConfig(api_key="from-user-config"))
    assert resolve_api_key(project) == ("from-user-config", str(c3_paths().config_file))
    assert resolve_api_key(None) == ("from-user-config", str(c3_paths().config_file))
    (project / ".c3.local").write_text("api_key: from-local\n")
    assert resolve_api_key(project) == ("from-local", str(project / ".c3.local"))
    monkeypatch.setenv("C3_API_KEY", "from-env")
    assert resolve_api_key(project) == ("from-env", "C3_API_KEY")
    monkeypatch.setenv("C3_API_KEY", "")  # empty means unset
    assert resolve_api_key(project)[0] == "from-local"


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("apikey: x\n", 1, "apikey: unknown field; did you mean `api_key`?"),
    ("api_key:\n", 1, "api_key: is missing or empty; add `api_key: <key>`"),
    ("token: x\napi_key: [1]\n", 1, "token: unknown field"),
    ("api_key: 'x\n", 2, "yaml: invalid YAML"),
    ("api_key: 12345\n", 1, "api_key: expected a string"),
])
def test_bad_c3_local(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    (tmp_path / ".c3.local").write_text(text)
    with pytest.raises(ConfigError) as info:
        resolve_api_key(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / '.c3.local'}:{line}: ") and fragment in message
    assert "\n" not in message


def test_unreadable_c3_local(tmp_path: Path) -> None:
    (tmp_path / ".c3.local").mkdir()
    with pytest.raises(ConfigError, match=r"\.c3\.local:1: \.c3\.local: cannot read file"):
        resolve_api_key(tmp_path)


def test_config_file_written_without_group_access_even_with_lax_umask() -> None:
    old = os.umask(0)
    try:
        path = save_user_config(UserConfig(api_key="k"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
