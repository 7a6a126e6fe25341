"""Namespace operations of one org: commit, resolve, list, log, remove, disk usage."""

from __future__ import annotations

import time
from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from c3 import manifest as mf
from c3.errors import FailedPrecondition, InvalidArgument, NotFound
from c3.v1 import common_pb2, storage_pb2
from storaged import namespace as ns_mod
from storaged.meta import HoldRow, Metadata, Version, VersionsHeld
from storaged.namespace import NsPath
from storaged.store import BlobStore


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def version_info(display: str, v: Version) -> storage_pb2.VersionInfo:
    return storage_pb2.VersionInfo(
        path=display,
        version=v.version,
        manifest_digest=v.manifest,
        created_at=_ts(v.created_at),
        files=v.files,
        size=v.size,
        message=v.message,
    )


def _pick(ns: NsPath, versions: Sequence[Version]) -> Version:
    if not versions:
        raise NotFound(f"no such path {ns.display}")
    if ns.version is None:
        return versions[-1]
    for v in versions:
        if v.version == ns.version:
            return v
    raise NotFound(f"{ns.display} has no version v{ns.version} (latest is v{versions[-1].version})")


DEFAULT_HOLD_TTL_SECONDS = 3600
MAX_HOLDER_CHARS = 200


def _holder_name(holder: str) -> str:
    kind, sep, ident = holder.partition(":")
    return f"{kind} {ident}" if sep and kind == "job" else holder


def held_refusal(display: str, holds: Sequence[HoldRow]) -> FailedPrecondition:
    """One line naming what pins the data, e.g. "/datasets/corpus v2 is mounted by job
    j-123 (pending or running); cancel it or wait until it ends"."""
    first = holds[0]
    more = len({h.holder for h in holds}) - 1
    others = f" and {more} other holder(s)" if more > 0 else ""
    what = "mounted by" if first.holder.startswith("job:") else "held by"
    state = " (pending or running)" if first.holder.startswith("job:") else ""
    return FailedPrecondition(
        f"{display} v{first.version} is {what} {_holder_name(first.holder)}{state}{others};"
        " cancel it or wait until it ends"
    )


def _latest_by_path(versions: Sequence[Version]) -> dict[str, Version]:
    latest: dict[str, Version] = {}
    for v in versions:
        latest[v.path] = v  # ordered by (path, version): the last one wins
    return latest


