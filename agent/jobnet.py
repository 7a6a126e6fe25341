"""A job's network: none at all, or outbound only, from a network namespace of its own.

`egress`: the agent (root) makes a network namespace per job, loads an nftables filter
into it and only then attaches `pasta` (Debian's passt), which carries the namespace's
traffic out through ordinary sockets of the host. The job's user namespace is made later
by bubblewrap, so the job holds no capability over the namespace or its rules. The filter
rejects, before anything leaves the namespace: the host's loopback (pasta's loopback
bypass and gateway mapping are off too: `-T none -U none --no-map-gw`), every address of
the host's own interfaces (read when the namespace is made), the gateway (except DNS,
which pasta forwards to the host's resolver), link-local 169.254.0.0/16 and fe80::/10
(the cloud metadata service), and the other metadata addresses clouds use
(168.63.129.16, 100.100.100.200, fd00:ec2::254). Nothing is forwarded in (`-t none -u
none`). The namespace gets fixed addresses from the benchmarking range (198.18.0.2/24,
gateway .1), so the job's `ip addr` never shows the host's.

Making a namespace costs tens of milliseconds, so the agent keeps one made ahead: a job
takes it at start and the next one is made once the job is over, off the job's path.

`none`: bubblewrap's own empty network namespace (loopback only).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
NS_ADDRESS, NS_GATEWAY, NS_PREFIX = "198.18.0.2", "198.18.0.1", 24
NS_ADDRESS6, NS_GATEWAY6 = "fd00:c3::2", "fd00:c3::1"
NS_IFNAME = "eth0"
METADATA_V4 = ("168.63.129.16", "100.100.100.200")
METADATA_V6 = ("fd00:ec2::254",)
TOOLS = ("ip", "nft", "pasta", "nsenter")
STEP_TIMEOUT_S = 20.0


class JobNetwork(enum.Enum):
    NONE = "none"
    EGRESS = "egress"

    @classmethod
    def parse(cls, value: str, where: str = "--job-network") -> JobNetwork:
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValueError(f"{where} {value!r}: use none or egress") from None


@dataclass(frozen=True)
class Netns:
    """A prepared namespace, bind-mounted under /run/netns (pasta serves it until the
    namespace is deleted, then quits by itself)."""

    name: str

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name


@dataclass(frozen=True)
class HostAddresses:
    v4: tuple[str, ...] = ()
    v6: tuple[str, ...] = ()
    has_v6_route: bool = False


def parse_ip_addr(text: str) -> tuple[list[str], list[str]]:
    """`ip -j addr show` -> (IPv4, IPv6) addresses of every interface."""
    v4: list[str] = []
    v6: list[str] = []
    for link in json.loads(text or "[]"):
        for info in link.get("addr_info", []):
            local = info.get("local", "")
            if not local:
                continue
            (v6 if info.get("family") == "inet6" else v4).append(local)
    return v4, v6


def ruleset(host: HostAddresses) -> str:
    """The nftables filter of a job's namespace (loaded before pasta attaches)."""
    v4 = sorted({"0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4",
                 NS_GATEWAY, *METADATA_V4, *host.v4}, key=_sort_key)
    v6 = sorted({"::1", "::ffff:0:0/96", "ff00::/8", NS_GATEWAY6, *METADATA_V6,
                 *(a for a in host.v6 if not ipaddress.ip_address(a).is_link_local)},
                key=_sort_key)
    return "\n".join([
        "table inet c3job {",
        "  chain out {",
        "    type filter hook output priority 0; policy accept;",
        '    oifname "lo" accept',
        f"    ip daddr {NS_GATEWAY} udp dport 53 accept",
        f"    ip daddr {{ {', '.join(v4)} }} meta l4proto tcp reject with tcp reset",
        f"    ip daddr {{ {', '.join(v4)} }} reject with icmpx type admin-prohibited",
        "    ip6 daddr fe80::/10 meta l4proto ipv6-icmp accept",
        "    ip6 daddr fe80::/10 meta l4proto tcp reject with tcp reset",
        "    ip6 daddr fe80::/10 reject with icmpx type admin-prohibited",
        f"    ip6 daddr {{ {', '.join(v6)} }} meta l4proto tcp reject with tcp reset",
        f"    ip6 daddr {{ {', '.join(v6)} }} reject with icmpx type admin-prohibited",
        "  }",
        "}",
        "",
    ])


