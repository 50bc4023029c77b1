"""The seccomp filter every container gets: Docker's default profile, compiled here to a
classic-BPF program that the native core installs as its last step before execve (as
bubblewrap does: nothing after it needs a syscall the filter would have to allow).

What a container can call is what Docker's current default profile allows (the rules
live in `seccomp_data`, taken from moby/profiles; see there for the commit): an allowlist
of ~370 syscalls by name; argument conditions (``personality`` only with Docker's five
personas, ``clone`` only without ``CLONE_NEW*`` flags, ``socket`` only for the address
families Docker allows, so not ``AF_VSOCK`` nor ``AF_ALG``); ``clone3`` answering ENOSYS
so that libc falls back to ``clone``, whose flags a filter can read; and the rules that
depend on capabilities (``mount``, ``unshare``, ``setns``, ``bpf`` ... only with
CAP_SYS_ADMIN; ``ptrace``-like calls on other processes only with CAP_SYS_PTRACE; NUMA
policy only with CAP_SYS_NICE ...), evaluated, as Docker does, against the capability set
the container gets (`default_filter`'s ``caps``, Docker's default set when not given).
Everything else fails with EPERM (Docker's defaultErrnoRet), except syscalls numbered
above the newest one the profile names on that architecture, which answer ENOSYS as runc
makes them answer (its "patchbpf"): libc then falls back from a new call to an old one,
and a syscall added to the kernel after the profile fails the way programs expect of a
kernel that lacks it, instead of with a permission error.

What differs from Docker:
- One ABI per filter. Docker's profile also admits the 32-bit ABIs (i386 and x32 on
  x86_64, AArch32 on aarch64), each with its own numbering. isobox's filter kills the
  process (SECCOMP_RET_KILL_PROCESS) on a syscall made through another architecture's
  ABI (``int $0x80`` on x86_64, for one) and answers ENOSYS to the x32 ABI (syscall
  numbers with bit 30 set), as a kernel built without x32 does. So 32-bit programs do not
  run in an isobox container; they do under Docker.
- Only this profile, or none (``seccomp=False``): no custom profiles, and so none of
  SCMP_ACT_LOG, SCMP_ACT_NOTIFY, SCMP_ACT_TRACE or per-rule kill actions.
- Conditions within one rule are all required. libseccomp ORs two comparisons of the
  same argument in one rule (runc issue #2735); Docker's profile has none, so the
  verdicts are the same.
Comparisons are on the 64-bit argument values, as libseccomp makes them: the BPF program
checks both 32-bit halves, so a value with high bits set (which the kernel may truncate
to an int) never matches a small allowed one.

Architectures: x86_64 and aarch64 (`SUPPORTED_MACHINES`). Elsewhere `default_filter`
returns None and containers run without a filter; ``isobox doctor`` should say so.

The program: check the architecture, load the syscall number, then a balanced binary
search over the ranges of numbers that share a verdict (66 ranges on x86_64, 69 on
aarch64; 192 and 198 instructions in all), so a common call such as read or write runs
10 instructions, and none more than 17 (tests/test_seccomp.py counts them); argument
checks run only for the few syscalls that have them. Jump offsets are 8 bits: the search lays the smaller subtree on the jumped
side and adds a 32-bit ``ja`` only when both are too far.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import struct
from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import attrs

from . import seccomp_data
from ..errors import InvalidOption

# -- classic BPF and seccomp (linux/filter.h, linux/bpf_common.h, linux/seccomp.h) --------

LD_W_ABS = 0x20   # BPF_LD | BPF_W | BPF_ABS: A = seccomp_data[k]
JA = 0x05         # BPF_JMP | BPF_JA: pc += k (32-bit: the only far jump)
JEQ_K = 0x15
JGT_K = 0x25
JGE_K = 0x35
JSET_K = 0x45
AND_K = 0x54      # BPF_ALU | BPF_AND | BPF_K
RET_K = 0x06
BPF_MAXINSNS = 4096
MAX_JUMP = 255    # jt and jf are 8 bits

RET_KILL_PROCESS = 0x80000000  # since 4.14
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

OFF_NR, OFF_ARCH, OFF_ARGS = 0, 4, 16  # struct seccomp_data: int nr; __u32 arch; __u64 ip; __u64 args[6]

AUDIT_ARCH_X86_64 = 0xC000003E  # EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
AUDIT_ARCH_AARCH64 = 0xC00000B7  # EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
X32_SYSCALL_BIT = 0x40000000

U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF

Insn = Tuple[int, int, int, int]  # code, jt, jf, k


def ret_errno(err: int) -> int:
    return RET_ERRNO | (err & 0xFFFF)


# -- the architectures ------------------------------------------------------------------


@attrs.frozen
class Arch:
    """An ABI isobox filters: its audit number, its name in Docker's profile, its table."""

    machine: str
    profile_name: str  # how Docker's "arches" spell it (libseccomp's native names)
    audit_arch: int
    syscalls: Mapping[str, int] = attrs.field(repr=False)

    @classmethod
    def from_table(cls, machine: str, profile_name: str, audit_arch: int, text: str) -> "Arch":
        """``text`` as `seccomp_data` keeps it: "number name", one a line."""
        table: Dict[str, int] = {}
        for line in text.split("\n"):
            if line.strip():
                nr, name = line.split()
                table[name] = int(nr)
        return cls(machine, profile_name, audit_arch, table)


