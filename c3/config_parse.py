"""The `.c3` parser: a YAML node tree, checked field by field, so each error names its line.

Every problem is a `ConfigError` whose message is one line:
`<path>:<line>: <field>: <problem>; <how to fix>`.
"""

from __future__ import annotations

import difflib
import os
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import yaml

from c3.config_rules import (
    DATA_ROOT,
    DOCKER_RE,
    FIELDS,
    FILE_NAME,
    FORBIDDEN_EXACT,
    FORBIDDEN_UNDER,
    GPU_RE,
    NAMESPACE_RES,
    NAMESPACE_ROOTS,
    PROJECT_RE,
    PROVIDER_RE,
    TIME_RE,
    WORKSPACE_MOUNT,
    DatasetRef,
    ProjectConfig,
    normalise_project_name,
)
from c3.errors import ConfigError

T = TypeVar("T")


def fail(path: Path, line: int, field: str, problem: str, fix: str) -> NoReturn:
    raise ConfigError(f"{path}:{line}: {field}: {problem}; {fix}")


def _show(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:77] + "...")


_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_KIND = {"tag:yaml.org,2002:int": "a number", "tag:yaml.org,2002:float": "a number",
         "tag:yaml.org,2002:bool": "true/false", "tag:yaml.org,2002:timestamp": "a date"}


