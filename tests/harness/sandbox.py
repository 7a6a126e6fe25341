"""The sandbox tests run jobs in: the strongest this host allows, chosen once per test
process exactly as the agent chooses it at start (agent.probe)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import tempfile
from pathlib import Path

import pytest

from agent.jobnet import JobNetwork
from agent.probe import choose_sandbox
from agent.sandbox import SandboxPolicy


@functools.cache
def host_sandbox() -> SandboxPolicy | None:
    """The policy of an agent on this host (network none), or None without bubblewrap.
    (Chosen on a thread of its own, so async tests may call it too.)"""
    def choose() -> SandboxPolicy | None:
        with tempfile.TemporaryDirectory(prefix="c3-test-sandbox-") as tmp:
            return asyncio.run(choose_sandbox(Path(tmp), JobNetwork.NONE, "tests")).policy

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(choose).result()


def require_sandbox() -> SandboxPolicy:
    policy = host_sandbox()
    if policy is None:
        pytest.skip("bubblewrap cannot run on this host")
    return policy