ARCHES = {
    "x86_64": Arch.from_table("x86_64", "amd64", AUDIT_ARCH_X86_64, seccomp_data.X86_64),
    "aarch64": Arch.from_table("aarch64", "arm64", AUDIT_ARCH_AARCH64, seccomp_data.AARCH64),
}
SUPPORTED_MACHINES = tuple(ARCHES)
_MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}  # GOARCH / OCI spellings


def machine_name(machine: Optional[str] = None) -> str:
    """``uname -m``'s name for ``machine`` (this one when None)."""
    name = machine or os.uname().machine
    return _MACHINE_ALIASES.get(name, name)


def syscall_table(machine: Optional[str] = None) -> Optional[Mapping[str, int]]:
    """The syscall numbers by name on ``machine``, or None where isobox has no table."""
    arch = ARCHES.get(machine_name(machine))
    return arch.syscalls if arch else None


# -- the profile ----------------------------------------------------------------------

OPS = ("SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_GT",
       "SCMP_CMP_GE", "SCMP_CMP_MASKED_EQ")


def _u64(_: object, attribute: "attrs.Attribute[int]", value: int) -> None:
    if not 0 <= value <= U64:
        raise InvalidOption(f"seccomp: {attribute.name} {value} is not a 64-bit value")


@attrs.frozen
class Arg:
    """One comparison of a syscall argument, as OCI's LinuxSeccompArg: for MASKED_EQ,
    ``value`` is the mask and ``value_two`` what the masked argument must equal."""

    index: int = attrs.field(validator=attrs.validators.in_(range(6)))
    op: str = attrs.field(validator=attrs.validators.in_(OPS))
    value: int = attrs.field(validator=_u64)
    value_two: int = attrs.field(default=0, validator=_u64)

    def holds(self, arg: int) -> bool:
        """libseccomp's meaning, on the 64-bit argument."""
        v = self.value
        return {
            "SCMP_CMP_EQ": arg == v, "SCMP_CMP_NE": arg != v, "SCMP_CMP_LT": arg < v,
            "SCMP_CMP_LE": arg <= v, "SCMP_CMP_GT": arg > v, "SCMP_CMP_GE": arg >= v,
            "SCMP_CMP_MASKED_EQ": arg & v == self.value_two,
        }[self.op]


def _kernel(text: str) -> Tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", text)
    if not m:
        raise InvalidOption(f"seccomp: {text!r} is not a kernel version")
    return int(m[1]), int(m[2])


@attrs.frozen
class Condition:
    """A rule's "includes" or "excludes": capabilities, architectures, a kernel version."""

    caps: FrozenSet[str] = frozenset()
    arches: FrozenSet[str] = frozenset()
    min_kernel: Optional[Tuple[int, int]] = None

    @classmethod
    def from_docker(cls, doc: Optional[Mapping[str, Any]]) -> "Condition":
        doc = doc or {}
        unknown = set(doc) - {"caps", "arches", "minKernel"}
        if unknown:
            raise InvalidOption(f"seccomp: unknown filter fields {sorted(unknown)}")
        caps = frozenset(doc.get("caps") or ())
        bad = caps - set(seccomp_data.CAPABILITIES)
        if bad:
            raise InvalidOption(f"seccomp: unknown capabilities {sorted(bad)}")
        min_kernel = doc.get("minKernel")
        return cls(caps, frozenset(doc.get("arches") or ()),
                   _kernel(min_kernel) if min_kernel else None)


