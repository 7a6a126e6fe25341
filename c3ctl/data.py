"""`c3ctl data …`: datasets and job artifacts in the store (ls, cp, rm, du, log).

A store path starts with /datasets/, /jobs/ or /projects/ (write ./datasets/… for a
local directory of that name). Uploads go through the daemon's stat index, so unchanged
files are neither hashed again nor sent; downloads verify every digest and never write
outside the destination.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from google.protobuf.timestamp_pb2 import Timestamp
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from c3 import workspace
from c3.errors import InvalidArgument, NotFound
from c3.paths import c3_paths
from c3.storage.client import StorageClient
from c3.storage.hashindex import HashIndex
from c3.storage.treepush import TreePusher, server_identity
from c3.v1 import storage_pb2
from c3ctl import render, session
from c3ctl.aio import run

STORE_ROOTS = ("datasets", "jobs", "projects")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
# A transfer shows a progress bar once it has taken this long (never for quick ones).
PROGRESS_AFTER_S = 0.5


def is_store_path(text: str) -> bool:
    return text.startswith("/") and text.lstrip("/").split("/", 1)[0] in STORE_ROOTS


def _check_name(name: str, what: str, text: str) -> str:
    if ".." in name or not _NAME_RE.match(name):
        raise InvalidArgument(
            f"invalid {what} name {name!r} in {text!r}: use letters, digits, '.', '_' and '-'"
            " (no '/' or '..', at most 128 characters)"
        )
    return name


def upload_target(dst: str, src: Path) -> str:
    """The dataset path an upload of `src` commits to: `/datasets/<name>` or
    `/projects/<p>/data/<name>`; a trailing `/datasets/` takes the directory's name."""
    parts = [p for p in dst.split("/") if p]
    if parts[:1] == ["datasets"] and len(parts) == 1:
        parts.append(src.resolve().name)
    elif parts[:1] == ["projects"] and len(parts) == 3 and parts[2] == "data":
        parts.append(src.resolve().name)
    if parts[:1] == ["datasets"] and len(parts) == 2:
        _check_name(parts[1], "dataset", dst)
    elif parts[:1] == ["projects"] and len(parts) == 4 and parts[2] == "data":
        _check_name(parts[1], "project", dst)
        _check_name(parts[3], "dataset", dst)
    else:
        raise InvalidArgument(
            f"cannot upload to {dst!r}: a local directory uploads to /datasets/<name> or"
            " /projects/<project>/data/<name>"
        )
    if "@" in parts[-1]:
        raise InvalidArgument(f"{dst!r}: an upload makes a new version; leave out the @version")
    return "/" + "/".join(parts)


# Progress ------------------------------------------------------------------------------


