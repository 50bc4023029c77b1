"""The seccomp filter's BPF program, run by an independent interpreter over seccomp_data
for every syscall of each architecture's table (and property-tested over numbers,
arguments and capability sets), against what Docker's profile says, read here from the
profile's raw rules by this file's own reading; the tables against this machine's kernel
headers; and the filter's effect in real containers (tests/test_seccomp_probe.py runs
the syscalls themselves)."""

from __future__ import annotations

import errno
import re
import struct
import subprocess
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

import isobox
from isobox.runtime import seccomp, seccomp_data
from isobox.errors import InvalidOption

from fixtures.host import require_tool

ALLOW, KILL = 0x7FFF0000, 0x80000000
EPERM, ENOSYS = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
AUDIT = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
AUDIT_I386, AUDIT_ARM = 0x40000003, 0x40000028
DOCKER_CAPS = frozenset(seccomp_data.DEFAULT_CAPABILITIES)
KERNEL = seccomp._kernel_version()
MACHINES = ("x86_64", "aarch64")
AF_INET, AF_UNIX, AF_ALG, AF_VSOCK = 2, 1, 38, 40
CLONE_NEWUSER, SIGCHLD = 0x10000000, 17
ADDR_NO_RANDOMIZE = 0x0040000
U64 = 2**64 - 1


# -- an interpreter for the instructions seccomp filters use ---------------------------


def run_bpf(program: bytes, nr: int, arch: int, args: Sequence[int] = (0,) * 6) -> Tuple[int, int]:
    """(seccomp return value, instructions executed), checking what the kernel's
    checker checks: known opcodes, aligned loads inside struct seccomp_data, jumps that
    stay in the program, no falling off its end."""
    args = list(args) + [0] * (6 - len(args))
    data = struct.pack("=iIQ6Q", nr - (1 << 32) if nr >= 1 << 31 else nr, arch, 0, *args)
    insns = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    assert 0 < len(insns) <= 4096
    pc, acc, steps = 0, 0, 0
    while True:
        assert 0 <= pc < len(insns), "ran off the program"
        code, jt, jf, k = insns[pc]
        steps += 1
        if code == 0x20:  # ld [k]
            assert k % 4 == 0 and k < 64, k
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code == 0x54:  # and #k
            acc &= k
            pc += 1
        elif code == 0x05:  # ja +k
            pc += 1 + k
        elif code == 0x06:  # ret #k
            return k, steps
        elif code in (0x15, 0x25, 0x35, 0x45):
            cond = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += 1 + (jt if cond else jf)
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")


def verdict(machine: str, nr: int, args: Sequence[int] = (0,) * 6, caps=None, arch=None) -> int:
    program = seccomp.default_filter(machine, caps)
    assert program is not None
    return run_bpf(program, nr, AUDIT[machine] if arch is None else arch, args)[0]


# -- what the profile says, read from its raw rules -------------------------------------


def table(machine: str) -> Dict[str, int]:
    text = seccomp_data.X86_64 if machine == "x86_64" else seccomp_data.AARCH64
    return {name: int(nr) for nr, name in (line.split() for line in text.strip().split("\n"))}


def holds(arg: dict, value: int) -> bool:
    v, op = arg["value"], arg["op"]
    if op == "SCMP_CMP_MASKED_EQ":
        return value & v == arg["valueTwo"]
    return {"SCMP_CMP_EQ": value == v, "SCMP_CMP_NE": value != v, "SCMP_CMP_LT": value < v,
            "SCMP_CMP_LE": value <= v, "SCMP_CMP_GT": value > v, "SCMP_CMP_GE": value >= v}[op]


def applies(rule: dict, machine: str, caps: FrozenSet[str]) -> bool:
    name = {"x86_64": "amd64", "aarch64": "arm64"}[machine]
    inc, exc = rule.get("includes", {}), rule.get("excludes", {})
    kernel = lambda s: tuple(int(x) for x in s.split("."))  # noqa: E731
    return (name in inc.get("arches", [name]) and set(inc.get("caps", [])) <= caps
            and KERNEL >= kernel(inc.get("minKernel", "0.0"))
            and name not in exc.get("arches", []) and not set(exc.get("caps", [])) & caps
            and ("minKernel" not in exc or KERNEL < kernel(exc["minKernel"])))