@attrs.frozen
class Rule:
    """One entry of the profile's "syscalls": these names get ``ret`` (a seccomp return
    value) when every comparison in ``args`` holds."""

    names: Tuple[str, ...]
    ret: int
    args: Tuple[Arg, ...] = ()
    includes: Condition = Condition()
    excludes: Condition = Condition()

    @classmethod
    def from_docker(cls, doc: Mapping[str, Any]) -> "Rule":
        unknown = set(doc) - {"names", "action", "errnoRet", "args", "includes", "excludes", "comment"}
        if unknown:
            raise InvalidOption(f"seccomp: rule for {doc.get('names')}: unknown fields {sorted(unknown)}")
        action = doc.get("action")
        if action == "SCMP_ACT_ALLOW":
            ret = RET_ALLOW
        elif action == "SCMP_ACT_ERRNO":
            ret = ret_errno(doc.get("errnoRet", seccomp_data.DEFAULT_ERRNO))
        else:  # LOG, NOTIFY, TRACE, KILL: not what isobox compiles (see the module docstring)
            raise InvalidOption(f"seccomp: rule for {doc.get('names')}: action {action!r} is not supported")
        args = tuple(Arg(a["index"], a["op"], a["value"], a.get("valueTwo", 0))
                     for a in doc.get("args") or ())
        return cls(tuple(doc["names"]), ret, args, Condition.from_docker(doc.get("includes")),
                   Condition.from_docker(doc.get("excludes")))

    def applies(self, arch: Arch, caps: FrozenSet[str], kernel: Tuple[int, int]) -> bool:
        """Docker's reading (moby/profiles seccomp_linux.go): every include holds, no
        exclude does; the capabilities are the container's bounding set."""
        inc, exc = self.includes, self.excludes
        if inc.arches and arch.profile_name not in inc.arches:
            return False
        if inc.caps and not inc.caps <= caps:
            return False
        if inc.min_kernel and kernel < inc.min_kernel:
            return False
        if exc.arches and arch.profile_name in exc.arches:
            return False
        if exc.caps and exc.caps & caps:
            return False
        if exc.min_kernel and kernel >= exc.min_kernel:
            return False
        return True


@functools.lru_cache(maxsize=None)
def docker_profile() -> Tuple[Rule, ...]:
    """Docker's default profile, parsed from `seccomp_data`."""
    return tuple(Rule.from_docker(doc) for doc in seccomp_data.SYSCALLS)


def capability_names(caps: Iterable[str]) -> FrozenSet[str]:
    """Capability names as Docker's profile spells them ("CAP_SYS_ADMIN"); "SYS_ADMIN"
    (as ``--cap-add`` takes it) is accepted too."""
    if isinstance(caps, str):
        raise InvalidOption("seccomp: caps must be a collection of capability names, not one string")
    out = set()
    for cap in caps:
        if not isinstance(cap, str):
            raise InvalidOption(f"seccomp: capability {cap!r} is not a name")
        name = cap.upper()
        name = name if name.startswith("CAP_") else "CAP_" + name
        if name not in seccomp_data.CAPABILITIES:
            raise InvalidOption(f"seccomp: unknown capability {cap!r}")
        out.add(name)
    return frozenset(out)


# -- from profile to verdicts -----------------------------------------------------------


@attrs.frozen
class Policy:
    """What one syscall gets: ``ret`` outright, or the first of ``conditional`` whose
    comparisons all hold, else ``default``."""

    ret: Optional[int] = None
    conditional: Tuple[Tuple[Tuple[Arg, ...], int], ...] = ()
    default: int = ret_errno(seccomp_data.DEFAULT_ERRNO)


