"""Run INSIDE a sandboxed job by tests/test_sandbox_escape.py (system python3, stdlib only).

Tries every escape the test names, as an attacker would, and prints one line per try:
`ESCAPE <name> blocked <how>`, `ESCAPE <name> ESCAPED <what it got>`, or `ESCAPE <name>
ERROR <bug>` when the try itself is broken (the test fails on that too: a try that cannot
run proves nothing). The targets (host paths, ports, addresses, pids) come from
targets.json beside this file.
"""

import ctypes
import errno
import json
import os
import socket
import stat
import subprocess
import sys

T = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets.json")))
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {  # x86_64 (the test skips other architectures)
    "mount": 165, "unshare": 272, "setns": 308, "keyctl": 250, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "init_module": 175,
    "finit_module": 313, "kexec_load": 246, "open_by_handle_at": 304, "syslog": 103,
    "ptrace": 101, "chroot": 161, "pivot_root": 155, "reboot": 169,
}


HOW = []  # how each step of the current try was refused


def report(name, verdict, detail):
    detail = " ".join(str(detail).split())[:400]
    print(f"ESCAPE {name} {verdict} {detail}", flush=True)


def attempt(name):
    def wrap(fn):
        HOW.clear()
        try:
            got = fn()
        except OSError as exc:  # the kernel or the sandbox said no
            report(name, "blocked", f"{type(exc).__name__}: {exc} {'; '.join(HOW)}")
        except Exception as exc:  # a bug in the try: it proves nothing
            report(name, "ERROR", f"{type(exc).__name__}: {exc}")
        else:
            report(name, "ESCAPED" if got else "blocked", got or "; ".join(HOW) or "refused")
        return fn
    return wrap


def syscall(name, *args):
    result = libc.syscall(NR[name], *[ctypes.c_long(a) for a in args])
    err = ctypes.get_errno()
    if result < 0:
        HOW.append(f"{name}: {errno.errorcode.get(err, err)}")
        return None, err
    return f"{name} returned {result}", 0


def read(path):
    with open(path, "rb") as f:
        return f.read(4096)


def connect(host, port, family=None, timeout=3.0):
    """What connecting gave: '' when refused/unreachable, else what the peer said."""
    family = family or (socket.AF_INET6 if ":" in host else socket.AF_INET)
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        s.settimeout(1.0)
        try:
            return f"connected to {host}:{port}: {s.recv(64)!r}"
        except OSError:
            return f"connected to {host}:{port}"
    except OSError as exc:
        HOW.append(f"{host}:{port} {errno.errorcode.get(exc.errno or 0, exc)}")
        return ""
    finally:
        s.close()


def first(results):
    return next((r for r in results if r), "")


@attempt("read_etc_shadow")
def _():
    return read("/etc/shadow").decode(errors="replace")


@attempt("host_users_in_etc_passwd")
def _():
    users = [line.split(":")[0] for line in open("/etc/passwd") if line.strip()]
    HOW.append(f"users {users}")
    return "" if users == ["root", "c3", "nobody"] else f"users {users}"


@attempt("read_agent_credential")
def _():
    return read(T["credential"]).decode(errors="replace")


@attempt("list_agent_data_dir")
def _():
    return str(os.listdir(T["data_dir"]))


@attempt("find_another_jobs_workspace")
def _():
    skip = ("/proc", "/sys", "/usr", "/dev", "/workspace", "/tmp", "/c3/artifacts")
    HOW.append("marker in no file this job can read")
    for root, dirs, files in os.walk("/"):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
        for name in files:
            try:
                if T["marker"].encode() in read(os.path.join(root, name)):
                    return os.path.join(root, name)
            except OSError:
                continue
    return ""


@attempt("host_path_in_proc_1_cmdline")
def _():
    text = read("/proc/1/cmdline").decode(errors="replace") + read("/proc/self/cmdline").decode()
    HOW.append(text.replace("\0", " "))
    return first(p for p in T["host_paths"] if p in text)


@attempt("host_path_in_mountinfo")
def _():
    text = open("/proc/self/mountinfo").read()
    HOW.append(f"{len(text.splitlines())} mounts, none naming a host path of the agent")
    return first(p for p in T["host_paths"] if p in text)