def expected(machine: str, nr: int, args: Sequence[int] = (0,) * 6,
             caps: FrozenSet[str] = DOCKER_CAPS) -> int:
    args = list(args) + [0] * (6 - len(args))
    numbers = table(machine)
    rules = [r for r in seccomp_data.SYSCALLS if applies(r, machine, caps)]
    newest = max(numbers[n] for r in rules for n in r["names"] if n in numbers)
    if nr > newest:
        return ENOSYS  # runc's patchbpf: newer than anything the profile names
    names = {n for n, number in numbers.items() if number == nr}
    verdicts = set()
    for rule in rules:
        if names & set(rule["names"]) and all(holds(a, args[a["index"]]) for a in rule.get("args", [])):
            verdicts.add(ALLOW if rule["action"] == "SCMP_ACT_ALLOW"
                         else 0x00050000 | rule.get("errnoRet", errno.EPERM))
    assert len(verdicts) <= 1, (nr, verdicts)
    return verdicts.pop() if verdicts else EPERM


def nr(machine: str, name: str) -> int:
    return table(machine)[name]


# -- every syscall, every architecture ---------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("machine", MACHINES)
def test_every_syscall_number_gets_the_profiles_verdict(machine):
    """Each number of the table and every gap up to well past the newest, arguments 0."""
    top = max(table(machine).values())
    for number in list(range(top + 80)) + [0x3FFFFFFF, 0x7FFFFFFF, 0x80000000, U64 >> 32]:
        assert verdict(machine, number) == expected(machine, number), number


@pytest.mark.unit
@pytest.mark.parametrize("machine", MACHINES)
def test_conditional_syscalls_follow_their_arguments(machine):
    """socket, personality and clone over the values that matter to their rules, in
    both 32-bit halves of the argument."""
    probes = sorted({v for base in (0, 8, 11, 12, 13, 36, 37, 38, 39, 40, 45, 46, 0x20000,
                                    0x20008, 0x7E020000, 0xFFFFFFFF)
                     for v in (base, base + 1, base - 1 if base else 0, base | 1 << 32,
                               base | 1 << 63)} | {CLONE_NEWUSER | SIGCHLD, SIGCHLD, U64})
    for name in ("socket", "personality", "clone"):
        for value in probes:
            for index in (0, 1):
                args = [0] * 6
                args[index] = value
                assert verdict(machine, nr(machine, name), args) == \
                    expected(machine, nr(machine, name), args), (name, index, hex(value))


@st.composite
def calls(draw):
    machine = draw(st.sampled_from(MACHINES))
    number = draw(st.one_of(st.integers(0, 500), st.integers(0, 2**32 - 1),
                            st.sampled_from(sorted(table(machine).values()))))
    args = draw(st.lists(st.one_of(st.integers(0, 64), st.integers(0, U64),
                                   st.sampled_from([0xFFFFFFFF, 1 << 32, 0x7E020000])),
                         min_size=6, max_size=6))
    caps = draw(st.frozensets(st.sampled_from(seccomp_data.CAPABILITIES), max_size=6)
                | st.just(DOCKER_CAPS))
    return machine, number, args, caps


@pytest.mark.unit
@given(calls())
def test_any_call_with_any_capabilities_gets_the_profiles_verdict(call):
    machine, number, args, caps = call
    assert verdict(machine, number, args, caps=caps) == expected(machine, number, args, caps)


# -- what the issue names, said explicitly ----------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("machine", MACHINES)
def test_calls_docker_refuses_are_refused(machine):
    n = lambda name: nr(machine, name)  # noqa: E731
    assert verdict(machine, n("personality"), [ADDR_NO_RANDOMIZE]) == EPERM
    for name in ("fanotify_init", "process_madvise", "pidfd_getfd", "migrate_pages",
                 "set_mempolicy_home_node", "quotactl_fd", "unshare", "mount", "setns",
                 "keyctl", "userfaultfd", "io_uring_setup", "kexec_load", "bpf"):
        assert verdict(machine, n(name)) == EPERM, name
    for family in (AF_VSOCK, AF_ALG, AF_VSOCK | 1 << 32, 46, 12):
        assert verdict(machine, n("socket"), [family]) == EPERM, family
    assert verdict(machine, n("clone"), [CLONE_NEWUSER | SIGCHLD]) == EPERM
    # newer than removexattrat (466), the newest syscall the profile names: ENOSYS
    for name in ("open_tree_attr", "file_getattr", "file_setattr", "listns"):
        assert verdict(machine, n(name)) == ENOSYS, name
    assert verdict(machine, n("clone3")) == ENOSYS  # the profile's own rule: libc falls back


@pytest.mark.unit
@pytest.mark.parametrize("machine", MACHINES)
def test_ordinary_calls_are_allowed(machine):
    n = lambda name: nr(machine, name)  # noqa: E731
    for name in ("read", "write", "openat", "close", "mmap", "execve", "exit_group",
                 "removexattrat", "cachestat", "ptrace", "process_vm_readv"):
        assert verdict(machine, n(name)) == ALLOW, name
    for family in (AF_UNIX, AF_INET, 10, 16, 17, 45):
        assert verdict(machine, n("socket"), [family]) == ALLOW, family
    for persona in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert verdict(machine, n("personality"), [persona]) == ALLOW, persona
    assert verdict(machine, n("clone"), [SIGCHLD]) == ALLOW


