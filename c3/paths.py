"""Where c3 keeps things on a machine.

`C3_HOME`, when set, relocates everything (config, credentials, the daemon's socket and
state, the local stack's data) so two installations or two tests never meet. Unset, c3
follows the XDG base directories (and their macOS-compatible defaults).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class C3Paths:
    config_dir: Path
    data_dir: Path
    state_dir: Path
    runtime_dir: Path

    @property
    def config_file(self) -> Path:
        """User config: coordinator address, API key, TLS settings (YAML, mode 0600)."""
        return self.config_dir / "config.yaml"

    @property
    def daemon_socket(self) -> Path:
        return self.runtime_dir / "c3d.sock"

    @property
    def daemon_state_dir(self) -> Path:
        return self.state_dir / "c3d"

    @property
    def daemon_pid_file(self) -> Path:
        return self.state_dir / "c3d" / "c3d.pid"

    @property
    def daemon_log(self) -> Path:
        return self.state_dir / "c3d" / "c3d.log"

    @property
    def stack_dir(self) -> Path:
        """Data directory of the embedded local stack (`c3ctl up`)."""
        return self.data_dir / "stack"


def _xdg(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value) if value and os.path.isabs(value) else default


def c3_paths() -> C3Paths:
    home = os.environ.get("C3_HOME")
    if home:
        root = Path(home).expanduser().resolve()
        return C3Paths(
            config_dir=root / "config",
            data_dir=root / "data",
            state_dir=root / "state",
            runtime_dir=root / "run",
        )
    user_home = Path.home()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    runtime_dir = (
        Path(runtime) / "c3"
        if runtime and os.path.isdir(runtime)
        else Path(tempfile.gettempdir()) / f"c3-{os.getuid()}"
    )
    return C3Paths(
        config_dir=_xdg("XDG_CONFIG_HOME", user_home / ".config") / "c3",
        data_dir=_xdg("XDG_DATA_HOME", user_home / ".local" / "share") / "c3",
        state_dir=_xdg("XDG_STATE_HOME", user_home / ".local" / "state") / "c3",
        runtime_dir=runtime_dir,
    )


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) readable only by the current user."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path