class Catalog:
    def __init__(self, meta: Metadata, store: BlobStore) -> None:
        self.meta = meta
        self.store = store

    async def _leaf_versions(self, org: str, ns: NsPath) -> list[Version]:
        assert ns.canonical is not None
        if ns.job_id and ns.project and await self.meta.job_project(org, ns.job_id) != ns.project:
            raise NotFound(f"no such path {ns.display}")
        return await self.meta.versions(org, ns.canonical)

    async def _dir_versions(self, org: str, ns: NsPath) -> list[Version]:
        """Every version of every leaf below a directory."""
        kind, p = ns.dir_kind, ns.project
        if kind == "root":
            return await self.meta.versions_like(org, "/%")
        if kind in ("datasets", "jobs"):
            prefix = f"/{kind}/"
        elif kind == "projects":
            prefix = "/projects/"
        elif kind in ("project", "data"):
            prefix = f"/projects/{p}/" if kind == "project" else f"/projects/{p}/data/"
        else:  # pjobs
            return await self.meta.job_versions(org, p)
        found = [
            v for v in await self.meta.versions_like(org, prefix + "%") if v.path.startswith(prefix)
        ]
        if kind in ("projects", "project"):
            found += await self.meta.job_versions(org, p if kind == "project" else None)
        return found

    async def commit(
        self, org: str, path: str, manifest_digest: str, message: str, project: str
    ) -> storage_pb2.VersionInfo:
        ns = ns_mod.parse(path, allow_version=False, allow_subpath=False)
        if ns.canonical is None:
            raise InvalidArgument(f"cannot commit to directory {ns.display}: use {ns_mod.FORMS}")
        mf.check_digest(manifest_digest)
        if project:
            ns_mod.check_name(project, "project")
            if not ns.job_id:
                raise InvalidArgument("the project field applies to job paths only")
            if ns.project and ns.project != project:
                raise InvalidArgument(
                    f"path {path} names project {ns.project}, request says {project}"
                )
        owner = ns.project or project
        if not await self.meta.referenced_by_org(org, [manifest_digest]):
            raise FailedPrecondition(
                f"manifest {manifest_digest} is not in the store: upload it first (PutManifest)"
            )
        manifest = await self.store.load_manifest(manifest_digest)
        # A manifest this org already has a live version of was checked then, and GC
        # keeps every blob a live version references: no need to check 10,000 rows again.
        recommit = await self.meta.has_version_with(org, manifest_digest)
        if not recommit:
            digests = list(dict.fromkeys(e.digest for e in manifest.entries))
            present = await self.meta.referenced_by_org(org, digests)
            missing = [e for e in manifest.entries if e.digest not in present]
            if missing:
                raise FailedPrecondition(
                    f"manifest references {len(missing)} file(s) whose blobs the store lacks,"
                    f" e.g. {missing[0].path!r} ({missing[0].digest[:12]}): push them first"
                )
        if ns.job_id and owner:
            linked = await self.meta.job_project(org, ns.job_id)
            if linked and linked != owner:
                raise FailedPrecondition(
                    f"job {ns.job_id} belongs to project {linked}, not {owner}"
                )
            await self.meta.set_job_project(org, ns.job_id, owner)
        if not recommit:
            await self.meta.touch([manifest_digest, *digests])
        assert ns.canonical is not None
        v = await self.meta.add_version(
            org,
            ns.canonical,
            manifest_digest,
            len(manifest.entries),
            mf.total_size(manifest),
            message,
        )
        return version_info(ns.display, v)

    async def resolve(self, org: str, ref: str) -> storage_pb2.VersionInfo:
        ns = ns_mod.parse(ref, allow_subpath=False)
        if ns.canonical is None:
            raise InvalidArgument(f"{ref} is a directory; resolve one of {ns_mod.FORMS}")
        return version_info(ns.display, _pick(ns, await self._leaf_versions(org, ns)))

    async def log(self, org: str, path: str) -> list[storage_pb2.VersionInfo]:
        ns = ns_mod.parse(path, allow_version=False, allow_subpath=False)
        if ns.canonical is None:
            raise InvalidArgument(f"{path} is a directory; log takes one of {ns_mod.FORMS}")
        versions = await self._leaf_versions(org, ns)
        if not versions:
            raise NotFound(f"no such path {ns.display}")
        return [version_info(ns.display, v) for v in versions]

    async def list(self, org: str, path: str) -> storage_pb2.ListResponse:
        ns = ns_mod.parse(path)
        reply = storage_pb2.ListResponse(path=ns.display)
        if ns.canonical is not None:
            v = _pick(ns, await self._leaf_versions(org, ns))
            manifest = await self.store.load_manifest(v.manifest)
            reply.entries.extend(_tree_entries(ns, manifest, v))
            return reply
        if ns.dir_kind == "root":
            names = ["datasets", "jobs", "projects"]
        elif ns.dir_kind == "projects":
            names = sorted(await self.meta.projects(org))
        elif ns.dir_kind == "project":
            names = ["data", "jobs"]
        else:
            names = []
        reply.entries.extend(storage_pb2.ListEntry(name=n, is_dir=True) for n in names)
        if names or ns.dir_kind in ("root", "projects", "project"):
            return reply
        for leaf, v in sorted(_latest_by_path(await self._dir_versions(org, ns)).items()):
            reply.entries.append(
                storage_pb2.ListEntry(
                    name=ns_mod.leaf_name(leaf),
                    is_dir=True,
                    size=v.size,
                    digest=v.manifest,
                    modified_at=_ts(v.created_at),
                    latest_version=v.version,
                )
            )
        return reply

    async def remove(self, org: str, path: str, recursive: bool) -> int:
        ns = ns_mod.parse(path, allow_subpath=False)
        if ns.canonical is not None:
            versions = await self._leaf_versions(org, ns)
            if ns.version is not None:
                _pick(ns, versions)
                return await self._delete(org, ns.canonical, ns.display, ns.version)
            if not versions:
                raise NotFound(f"no such path {ns.display}")
            if not recursive:
                raise FailedPrecondition(
                    f"{ns.display} has {len(versions)} version(s); use -r (recursive) to remove"
                    f" it, or name one version ({ns.display}@v{versions[-1].version})"
                )
            return await self._delete(org, ns.canonical, ns.display, None)
        if ns.dir_kind == "root":
            raise InvalidArgument("refusing to remove /: name a dataset, job or directory below it")
        if not recursive:
            raise FailedPrecondition(
                f"{ns.display} is a directory; use -r (recursive) to remove it"
            )
        paths = sorted({v.path for v in await self._dir_versions(org, ns)})
        if not paths:
            raise NotFound(f"nothing to remove under {ns.display}")
        # Refuse before deleting anything, so a held dataset never leaves a half-removed
        # directory behind (each delete re-checks atomically for holds landing meanwhile).
        for p in paths:
            held = await self.meta.live_holds(org, p, None)
            if held:
                raise held_refusal(p, held)
        removed = 0
        for p in paths:
            removed += await self._delete(org, p, p, None)
        return removed

    async def _delete(self, org: str, canonical: str, display: str, version: int | None) -> int:
        try:
            return await self.meta.delete_versions(org, canonical, version)
        except VersionsHeld as held:
            raise held_refusal(display, held.holds) from None

    async def hold(
        self, org: str, path: str, version: int, holder: str, ttl_seconds: int
    ) -> float:
        """Pin `path` v`version` for `holder` (renews an existing hold); returns expiry."""
        ns = ns_mod.parse(path, allow_version=False, allow_subpath=False)
        if ns.canonical is None:
            raise InvalidArgument(f"cannot hold directory {ns.display}: use one of {ns_mod.FORMS}")
        if not holder or len(holder) > MAX_HOLDER_CHARS:
            raise InvalidArgument(f"holder must be 1-{MAX_HOLDER_CHARS} characters")
        if version <= 0:
            raise InvalidArgument(f"hold of {ns.display} needs a version (1, 2, ...)")
        expires_at = time.time() + (ttl_seconds or DEFAULT_HOLD_TTL_SECONDS)
        await self._leaf_versions(org, ns)  # a project path must match the job's project
        if not await self.meta.add_hold(org, ns.canonical, version, holder, expires_at):
            raise NotFound(f"{ns.display} has no version v{version} (was it removed?)")
        return expires_at

    async def release(self, org: str, holder: str) -> int:
        if not holder:
            raise InvalidArgument("release needs a holder")
        return await self.meta.release_holds(org, holder)

    async def disk_usage(self, org: str, path: str) -> storage_pb2.DiskUsageResponse:
        ns = ns_mod.parse(path, allow_subpath=False)
        if ns.canonical is not None:
            versions = await self._leaf_versions(org, ns)
            if ns.version is not None:
                versions = [_pick(ns, versions)]
            elif not versions:
                raise NotFound(f"no such path {ns.display}")
        else:
            versions = await self._dir_versions(org, ns)
        blobs: set[str] = set()
        for manifest_digest in {v.manifest for v in versions}:
            blobs.add(manifest_digest)
            manifest = await self.store.load_manifest(manifest_digest)
            blobs.update(e.digest for e in manifest.entries)
        return storage_pb2.DiskUsageResponse(
            logical_bytes=sum(v.size for v in versions),
            stored_bytes=await self.meta.stored_bytes(blobs),
            files=sum(v.files for v in versions),
            versions=len(versions),
        )


