"""Job arrays (`c3ctl deploy --array N`): one push, N jobs in one SubmitJobs call, each
seeing its place as C3_ARRAY_INDEX / C3_ARRAY_SIZE. The sweep runs on the real local stack
through the installed CLI; the coordinator's checks run against a real coordinator."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from c3.errors import InvalidArgument
from c3.grpcutil import bearer
from c3.v1 import common_pb2, daemon_pb2
from c3.v1 import coordinator_pb2 as pb
from c3ctl import render
from c3ctl.runview import Mode, RunView
from c3d.coordclient import CoordinatorClient, Target
from c3d.pipeline import _submit_through_cancel, array_entries, deploy
from tests.harness.cli import LineReader, c3ctl
from tests.harness.coordinator import client, spec

RUN_SH = 'echo "member $C3_ARRAY_INDEX/$C3_ARRAY_SIZE"\n'


def _queue(env: dict[str, str], *args: str) -> list[dict[str, object]]:
    listed = c3ctl(env, "squeue", "--json", *args)
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout)["jobs"])


@pytest.mark.e2e
def test_array_of_three_runs_each_member_with_its_index(stack_env: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "sweep"
    project.mkdir()
    (project / ".c3").write_text("project: sweep\nscript: run.sh\njob_name: lr\ntime: '00:02:00'\n")
    (project / "run.sh").write_text(RUN_SH)

    result = c3ctl(stack_env, "deploy", "--array", "3", cwd=project)
    assert result.returncode == 0, result.stderr
    job_ids = result.stdout.split()
    assert len(job_ids) == 3 and len(set(job_ids)) == 3 and all(j.startswith("j-") for j in job_ids)
    assert result.stderr.count("pushed ") == 1  # the workspace went up once for all three

    for index, job_id in enumerate(job_ids):
        logs = c3ctl(stack_env, "logs", "-f", job_id)  # streams until the job ends
        assert logs.returncode == 0, logs.stderr
        members = [line for line in logs.stdout.splitlines() if line.startswith("member ")]
        assert members == [f"member {index}/3"], logs.stdout

    queue = {j["id"]: j for j in _queue(stack_env)}
    assert [(queue[j]["array_index"], queue[j]["array_size"]) for j in job_ids] == [(0, 3), (1, 3), (2, 3)]
    assert all(queue[j]["status"] == "COMPLETED" for j in job_ids)
    # Jobs outside an array do not gain the fields.
    assert all("array_size" not in j for j in queue.values() if j["id"] not in job_ids)
    table = c3ctl(stack_env, "squeue")
    rows = {line.split()[0]: line for line in table.stdout.splitlines() if line.startswith("j-")}
    assert [rows[j].split()[2] for j in job_ids] == ["lr[0/3]", "lr[1/3]", "lr[2/3]"]

    # squeue narrows by project and state; -n takes the newest of what matches.
    def ids(*args: str) -> list[object]:
        return [j["id"] for j in _queue(stack_env, *args)]

    assert ids("--project", "sweep") == job_ids
    assert ids("--project", "sweep", "--state", "completed", "--state", "failed", "-n", "2") == job_ids[1:]
    assert ids("--project", "sweep", "--state", "running") == []
    none = c3ctl(stack_env, "squeue", "--project", "no-such-project")
    assert none.returncode == 0 and "no jobs match" in none.stderr


@pytest.mark.e2e
def test_squeue_follow_pushes_changes_of_matching_jobs(stack_env: dict[str, str], tmp_path: Path) -> None:
    """`squeue --follow` is server-pushed: each change arrives as it happens, filtered by
    project and state; a job once shown keeps being shown as it moves on."""
    watched, other = tmp_path / "watched", tmp_path / "other"
    for project in (watched, other):
        project.mkdir()
        (project / ".c3").write_text(f"project: {project.name}\nscript: run.sh\n")
        (project / "run.sh").write_text("echo done\n")
    follower = subprocess.Popen(
        [sys.executable, "-m", "c3ctl.main", "squeue", "--follow", "--json",
         "--project", "watched", "--state", "running", "--state", "completed"],
        env=stack_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        reader = LineReader(follower)
        # A first job, seen at all, proves the follower is subscribed: every later change
        # is pushed to it, so what it shows of the next jobs is the filter at work.
        primer = c3ctl(stack_env, "deploy", "--json", cwd=watched)
        assert primer.returncode == 0, primer.stderr
        reader.wait_for(json.loads(primer.stdout)["id"])
        ignored = c3ctl(stack_env, "deploy", "--json", cwd=other)
        shown = c3ctl(stack_env, "deploy", "--json", cwd=watched)
        assert ignored.returncode == 0 and shown.returncode == 0, ignored.stderr + shown.stderr
        job_id = json.loads(shown.stdout)["id"]
        reader.wait_for(f'"id": "{job_id}", "status": "COMPLETED"')
        pulled = c3ctl(stack_env, "pull", job_id, cwd=watched)  # COMPLETED -> SYNCED
        assert pulled.returncode == 0, pulled.stderr
        reader.wait_for(f'"id": "{job_id}", "status": "SYNCED"')
    finally:
        follower.terminate()
        follower.wait(timeout=30)
    changes = [json.loads(line) for stream, line in reader.seen if stream == "out"]
    other_id = json.loads(ignored.stdout)["id"]
    assert other_id not in {c["id"] for c in changes}  # nothing of the other project
    statuses = [c["status"] for c in changes if c["id"] == job_id]
    # PENDING and SCHEDULING never matched; once shown, the job is followed to SYNCED.
    assert statuses[-2:] == ["COMPLETED", "SYNCED"] and "PENDING" not in statuses
    assert "SCHEDULING" not in statuses


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--state", "bogus"), "Invalid value for '--state'"),
        (("-n", "-1"), "--limit -1: give 0 (every job) or more"),
    ],
)
def test_bad_squeue_filters_are_usage_errors(
    stack_env: dict[str, str], args: tuple[str, ...], says: str
) -> None:
    result = c3ctl(stack_env, "squeue", *args)
    assert result.returncode == 2
    assert says in result.stderr and "Traceback" not in result.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--array", "0"), "--array 0: give the number of jobs, 1 to 1000"),
        (("--array", "1001"), "--array 1001: give the number of jobs, 1 to 1000"),
        (("--array", "2", "-f"), "--array cannot be combined with -f"),
        (("--array", "2", "--watch"), "--array cannot be combined with --watch"),
    ],
)
def test_bad_array_requests_are_refused_before_anything_is_submitted(
    stack_env: dict[str, str], tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    project = tmp_path / "refused"
    project.mkdir()
    (project / ".c3").write_text("project: refused\nscript: run.sh\n")
    (project / "run.sh").write_text(RUN_SH)
    before = {j["id"] for j in _queue(stack_env)}
    result = c3ctl(stack_env, "deploy", *args, cwd=project)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert {j["id"] for j in _queue(stack_env)} == before


@pytest.mark.unit
async def test_daemon_refuses_to_follow_an_array_before_pushing() -> None:
    request = daemon_pb2.DeployRequest(project_dir="/nonexistent", array=2, follow=True)
    events = deploy(request, None, None)  # type: ignore[arg-type]  # refused before either is used
    with pytest.raises(InvalidArgument, match="array cannot be followed"):
        await anext(events)
    too_many = deploy(daemon_pb2.DeployRequest(project_dir="/nonexistent", array=1001), None, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="at most 1000"):
        await anext(too_many)


@pytest.mark.unit
async def test_submit_jobs_refuses_an_index_outside_its_array(stack) -> None:  # type: ignore[no-untyped-def]
    _app, boot, ch = stack.app, stack.boot, stack.channel
    c, md = client(ch), bearer(boot.api_key)

    async def refused(*specs: common_pb2.JobSpec) -> str:
        request = pb.SubmitJobsRequest(jobs=[pb.SubmitJobRequest(spec=s) for s in specs])
        with pytest.raises(grpc.RpcError) as info:
            await c.SubmitJobs(request, metadata=md)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return str(info.value.details())

    ok = spec(array_index=0, array_size=2)
    details = await refused(ok, spec(array_index=2, array_size=2))
    assert details.startswith("jobs[1]: spec.array_index 2 is out of range for spec.array_size 2")
    details = await refused(spec(array_index=1, array_size=0))
    assert details.startswith("jobs[0]: spec.array_index is 1 but spec.array_size is 0")
    details = await refused(ok, ok, spec(array_index=0, array_size=1001))
    assert details.startswith("jobs[2]: spec.array_size 1001 is over the limit of 1000")
    assert not (await c.ListJobs(pb.ListJobsRequest(), metadata=md)).jobs  # none half-made

    members = [spec(array_index=i, array_size=2) for i in range(2)]
    jobs = (await c.SubmitJobs(
        pb.SubmitJobsRequest(jobs=[pb.SubmitJobRequest(spec=s) for s in members]), metadata=md
    )).jobs
    assert [(j.spec.array_index, j.spec.array_size) for j in jobs] == [(0, 2), (1, 2)]


@pytest.mark.unit
async def test_cancel_during_submit_still_reports_every_accepted_member(stack) -> None:  # type: ignore[no-untyped-def]
    app, boot, _ch = stack.app, stack.boot, stack.channel
    coordinator = CoordinatorClient(Target(app.address, boot.api_key))
    reported: list[common_pb2.Job] = []
    sent = asyncio.Event()
    real_submit = coordinator.stub.SubmitJobs

    async def submit_jobs(request: Any, **kwargs: Any) -> Any:
        answer = asyncio.ensure_future(real_submit(request, **kwargs))
        await asyncio.sleep(0)  # let the call go out before saying so
        sent.set()
        return await answer

    coordinator.stub.SubmitJobs = submit_jobs  # type: ignore[method-assign]
    submit = asyncio.create_task(
        _submit_through_cancel(coordinator, array_entries(spec(), 3), reported.append)
    )
    await sent.wait()  # the SubmitJobs call is under way, its answer not yet in
    assert not submit.done()
    submit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await submit
    assert [(j.spec.array_index, j.spec.array_size) for j in reported] == [(0, 3), (1, 3), (2, 3)]
    listed = await coordinator.stub.ListJobs(pb.ListJobsRequest())
    assert {j.id for j in listed.jobs} == {j.id for j in reported}
    await coordinator.close()


@pytest.mark.unit
def test_json_and_names_show_array_members_only(capsys: pytest.CaptureFixture[str]) -> None:
    member = common_pb2.Job(id="j-aaaaa", spec=common_pb2.JobSpec(
        project="p", job_name="lr", array_index=4, array_size=8))
    single = common_pb2.Job(id="j-bbbbb", spec=common_pb2.JobSpec(project="p"))
    view = RunView(Mode.VERBOSE, follow=False, as_json=True)
    for job in (member, single):
        view.handle(daemon_pb2.DeployEvent(submitted=job))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (lines[0]["id"], lines[0]["array_index"], lines[0]["array_size"]) == ("j-aaaaa", 4, 8)
    assert lines[1]["id"] == "j-bbbbb" and "array_index" not in lines[1] and "array_size" not in lines[1]
    assert render.job_name(member.spec) == "lr[4/8]"
    assert render.job_name(common_pb2.JobSpec(array_index=0, array_size=2)) == "[0/2]"
    assert render.job_name(single.spec) == "-"
