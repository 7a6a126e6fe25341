"""The seccomp filter every sandboxed job runs under (bubblewrap `--seccomp FD`).

A job already runs without any capability in its own user namespace, so most calls below
would fail with EPERM anyway; the filter is the second wall, against kernel bugs reached
through rarely needed calls. The list follows Docker's default profile and Flatpak's
bubblewrap filter where they agree, minus what ML jobs use (ptrace and process_vm_* for
py-spy and gdb inside the job's own pid namespace; mbind/set_mempolicy/move_pages for
NUMA-aware loaders and NCCL; personality for gdb), plus io_uring (a large attack surface
that Docker and Google disable) and AF_VSOCK sockets (not namespaced by the job's network
namespace: on a VM they reach the hypervisor's services).

Refused with EPERM: the kernel keyrings (add_key, keyctl, request_key — not namespaced),
bpf, perf_event_open, userfaultfd, kexec_load, kexec_file_load, reboot, module loading
(init_module, finit_module, delete_module and the obsolete create_module,
get_kernel_syms, query_module), open_by_handle_at and name_to_handle_at (the "shocker"
escape), every mount call (mount, umount2, pivot_root, chroot, open_tree, move_mount,
fsopen, fsconfig, fsmount, fspick, mount_setattr), namespace changes (unshare, setns, and
clone with any CLONE_NEW* flag), acct, swapon, swapoff, quotactl, quotactl_fd,
settimeofday, clock_settime, clock_adjtime, iopl, ioperm, syslog, lookup_dcookie,
nfsservctl, uselib, _sysctl, ustat, sysfs, vhangup. Refused with ENOSYS, so libraries
fall back: clone3 (its flags sit in memory a filter cannot read; glibc falls back to
clone, whose flags are checked) and io_uring_setup/enter/register. socket(AF_VSOCK)
fails with EAFNOSUPPORT. A call from another ABI (32-bit x86, x32) kills the process.

The filter is classic BPF built here (no libseccomp binding needed); x86_64 and aarch64
are covered. `tests/test_agent_seccomp.py` checks the numbers against the kernel headers.
"""

from __future__ import annotations

import errno
import os
import platform
import struct
from dataclasses import dataclass

# BPF opcodes (linux/filter.h, linux/bpf_common.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000

# struct seccomp_data offsets; args are u64, their low word first on little-endian.
_NR, _ARCH, _ARG0_LO = 0, 4, 16

CLONE_NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
AF_VSOCK = 40
X32_SYSCALL_BIT = 0x40000000

DENIED = (
    "add_key", "keyctl", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "kexec_load", "kexec_file_load", "reboot", "init_module", "finit_module",
    "delete_module", "create_module", "get_kernel_syms", "query_module",
    "open_by_handle_at", "name_to_handle_at", "mount", "umount2", "pivot_root", "chroot",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "unshare", "setns", "acct", "swapon", "swapoff", "quotactl", "quotactl_fd",
    "settimeofday", "clock_settime", "clock_adjtime", "iopl", "ioperm", "syslog",
    "lookup_dcookie", "nfsservctl", "uselib", "_sysctl", "ustat", "sysfs", "vhangup",
)  # fmt: skip
NOT_IMPLEMENTED = ("clone3", "io_uring_setup", "io_uring_enter", "io_uring_register")


@dataclass(frozen=True)
class Arch:
    name: str
    audit_arch: int
    numbers: dict[str, int]  # only the calls this filter names; absent: not on this arch
    x32: bool = False


_COMMON_NEW = {"open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
               "fsmount": 432, "fspick": 433, "clone3": 435, "mount_setattr": 442,
               "quotactl_fd": 443, "io_uring_setup": 425, "io_uring_enter": 426,
               "io_uring_register": 427}  # fmt: skip

X86_64 = Arch("x86_64", 0xC000003E, {
    "add_key": 248, "keyctl": 250, "request_key": 249, "bpf": 321, "perf_event_open": 298,
    "userfaultfd": 323, "kexec_load": 246, "kexec_file_load": 320, "reboot": 169,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "create_module": 174,
    "get_kernel_syms": 177, "query_module": 178, "open_by_handle_at": 304,
    "name_to_handle_at": 303, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "unshare": 272, "setns": 308, "clone": 56, "acct": 163, "swapon": 167, "swapoff": 168,
    "quotactl": 179, "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305,
    "iopl": 172, "ioperm": 173, "syslog": 103, "lookup_dcookie": 212, "nfsservctl": 180,
    "uselib": 134, "_sysctl": 156, "ustat": 136, "sysfs": 139, "vhangup": 153, "socket": 41,
    **_COMMON_NEW,
}, x32=True)  # fmt: skip