@attrs.frozen
class Plan:
    """The profile resolved for one architecture and capability set."""

    arch: Arch
    policies: Mapping[int, Policy]  # by syscall number; absent: the default
    newest: int  # the highest number the applying rules name; above it: ENOSYS
    default: int = ret_errno(seccomp_data.DEFAULT_ERRNO)
    beyond: int = ret_errno(errno.ENOSYS)

    def verdict(self, nr: int, args: Sequence[int] = (0,) * 6) -> int:
        """What the profile says for syscall ``nr`` with ``args`` (64-bit values) on the
        native ABI: the reference the compiled program is held to."""
        if nr > self.newest:
            return self.beyond
        policy = self.policies.get(nr)
        if policy is None:
            return self.default
        if policy.ret is not None:
            return policy.ret
        for conds, ret in policy.conditional:
            if all(c.holds(args[c.index]) for c in conds):
                return ret
        return policy.default


def plan(arch: Arch, caps: FrozenSet[str], kernel: Tuple[int, int],
         rules: Sequence[Rule] = ()) -> Plan:
    """Resolve ``rules`` (Docker's profile when empty) for ``arch``, ``caps``, ``kernel``.
    Names the architecture does not have are skipped, as libseccomp and runc skip them."""
    uncond: Dict[int, int] = {}
    cond: Dict[int, List[Tuple[Tuple[Arg, ...], int]]] = {}
    newest = 0
    for rule in rules or docker_profile():
        if not rule.applies(arch, caps, kernel):
            continue
        for name in rule.names:
            nr = arch.syscalls.get(name)
            if nr is None:
                continue
            newest = max(newest, nr)
            if not rule.args:
                if uncond.get(nr, rule.ret) != rule.ret:
                    raise InvalidOption(f"seccomp: {name} is given two different actions")
                uncond[nr] = rule.ret
            else:
                cond.setdefault(nr, []).append((rule.args, rule.ret))
    policies: Dict[int, Policy] = {}
    for nr in set(uncond) | set(cond):
        rets = {ret for _, ret in cond.get(nr, [])} | ({uncond[nr]} if nr in uncond else set())
        if len(rets) > 1:
            # libseccomp would pick by rule order and argument; Docker's profile never asks
            raise InvalidOption(f"seccomp: syscall {nr} is given different actions by argument")
        if nr in uncond:  # a rule without arguments covers the conditional ones of its action
            policies[nr] = Policy(ret=uncond[nr])
        else:
            policies[nr] = Policy(conditional=tuple(cond[nr]))
    return Plan(arch, policies, newest)


# -- compiling --------------------------------------------------------------------------

Label = str
Item = Union[Tuple[int, Union[int, Label], Union[int, Label], Union[int, Label]], Label]


def _assemble(items: Sequence[Item]) -> List[Insn]:
    """Resolve label jumps (jt/jf, or k of a ``ja``) within one block."""
    pos: Dict[str, int] = {}
    n = 0
    for item in items:
        if isinstance(item, str):
            pos[item] = n
        else:
            n += 1
    out: List[Insn] = []
    for item in items:
        if isinstance(item, str):
            continue
        i = len(out)

        def off(target: Union[int, Label], limit: int) -> int:
            if isinstance(target, int):
                return target
            o = pos[target] - i - 1
            if not 0 <= o <= limit:
                raise AssertionError(f"BPF jump to {target} out of range ({o})")
            return o

        code, jt, jf, k = item
        if code == JA:
            out.append((code, 0, 0, off(k, U32)))
        else:
            out.append((code, off(jt, MAX_JUMP), off(jf, MAX_JUMP), k if isinstance(k, int) else off(k, U32)))
    return out


def _halves(index: int) -> Tuple[int, int]:
    """Offsets of the low and high words of args[index] (both ABIs are little-endian)."""
    lo = OFF_ARGS + 8 * index
    return lo, lo + 4


