"""The seccomp filter every container gets: a classic-BPF program built here, installed
by the native core as its last step before execve (as bubblewrap does: nothing after it
needs a syscall the filter would have to allow).

Docker's default profile is an allowlist of ~350 syscalls; isobox keeps its intent with
a denylist of what the kernel lets an unprivileged process do and a container must not:
new user and other namespaces (unshare, clone with CLONE_NEW*; clone3 answers ENOSYS so
libc falls back to clone, which can be inspected), the kernel keyring (not namespaced),
userfaultfd and io_uring (frequent exploit primitives), perf_event_open, bpf, kcmp,
process_vm_*, NUMA policy calls, and, belt and braces, everything the dropped
capabilities already refuse (mount, module loading, kexec, reboot, clock setting, ...).
Blocked calls fail with EPERM, as in Docker. Other architectures' numbers differ: the
filter is built for x86_64 only; elsewhere containers run without one (`doctor` says so).
"""

from __future__ import annotations

import errno
import functools
import os
import struct
from typing import Dict, List, Optional, Tuple

# x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl)
X86_64_DENIED = {
    "acct": 163, "add_key": 248, "bpf": 321, "clock_adjtime": 305, "clock_settime": 227,
    "create_module": 174, "delete_module": 176, "finit_module": 313, "get_kernel_syms": 177,
    "get_mempolicy": 239, "init_module": 175, "ioperm": 173, "iopl": 172, "kcmp": 312,
    "kexec_file_load": 320, "kexec_load": 246, "keyctl": 250, "lookup_dcookie": 212,
    "mbind": 237, "mount": 165, "move_pages": 279, "name_to_handle_at": 303,
    "nfsservctl": 180, "open_by_handle_at": 304, "perf_event_open": 298, "pivot_root": 155,
    "process_vm_readv": 310, "process_vm_writev": 311, "query_module": 178, "quotactl": 179,
    "reboot": 169, "request_key": 249, "set_mempolicy": 238, "setns": 308,
    "settimeofday": 164, "swapon": 167, "swapoff": 168, "sysfs": 139, "_sysctl": 156,
    "umount2": 166, "uselib": 134, "userfaultfd": 323, "ustat": 136,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "mount_setattr": 442,
}
X86_64_CLONE, X86_64_UNSHARE, X86_64_CLONE3 = 56, 272, 435
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME
NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x80

# classic BPF (linux/filter.h, linux/seccomp.h)
LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
OFF_NR, OFF_ARCH, OFF_ARG0 = 0, 4, 16  # struct seccomp_data

Insn = Tuple[int, object, object, int]  # code, jt label/offset, jf label/offset, k


def _assemble(program: List[Tuple[Optional[str], Insn]]) -> bytes:
    """Resolve label jumps ("@name") into BPF offsets; pack as struct sock_filter."""
    labels: Dict[str, int] = {name: i for i, (name, _) in enumerate(program) if name}
    out = b""
    for i, (_, (code, jt, jf, k)) in enumerate(program):
        def offset(target: object) -> int:
            if isinstance(target, str):
                off = labels[target.lstrip("@")] - i - 1
                if not 0 <= off < 256:
                    raise ValueError(f"BPF jump to {target} out of range")
                return off
            assert isinstance(target, int)
            return target

        out += struct.pack("=HBBI", code, offset(jt), offset(jf), k & 0xFFFFFFFF)
    return out


@functools.lru_cache(maxsize=None)
def default_filter(machine: Optional[str] = None) -> Optional[bytes]:
    """The packed filter for this machine, or None where isobox has no syscall table."""
    if (machine or os.uname().machine) not in ("x86_64", "amd64"):
        return None
    p: List[Tuple[Optional[str], Insn]] = [
        (None, (LD_W_ABS, 0, 0, OFF_ARCH)),
        (None, (JEQ_K, 1, 0, AUDIT_ARCH_X86_64)),
        (None, (RET_K, 0, 0, RET_KILL_PROCESS)),  # another ABI than the one we filter
        (None, (LD_W_ABS, 0, 0, OFF_NR)),
        (None, (JGE_K, "@eperm", 0, X32_SYSCALL_BIT)),  # the x32 ABI: not for containers
    ]
    for nr in sorted(X86_64_DENIED.values()):
        p.append((None, (JEQ_K, "@eperm", 0, nr)))
    p += [
        (None, (JEQ_K, "@enosys", 0, X86_64_CLONE3)),
        (None, (JEQ_K, "@flags", 0, X86_64_UNSHARE)),
        (None, (JEQ_K, "@flags", 0, X86_64_CLONE)),
        (None, (RET_K, 0, 0, RET_ALLOW)),
        # clone(flags, ...) and unshare(flags): the low word of arg0 holds CLONE_NEW*
        ("flags", (LD_W_ABS, 0, 0, OFF_ARG0)),
        (None, (JSET_K, "@eperm", 0, NAMESPACE_FLAGS)),
        (None, (RET_K, 0, 0, RET_ALLOW)),
        ("eperm", (RET_K, 0, 0, RET_ERRNO | errno.EPERM)),
        ("enosys", (RET_K, 0, 0, RET_ERRNO | errno.ENOSYS)),
    ]
    return _assemble([(name, insn) for name, insn in p])