AARCH64 = Arch("aarch64", 0xC00000B7, {
    "add_key": 217, "keyctl": 219, "request_key": 218, "bpf": 280, "perf_event_open": 241,
    "userfaultfd": 282, "kexec_load": 104, "kexec_file_load": 294, "reboot": 142,
    "init_module": 105, "finit_module": 273, "delete_module": 106, "open_by_handle_at": 265,
    "name_to_handle_at": 264, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
    "unshare": 97, "setns": 268, "clone": 220, "acct": 89, "swapon": 224, "swapoff": 225,
    "quotactl": 60, "settimeofday": 170, "clock_settime": 112, "clock_adjtime": 266,
    "syslog": 116, "lookup_dcookie": 18, "nfsservctl": 42, "vhangup": 58, "socket": 198,
    **_COMMON_NEW,
})  # fmt: skip

ARCHES = {"x86_64": X86_64, "amd64": X86_64, "aarch64": AARCH64, "arm64": AARCH64}


def this_arch() -> Arch | None:
    return ARCHES.get(platform.machine().lower())


class _Program:
    """A tiny assembler: instructions with symbolic jump targets, resolved at the end."""

    def __init__(self) -> None:
        self.code: list[tuple[int, object, object, int]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int, jt: object = 0, jf: object = 0) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (code, jt, jf, k) in enumerate(self.code):
            out += struct.pack("=HBBI", code, self._offset(index, jt), self._offset(index, jf),
                               k & 0xFFFFFFFF)
        return bytes(out)

    def _offset(self, index: int, target: object) -> int:
        if isinstance(target, int):
            return target
        distance = self.labels[str(target)] - index - 1
        if not 0 <= distance <= 255:
            raise ValueError(f"seccomp jump to {target} out of range ({distance})")
        return distance


def build_filter(arch: Arch) -> bytes:
    """The filter as `struct sock_filter[]` bytes, ready for bwrap --seccomp."""
    p = _Program()
    p.op(_LD_W_ABS, _ARCH)
    p.op(_JEQ_K, arch.audit_arch, 0, "kill")
    p.op(_LD_W_ABS, _NR)
    if arch.x32:
        p.op(_JGE_K, X32_SYSCALL_BIT, "kill", 0)
    for name in DENIED:
        if name in arch.numbers:
            p.op(_JEQ_K, arch.numbers[name], "eperm", 0)
    for name in NOT_IMPLEMENTED:
        p.op(_JEQ_K, arch.numbers[name], "enosys", 0)
    p.op(_JEQ_K, arch.numbers["clone"], "clone", 0)
    p.op(_JEQ_K, arch.numbers["socket"], "socket", 0)
    p.op(_RET_K, _RET_ALLOW)
    p.label("clone")
    p.op(_LD_W_ABS, _ARG0_LO)
    p.op(_JSET_K, CLONE_NAMESPACE_FLAGS, "eperm", 0)
    p.op(_RET_K, _RET_ALLOW)
    p.label("socket")
    p.op(_LD_W_ABS, _ARG0_LO)
    p.op(_JEQ_K, AF_VSOCK, "eafnosupport", 0)
    p.op(_RET_K, _RET_ALLOW)
    p.label("eperm")
    p.op(_RET_K, _RET_ERRNO | errno.EPERM)
    p.label("enosys")
    p.op(_RET_K, _RET_ERRNO | errno.ENOSYS)
    p.label("eafnosupport")
    p.op(_RET_K, _RET_ERRNO | errno.EAFNOSUPPORT)
    p.label("kill")
    p.op(_RET_K, _RET_KILL_PROCESS)
    return p.assemble()


def filter_fd(program: bytes) -> int:
    """A memfd holding `program` at offset 0 (bwrap reads it to EOF); the caller closes it."""
    fd = os.memfd_create("c3-seccomp", os.MFD_CLOEXEC)
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