@pytest.mark.unit
@pytest.mark.parametrize("machine", MACHINES)
def test_capabilities_open_their_rules(machine):
    n = lambda name: nr(machine, name)  # noqa: E731
    admin = DOCKER_CAPS | {"CAP_SYS_ADMIN"}
    for name in ("mount", "unshare", "setns", "fanotify_init", "quotactl_fd", "clone3"):
        assert verdict(machine, n(name), caps=admin) == ALLOW, name
    assert verdict(machine, n("clone"), [CLONE_NEWUSER], caps=admin) == ALLOW
    assert verdict(machine, n("pidfd_getfd"), caps={"SYS_PTRACE"}) == ALLOW
    assert verdict(machine, n("set_mempolicy_home_node"), caps={"sys_nice"}) == ALLOW
    # and a set without CAP_SYS_CHROOT loses chroot
    assert verdict(machine, n("chroot")) == ALLOW
    assert verdict(machine, n("chroot"), caps=DOCKER_CAPS - {"CAP_SYS_CHROOT"}) == EPERM


@pytest.mark.unit
@pytest.mark.parametrize("machine", MACHINES)
def test_other_abis_are_killed(machine):
    other = AUDIT["aarch64" if machine == "x86_64" else "x86_64"]
    for arch in (AUDIT_I386, AUDIT_ARM, other):
        assert verdict(machine, 0, arch=arch) == KILL


@pytest.mark.unit
def test_the_x32_abi_is_refused_as_a_kernel_without_it_refuses():
    for number in (0, 1, 39, 56, 512, 547):
        assert verdict("x86_64", 0x40000000 | number) == ENOSYS


# -- the program's shape and cost --------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("machine", MACHINES)
def test_common_calls_run_few_instructions(machine):
    """A balanced search: read and write, like any unconditional call, run the arch check
    (3), about log2(ranges) comparisons and the return."""
    program = seccomp.default_filter(machine)
    assert program is not None and len(program) // 8 < 400
    steps = [run_bpf(program, number, AUDIT[machine])[1] for number in table(machine).values()]
    for name in ("read", "write", "futex", "epoll_pwait"):
        assert run_bpf(program, nr(machine, name), AUDIT[machine])[1] <= 14, name
    assert max(steps) <= 24


@pytest.mark.unit
def test_no_filter_is_claimed_for_an_unknown_architecture():
    assert seccomp.default_filter("riscv64") is None
    assert seccomp.default_filter("amd64") == seccomp.default_filter("x86_64")


@pytest.mark.unit
def test_capabilities_are_checked_by_name():
    with pytest.raises(InvalidOption, match="unknown capability 'CAP_FLY'"):
        seccomp.default_filter("x86_64", caps=["CAP_FLY"])
    with pytest.raises(InvalidOption, match="not one string"):
        seccomp.default_filter("x86_64", caps="CAP_SYS_ADMIN")
    assert seccomp.default_filter("x86_64", caps=["chown", "CAP_KILL"]) == \
        seccomp.default_filter("x86_64", caps={"CAP_CHOWN", "KILL"})


@pytest.mark.unit
def test_unsupported_profile_actions_are_refused():
    with pytest.raises(InvalidOption, match="SCMP_ACT_NOTIFY"):
        seccomp.Rule.from_docker({"names": ["read"], "action": "SCMP_ACT_NOTIFY"})
    with pytest.raises(InvalidOption, match="unknown fields"):
        seccomp.Rule.from_docker({"names": ["read"], "action": "SCMP_ACT_ALLOW", "argz": []})


@pytest.mark.unit
@given(st.integers(0, 5), st.sampled_from(seccomp.OPS), st.integers(0, U64), st.integers(0, U64),
       st.lists(st.integers(0, U64), min_size=1, max_size=8))
def test_every_comparison_is_compiled_on_64_bits(index, op, value, value_two, probes):
    """Each operator, on either half of any argument, through the general path and the
    value-set path, against Python's arithmetic on the 64-bit value."""
    arch = seccomp.ARCHES["x86_64"]
    rules = [seccomp.Rule(("read",), ALLOW), seccomp.Rule(("write",), ALLOW, (seccomp.Arg(index, op, value, value_two),))]
    program = seccomp.pack(seccomp.compile_plan(seccomp.plan(arch, frozenset(), KERNEL, rules)))
    for probe in probes + [value, value_two, value ^ 1 << 32]:
        args = [0] * 6
        args[index] = probe
        want = ALLOW if seccomp.Arg(index, op, value, value_two).holds(probe) else EPERM
        assert run_bpf(program, 1, AUDIT["x86_64"], args)[0] == want