def _condition(arg: Arg, fail: Label, n: int) -> List[Item]:
    """Code that falls through when ``arg`` holds and jumps to ``fail`` when it does not."""
    lo_off, hi_off = _halves(arg.index)
    v_hi, v_lo = arg.value >> 32, arg.value & U32
    ok = f"ok{n}"
    ld_hi: Item = (LD_W_ABS, 0, 0, hi_off)
    ld_lo: Item = (LD_W_ABS, 0, 0, lo_off)
    op = arg.op
    if op == "SCMP_CMP_EQ":
        return [ld_hi, (JEQ_K, 0, fail, v_hi), ld_lo, (JEQ_K, 0, fail, v_lo)]
    if op == "SCMP_CMP_NE":
        return [ld_hi, (JEQ_K, 0, ok, v_hi), ld_lo, (JEQ_K, fail, 0, v_lo), ok]
    if op == "SCMP_CMP_MASKED_EQ":
        d_hi, d_lo = arg.value_two >> 32, arg.value_two & U32
        code: List[Item] = []
        for off, mask, want in ((hi_off, v_hi, d_hi), (lo_off, v_lo, d_lo)):
            if mask == 0:  # (x & 0) == want: a constant
                if want != 0:
                    code.append((JA, 0, 0, fail))
                continue
            code.append((LD_W_ABS, 0, 0, off))
            if want == 0:
                code.append((JSET_K, fail, 0, mask))
            else:
                code += [(AND_K, 0, 0, mask), (JEQ_K, 0, fail, want)]
        return code
    # unsigned 64-bit order: decided by the high words unless they are equal
    if op in ("SCMP_CMP_GT", "SCMP_CMP_GE"):
        last = JGT_K if op == "SCMP_CMP_GT" else JGE_K
        return [ld_hi, (JGT_K, ok, 0, v_hi), (JEQ_K, 0, fail, v_hi), ld_lo, (last, 0, fail, v_lo), ok]
    last = JGE_K if op == "SCMP_CMP_LT" else JGT_K  # LT fails on >=, LE on >
    return [ld_hi, (JGT_K, fail, 0, v_hi), (JEQ_K, 0, ok, v_hi), ld_lo, (last, fail, 0, v_lo), ok]


def _intervals(arg: Arg) -> Optional[List[Tuple[int, int]]]:
    """The 64-bit values ``arg`` admits, as closed intervals (None for MASKED_EQ)."""
    v = arg.value
    return {
        "SCMP_CMP_EQ": [(v, v)],
        "SCMP_CMP_NE": [(0, v - 1)] * (v > 0) + [(v + 1, U64)] * (v < U64),
        "SCMP_CMP_LT": [(0, v - 1)] * (v > 0),
        "SCMP_CMP_LE": [(0, v)],
        "SCMP_CMP_GT": [(v + 1, U64)] * (v < U64),
        "SCMP_CMP_GE": [(v, U64)],
    }.get(arg.op)


def _value_set(policy: Policy) -> Optional[Tuple[int, List[Tuple[int, int]], int]]:
    """When every rule of ``policy`` tests one argument, the same one, with an order
    comparison, and the admitted values all fit in 32 bits (socket's families,
    personality's personas): (index, intervals, ret), to search like syscall numbers."""
    if not policy.conditional or any(len(conds) != 1 for conds, _ in policy.conditional):
        return None
    indexes = {conds[0].index for conds, _ in policy.conditional}
    rets = {ret for _, ret in policy.conditional}
    if len(indexes) != 1 or len(rets) != 1:
        return None
    spans: List[Tuple[int, int]] = []
    for conds, _ in policy.conditional:
        got = _intervals(conds[0])
        if got is None:
            return None
        spans += got
    if any(hi > U32 for _, hi in spans):
        return None
    return indexes.pop(), spans, rets.pop()


def _search(parts: Sequence[Tuple[int, List[Insn]]]) -> List[Insn]:
    """A balanced binary search on A over ``parts`` (start, code), sorted by start, the
    first starting at 0, each covering up to the next start; each part's code ends in
    returns and jumps only within itself, so subtrees can be laid anywhere."""
    if len(parts) == 1:
        return parts[0][1]
    mid = len(parts) // 2
    left, right, k = _search(parts[:mid]), _search(parts[mid:]), parts[mid][0]
    if len(left) <= MAX_JUMP:  # A >= k: jump over the left half
        return [(JGE_K, len(left), 0, k)] + left + right
    if len(right) <= MAX_JUMP:  # A < k: jump over the right half
        return [(JGE_K, 0, len(right), k)] + right + left
    return [(JGE_K, 0, 1, k), (JA, 0, 0, len(left))] + left + right


