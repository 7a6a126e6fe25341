"""`python.project` environments: `uv sync` into a venv cached by the hash of uv.lock.

The key covers the project's path, its uv.lock bytes and its pinned Python version, so
a job whose lock is unchanged starts with no environment work at all. Each environment is
built once, under a lock, even when two jobs ask for it at the same moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from c3.config_rules import env_hash
from c3.errors import C3Error

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".c3-complete"
HASH_FILE = ".c3-env-hash"
SYSTEM_PREFIXES = ("/usr/", "/bin/", "/lib/", "/lib64/", "/etc/")


class EnvError(C3Error):
    """The job's environment could not be built; the message says how to fix it."""


@dataclass(frozen=True)
class PythonEnv:
    venv: Path
    env_hash: str
    # Host paths the sandbox must expose read-only (the venv's base interpreter).
    read_only: tuple[Path, ...]


def find_uv() -> str | None:
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("uv")


def _base_interpreter_prefix(venv: Path) -> Path | None:
    try:
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                return Path(value.strip()).parent
    except OSError:
        return None
    return None


class EnvCache:
    def __init__(self, root: Path, uv: str | None = None) -> None:
        self.root = root
        self.uv = uv or find_uv()
        self._locks: dict[str, asyncio.Lock] = {}
        # venv dir name -> its reported hash. Read from disk once here (blocking; the agent
        # builds its executor off the event loop) rather than on every heartbeat.
        self._built = self._scan()

    def _scan(self) -> dict[str, str]:
        built = {}
        if self.root.is_dir():
            for env in self.root.iterdir():
                if (env / COMPLETE_MARKER).exists() and (env / HASH_FILE).exists():
                    built[env.name] = (env / HASH_FILE).read_text().strip()
        return built

    def cached_hashes(self) -> list[str]:
        return sorted(self._built.values())

    @staticmethod
    def project_dir(workspace: Path, python_project: str, workdir: str) -> tuple[Path, str]:
        """(host dir, its path relative to the workspace) of the project holding uv.lock."""
        candidates = [python_project.strip("/")]
        if workdir.strip("/"):
            candidates.append(f"{workdir.strip('/')}/{python_project.strip('/')}".rstrip("/"))
        for relative in candidates:
            directory = workspace / relative if relative not in ("", ".") else workspace
            if (directory / "pyproject.toml").is_file():
                return directory, relative
        raise EnvError(
            f"python.project {python_project!r}: no pyproject.toml there in the workspace; "
            "point python.project at the directory holding pyproject.toml and uv.lock"
        )

    async def ensure(self, workspace: Path, python_project: str, workdir: str,
                     say: Callable[[str], None]) -> PythonEnv:
        if self.uv is None:
            raise EnvError("python.project needs uv on the agent host (pip install uv)")
        directory, relative = self.project_dir(workspace, python_project, workdir)
        lock = directory / "uv.lock"
        if not lock.is_file():
            raise EnvError(
                f"python.project {relative or '.'}: uv.lock is missing; run `uv lock` in "
                "that directory and deploy again"
            )
        pin = directory / ".python-version"
        try:
            lock_bytes = lock.read_bytes()
            python_pin = pin.read_bytes() if pin.is_file() else b""
        except OSError as exc:
            name = Path(exc.filename).name if exc.filename else "uv.lock"
            raise EnvError(
                f"python.project {relative or '.'}: cannot read {name}: "
                f"{exc.strerror or exc}; check the file in the project and deploy again"
            ) from exc
        reported = env_hash(python_project, lock_bytes)
        key = hashlib.sha256(reported.encode() + b"\0" + python_pin).hexdigest()[:32]
        venv = self.root / key
        async with self._locks.setdefault(key, asyncio.Lock()):
            if not (venv / COMPLETE_MARKER).exists():
                await self._build(venv, directory, relative, say)
                (venv / HASH_FILE).write_text(reported)
                (venv / COMPLETE_MARKER).touch()
                self._built[key] = reported
            else:
                say(f"c3: environment {key[:12]} cached, no sync needed")
        prefix = _base_interpreter_prefix(venv)
        read_only: tuple[Path, ...] = ()
        if prefix is not None and not any(str(prefix).startswith(p) for p in SYSTEM_PREFIXES):
            read_only = (prefix,)
        return PythonEnv(venv, reported, read_only)

    async def _build(self, venv: Path, directory: Path, relative: str,
                     say: Callable[[str], None]) -> None:
        assert self.uv is not None
        if venv.exists():
            await asyncio.to_thread(shutil.rmtree, venv)
        venv.parent.mkdir(parents=True, exist_ok=True)
        say(f"c3: building environment for {relative or '.'} (uv sync --locked)")
        env = build_environment(self.root.parent / "uv-cache", venv)
        # Relocatable: the sandbox shows the venv at /c3/env, not at its host path.
        ok, text = await self._uv(["venv", "--relocatable", "--quiet", str(venv)], env,
                                  directory)
        if ok:
            ok, text = await self._uv(["sync", "--locked", "--no-install-project",
                                       "--project", str(directory)], env, directory)
        if not ok:
            await asyncio.to_thread(shutil.rmtree, venv, True)
            tail = "\n".join(text.splitlines()[-15:])
            if "lock" in text.lower() and ("update" in text.lower() or "missing" in text.lower()):
                raise EnvError(
                    f"python.project {relative or '.'}: uv.lock is out of date with "
                    f"pyproject.toml; run `uv lock` there and deploy again\n{tail}"
                )
            raise EnvError(f"python.project {relative or '.'}: `uv sync` failed:\n{tail}")
        for line in text.splitlines()[-5:]:
            say(line)

    async def _uv(self, args: list[str], env: dict[str, str], cwd: Path) -> tuple[bool, str]:
        """Run uv: (it succeeded, its output). A cancel (the job was canceled or ran out
        of time) kills uv at once rather than letting it finish."""
        assert self.uv is not None
        proc = await asyncio.create_subprocess_exec(
            self.uv, *args, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = await proc.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        return proc.returncode == 0, out.decode(errors="replace").strip()


# Variables of the agent's environment uv may see: where to fetch packages from and how.
_PASSED_TO_UV = ("PATH", "HOME", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy",
                 "https_proxy", "no_proxy", "all_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR",
                 "UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_INDEX",
                 "UV_PYTHON", "UV_PYTHON_INSTALL_DIR", "UV_NATIVE_TLS", "UV_OFFLINE",
                 "UV_FIND_LINKS", "LANG", "LC_ALL")  # fmt: skip


def build_environment(cache: Path, venv: Path) -> dict[str, str]:
    """uv's environment for a build: PATH, HOME and the package index settings of the
    agent's, never its credentials or other variables (a dependency's build script is
    the job's code)."""
    env = {k: os.environ[k] for k in _PASSED_TO_UV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_CACHE_DIR": str(cache),
        "UV_NO_PROGRESS": "1",
    })
    return env