def _sort_key(text: str) -> tuple[int, str]:
    return (6 if ":" in text else 4, text)


def pasta_argv(name: str, host: HostAddresses) -> list[str]:
    argv = ["pasta", "--runas", "0", "--quiet", "--config-net", "--no-map-gw",
            "-t", "none", "-u", "none", "-T", "none", "-U", "none",
            "-I", NS_IFNAME, "-a", NS_ADDRESS, "-n", str(NS_PREFIX), "-g", NS_GATEWAY,
            "--dns-forward", NS_GATEWAY]  # fmt: skip
    if host.has_v6_route:
        argv += ["-a", NS_ADDRESS6, "-g", NS_GATEWAY6]
    else:
        argv += ["--ipv4-only"]
    return [*argv, "--netns", name]


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]


async def _run(*argv: str, stdin: bytes | None = None) -> str:
    """Run one setup command; raise OSError naming it and its stderr when it fails."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), STEP_TIMEOUT_S)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        why = err.decode(errors="replace").strip().splitlines()
        raise OSError(f"`{' '.join(argv[:4])}` failed: {why[-1] if why else proc.returncode}")
    return out.decode(errors="replace")


async def host_addresses() -> HostAddresses:
    v4, v6 = parse_ip_addr(await _run("ip", "-j", "addr", "show"))
    route6 = await _run("ip", "-6", "route", "show", "default")
    return HostAddresses(tuple(v4), tuple(v6), bool(route6.strip()))


# Deletes this agent's namespaces once the agent is gone, however it ended (even
# SIGKILL): it waits for EOF on a pipe only the agent holds. pasta quits by itself when
# its namespace is deleted, except one caught starting: those (named by their own
# `--netns c3-<key>-<pid>-` argument) are ended too.
_REAPER = r"""read _ignored
for f in /run/netns/"$2"*; do [ -e "$f" ] && "$1" netns delete "${f##*/}"; done
for d in /proc/[0-9]*; do
  tr '\0' ' ' < "$d/cmdline" 2>/dev/null | grep -q -- "--netns $2" && kill "${d#/proc/}"
done
exit 0
"""


_AGENT_NETNS = re.compile(r"c3-[0-9a-f]{12}-(\d+)-\d+")


def _of_a_dead_agent(name: str) -> bool:
    """`name` is an agent's namespace (`c3-<key>-<pid>-<n>`) and that pid is gone."""
    match = _AGENT_NETNS.fullmatch(name)
    if match is None or int(match.group(1)) == os.getpid():
        return False
    return not Path(f"/proc/{match.group(1)}").exists()


