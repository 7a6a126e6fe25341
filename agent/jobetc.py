"""The `/etc` a sandboxed job sees: written for the job, plus the few host files that
Python, CUDA, TLS clients and uv read — never the host's passwd, shadow, ssh keys, sudoers,
ssl/private, pip or git config, or anything else of the agent's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

JOB_USER = "c3"
JOB_UID = 1000
JOB_GID = 1000
JOB_HOSTNAME = "c3-job"

# Host paths under /etc a job may read (read-only; those that exist). Directories are
# bound whole, so only ones that hold nothing secret are listed (ssl/certs, never ssl/).
HOST_ETC = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d",  # the dynamic linker (CUDA's libcuda)
    "localtime", "timezone",
    "ssl/certs", "ssl/openssl.cnf", "ca-certificates.crt",  # Debian/Ubuntu CA bundle
    "pki/tls/certs", "pki/ca-trust/extracted",  # RHEL family CA bundle
    "alternatives",  # Debian's /usr/bin/awk -> /etc/alternatives/awk -> mawk
    "protocols", "services", "mime.types", "gai.conf", "host.conf",
    "os-release", "fonts", "OpenCL", "vulkan", "nvidia",
)  # fmt: skip


@dataclass(frozen=True)
class EtcFile:
    """One entry of the job's /etc: `data` written for the job, or a host `path` bound
    read-only, or a symlink to `link`."""

    target: str
    data: bytes = b""
    host: Path | None = None
    link: str = ""


def _resolv(nameserver: str) -> bytes:
    if not nameserver:
        return b"# this job has no network (job_network: none)\n"
    return f"nameserver {nameserver}\noptions edns0\n".encode()


def job_etc(nameserver: str, etc_root: Path = Path("/etc")) -> list[EtcFile]:
    """Every entry of the job's /etc (`nameserver` empty: no network)."""
    entries = [
        EtcFile("/etc/passwd", (
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"{JOB_USER}:x:{JOB_UID}:{JOB_GID}:c3 job:/workspace:/bin/bash\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n").encode()),
        EtcFile("/etc/group", f"root:x:0:\n{JOB_USER}:x:{JOB_GID}:\nnogroup:x:65534:\n".encode()),
        EtcFile("/etc/hostname", f"{JOB_HOSTNAME}\n".encode()),
        EtcFile("/etc/hosts", (
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{JOB_HOSTNAME}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n").encode()),
        EtcFile("/etc/resolv.conf", _resolv(nameserver)),
        EtcFile("/etc/nsswitch.conf", (
            b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
            b"networks: files\nprotocols: files\nservices: files\nethers: files\n"
            b"rpc: files\n")),
        EtcFile("/etc/mtab", link="../proc/self/mounts"),
    ]
    for name in HOST_ETC:
        path = etc_root / name
        if os.path.islink(path):
            entries.append(EtcFile(f"/etc/{name}", link=os.readlink(path)))
        elif path.exists():
            entries.append(EtcFile(f"/etc/{name}", host=path))
    return entries
