"""The user's config file (coordinator address, API key, TLS) and where the API key comes from.

File: `c3_paths().config_file`, YAML, mode 0600, written atomically. Every setting has
one default and one env override:

    coordinator     127.0.0.1:7430   C3_COORDINATOR
    api_key         ""               C3_API_KEY (see resolve_api_key for the full order)
    tls.enabled     false            C3_TLS (1/true/yes or 0/false/no)
    tls.ca_file     ""               C3_TLS_CA
    tls.cert_file   ""               C3_TLS_CERT
    tls.key_file    ""               C3_TLS_KEY
    tls.server_name ""               C3_TLS_SERVER_NAME
"""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NoReturn

import yaml

from c3.errors import ConfigError
from c3.paths import c3_paths, ensure_private_dir

DEFAULT_COORDINATOR = "127.0.0.1:7430"
LOCAL_FILE = ".c3.local"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class TlsSettings:
    enabled: bool = False
    ca_file: str = ""  # CA bundle that signed the server certificates; "" = system roots
    cert_file: str = ""  # client certificate (mutual TLS), optional
    key_file: str = ""
    server_name: str = ""  # override of the name checked against the certificate


@dataclass(frozen=True)
class UserConfig:
    coordinator: str = DEFAULT_COORDINATOR
    api_key: str = ""
    tls: TlsSettings = field(default_factory=TlsSettings)


_TLS_ENV = {"ca_file": "C3_TLS_CA", "cert_file": "C3_TLS_CERT", "key_file": "C3_TLS_KEY",
            "server_name": "C3_TLS_SERVER_NAME"}


def _fail(path: Path, node: yaml.Node | None, field_name: str, problem: str, fix: str) -> NoReturn:
    line = node.start_mark.line + 1 if node is not None else 1
    raise ConfigError(f"{path}:{line}: {field_name}: {problem}; {fix}")


def _compose(path: Path) -> yaml.Node | None:
    """The file's YAML node tree; None when the file is absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        _fail(path, None, path.name, f"cannot read file ({reason})", "check its permissions and encoding")
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(exc.problem or "invalid YAML").split())
        raise ConfigError(f"{path}:{mark.line + 1 if mark else 1}: yaml: invalid YAML: {problem}; fix the syntax") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}:1: yaml: invalid YAML; fix the syntax ({' '.join(str(exc).split())})") from exc


def _mapping(path: Path, node: yaml.Node, prefix: str, known: tuple[str, ...]) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        _fail(path, node, prefix or path.name, "expected a mapping", f"write `key: value` lines ({', '.join(known)})")
    result: dict[str, yaml.Node] = {}
    for key, value in node.value:
        name = str(key.value)
        full = f"{prefix}.{name}" if prefix else name
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            _fail(path, key, full, "unknown field", f"{hint}known fields: {', '.join(known)}")
        result[name] = value
    return result


def _scalar(path: Path, node: yaml.Node, name: str, kind: type) -> Any:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return kind()
    if kind is bool and isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
        return str(node.value).lower() in _TRUE
    if kind is str and isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str":
        return str(node.value).strip()
    expected = "true or false" if kind is bool else "a string"
    _fail(path, node, name, f"expected {expected}", f"write `{name.rsplit('.', 1)[-1]}: <value>`")


def _read_file(path: Path) -> UserConfig:
    node = _compose(path)
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"):
        return UserConfig()
    top = _mapping(path, node, "", ("coordinator", "api_key", "tls"))
    tls = TlsSettings()
    if "tls" in top and not (isinstance(top["tls"], yaml.ScalarNode) and top["tls"].tag.endswith(":null")):
        tls_nodes = _mapping(path, top["tls"], "tls", tuple(f.name for f in fields(TlsSettings)))
        tls = TlsSettings(**{
            name: _scalar(path, value, f"tls.{name}", bool if name == "enabled" else str)
            for name, value in tls_nodes.items()
        })
    coordinator = _scalar(path, top["coordinator"], "coordinator", str) if "coordinator" in top else ""
    return UserConfig(
        coordinator=coordinator or DEFAULT_COORDINATOR,
        api_key=_scalar(path, top["api_key"], "api_key", str) if "api_key" in top else "",
        tls=tls,
    )


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ConfigError(f"environment: {name}: {value!r} is not a boolean; set it to 1 or 0")


def load_user_config(path: Path | None = None, *, apply_env: bool = True) -> UserConfig:
    """The user config, defaults filled in; env overrides applied unless `apply_env=False`
    (use that when loading in order to modify and save)."""
    config = _read_file(path or c3_paths().config_file)
    if not apply_env:
        return config
    tls_changes: dict[str, Any] = {k: os.environ[env] for k, env in _TLS_ENV.items() if os.environ.get(env)}
    tls = replace(config.tls, enabled=_env_bool("C3_TLS", config.tls.enabled), **tls_changes)
    return replace(config, coordinator=os.environ.get("C3_COORDINATOR") or config.coordinator, tls=tls)


def save_user_config(config: UserConfig, path: Path | None = None) -> Path:
    """Write `config` atomically with mode 0600 (its directory 0700); returns the path."""
    path = path or c3_paths().config_file
    ensure_private_dir(path.parent)
    data: dict[str, Any] = {"coordinator": config.coordinator}
    if config.api_key:
        data["api_key"] = config.api_key
    if config.tls != TlsSettings():
        data["tls"] = {f.name: getattr(config.tls, f.name) for f in fields(TlsSettings)}
    text = "# c3 user configuration (written by c3; keep it private)\n" + yaml.safe_dump(data, sort_keys=False)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def update_user_config(path: Path | None = None, **changes: Any) -> UserConfig:
    """Load the file (without env overrides), change some fields, save it back."""
    config = replace(load_user_config(path, apply_env=False), **changes)
    save_user_config(config, path)
    return config


def read_local_api_key(project_root: Path) -> str:
    """`api_key` from `<project_root>/.c3.local`; "" when the file is absent."""
    path = Path(project_root) / LOCAL_FILE
    node = _compose(path)
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"):
        return ""
    values = _mapping(path, node, "", ("api_key",))
    key = _scalar(path, values["api_key"], "api_key", str) if "api_key" in values else ""
    if not key:
        _fail(path, values.get("api_key", node), "api_key", "is missing or empty",
              "add `api_key: <key>` (create one with `c3 apikey create`) or delete the file")
    return str(key)


def resolve_api_key(project_root: Path | None) -> tuple[str, str]:
    """(key, where it came from). Order: C3_API_KEY, then `.c3.local` in the project root,
    then the user config file. ("", "") when none is set."""
    env = os.environ.get("C3_API_KEY", "").strip()
    if env:
        return env, "C3_API_KEY"
    if project_root is not None:
        local = read_local_api_key(project_root)
        if local:
            return local, str(Path(project_root) / LOCAL_FILE)
    path = c3_paths().config_file
    config = load_user_config(path, apply_env=False)
    if config.api_key:
        return config.api_key, str(path)
    return "", ""