def _end_pastas(ours: Callable[[str], bool]) -> None:
    """SIGTERM the pasta processes serving the namespaces `ours` names: normally they quit
    when their namespace is deleted, but one deleted while it was starting keeps running.
    Matched by its own `--netns <name>` argument (blocking)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--netns" not in argv or not argv[0].endswith((b"pasta", b"passt.avx2", b"passt")):
            continue
        name = argv[argv.index(b"--netns") + 1].decode(errors="replace") \
            if argv.index(b"--netns") + 1 < len(argv) else ""
        if name and ours(name):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGTERM)


@dataclass
class NetnsPool:
    """Egress namespaces of one agent, named `c3-<key>-<pid>-<n>`, one made ahead."""

    key: str
    _counter: int = 0
    _spare: asyncio.Task[Netns] | None = None
    _live: set[str] = field(default_factory=set)
    _reaper: int = -1  # write end of the reaper's pipe (closed when this process ends)
    _reaper_proc: subprocess.Popen[bytes] | None = None

    @property
    def prefix(self) -> str:
        return f"c3-{self.key}-"

    async def _start_reaper(self) -> None:
        if self._reaper >= 0:
            return
        read, write = os.pipe()
        try:
            ip = shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin") or "ip"
            # A plain Popen, not asyncio's: asyncio kills a child still running when its
            # loop goes away, and this one must outlive the agent.
            self._reaper_proc = await asyncio.to_thread(
                subprocess.Popen, ["/bin/sh", "-c", _REAPER, "c3-netns-reaper", ip,
                                   f"{self.prefix}{os.getpid()}-"],
                stdin=read, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        self._reaper = write

    async def sweep(self) -> list[str]:
        """Remove namespaces a previous run of this agent left (killed, crashed), and
        those of any agent whose process is gone (its reaper did not get to them); pasta
        quits by itself once its namespace is gone. A live agent's are never touched."""
        removed = []
        with contextlib.suppress(OSError):
            for entry in sorted(os.listdir(NETNS_DIR)):
                mine = entry.startswith(self.prefix) and entry not in self._live
                if mine or _of_a_dead_agent(entry):
                    await self._delete(Netns(entry))
                    removed.append(entry)
        live = set(self._live)
        await asyncio.to_thread(_end_pastas, lambda n: (
            n.startswith(self.prefix) and n not in live) or _of_a_dead_agent(n))
        return removed

    async def _make(self) -> Netns:
        await self._start_reaper()
        self._counter += 1
        name = f"{self.prefix}{os.getpid()}-{self._counter}"
        self._live.add(name)
        try:
            host = await host_addresses()
            await _run("ip", "netns", "add", name)
            await _run("ip", "-n", name, "link", "set", "lo", "up")
            await _run("nsenter", f"--net={NETNS_DIR / name}", "nft", "-f", "-",
                       stdin=ruleset(host).encode())
            await _run(*pasta_argv(name, host))  # returns once pasta is serving
            return Netns(name)
        except BaseException:
            await self._delete(Netns(name))
            await asyncio.to_thread(_end_pastas, lambda n: n == name)  # caught starting
            raise

    def prepare(self) -> None:
        """Start making the next namespace in the background (idempotent)."""
        if self._spare is None:
            self._spare = asyncio.create_task(self._make(), name="c3-netns-prepare")

    async def take(self) -> Netns:
        """The namespace made ahead (or one made now); raises OSError when it cannot be."""
        self.prepare()
        assert self._spare is not None
        task, self._spare = self._spare, None
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._discard)
            raise

    def _discard(self, task: asyncio.Task[Netns]) -> None:
        if not task.cancelled() and task.exception() is None:
            asyncio.get_running_loop().create_task(self.release(task.result()))

    async def release(self, ns: Netns) -> None:
        await self._delete(ns)

    async def _delete(self, ns: Netns) -> None:
        with contextlib.suppress(OSError):
            await _run("ip", "netns", "delete", ns.name)
        self._live.discard(ns.name)

    async def close(self) -> None:
        """Delete the namespaces still here and end the reaper (idempotent)."""
        if self._spare is not None:
            task, self._spare = self._spare, None
            with contextlib.suppress(Exception):
                await self.release(await task)
        for name in list(self._live):
            await self._delete(Netns(name))
        if self._reaper >= 0:
            # EOF on its pipe: the reaper sweeps (nothing left of ours) and exits.
            os.close(self._reaper)
            self._reaper = -1
        proc, self._reaper_proc = self._reaper_proc, None
        if proc is not None:
            await asyncio.to_thread(proc.wait)


class JobNetworks:
    """Which namespace each job gets: the previous job's when it was the same org's
    (nothing of a job outlives it there: its processes and sockets are gone, and it could
    change no address, route or rule), else a fresh one made ahead. Another org never
    gets a namespace an earlier org's job used."""

    def __init__(self, pool: NetnsPool) -> None:
        self.pool = pool
        self._kept: tuple[str, Netns] | None = None  # (org id, the last job's namespace)
        self._releasing: set[asyncio.Task[None]] = set()

    async def take(self, org_id: str) -> Netns:
        kept, self._kept = self._kept, None
        if kept is not None:
            if kept[0] == org_id:
                return kept[1]
            task = asyncio.create_task(self.pool.release(kept[1]))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)
        return await self.pool.take()

    def done(self, org_id: str, netns: Netns | None) -> None:
        """A job of `org_id` is over: keep its namespace; make the next one ahead."""
        if netns is not None:
            self._kept = (org_id, netns)
        self.pool.prepare()

    async def close(self) -> None:
        if self._kept is not None:
            await self.pool.release(self._kept[1])
            self._kept = None
        await asyncio.gather(*self._releasing, return_exceptions=True)
        await self.pool.close()