# -- the tables against this machine's headers -------------------------------------------


def header_numbers(source: str) -> Dict[str, int]:
    gcc = require_tool("gcc")
    out = subprocess.run([gcc, "-E", "-dM", "-x", "c", "-"], input=source, capture_output=True,
                         text=True, check=True).stdout
    defs = dict(re.findall(r"^#define (__NR\w+) (\S+)$", out, re.M))

    def value(v: Optional[str]) -> Optional[int]:
        for _ in range(4):
            if v is None or v.isdigit():
                return int(v) if v else None
            v = defs.get(v)
        return None

    found = {k[5:]: value(v) for k, v in defs.items() if k.startswith("__NR_")}
    return {k: v for k, v in found.items() if v is not None and k not in ("syscalls", "arch_specific_syscall")}


def test_x86_64_table_agrees_with_the_kernel_headers():
    headers = header_numbers("#include <asm/unistd_64.h>\n")
    assert len(headers) > 350
    assert {k: table("x86_64").get(k) for k in headers} == headers


def test_aarch64_table_agrees_with_the_generic_kernel_headers():
    """arm64 takes asm-generic/unistd.h with these ABIs (arch/arm64/kernel/Makefile.syscalls)."""
    headers = header_numbers("#define __ARCH_WANT_RENAMEAT\n#define __ARCH_WANT_NEW_STAT\n"
                             "#define __ARCH_WANT_SET_GET_RLIMIT\n#define __ARCH_WANT_SYS_CLONE3\n"
                             "#define __ARCH_WANT_MEMFD_SECRET\n#include <asm-generic/unistd.h>\n")
    assert len(headers) > 290
    assert {k: table("aarch64").get(k) for k in headers} == headers


@pytest.mark.unit
def test_every_name_in_the_profile_is_a_syscall_somewhere():
    """A misspelt name would silently allow nothing: the profile's names are in one of
    the tables, or are the 32-bit and other architectures' calls listed here."""
    known = set(table("x86_64")) | set(table("aarch64"))
    elsewhere = {
        "chown32", "clock_adjtime64", "clock_getres_time64", "clock_gettime64",
        "clock_nanosleep_time64", "fadvise64_64", "fchown32", "fcntl64", "fstat64",
        "fstatat64", "fstatfs64", "ftruncate64", "futex_time64", "getegid32", "geteuid32",
        "getgid32", "getgroups32", "getresgid32", "getresuid32", "getuid32", "ipc",
        "io_pgetevents_time64", "lchown32", "_llseek", "lstat64", "mmap2",
        "mq_timedreceive_time64", "mq_timedsend_time64", "_newselect", "ppoll_time64",
        "pselect6_time64", "recv", "recvmmsg_time64", "riscv_hwprobe",
        "rt_sigtimedwait_time64", "sched_rr_get_interval_time64", "semtimedop_time64",
        "send", "sendfile64", "setfsgid32", "setfsuid32", "setgid32", "setgroups32",
        "setregid32", "setresgid32", "setresuid32", "setreuid32", "setuid32", "sigprocmask",
        "sigreturn", "socketcall", "stat64", "statfs64", "stime",
        "timer_gettime64", "timer_settime64", "timerfd_gettime64", "timerfd_settime64",
        "truncate64", "ugetrlimit", "utimensat_time64", "waitpid", "sync_file_range2",
        "swapcontext", "arm_fadvise64_64", "arm_sync_file_range", "breakpoint", "cacheflush",
        "set_tls", "s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr",
        "riscv_flush_icache", "umount", "clock_settime64",
    }
    names = {n for rule in seccomp_data.SYSCALLS for n in rule["names"]}
    assert names - known == elsewhere


# -- in a real container ---------------------------------------------------------------


def test_container_runs_filtered_and_cannot_make_namespaces(busybox_image, store_root):
    out = isobox.run(busybox_image, ["sh", "-c", "grep '^Seccomp:' /proc/self/status; unshare -U true || echo refused"])
    assert out.stdout == b"Seccomp:\t2\nrefused\n"
    assert b"Operation not permitted" in out.stderr


def test_seccomp_false_runs_unconfined(busybox_image, store_root):
    out = isobox.run(busybox_image, ["grep", "^Seccomp:", "/proc/self/status"], seccomp=False)
    assert out.stdout == b"Seccomp:\t0\n"