class _Transfer:
    """A byte-progress callback that shows a bar on stderr only for transfers that take
    more than a moment, and only when stderr is a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.progress: Progress | None = None
        self.task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.progress is None:
            if not sys.stderr.isatty() or time.monotonic() - self.started < PROGRESS_AFTER_S:
                return
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), console=render.err, transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=total)
        self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@contextmanager
def _transfer(label: str) -> Iterator[_Transfer]:
    bar = _Transfer(label)
    try:
        yield bar
    finally:
        bar.close()


# Upload --------------------------------------------------------------------------------


@dataclass
class UploadResult:
    version: storage_pb2.VersionInfo
    files_scanned: int
    files_hashed: int
    blobs_new: int
    bytes_sent: int
    bytes_total: int
    seconds: float
    ignored: list[workspace.IgnoredPath]


async def upload(
    client: StorageClient, index: HashIndex, server_key: str, src: Path, target: str,
    progress: Callable[[int, int], None] | None = None,
) -> UploadResult:
    started = time.monotonic()
    # The same file set a deploy would ship for this directory (so the two dedup), with
    # what the ignore rules left out, which the summary reports.
    files, ignored = await asyncio.to_thread(workspace.scan_with_ignored, src)
    if not files:
        raise InvalidArgument(f"{src} has no files to upload (all ignored or empty)")
    pushed, hashed = await TreePusher(index).push_files(src, files, client, server_key, progress)
    version = await client.commit(target, pushed.digest, message=f"c3ctl data cp {src}")
    return UploadResult(
        version, hashed.files_scanned, hashed.files_hashed, pushed.blobs_new, pushed.bytes_sent,
        pushed.bytes_total, time.monotonic() - started, ignored,
    )


async def _upload_cmd(src: Path, dst: str) -> UploadResult:
    if not src.is_dir():
        raise NotFound(f"{src} is not a directory: `data cp` uploads a directory")
    target = upload_target(dst, src)
    creds = session.credentials()
    async with session.storage_client() as client:
        async with HashIndex(c3_paths().daemon_state_dir / "index.sqlite") as index:
            with _transfer(f"uploading {target}") as bar:
                return await upload(
                    client, index, server_identity(client.address, creds.api_key), src, target, bar
                )


# Download ------------------------------------------------------------------------------


async def _download_cmd(src: str, dst: Path) -> tuple[storage_pb2.VersionInfo, int]:
    if dst.exists() and not dst.is_dir():
        raise InvalidArgument(f"{dst} exists and is not a directory")
    async with session.storage_client() as client:
        version = await client.resolve(src)
        manifest = await client.get_manifest(version.manifest_digest)
        with _transfer(f"downloading {version.path}@v{version.version}") as bar:
            fetched = await client.download_tree(manifest, dst, progress=bar)
    return version, fetched


# Commands ------------------------------------------------------------------------------


def _iso(ts: Timestamp) -> str | None:
    if not ts.seconds and not ts.nanos:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts.seconds))


def _store_path(path: str) -> str:
    if not is_store_path(path) and path.rstrip("/") != "":
        raise InvalidArgument(
            f"{path!r} is not a store path: use /datasets/<name>, /jobs/<id> or"
            " /projects/<project>/…"
        )
    return path


@click.group("data")
def data() -> None:
    """Datasets and job artifacts in the store: ls, cp, rm, du, log."""


@data.command("ls")
@click.option("-l", "long", is_flag=True, help="Show size, digest prefix and time.")
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")
@click.argument("path", default="/")
def ls(path: str, long: bool, as_json: bool) -> None:
    """List datasets, versions and files under PATH (default /)."""

    async def go() -> storage_pb2.ListResponse:
        async with session.storage_client() as client:
            return await client.list(_store_path(path))

    reply = run(go())
    if as_json:
        render.out.print_json(json.dumps({"path": reply.path, "entries": [
            {"name": e.name, "is_dir": e.is_dir, "size": e.size, "digest": e.digest or None,
             "modified_at": _iso(e.modified_at), "latest_version": e.latest_version or None}
            for e in reply.entries]}))
        return
    if not long:
        for e in reply.entries:
            render.out.print(escape(e.name + ("/" if e.is_dir else "")))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "SIZE", "DIGEST", "MODIFIED", "LATEST"):
        table.add_column(column)
    for e in reply.entries:
        table.add_row(
            escape(e.name + ("/" if e.is_dir else "")), render.human_bytes(e.size),
            e.digest[:12] or "-", _iso(e.modified_at) or "-",
            f"v{e.latest_version}" if e.latest_version else "-",
        )
    render.out.print(table)


@data.command("cp")
@click.argument("src")
@click.argument("dst")
def cp(src: str, dst: str) -> None:
    """Upload a local directory as a new dataset version, or download a store path.

    \b
      c3ctl data cp ./mnist /datasets/mnist       # new version of /datasets/mnist
      c3ctl data cp /datasets/mnist@v1 ./mnist    # download (every digest verified)
      c3ctl data cp /jobs/<id> ./out              # a job's artifacts
    """
    if is_store_path(src) and is_store_path(dst):
        raise InvalidArgument("copying between two store paths is not supported yet")
    if is_store_path(src):
        version, fetched = run(_download_cmd(src, Path(dst)))
        render.err.print(
            f"downloaded {escape(version.path)}@v{version.version} ({version.files} files,"
            f" {render.human_bytes(version.size)}) to {escape(dst)}:"
            f" {render.human_bytes(fetched)} fetched"
        )
        return
    if not is_store_path(dst):
        raise InvalidArgument(
            f"neither {src!r} nor {dst!r} is a store path (/datasets/…, /jobs/…, /projects/…)"
        )
    r = run(_upload_cmd(Path(src), dst))
    v = r.version
    render.err.print(
        f"uploaded {escape(v.path)}@v{v.version}: {r.files_scanned} files scanned"
        f" ({render.human_bytes(r.bytes_total)}), {r.files_hashed} hashed, {r.blobs_new} new,"
        f" {render.human_bytes(r.bytes_sent)} sent in {r.seconds:.2f}s"
    )
    if r.ignored:
        first = r.ignored[0]
        render.err.print(
            f"[yellow]{len(r.ignored)} path(s) left out by ignore rules[/], e.g."
            f" {escape(first.path)} ({escape(first.rule)})"
        )


@data.command("rm")
@click.option("-r", "--recursive", is_flag=True, help="Remove a dataset with all its versions.")
@click.argument("path")
def rm(path: str, recursive: bool) -> None:
    """Remove a dataset (needs -r), one version (PATH@vN) or a directory (needs -r)."""

    async def go() -> int:
        async with session.storage_client() as client:
            return await client.remove(_store_path(path), recursive)

    removed = run(go())
    render.err.print(f"removed {removed} version(s) of {escape(path)}")


@data.command("du")
@click.option("--json", "as_json", is_flag=True, help="Print the usage as JSON.")
@click.argument("path", default="/")
def du(path: str, as_json: bool) -> None:
    """Logical size and stored (deduplicated, compressed) size of PATH."""

    async def go() -> storage_pb2.DiskUsageResponse:
        async with session.storage_client() as client:
            return await client.disk_usage(_store_path(path))

    u = run(go())
    if as_json:
        render.out.print_json(json.dumps({
            "path": path, "logical_bytes": u.logical_bytes, "stored_bytes": u.stored_bytes,
            "files": u.files, "versions": u.versions}))
        return
    render.out.print(
        f"{escape(path)}  logical {render.human_bytes(u.logical_bytes)}"
        f"  stored {render.human_bytes(u.stored_bytes)}  ({u.files} files, {u.versions} versions)"
    )


@data.command("log")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
@click.argument("path")
def log(path: str, as_json: bool) -> None:
    """Version history of a dataset or job path."""

    async def go() -> list[storage_pb2.VersionInfo]:
        async with session.storage_client() as client:
            return await client.log(_store_path(path))

    versions = run(go())
    if as_json:
        render.out.print_json(json.dumps({"path": path, "versions": [
            {"version": v.version, "created_at": _iso(v.created_at), "files": v.files,
             "size": v.size, "manifest_digest": v.manifest_digest, "message": v.message or None}
            for v in versions]}))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("VERSION", "CREATED", "FILES", "SIZE"):
        table.add_column(column)
    for v in versions:
        table.add_row(
            f"v{v.version}", _iso(v.created_at) or "-", str(v.files), render.human_bytes(v.size)
        )
    render.out.print(table)