def _ranges(verdicts: Sequence[Tuple[int, Any]]) -> List[Tuple[int, Any]]:
    """Merge (start, verdict) runs: a start only where the verdict changes."""
    out: List[Tuple[int, Any]] = []
    for start, v in verdicts:
        if not out or out[-1][1] != v:
            out.append((start, v))
    return out


def _ret(value: int) -> List[Insn]:
    return [(RET_K, 0, 0, value)]


def _policy_code(policy: Policy) -> List[Insn]:
    if policy.ret is not None:
        return _ret(policy.ret)
    values = _value_set(policy)
    if values is not None:
        index, spans, ret = values
        lo_off, hi_off = _halves(index)
        marks = sorted({b for lo, hi in spans for b in (lo, hi + 1) if b <= U32} | {0})
        parts = _ranges([(b, any(lo <= b <= hi for lo, hi in spans)) for b in marks])
        return ([(LD_W_ABS, 0, 0, hi_off), (JEQ_K, 1, 0, 0)] + _ret(policy.default)
                + [(LD_W_ABS, 0, 0, lo_off)]
                + _search([(b, _ret(ret if ok else policy.default)) for b, ok in parts]))
    items: List[Item] = []
    n = 0
    for i, (conds, ret) in enumerate(policy.conditional):
        fail = f"rule{i + 1}"
        for cond in conds:
            items += _condition(cond, fail, n)
            n += 1
        items += [(RET_K, 0, 0, ret), fail]
    items.append((RET_K, 0, 0, policy.default))
    return _assemble(items)


def compile_plan(p: Plan) -> List[Insn]:
    """The BPF program for ``p``: the architecture check, then the search on the number."""
    marks = sorted({0, p.newest + 1} | set(p.policies) | {nr + 1 for nr in p.policies})

    def at(nr: int) -> Any:
        if nr > p.newest:
            return ("ret", p.beyond)
        policy = p.policies.get(nr)
        if policy is None:
            return ("ret", p.default)
        return ("ret", policy.ret) if policy.ret is not None else policy

    parts = _ranges([(nr, at(nr)) for nr in marks])
    program = [
        (LD_W_ABS, 0, 0, OFF_ARCH),
        (JEQ_K, 1, 0, p.arch.audit_arch),
        (RET_K, 0, 0, RET_KILL_PROCESS),  # another ABI than the one the numbers are for
        (LD_W_ABS, 0, 0, OFF_NR),
    ] + _search([(start, _ret(v[1]) if isinstance(v, tuple) else _policy_code(v))
                 for start, v in parts])
    if len(program) > BPF_MAXINSNS:
        raise AssertionError(f"seccomp program of {len(program)} instructions is too long")
    return program


def pack(program: Sequence[Insn]) -> bytes:
    """As struct sock_filter[] in this machine's byte order."""
    return b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in program)


def _kernel_version() -> Tuple[int, int]:
    """The running kernel, for the profile's minKernel; (0, 0) when unreadable, which
    drops the rules that need a newer one (the safe side)."""
    try:
        return _kernel(os.uname().release)
    except InvalidOption:
        return (0, 0)


@functools.lru_cache(maxsize=64)
def _compiled(machine: str, caps: FrozenSet[str], kernel: Tuple[int, int]) -> bytes:
    return pack(compile_plan(plan(ARCHES[machine], caps, kernel)))


def default_filter(machine: Optional[str] = None,
                   caps: Optional[Iterable[str]] = None) -> Optional[bytes]:
    """The packed filter (struct sock_filter[]) for Docker's default profile on
    ``machine`` (this one when None) for a container whose capabilities are ``caps``
    (names, "CAP_SYS_ADMIN" or "SYS_ADMIN"; Docker's default set when None), or None
    where isobox has no syscall table (`SUPPORTED_MACHINES`)."""
    capset = seccomp_data.DEFAULT_CAPABILITIES if caps is None else capability_names(caps)
    name = machine_name(machine)
    if name not in ARCHES:
        return None
    return _compiled(name, capset, _kernel_version())
