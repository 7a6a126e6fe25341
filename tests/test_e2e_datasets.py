"""Datasets and job chaining on the real stack: a local directory ref is uploaded as a
dataset version before the job is submitted and mounted read-only; a later job mounts an
earlier job's artifacts through /jobs/<id>; each job records the exact version it used."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness.cli import c3ctl

pytestmark = pytest.mark.e2e


def deploy_and_wait(env: dict[str, str], project: Path) -> tuple[str, subprocess.CompletedProcess[str]]:
    # -v: the push and dataset lines are what this checks.
    result = c3ctl(env, "deploy", "-f", "-v", cwd=project, timeout=120)
    job_id = next(
        line.split()[1] for line in result.stderr.splitlines() if line.startswith("submitted ")
    )
    return job_id, result


def test_local_dataset_and_chained_job(stack_env: dict[str, str], tmp_path: Path) -> None:
    producer = tmp_path / "producer"
    (producer / "corpus").mkdir(parents=True)
    (producer / "corpus" / "words.txt").write_text("alpha\nbeta\ngamma\n")
    (producer / ".c3").write_text(
        "project: producer\nscript: run.sh\n"
        "datasets:\n  - ref: ./corpus\n    mount: corpus\n"
    )
    (producer / "run.sh").write_text(
        "set -e\n"
        "wc -l < /data/corpus/words.txt | tr -d ' ' > \"$C3_ARTIFACTS_DIR/count.txt\"\n"
        "echo counted $(cat \"$C3_ARTIFACTS_DIR/count.txt\")\n"
        "if touch /data/corpus/new 2>/dev/null; then echo WRITABLE; else echo read-only mount; fi\n"
    )
    first_id, first = deploy_and_wait(stack_env, producer)
    assert first.returncode == 0, first.stderr
    assert "counted 3" in first.stdout and "read-only mount" in first.stdout
    assert "WRITABLE" not in first.stdout
    assert "dataset /datasets/corpus v1" in first.stderr

    consumer = tmp_path / "consumer"
    consumer.mkdir()
    (consumer / ".c3").write_text(
        f"project: consumer\nscript: run.sh\ndatasets:\n  - ref: /jobs/{first_id}\n    mount: /data/prev\n"
    )
    (consumer / "run.sh").write_text("echo previous count $(cat /data/prev/count.txt)\n")
    _, second = deploy_and_wait(stack_env, consumer)
    assert second.returncode == 0, second.stderr
    assert "previous count 3" in second.stdout

    # Unchanged local data is neither uploaded again nor made a new version.
    _, again = deploy_and_wait(stack_env, producer)
    assert again.returncode == 0, again.stderr
    assert "dataset /datasets/corpus v1: 0 new blobs, 0 bytes sent" in again.stderr

    # Changed local data becomes v2. The changed file travels once: the corpus also lies
    # inside the workspace, so the workspace push already moved it and the dataset
    # upload finds nothing missing.
    (producer / "corpus" / "words.txt").write_text("alpha\nbeta\ngamma\ndelta\n")
    _, changed = deploy_and_wait(stack_env, producer)
    assert changed.returncode == 0, changed.stderr
    assert "1 new," in changed.stderr
    assert "dataset /datasets/corpus v2: 0 new blobs, 0 bytes sent" in changed.stderr
    assert "counted 4" in changed.stdout


def test_unknown_dataset_is_refused_before_submit(stack_env: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "missing"
    project.mkdir()
    (project / ".c3").write_text("script: run.sh\ndatasets:\n  - ref: /datasets/nope@v7\n")
    (project / "run.sh").write_text("echo never\n")
    result = c3ctl(stack_env, "deploy", "-f", cwd=project)
    assert result.returncode == 1
    assert "nope" in result.stderr and "Traceback" not in result.stderr
    assert "submitted" not in result.stderr and "── j-" not in result.stderr