@attempt("become_root")
def _():
    os.setresuid(0, 0, 0)
    return f"uid now {os.getuid()}"


@attempt("hold_a_capability")
def _():
    status = dict(line.split(":\t", 1) for line in open("/proc/self/status") if ":\t" in line)
    held = {k: v.strip() for k, v in status.items() if k.startswith("Cap") and int(v, 16)}
    nnp = status.get("NoNewPrivs", "").strip()
    HOW.append(f"CapEff {status['CapEff'].strip()} NoNewPrivs {nnp}")
    return (f"{held}" if held else "") or ("" if nnp == "1" else f"NoNewPrivs {nnp}")


@attempt("setuid_binary_gains_root")
def _():
    out = subprocess.run(["/usr/bin/mount", "-t", "tmpfs", "none", "/tmp"],
                         capture_output=True, text=True)
    HOW.append(out.stderr.strip())
    return "" if out.returncode else f"setuid mount worked: {out.stdout}"


@attempt("mount_tmpfs")
def _():
    os.makedirs("/tmp/m", exist_ok=True)
    got, _ = syscall("mount", ctypes.addressof(ctypes.create_string_buffer(b"none")),
                     ctypes.addressof(ctypes.create_string_buffer(b"/tmp/m")),
                     ctypes.addressof(ctypes.create_string_buffer(b"tmpfs")), 0, 0)
    return got


@attempt("mknod_block_device")
def _():
    os.mknod("/tmp/sda", stat.S_IFBLK | 0o600, os.makedev(8, 0))
    return "made /tmp/sda"


@attempt("new_user_namespace")
def _():
    got, _ = syscall("unshare", 0x10000000)  # CLONE_NEWUSER
    out = subprocess.run(["/usr/bin/unshare", "-Ur", "id", "-u"], capture_output=True, text=True)
    HOW.append(out.stderr.strip())
    return got or (out.stdout if out.returncode == 0 else "")


