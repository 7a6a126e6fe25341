"""`c3 run -- CMD ARGS...` and exit codes scripts can trust, through the real CLI, daemon
and local stack: the job's own exit code comes back, 127 for a command not found,
arguments arrive byte for byte, bad input is one line; plus `logs --json/--timestamps/
--tail` and `ls-files --json`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from c3.v1 import common_pb2
from c3ctl import exitcodes
from tests.harness.cli import c3ctl

pytestmark = pytest.mark.e2e

SHOW_ARGS = "import json, sys\nprint(json.dumps(sys.argv[1:]))\n"
AWKWARD = ["it's", 'say "hi"', "$HOME ${PATH} $(id) `id`", "*", "  two  spaces ",
           "line1\nline2\n", "-v", "--", "ünï ✓", "", "tab\there", "back\\slash"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "adhoc"
    root.mkdir()
    (root / ".c3").write_text("project: adhoc\nscript: run.sh\n")
    (root / "run.sh").write_text("echo the script, not the command\n")
    (root / "show_args.py").write_text(SHOW_ARGS)
    return root


def _jobs(env: dict[str, str]) -> list[dict[str, object]]:
    listed = c3ctl(env, "squeue", "--json")
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout)["jobs"])


def test_run_exits_with_the_jobs_own_exit_code(stack_env: dict[str, str], project: Path) -> None:
    result = c3ctl(stack_env, "run", "--", "sh", "-c", "echo out; echo err >&2; exit 7", cwd=project)
    assert result.returncode == 7, result.stderr
    assert result.stdout == "out\n"
    lines = result.stderr.splitlines()
    assert "err" in lines  # the job's stderr, unmarked: it does not share stdout's pipe
    assert "(EXIT_CODE 7)" in lines[-1] and lines[-1].startswith("● FAILED j-")
    assert "Traceback" not in result.stderr


def test_run_is_an_ordinary_job(stack_env: dict[str, str], project: Path) -> None:
    result = c3ctl(stack_env, "run", "--", "sh", "-c", 'echo made > "$C3_ARTIFACTS_DIR/a.txt"; echo ran',
                   cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ran\n"  # the command ran, not run.sh
    job_id = result.stderr.splitlines()[0].split()[1]
    assert result.stderr.splitlines()[-1].endswith(f"1 artifact file: c3 pull {job_id}")
    job = next(j for j in _jobs(stack_env) if j["id"] == job_id)
    assert job["status"] == "COMPLETED" and job["project"] == "adhoc"
    logs = c3ctl(stack_env, "logs", job_id)
    assert logs.stdout == "ran\n", logs.stderr
    pulled = c3ctl(stack_env, "pull", job_id, cwd=project)
    assert pulled.returncode == 0, pulled.stderr
    assert (project / "c3-artifacts" / job_id / "a.txt").read_text() == "made\n"


def test_arguments_arrive_byte_for_byte(stack_env: dict[str, str], project: Path) -> None:
    result = c3ctl(stack_env, "run", "-q", "--", "python3", "show_args.py", *AWKWARD, cwd=project)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == AWKWARD
    assert result.stderr == ""  # -q: only the job's output


def test_a_command_not_found_exits_127(stack_env: dict[str, str], project: Path) -> None:
    result = c3ctl(stack_env, "run", "--", "no-such-tool-c3", "x", cwd=project)
    assert result.returncode == 127, result.stderr
    assert "c3: no-such-tool-c3: command not found" in result.stderr
    assert "(EXIT_CODE 127: command not found)" in result.stderr.splitlines()[-1]


def test_time_limit_and_gpu_overrides(stack_env: dict[str, str], project: Path) -> None:
    timed = c3ctl(stack_env, "run", "--time", "00:00:01", "--", "sleep", "60", cwd=project, timeout=90)
    assert timed.returncode == exitcodes.TIMED_OUT, timed.stderr
    assert timed.stderr.splitlines()[-1].startswith("● TIMED_OUT j-")
    unknown = c3ctl(stack_env, "run", "--gpu", "warp9", "--", "true", cwd=project)
    assert unknown.returncode == 1
    assert "unknown gpu 'warp9'" in unknown.stderr and len(unknown.stderr.splitlines()) == 1


@pytest.mark.parametrize(("args", "says"), [
    ((), "name the command to run after `--`"),
    (("--", ""), "empty string"),
    (("--time", "soon", "--", "true"), "not a duration in HH:MM:SS"),
    (("-v", "-q", "--", "true"), "exclude each other"),
])
def test_bad_input_is_one_usage_line(stack_env: dict[str, str], project: Path,
                                     args: tuple[str, ...], says: str) -> None:
    before = {j["id"] for j in _jobs(stack_env)}
    result = c3ctl(stack_env, "run", *args, cwd=project)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
    assert {j["id"] for j in _jobs(stack_env)} == before


def test_run_outside_a_project_says_how_to_make_one(stack_env: dict[str, str], tmp_path: Path) -> None:
    result = c3ctl(stack_env, "run", "--", "true", cwd=tmp_path)
    assert result.returncode == 1
    assert "no .c3 file found" in result.stderr and "c3 init" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_stderr_is_prefixed_when_it_shares_stdouts_pipe(stack_env: dict[str, str], project: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "c3ctl.main", "run", "--", "sh", "-c", "echo to-out; echo to-err >&2"],
        env=stack_env, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert "to-out" in lines and "[stderr] to-err" in lines
    quiet = subprocess.run(
        [sys.executable, "-m", "c3ctl.main", "run", "-q", "--", "sh", "-c", "echo to-err >&2"],
        env=stack_env, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=60,
    )
    assert quiet.stdout == "to-err\n"  # -q: the job's output exactly


def test_logs_json_timestamps_and_tail(stack_env: dict[str, str], project: Path) -> None:
    result = c3ctl(stack_env, "run", "--", "sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done",
                   cwd=project)
    assert result.returncode == 0, result.stderr
    job_id = result.stderr.splitlines()[0].split()[1]

    events = [json.loads(line) for line in c3ctl(stack_env, "logs", "--json", job_id).stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["at"]) for e in events)
    output = [e["text"] for e in events if e["kind"] == "log" and e["stream"] == "stdout"]
    assert output == [f"line {i}" for i in range(1, 6)]
    assert events[0]["kind"] == "status" and events[0]["state"] == "PENDING"
    assert events[-1]["kind"] == "status" and events[-1]["state"] == "COMPLETED"

    tail = c3ctl(stack_env, "logs", "--tail", "2", job_id)
    assert tail.stdout == "line 4\nline 5\n", tail.stderr
    stamped = c3ctl(stack_env, "logs", "-t", "--tail", "1", job_id)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z line 5\n", stamped.stdout), stamped.stdout
    full = c3ctl(stack_env, "logs", job_id)
    err = full.stderr.splitlines()
    assert err[0].startswith("first output ") and "after submit (queue " in err[0]
    assert err[-1].startswith(f"● COMPLETED {job_id} · ")


def test_ls_files_json(stack_env: dict[str, str], project: Path) -> None:
    (project / ".gitignore").write_text("*.log\n")
    (project / "debug.log").write_text("never shipped\n")
    listed = json.loads(c3ctl(stack_env, "ls-files", "--json", cwd=project).stdout)
    sizes = {f["path"]: f["size"] for f in listed["files"]}
    assert sizes == {p.name: p.stat().st_size for p in project.iterdir() if p.name != "debug.log"}
    assert listed["total_size"] == sum(sizes.values()) and listed["total_files"] == len(sizes)
    ignored = json.loads(c3ctl(stack_env, "ls-files", "--ignored", "--json", cwd=project).stdout)
    rules = {f["path"]: f["rule"] for f in ignored["ignored"]}
    assert ".gitignore:1" in rules["debug.log"] and "*.log" in rules["debug.log"]


def _job(state: int, reason: int = 0, exit_code: int = 0) -> common_pb2.Job:
    return common_pb2.Job(state=state, failure_reason=reason, exit_code=exit_code)  # type: ignore[arg-type]


def test_exit_codes_for_every_ending() -> None:
    S = common_pb2
    assert exitcodes.for_job(_job(S.JOB_STATE_COMPLETED)) == 0
    assert exitcodes.for_job(_job(S.JOB_STATE_SYNCED)) == 0
    assert exitcodes.for_job(_job(S.JOB_STATE_FAILED, S.FAILURE_REASON_EXIT_CODE, 7)) == 7
    assert exitcodes.for_job(_job(S.JOB_STATE_FAILED, S.FAILURE_REASON_EXIT_CODE, 127)) == 127
    assert exitcodes.for_job(_job(S.JOB_STATE_FAILED, S.FAILURE_REASON_EXIT_CODE, -15)) == 143
    assert exitcodes.for_job(_job(S.JOB_STATE_FAILED, S.FAILURE_REASON_OOM, 137)) == 137
    assert exitcodes.for_job(_job(S.JOB_STATE_FAILED, S.FAILURE_REASON_AGENT_LOST)) == 125
    assert exitcodes.for_job(_job(S.JOB_STATE_FAILED, S.FAILURE_REASON_ENV_ERROR)) == 125
    assert exitcodes.for_job(_job(S.JOB_STATE_TIMED_OUT)) == 124
    assert exitcodes.for_job(_job(S.JOB_STATE_CANCELED)) == 143


def test_coordinator_checks_a_command_spec() -> None:
    from c3.errors import InvalidArgument
    from coordinator.validation import MAX_COMMAND_BYTES, validate_spec

    def spec(*command: str, script: str = "") -> common_pb2.JobSpec:
        return common_pb2.JobSpec(project="p", script=script, command=list(command),
                                  workspace_manifest_digest="0" * 64)

    validate_spec(spec("python", "a b", "line\nbreak"), [], [])  # no script needed
    with pytest.raises(InvalidArgument, match=r"spec\.script is empty"):
        validate_spec(spec(), [], [])
    with pytest.raises(InvalidArgument, match=r"spec.command\[0\] is empty"):
        validate_spec(spec("", "x"), [], [])
    with pytest.raises(InvalidArgument, match=r"spec.command\[1\] contains a NUL"):
        validate_spec(spec("echo", "a\0b"), [], [])
    with pytest.raises(InvalidArgument, match="over the limit"):
        validate_spec(spec("echo", "x" * MAX_COMMAND_BYTES), [], [])
