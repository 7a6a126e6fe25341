"""Fixtures shared by test modules (built on tests/harness), and the check that every test
carries exactly one of the markers registered in pyproject.toml."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from c3.grpcutil import channel
from c3.storage.client import StorageClient
from c3.tokens import ALL_OPERATIONS, TokenClaims, TokenSigner
from storaged.server import StoragedServer
from tests.harness.cli import running_stack
from tests.harness.coordinator import Stack, config_for_test, start_coordinator, start_stack
from tests.harness.storage import MakeToken, start_storaged

# What a test needs, one of: unit (this process only), integration (real child processes:
# c3's servers, the agent's sandbox, Slurm, uv, docker), e2e (the whole local stack through
# the CLI), faults (a process killed or a link cut at the worst moment), browser.
KINDS = ("unit", "integration", "e2e", "faults", "browser")
# A folder of tests of one kind gives it to those that name none (tests/faults/...).
FOLDER_KINDS = {"faults": "faults", "browser": "browser"}
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    wrong = []
    for item in items:
        kinds = {mark.name for mark in item.iter_markers() if mark.name in KINDS}
        folder = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
        if not kinds and folder in FOLDER_KINDS:
            item.add_marker(FOLDER_KINDS[folder])
            kinds = {FOLDER_KINDS[folder]}
        if len(kinds) != 1:
            wrong.append(f"{item.nodeid}: {sorted(kinds) or 'none'}")
    if wrong:
        raise pytest.UsageError(
            f"every test needs exactly one of the markers {', '.join(KINDS)}"
            " (pytestmark = pytest.mark.unit, or one per test):\n  " + "\n  ".join(wrong)
        )


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """A real coordinator on a free port (in this process), with a client channel and the
    bootstrap org's key."""
    async with start_stack(tmp_path) as started:
        yield started


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    """Starts a Stack on `tmp_path` with config overrides; a second call on the same data
    is a restart. Every stack still running is stopped at the end."""
    made: list[Stack] = []

    async def make(**overrides: Any) -> Stack:
        app, boot = await start_coordinator(config_for_test(tmp_path, **overrides))
        stack = Stack(app, boot, channel(app.address))
        made.append(stack)
        return stack

    yield make
    for stack in made:
        await stack.close()


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The whole local stack (`c3 up`) in a private C3_HOME, shared by a module's tests:
    the environment to run the CLI in."""
    with running_stack(tmp_path_factory.mktemp("c3home")) as env:
        yield env


# storaged ---------------------------------------------------------------------------------


@pytest.fixture
def signer(tmp_path: Path) -> TokenSigner:
    return TokenSigner.load_or_create(tmp_path / "keys" / "signing.pem")


@pytest.fixture
def make_token(signer: TokenSigner) -> MakeToken:
    """Signs a storage token (by default for org-a, every operation, the whole namespace)."""

    def make(
        org: str = "org-a",
        operations: tuple[str, ...] = ALL_OPERATIONS,
        read_prefixes: tuple[str, ...] = ("/",),
        write_prefixes: tuple[str, ...] = ("/",),
        **extra: Any,
    ) -> str:
        return signer.sign(
            TokenClaims(
                org_id=org,
                operations=operations,
                read_prefixes=read_prefixes,
                write_prefixes=write_prefixes,
                **extra,
            )
        )

    return make


@pytest.fixture
async def server(tmp_path: Path, signer: TokenSigner) -> AsyncIterator[StoragedServer]:
    """A real storaged on a free port (in this process), trusting `signer`, without GC."""
    srv = await start_storaged(tmp_path / "store", signer, gc=False)
    yield srv
    await srv.stop(0)


@pytest.fixture
async def client(server: StoragedServer, make_token: MakeToken) -> AsyncIterator[StorageClient]:
    """A StorageClient to `server` with `make_token()`'s token."""
    async with StorageClient(server.address, make_token()) as c:
        yield c