@attempt("ptrace_the_agent")
def _():
    pid = T["agent_pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        HOW.append(f"no pid {pid} here")
    else:
        return f"agent pid {pid} is visible"
    got, _ = syscall("ptrace", 16, pid, 0, 0)  # PTRACE_ATTACH
    return got


@attempt("see_host_processes")
def _():
    seen = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "agent.main" in cmd or "pytest" in cmd or "pasta" in cmd or "passt" in cmd:
            seen.append(cmd)
    HOW.append(f"{len(os.listdir('/proc'))} entries in /proc, no host process")
    return str(seen) if seen else ""


@attempt("write_system_dirs")
def _():
    done = []
    for path in ("/usr/c3-escape", "/etc/c3-escape", "/c3-escape", "/proc/sys/kernel/hostname",
                 "/sys/kernel/uevent_helper", "/proc/sysrq-trigger"):
        try:
            with open(path, "w") as f:
                f.write("x")
            done.append(path)
        except OSError as exc:
            HOW.append(f"{path}: {errno.errorcode.get(exc.errno or 0)}")
    return str(done) if done else ""


@attempt("write_host_tmp")
def _():
    # The host's /tmp is not the job's: the test checks the host side for this name.
    with open(f"/tmp/{T['host_tmp_canary']}", "w") as f:
        f.write("x")
    HOW.append("wrote the job's own /tmp (the test checks the host's)")
    return ""


@attempt("connect_coordinator")
def _():
    return connect("127.0.0.1", T["coordinator_port"])


@attempt("connect_storaged")
def _():
    return connect("127.0.0.1", T["storage_port"])


@attempt("connect_loopback_decoy")
def _():
    return first([connect("127.0.0.1", T["loopback_port"]), connect("::1", T["v6_port"]),
                  connect("::ffff:127.0.0.1", T["loopback_port"], socket.AF_INET6)])


@attempt("connect_host_address_decoy")
def _():
    return first(connect(a, T["any_port"]) for a in T["host_v4"])


@attempt("connect_host_ipv6_decoy")
def _():
    return first(connect(a, T["v6_port"]) for a in T["host_v6"])


@attempt("connect_through_the_gateway")
def _():
    return first([connect("198.18.0.1", T["loopback_port"]), connect("198.18.0.1", T["any_port"]),
                  connect("198.18.0.1", 53)])


@attempt("connect_cloud_metadata")
def _():
    return first([connect("169.254.169.254", 80), connect("168.63.129.16", 80),
                  connect("100.100.100.200", 80)])


@attempt("connect_abstract_unix_decoy")
def _():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0" + T["abstract_name"])
        return f"connected to @{T['abstract_name']}"
    except OSError as exc:
        HOW.append(f"@{T['abstract_name']}: {errno.errorcode.get(exc.errno or 0)}")
        return ""


@attempt("vsock_to_the_hypervisor")
def _():
    s = socket.socket(40, socket.SOCK_STREAM)  # AF_VSOCK
    s.connect((2, 1024))
    return "vsock connected"


@attempt("raw_packet_socket")
def _():
    for family, kind, proto in ((socket.AF_PACKET, socket.SOCK_RAW, 0),
                                (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)):
        try:
            socket.socket(family, kind, proto).close()
            return f"opened raw socket family {family}"
        except OSError as exc:
            HOW.append(f"family {family}: {errno.errorcode.get(exc.errno or 0)}")
    return ""


@attempt("turn_off_the_firewall")
def _():
    done = []
    for argv in (["nft", "flush", "ruleset"], ["ip", "link", "set", "eth0", "down"],
                 ["ip", "addr", "add", "169.254.1.2/16", "dev", "eth0"]):
        try:
            out = subprocess.run(argv, capture_output=True, text=True)
        except OSError as exc:
            HOW.append(f"{argv[0]}: {exc.strerror}")
            continue
        if out.returncode == 0:
            done.append(" ".join(argv))
        else:
            HOW.append(out.stderr.strip())
    return str(done) if done else connect("169.254.169.254", 80)


@attempt("kernel_keyring")
def _():
    return syscall("keyctl", 0, -3, 0)[0]  # KEYCTL_GET_KEYRING_ID of the user keyring


@attempt("load_bpf")
def _():
    return syscall("bpf", 0, 0, 0)[0]


@attempt("perf_userfaultfd_io_uring")
def _():
    return first([syscall("perf_event_open", 0, 0, -1, -1, 0)[0],
                  syscall("userfaultfd", 0)[0], syscall("io_uring_setup", 1, 0)[0]])


@attempt("load_kernel_module")
def _():
    return first([syscall("init_module", 0, 0, 0)[0], syscall("finit_module", 0, 0, 0)[0],
                  syscall("kexec_load", 0, 0, 0, 0)[0]])


@attempt("open_by_handle_shocker")
def _():
    return syscall("open_by_handle_at", 0, 0, 0)[0]


@attempt("read_kernel_log")
def _():
    buf = ctypes.create_string_buffer(4096)
    return syscall("syslog", 3, ctypes.addressof(buf), 4096)[0]  # SYSLOG_ACTION_READ_ALL


@attempt("container_engine_socket")
def _():
    HOW.append("no engine socket in the job's filesystem")
    return first(p for p in ("/var/run/docker.sock", "/run/docker.sock",
                             "/run/containerd/containerd.sock") if os.path.exists(p))


@attempt("agent_secrets_in_environment")
def _():
    leaked = [k for k in os.environ if "SECRET" in k or "TOKEN" in k or "KEY" in k]
    HOW.append(f"variables {sorted(os.environ)}")
    return str(leaked) if leaked else ""


@attempt("inherited_file_descriptors")
def _():
    extra = []
    for fd in sorted(int(fd) for fd in os.listdir("/proc/self/fd")):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue  # the listing's own, closed by now
        if fd > 2:
            extra.append(f"{fd}->{target}")
    HOW.append(f"only 0, 1, 2 open ({len(extra)} more)")
    return f"fds {extra}" if extra else ""


@attempt("reach_another_job")
def _():
    port = T["other_job_port"]
    return first([connect("127.0.0.1", port), connect("198.18.0.2", port),
                  *(connect(a, port) for a in T["host_v4"] + T["host_v6"])])


@attempt("open_unassigned_gpu")
def _():
    nodes = sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))
    HOW.append(f"/dev holds {sorted(os.listdir('/dev'))}")
    return f"/dev nodes {nodes}" if nodes else ""


print("ESCAPES DONE", flush=True)
sys.exit(0)