def _tree_entries(
    ns: NsPath, manifest: common_pb2.Manifest, v: Version
) -> list[storage_pb2.ListEntry]:
    """Immediate children of `ns.subpath` in a tree; directories carry their total size."""
    prefix = ns.subpath + "/" if ns.subpath else ""
    files: list[storage_pb2.ListEntry] = []
    dirs: dict[str, int] = {}
    for e in manifest.entries:
        if e.path == ns.subpath:
            return [
                storage_pb2.ListEntry(
                    name=e.path.rsplit("/", 1)[-1],
                    size=e.size,
                    digest=e.digest,
                    modified_at=_ts(v.created_at),
                    latest_version=v.version,
                )
            ]
        if not e.path.startswith(prefix):
            continue
        head, sep, _ = e.path[len(prefix) :].partition("/")
        if sep:
            dirs[head] = dirs.get(head, 0) + e.size
        else:
            files.append(
                storage_pb2.ListEntry(
                    name=head,
                    size=e.size,
                    digest=e.digest,
                    modified_at=_ts(v.created_at),
                    latest_version=v.version,
                )
            )
    if ns.subpath and not files and not dirs:
        raise NotFound(f"no such file or directory {ns.subpath!r} in {ns.display}@v{v.version}")
    entries = [
        storage_pb2.ListEntry(
            name=name,
            is_dir=True,
            size=size,
            modified_at=_ts(v.created_at),
            latest_version=v.version,
        )
        for name, size in dirs.items()
    ]
    return sorted(entries + files, key=lambda e: e.name)