class Parser:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = path.parent

    def fail(self, node: yaml.Node | None, field: str, problem: str, fix: str) -> NoReturn:
        fail(self.path, node.start_mark.line + 1 if node is not None else 1, field, problem, fix)

    # -- node helpers ---------------------------------------------------------------------
    def mapping(self, node: yaml.Node, field: str, known: tuple[str, ...]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            example = "script: run.sh" if field == FILE_NAME else f"{field}: {{{known[0]}: ...}}"
            self.fail(node, field, f"expected a mapping of fields, got {self.kind(node)}", f"write it as `{example}`")
        fields: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            full = name if field == FILE_NAME else f"{field}.{name}"
            if name not in known:
                self.fail(key, full, "unknown field", self.suggest(name, known, field))
            if name in fields:
                self.fail(key, full, f"given twice (also on line {fields[name][0].start_mark.line + 1})", "keep one")
            fields[name] = (key, value)
        return fields

    def suggest(self, name: str, known: tuple[str, ...], field: str) -> str:
        if "." in name and name.split(".", 1)[0] in known:
            head, tail = name.split(".", 1)
            return f"nest it: `{head}:` then `  {tail}: ...` on the next line"
        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
        where = "" if field == FILE_NAME else f" in {field}"
        hint = f"did you mean `{close[0]}`? " if close else ""
        return f"{hint}known fields{where}: {', '.join(known)}"

    def kind(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        return _KIND.get(node.tag, "a string" if node.tag == _STR else "an empty value")

    def string(self, node: yaml.Node, field: str, fix: str = "") -> str | None:
        """A string scalar, or None when the value is empty/null."""
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
            return None
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
            text = str(node.value).strip()
            if "\n" in text or "\x00" in text:
                self.fail(node, field, "must be a single line", "remove the line breaks")
            return text or None
        quote = " (put it in quotes)" if isinstance(node, yaml.ScalarNode) else ""
        self.fail(node, field, f"expected a string, got {self.kind(node)}", fix or f"write `{field}: <text>`{quote}")

    def seq(self, node: yaml.Node, field: str, example: str) -> list[yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, field, f"expected a list, got {self.kind(node)}", f"write it as a list: `{field}:` then `  - {example}`")
        return list(node.value)

    def rel_path(self, node: yaml.Node, field: str, value: str) -> str:
        """`value` as a normalised POSIX path relative to the root, refusing escapes."""
        if os.path.isabs(value) or value.startswith("~"):
            self.fail(node, field, f"{_show(value)} is absolute", f"give a path relative to {self.root}")
        if ".." in value.replace("\\", "/").split("/"):
            self.fail(node, field, f"{_show(value)} contains '..'", f"keep it inside {self.root}")
        rel = posixpath.normpath(value.replace(os.sep, "/"))
        resolved = os.path.realpath(self.root / rel)
        if os.path.commonpath([resolved, os.path.realpath(self.root)]) != os.path.realpath(self.root):
            self.fail(node, field, f"{_show(value)} leads outside the project (through a symlink)", f"keep it inside {self.root}")
        return rel

    # -- fields ---------------------------------------------------------------------------
    def parse(self, doc: yaml.Node | None) -> ProjectConfig:
        fields = {} if doc is None else self.mapping(doc, FILE_NAME, FIELDS)
        if "python" in fields and "docker" in fields:
            self.fail(fields["docker"][0], "docker", "python and docker are mutually exclusive",
                      "keep one of `python:` and `docker:`")
        def get(name: str, parse: Callable[[yaml.Node, yaml.Node], T | None]) -> T | None:
            return parse(*fields[name]) if name in fields else None

        script = get("script", self.f_script)
        if script is None:
            self.fail(fields["script"][1] if "script" in fields else doc, "script",
                      "is required", "add `script: run.sh` naming the bash script to run")
        return ProjectConfig(
            path=self.path, root=self.root,
            project=get("project", self.f_project) or normalise_project_name(self.root.name),
            script=script,
            gpu=get("gpu", self.f_gpu) or "",
            provider=get("provider", self.f_provider) or "",
            time_limit_seconds=get("time", self.f_time) or 0,
            job_name=get("job_name", self.f_job_name) or "",
            python_project=get("python", self.f_python) or "",
            docker_image=get("docker", self.f_docker) or "",
            datasets=tuple(get("datasets", self.f_datasets) or ()),
            output=tuple(get("output", self.f_output) or ()),
        )

    def f_project(self, key: yaml.Node, node: yaml.Node) -> str | None:
        value = self.string(node, "project")
        if value is not None and not PROJECT_RE.match(value):
            self.fail(node, "project", f"{_show(value)} is not a valid name (lowercase letters, digits and hyphens, at most 63)",
                      f"write e.g. `project: {normalise_project_name(value)}`")
        return value

    def f_script(self, key: yaml.Node, node: yaml.Node) -> str | None:
        value = self.string(node, "script")
        if value is None:
            return None
        rel = self.rel_path(node, "script", value)
        target = self.root / rel
        if not target.exists():
            self.fail(node, "script", f"{_show(value)} does not exist in {self.root}", "create it or fix the path")
        if not target.is_file():
            self.fail(node, "script", f"{_show(value)} is not a file", "point it at a bash script such as run.sh")
        return rel

    def f_gpu(self, key: yaml.Node, node: yaml.Node) -> str | None:
        value = self.string(node, "gpu")
        if value is not None and not GPU_RE.match(value.lower()):
            self.fail(node, "gpu", f"{_show(value)} is not a GPU class or profile code",
                      "use a class such as l40, a100, h100 or cpu, or a profile code from `c3 list -al` (e.g. l40-1x); omit it for any")
        return value.lower() if value else None

    def f_provider(self, key: yaml.Node, node: yaml.Node) -> str | None:
        value = self.string(node, "provider")
        if value is not None and not PROVIDER_RE.match(value):
            self.fail(node, "provider", f"{_show(value)} is not a provider id",
                      "use an id from `c3 list` such as local or slurm, or omit it")
        return value

    def f_time(self, key: yaml.Node, node: yaml.Node) -> int | None:
        # The raw text is used: YAML 1.1 would read an unquoted 2:00:00 as the number 7200.
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
            return None
        raw = str(node.value).strip() if isinstance(node, yaml.ScalarNode) else ""
        match = TIME_RE.match(raw)
        if not match:
            got = _show(raw) if isinstance(node, yaml.ScalarNode) else self.kind(node)
            self.fail(node, "time", f"{got} is not a duration in HH:MM:SS", 'write e.g. `time: "02:00:00"` for two hours')
        hours, minutes, seconds = (int(g) for g in match.groups())
        total = hours * 3600 + minutes * 60 + seconds
        if total == 0:
            self.fail(node, "time", "must be longer than 00:00:00", "give the maximum runtime, or omit it for no limit")
        return total

    def f_job_name(self, key: yaml.Node, node: yaml.Node) -> str | None:
        value = self.string(node, "job_name")
        if value is not None and len(value) > 128:
            self.fail(node, "job_name", "is longer than 128 characters", "shorten it")
        return value

    def f_python(self, key: yaml.Node, node: yaml.Node) -> str | None:
        fields = self.mapping(node, "python", ("project",))
        if "project" not in fields:
            self.fail(node, "python.project", "is required under python:", "add `  project: ./` (the directory holding pyproject.toml)")
        pnode = fields["project"][1]
        value = self.string(pnode, "python.project")
        if value is None:
            self.fail(pnode, "python.project", "is empty", "give the directory holding pyproject.toml, e.g. `./`")
        rel = self.rel_path(pnode, "python.project", value)
        directory = self.root / rel
        if not directory.is_dir():
            self.fail(pnode, "python.project", f"{_show(value)} is not a directory in {self.root}", "create it or fix the path")
        if not (directory / "pyproject.toml").is_file():
            self.fail(pnode, "python.project", f"no pyproject.toml in {directory}", "create one (`uv init`) or point python.project at the right directory")
        if not (directory / "uv.lock").is_file():
            self.fail(pnode, "python.project", f"no uv.lock in {directory}", f"run `uv lock` in {directory}")
        return rel

    def f_docker(self, key: yaml.Node, node: yaml.Node) -> str | None:
        fields = self.mapping(node, "docker", ("image",))
        if "image" not in fields:
            self.fail(node, "docker.image", "is required under docker:", "add `  image: <name>:<tag>`, e.g. python:3.11-slim")
        inode = fields["image"][1]
        value = self.string(inode, "docker.image")
        if value is None or not DOCKER_RE.match(value):
            self.fail(inode, "docker.image", f"{_show(value or '')} is not a Docker image reference",
                      "write e.g. `image: pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime` (lowercase repository)")
        return value

    def f_output(self, key: yaml.Node, node: yaml.Node) -> list[str]:
        result: list[str] = []
        for item in self.seq(node, "output", "./results"):
            value = self.string(item, "output")
            if value is None:
                self.fail(item, "output", "empty entry", "remove it or name a directory")
            rel = self.rel_path(item, "output", value)
            if rel == ".":
                self.fail(item, "output", "the project root itself cannot be an output", "name a subdirectory such as ./results")
            if rel in result:
                self.fail(item, "output", f"{_show(value)} is listed twice", "remove the duplicate")
            result.append(rel)
        return result

    def f_datasets(self, key: yaml.Node, node: yaml.Node) -> list[DatasetRef]:
        result: list[DatasetRef] = []
        for item in self.seq(node, "datasets", "ref: /datasets/<name>"):
            dataset, mount_node = self.dataset(item)
            for other in result:
                a, b = sorted((dataset.mount, other.mount), key=len)
                if b == a or b.startswith(a + "/"):
                    self.fail(mount_node, "datasets.mount", f"{dataset.mount} overlaps the mount of {other.ref} ({other.mount})",
                              "give each dataset its own mount directory")
            result.append(dataset)
        return result

    def dataset(self, item: yaml.Node) -> tuple[DatasetRef, yaml.Node]:
        """One entry, and the node its mount came from (for errors about the mount)."""
        if isinstance(item, yaml.ScalarNode):  # shorthand: `- /datasets/name`
            ref_node: yaml.Node = item
            mount_node: yaml.Node | None = None
        else:
            fields = self.mapping(item, "datasets", ("ref", "mount"))
            if "ref" not in fields:
                self.fail(item, "datasets.ref", "is required for each dataset", "add `ref: /datasets/<name>` (or a local directory)")
            ref_node, mount_node = fields["ref"][1], fields.get("mount", (None, None))[1]
        ref = self.string(ref_node, "datasets.ref")
        if ref is None:
            self.fail(ref_node, "datasets.ref", "is empty", "give /datasets/<name>, /jobs/<id> or a local directory")
        local_dir: Path | None = None
        if ref.startswith(NAMESPACE_ROOTS):
            match = next((m for m in (r.match(ref) for r in NAMESPACE_RES) if m), None)
            if match is None:
                self.fail(ref_node, "datasets.ref", f"{_show(ref)} is not a valid storage path",
                          "use /datasets/<name>[@v2], /jobs/<id>, /projects/<project>/data/<name> or /projects/<project>/jobs/<id>")
            ref, name = ref.rstrip("/"), match.group("name")
        else:
            candidate = (self.root / os.path.expanduser(ref)).resolve()
            if not candidate.is_dir():
                self.fail(ref_node, "datasets.ref", f"{_show(ref)} is neither a storage path nor a local directory",
                          "use /datasets/<name>[@v2], /jobs/<id>, /projects/<project>/data/<name>, or an existing directory to upload")
            local_dir, name = candidate, candidate.name
        mount_value = self.string(mount_node, "datasets.mount") if mount_node is not None else None
        node = mount_node if mount_node is not None else ref_node
        return DatasetRef(ref=ref, mount=self.mount(node, mount_value, name), local_dir=local_dir), node

    def mount(self, node: yaml.Node, value: str | None, name: str) -> str:
        if value is None:
            value = f"{DATA_ROOT}/{name}"
        if ".." in value.split("/"):
            self.fail(node, "datasets.mount", f"{_show(value)} contains '..'", f"give an absolute path such as {DATA_ROOT}/{name}")
        if not value.startswith("/"):
            value = f"{DATA_ROOT}/{value}"
        mount = posixpath.normpath(value)
        mount = "/" + mount.lstrip("/")
        for bad in FORBIDDEN_UNDER:
            if mount == bad or mount.startswith(bad + "/"):
                what = "the job's workspace" if bad == WORKSPACE_MOUNT else "a system directory"
                self.fail(node, "datasets.mount", f"cannot mount over {mount} ({what})", f"mount under {DATA_ROOT}, e.g. {DATA_ROOT}/{name}")
        if mount in FORBIDDEN_EXACT:
            self.fail(node, "datasets.mount", f"cannot mount over {mount} itself", f"mount under it, e.g. {DATA_ROOT}/{name}")
        return mount
