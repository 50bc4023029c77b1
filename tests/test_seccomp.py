"""The seccomp filter: its BPF program checked by an independent interpreter (every
syscall number, property-tested), and its effect in real containers."""

from __future__ import annotations

import errno
import struct

from hypothesis import given
from hypothesis import strategies as st

import isobox
from isobox import seccomp

ALLOW, KILL = 0x7FFF0000, 0x80000000


def run_bpf(program: bytes, nr: int, arch: int = seccomp.AUDIT_ARCH_X86_64, arg0: int = 0) -> int:
    """A classic-BPF interpreter for the instructions seccomp filters use."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    insns = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code == 0x06:  # ret k
            return k
        elif code in (0x15, 0x35, 0x45):
            cond = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += 1 + (jt if cond else jf)
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")


FILTER = seccomp.default_filter("x86_64")
assert FILTER is not None
DENIED = set(seccomp.X86_64_DENIED.values())
SPECIAL = {seccomp.X86_64_CLONE, seccomp.X86_64_UNSHARE, seccomp.X86_64_CLONE3}


def test_every_denied_syscall_fails_with_eperm():
    for nr in DENIED:
        assert run_bpf(FILTER, nr) == 0x00050000 | errno.EPERM, nr


@given(st.integers(min_value=0, max_value=1023))
def test_other_syscalls_are_allowed(nr):
    expected = 0x00050000 | errno.EPERM if nr in DENIED else ALLOW
    if nr in SPECIAL:
        return
    assert run_bpf(FILTER, nr) == expected


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_clone_and_unshare_are_refused_exactly_when_they_ask_for_a_namespace(flags):
    for nr in (seccomp.X86_64_CLONE, seccomp.X86_64_UNSHARE):
        got = run_bpf(FILTER, nr, arg0=flags)
        assert got == (0x00050000 | errno.EPERM if flags & seccomp.NAMESPACE_FLAGS else ALLOW)
    assert run_bpf(FILTER, seccomp.X86_64_CLONE3) == 0x00050000 | errno.ENOSYS


def test_foreign_abis_are_killed_or_refused():
    assert run_bpf(FILTER, 0, arch=0x40000003) == KILL  # i386
    assert run_bpf(FILTER, 0x40000000 + 1) == 0x00050000 | errno.EPERM  # x32


def test_no_filter_is_claimed_for_an_unknown_architecture():
    assert seccomp.default_filter("riscv64") is None


def test_container_runs_filtered_and_cannot_make_namespaces(busybox_image, store_root):
    out = isobox.run(busybox_image, ["sh", "-c", "grep '^Seccomp:' /proc/self/status; unshare -U true || echo refused"])
    assert out.stdout == b"Seccomp:\t2\nrefused\n"
    assert b"Operation not permitted" in out.stderr


def test_seccomp_false_runs_unconfined(busybox_image, store_root):
    out = isobox.run(busybox_image, ["grep", "^Seccomp:", "/proc/self/status"], seccomp=False)
    assert out.stdout == b"Seccomp:\t0\n"
