"""A job's command argv (`c3 run -- CMD ARGS...`) on the agent: run with real processes,
with and without bubblewrap, every argument arriving byte for byte, 127 for a command that
is not found, and the job's environment (its venv's bin first on PATH)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agent.docker import docker_run_argv
from agent.logbatch import LogBatcher
from agent.runner import Ending, RunResult, run_script
from agent.sandbox import (
    EXEC_COMMAND,
    SANDBOX_WORKSPACE,
    JobLayout,
    LaunchSpec,
    launch_argv,
)
from c3.v1 import agent_pb2, common_pb2
from tests.harness.sandbox import host_sandbox

# Quotes, a dollar sign, a glob, spaces, a newline, a leading dash, unicode, an empty
# argument and a backslash: what a shell would split, expand or eat.
AWKWARD = ["it's", 'say "hi"', "$HOME and ${PATH}", "*", "  two  spaces ", "line1\nline2",
           "-n", "ünïcødé ✓", "", "back\\slash", "a=b", "`id`", "$(id)"]

SHOW_ARGS = "import json, sys; print(json.dumps(sys.argv[1:]))\n"


@pytest.fixture(scope="module")
def bwrap_ok() -> bool:
    return host_sandbox() is not None


@pytest.fixture(params=[False, True], ids=["unsandboxed", "bwrap"])
def sandboxed(request: pytest.FixtureRequest, bwrap_ok: bool) -> bool:
    if request.param and not bwrap_ok:
        pytest.skip("bubblewrap cannot run on this host")
    return bool(request.param)


async def run_command(tmp_path: Path, command: list[str], sandboxed: bool,
                      venv: Path | None = None) -> tuple[RunResult, dict[int, list[str]]]:
    layout = JobLayout.under(tmp_path / "job")
    layout.create()
    (layout.workspace / "show_args.py").write_text(SHOW_ARGS)
    batches: list[agent_pb2.LogBatch] = []

    async def send(batch: agent_pb2.LogBatch) -> None:
        batches.append(batch)

    logs = LogBatcher("job-1", send)
    logs.start()
    spec = LaunchSpec(layout=layout, script="", command=tuple(command), venv=venv)
    result = await run_script(spec, sandbox=host_sandbox() if sandboxed else None, logs=logs)
    await logs.close()
    lines: dict[int, list[str]] = {}
    for batch in batches:
        for line in batch.lines:
            lines.setdefault(line.stream, []).append(line.text)
    return result, lines


@pytest.mark.integration
async def test_every_argument_arrives_byte_for_byte(tmp_path: Path, sandboxed: bool) -> None:
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    result, lines = await run_command(tmp_path, [python, "show_args.py", *AWKWARD], sandboxed)
    assert result.ending is Ending.EXITED and result.exit_code == 0, lines
    assert json.loads("".join(lines[common_pb2.LOG_STREAM_STDOUT])) == AWKWARD


@pytest.mark.integration
async def test_exit_code_is_the_commands_own(tmp_path: Path, sandboxed: bool) -> None:
    result, _ = await run_command(tmp_path, ["sh", "-c", "exit 7"], sandboxed)
    assert (result.ending, result.exit_code) == (Ending.EXITED, 7)


@pytest.mark.integration
async def test_a_command_not_found_exits_127_and_says_so(tmp_path: Path, sandboxed: bool) -> None:
    result, lines = await run_command(tmp_path, ["no-such-program-c3", "--flag"], sandboxed)
    assert result.exit_code == 127
    stderr = "".join(lines.get(common_pb2.LOG_STREAM_STDERR, []))
    assert "c3: no-such-program-c3: command not found" in stderr


@pytest.mark.integration
async def test_a_file_that_cannot_run_exits_126(tmp_path: Path, sandboxed: bool) -> None:
    result, _ = await run_command(tmp_path, ["./show_args.py"], sandboxed)  # not executable
    assert result.exit_code == 126


@pytest.mark.integration
async def test_the_venv_bin_comes_first_on_path(tmp_path: Path, sandboxed: bool) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    tool = venv / "bin" / "c3-only-in-venv"
    tool.write_text("#!/bin/sh\necho from the venv: \"$@\"\n")
    tool.chmod(0o755)
    result, lines = await run_command(tmp_path, ["c3-only-in-venv", "a b"], sandboxed, venv=venv)
    assert result.exit_code == 0, lines
    assert lines[common_pb2.LOG_STREAM_STDOUT] == ["from the venv: a b"]


@pytest.mark.unit
def test_launch_argv_hands_the_argv_to_the_exec_shim_untouched(tmp_path: Path) -> None:
    policy = host_sandbox()
    if policy is None:
        pytest.skip("bubblewrap cannot run on this host")
    layout = JobLayout.under(tmp_path)
    layout.create()
    spec = LaunchSpec(layout=layout, script="", command=("python", "x y", "$z"))
    boxed = launch_argv(spec, policy)
    boxed.close()
    argv = boxed.argv
    after_bwrap = argv[next(i for i, a in enumerate(argv) if a.endswith("bwrap")) + 3:]
    assert after_bwrap[0] == "--"  # bwrap --args FD -- bash -c ...
    assert after_bwrap[2:] == ["-c", EXEC_COMMAND, "c3", "python", "x y", "$z"]
    plain = launch_argv(spec, None)
    assert plain.argv[1:] == ["-c", EXEC_COMMAND, "c3", "python", "x y", "$z"]
    assert plain.cwd == layout.workspace
    # A script job is unchanged: bash <script>.
    (layout.workspace / "run.sh").write_text("echo hi\n")
    script = launch_argv(LaunchSpec(layout=layout, script="run.sh"), policy)
    script.close()
    assert script.argv[-1] == f"{SANDBOX_WORKSPACE}/run.sh"


@pytest.mark.unit
def test_docker_runs_the_argv_as_the_containers_command(tmp_path: Path) -> None:
    layout = JobLayout.under(tmp_path)
    spec = LaunchSpec(layout=layout, script="", command=("python", "-c", "print('a b')"),
                      docker_image="python:3.12-slim")
    argv = docker_run_argv(spec, "")
    assert argv[-4:] == ["docker.io/library/python:3.12-slim", "python", "-c", "print('a b')"]
