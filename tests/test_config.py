"""The .c3 file: every documented rule, and every error names file, line and field."""

from __future__ import annotations

import hashlib
import os
import re
import textwrap
from pathlib import Path

import pytest

from c3.config import (
    DatasetRef,
    find_project_file,
    job_spec,
    load_project,
    normalise_project_name,
)
from c3.errors import ConfigError

pytestmark = pytest.mark.unit


def write_project(root: Path, text: str, *, script: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if script:
        (root / "run.sh").write_text("echo hi\n")
    path = root / ".c3"
    path.write_text(textwrap.dedent(text))
    return path


def expect_error(path: Path, line: int, field: str, *fragments: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_project(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}:{line}: {field}: "), message
    # Always a problem and a fix, separated by "; ".
    assert re.match(rf"^{re.escape(str(path))}:\d+: [\w.]+: .+; .+$", message), message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---- documented rules ----------------------------------------------------------------


def test_full_example_loads(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "py").mkdir(parents=True)
    (root / "py" / "pyproject.toml").write_text("[project]\nname='x'\n")
    (root / "py" / "uv.lock").write_text("lock-v1\n")
    (root / "local-data").mkdir()
    path = write_project(root, """\
        project: my-experiment
        script: ./run.sh
        gpu: a100-80gb-2x
        provider: local
        time: "02:30:15"
        job_name: first run
        python:
          project: ./py
        datasets:
          - ref: /datasets/imagenet
          - ref: /datasets/imagenet@v2
            mount: /data/pinned
          - ref: /jobs/abc123
            mount: prev
          - ref: /projects/p/data/tokens/
          - ref: ./local-data
        output:
          - ./results
          - logs/tb
        """)
    cfg = load_project(path)
    assert cfg.path == path and cfg.root == root
    assert cfg.project == "my-experiment"
    assert cfg.script == "run.sh"
    assert cfg.gpu == "a100-80gb-2x"
    assert cfg.provider == "local"
    assert cfg.time_limit_seconds == 2 * 3600 + 30 * 60 + 15
    assert cfg.job_name == "first run"
    assert cfg.python_project == "py"
    assert cfg.docker_image == ""
    assert cfg.datasets == (
        DatasetRef("/datasets/imagenet", "/data/imagenet", None),
        DatasetRef("/datasets/imagenet@v2", "/data/pinned", None),
        DatasetRef("/jobs/abc123", "/data/prev", None),
        DatasetRef("/projects/p/data/tokens", "/data/tokens", None),
        DatasetRef("./local-data", "/data/local-data", root / "local-data"),
    )
    assert cfg.output == ("results", "logs/tb")


def test_minimal_file_defaults_and_project_from_folder_name(tmp_path: Path) -> None:
    path = write_project(tmp_path / "My Cool_Model.v2", "script: run.sh\n")
    cfg = load_project(path)
    assert cfg.project == "my-cool-model-v2"
    assert (cfg.gpu, cfg.provider, cfg.time_limit_seconds, cfg.job_name) == ("", "", 0, "")
    assert (cfg.python_project, cfg.docker_image, cfg.datasets, cfg.output) == ("", "", (), ())
    assert cfg.env_hash() == ""


@pytest.mark.parametrize(("folder", "expected"), [
    ("Hello World", "hello-world"), ("__x__", "x"), ("___", "project"), ("a" * 80, "a" * 63),
    ("Ünïcode-Proj", "n-code-proj"),
])
def test_project_name_normalisation(folder: str, expected: str) -> None:
    assert normalise_project_name(folder) == expected


@pytest.mark.parametrize(("value", "seconds"), [
    ('"00:00:01"', 1), ('"01:00:00"', 3600), ("2:00:00", 7200), ("12:00:00", 43200),
    ('"100:00:00"', 360000),
])
def test_time_formats(tmp_path: Path, value: str, seconds: int) -> None:
    # Unquoted 2:00:00 is a YAML 1.1 base-60 integer; it must still mean two hours.
    path = write_project(tmp_path, f"script: run.sh\ntime: {value}\n")
    assert load_project(path).time_limit_seconds == seconds


@pytest.mark.parametrize(("gpu", "stored"), [
    ("l40", "l40"), ("A100", "a100"), ("h100", "h100"), ("cpu", "cpu"), ("l40-1x", "l40-1x"),
    ("l40s-d-32x192", "l40s-d-32x192"), ("h100-80gb", "h100-80gb"),
])
def test_gpu_classes_and_profiles(tmp_path: Path, gpu: str, stored: str) -> None:
    path = write_project(tmp_path, f"script: run.sh\ngpu: {gpu}\n")
    assert load_project(path).gpu == stored


def test_docker_image(tmp_path: Path) -> None:
    path = write_project(tmp_path, "script: run.sh\ndocker:\n  image: nvcr.io/nvidia/pytorch:24.01-py3\n")
    assert load_project(path).docker_image == "nvcr.io/nvidia/pytorch:24.01-py3"


def test_dataset_mounts_and_shorthand(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "corpus"
    outside.mkdir(parents=True)
    path = write_project(tmp_path / "p", f"""\
        script: run.sh
        datasets:
          - /datasets/mnist
          - ref: {outside}
          - ref: /datasets/x
            mount: /mnt/x/
          - ref: /datasets/y
            mount: deep/y
        """)
    cfg = load_project(path)
    assert cfg.datasets == (
        DatasetRef("/datasets/mnist", "/data/mnist", None),
        DatasetRef(str(outside), "/data/corpus", outside),
        DatasetRef("/datasets/x", "/mnt/x", None),
        DatasetRef("/datasets/y", "/data/deep/y", None),
    )


def test_job_spec_paths_are_relative_to_workspace(tmp_path: Path) -> None:
    root = tmp_path / "ws" / "exp"
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\n")
    (root / "uv.lock").write_text("v1")
    path = write_project(root, """\
        project: exp
        script: run.sh
        gpu: l40
        time: "00:10:00"
        python: {project: ./}
        datasets: [{ref: /datasets/d, mount: dd}]
        output: [results]
        """)
    cfg = load_project(path)
    spec = job_spec(cfg, workspace_manifest_digest="ab" * 32, workdir="exp")
    assert (spec.project, spec.script, spec.gpu, spec.time_limit_seconds) == ("exp", "exp/run.sh", "l40", 600)
    assert spec.python_project == "exp" and list(spec.output) == ["exp/results"]
    assert [(d.ref, d.mount) for d in spec.datasets] == [("/datasets/d", "/data/dd")]
    assert spec.workspace_manifest_digest == "ab" * 32 and spec.workdir == "exp"
    assert spec.env_hash == cfg.env_hash() != ""
    root_spec = job_spec(cfg, workspace_manifest_digest="cd" * 32)
    assert (root_spec.script, root_spec.python_project, root_spec.workdir) == ("run.sh", ".", "")


def test_env_hash_follows_uv_lock(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "uv.lock").write_text("one")
    cfg = load_project(write_project(tmp_path, "script: run.sh\npython:\n  project: ./\n"))
    first = cfg.env_hash()
    assert first == hashlib.sha256(b".\0one").hexdigest()
    (tmp_path / "uv.lock").write_text("two")
    assert cfg.env_hash() != first


def test_find_project_file_from_subdirectory(tmp_path: Path) -> None:
    path = write_project(tmp_path / "proj", "script: run.sh\n")
    deep = tmp_path / "proj" / "src" / "pkg"
    deep.mkdir(parents=True)
    (deep / "mod.py").write_text("")
    assert find_project_file(deep) == path
    assert find_project_file(deep / "mod.py") == path
    assert find_project_file(tmp_path / "proj") == path


def test_find_project_file_says_where_it_looked(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    if any((p / ".c3").is_file() for p in deep.parents):
        pytest.skip("a .c3 exists above the temp dir")
    with pytest.raises(ConfigError) as info:
        find_project_file(deep)
    message = str(info.value)
    assert str(deep) in message and "up to /" in message and "c3 init" in message
    assert "\n" not in message


# ---- errors: file, line, field, fix --------------------------------------------------


@pytest.mark.parametrize(("text", "line", "field", "fragment"), [
    ("script: run.sh\nscirpt: x\n", 2, "scirpt", "did you mean `script`"),
    ("script: run.sh\ngpus: l40\n", 2, "gpus", "did you mean `gpu`"),
    ("script: run.sh\nzzz: 1\n", 2, "zzz", "known fields: project, script"),
    ("script: run.sh\npython.project: ./\n", 2, "python.project", "nest it"),
    ("script: run.sh\npython:\n  projct: ./\n", 3, "python.projct", "did you mean `project`"),
    ("script: run.sh\ndocker:\n  image: x\n  tag: y\n", 4, "docker.tag", "unknown field"),
    ("script: run.sh\ngpu: 100\n", 2, "gpu", "expected a string, got a number"),
    ("script: run.sh\ngpu: [l40]\n", 2, "gpu", "got a list"),
    ("script: run.sh\nproject: true\n", 2, "project", "got true/false"),
    ("script: run.sh\njob_name:\n  a: b\n", 3, "job_name", "got a mapping"),
    ("script: run.sh\ngpu: l40!\n", 2, "gpu", "c3 list -al"),
    ("script: run.sh\nprovider: Big Cloud\n", 2, "provider", "not a provider id"),
    ("script: run.sh\nproject: My_Proj\n", 2, "project", "project: my-proj"),
    ("script: run.sh\nproject: -x\n", 2, "project", "not a valid name"),
    ('script: run.sh\ntime: "2h"\n', 2, "time", '"02:00:00"'),
    ('script: run.sh\ntime: "01:61:00"\n', 2, "time", "HH:MM:SS"),
    ("script: run.sh\ntime: 3600\n", 2, "time", "HH:MM:SS"),
    ('script: run.sh\ntime: "00:00:00"\n', 2, "time", "longer than"),
    ("script: run.sh\ntime: [1]\n", 2, "time", "HH:MM:SS"),
    ("script: run.sh\njob_name: " + "x" * 200 + "\n", 2, "job_name", "128"),
    ("script: run.sh\nscript: run.sh\n", 2, "script", "given twice (also on line 1)"),
    ("project: x\n", 1, "script", "is required"),
    ("", 1, "script", "is required"),
    ("# only a comment\n", 1, "script", "is required"),
    ("script:\n", 1, "script", "is required"),
    ("- script: run.sh\n", 1, ".c3", "expected a mapping"),
    ("script: missing.sh\n", 1, "script", "does not exist"),
    ("script: /etc/passwd\n", 1, "script", "absolute"),
    ("script: ../run.sh\n", 1, "script", "'..'"),
    ("script: .\n", 1, "script", "not a file"),
    ("script: [run.sh\n", 2, "yaml", "invalid YAML"),
    ("script: run.sh\n\tgpu: l40\n", 2, "yaml", "invalid YAML"),
    ('script: "run.sh\n', 2, "yaml", "invalid YAML"),
    ("script: run.sh\npython:\n  project: ./\ndocker:\n  image: x\n", 4, "docker", "mutually exclusive"),
    ("script: run.sh\npython: ./\n", 2, "python", "expected a mapping"),
    ("script: run.sh\npython:\n  project: ./nope\n", 3, "python.project", "not a directory"),
    ("script: run.sh\npython: {}\n", 2, "python.project", "is required"),
    ("script: run.sh\ndocker:\n  image: Ubuntu Latest\n", 3, "docker.image", "not a Docker image"),
    ("script: run.sh\ndocker: {}\n", 2, "docker.image", "is required"),
    ("script: run.sh\noutput: results\n", 2, "output", "expected a list"),
    ("script: run.sh\noutput:\n  - /abs\n", 3, "output", "absolute"),
    ("script: run.sh\noutput:\n  - ok\n  - ../up\n", 4, "output", "'..'"),
    ("script: run.sh\noutput:\n  - ./\n", 3, "output", "project root"),
    ("script: run.sh\noutput:\n  - r\n  - ./r\n", 4, "output", "twice"),
    ("script: run.sh\ndatasets: /datasets/x\n", 2, "datasets", "expected a list"),
    ("script: run.sh\ndatasets:\n  - mount: /data/x\n", 3, "datasets.ref", "is required"),
    ("script: run.sh\ndatasets:\n  - ref: /datasets/x\n    mnt: y\n", 4, "datasets.mnt", "did you mean `mount`"),
    ("script: run.sh\ndatasets:\n  - ref: /datasets/\n", 3, "datasets.ref", "not a valid storage path"),
    ("script: run.sh\ndatasets:\n  - ref: /projects/p/x/y\n", 3, "datasets.ref", "/projects/<project>/data/<name>"),
    ("script: run.sh\ndatasets:\n  - ref: no-such-dir\n", 3, "datasets.ref", "neither a storage path nor a local directory"),
    ("script: run.sh\ndatasets:\n  - ref: /datasets/x\n    mount: /data/../etc\n", 4, "datasets.mount", "'..'"),
    ("script: run.sh\ndatasets:\n  - ref: /datasets/x\n    mount: ../x\n", 4, "datasets.mount", "'..'"),
    ("script: run.sh\ndatasets:\n  - ref: /datasets/x\n    mount: /\n", 4, "datasets.mount", "cannot mount over /"),
    ("script: run.sh\ndatasets:\n  - ref: /datasets/x\n    mount: /proc\n", 4, "datasets.mount", "system directory"),
    ("script: run.sh\ndatasets:\n  - ref: /datasets/x\n    mount: /dev/shm\n", 4, "datasets.mount", "/dev/shm"),
    ("script: run.sh\ndatasets:\n  - ref: /datasets/x\n    mount: /sys\n", 4, "datasets.mount", "system directory"),
    ("script: run.sh\ndatasets:\n  - ref: /datasets/x\n    mount: /etc/x\n", 4, "datasets.mount", "system directory"),
    ("script: run.sh\ndatasets:\n  - ref: /datasets/x\n    mount: /workspace\n", 4, "datasets.mount", "workspace"),
    ("script: run.sh\ndatasets:\n  - ref: /datasets/x\n    mount: /workspace/data\n", 4, "datasets.mount", "workspace"),
    ("script: run.sh\ndatasets:\n  - ref: /datasets/x\n    mount: /home\n", 4, "datasets.mount", "/home itself"),
    ("script: run.sh\ndatasets:\n  - ref: /datasets/x\n  - ref: /jobs/x\n", 4, "datasets.mount", "overlaps"),
    ("script: run.sh\ndatasets:\n  - ref: /datasets/x\n    mount: /data/a\n  - ref: /datasets/y\n    mount: /data/a/b\n", 6, "datasets.mount", "overlaps"),
    ("script: run.sh\ndatasets:\n  - ref: 5\n", 3, "datasets.ref", "expected a string"),
])
def test_errors_name_file_line_and_field(tmp_path: Path, text: str, line: int, field: str, fragment: str) -> None:
    expect_error(write_project(tmp_path, text), line, field, fragment)


def test_missing_pyproject_and_uv_lock(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    path = write_project(tmp_path, "script: run.sh\npython:\n  project: env\n")
    expect_error(path, 3, "python.project", "no pyproject.toml", "uv init")
    (tmp_path / "env" / "pyproject.toml").write_text("[project]\n")
    expect_error(path, 3, "python.project", "no uv.lock", f"run `uv lock` in {tmp_path / 'env'}")
    (tmp_path / "env" / "uv.lock").write_text("")
    assert load_project(path).python_project == "env"


def test_script_symlink_leaving_the_project(tmp_path: Path) -> None:
    outside = tmp_path / "outside.sh"
    outside.write_text("echo\n")
    root = tmp_path / "p"
    path = write_project(root, "script: link.sh\n")
    os.symlink(outside, root / "link.sh")
    expect_error(path, 1, "script", "outside the project")


def test_python_project_symlink_leaving_the_project(tmp_path: Path) -> None:
    (tmp_path / "ext").mkdir()
    root = tmp_path / "p"
    path = write_project(root, "script: run.sh\npython:\n  project: env\n")
    os.symlink(tmp_path / "ext", root / "env")
    expect_error(path, 3, "python.project", "outside the project")


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / ".c3"
    path.mkdir()  # reading a directory fails for any user, root included
    message = expect_error(path, 1, ".c3", "cannot read file")
    assert "readable" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / ".c3"
    path.write_bytes(b"script: \xff\xfe\n")
    expect_error(path, 1, ".c3", "not UTF-8")


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / ".c3", 1, ".c3", "cannot read file")


def test_env_hash_reports_deleted_lock(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "uv.lock").write_text("x")
    cfg = load_project(write_project(tmp_path, "script: run.sh\npython:\n  project: ./\n"))
    (tmp_path / "uv.lock").unlink()
    with pytest.raises(ConfigError, match="run `uv lock`"):
        cfg.env_hash()
