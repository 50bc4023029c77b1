"""The spec's seccomp profile (config-linux.md, "Seccomp") compiled by the library's own
compiler (runtime/seccomp.py): its rules are Docker's shape already (``names``,
``action``, ``errnoRet``, ``args``), so each becomes a `Rule` and the profile's
``defaultAction`` the plan's default.  What the compiler does not do is refused by name:
actions other than SCMP_ACT_ALLOW and SCMP_ACT_ERRNO (KILL, LOG, TRAP, TRACE, NOTIFY),
``flags``, a listener, and a profile without the native architecture's ABI.

A syscall name no listed architecture knows is refused too (runc skips it silently, so a
typo leaves a call allowed or denied by the default without a word); a name known to
another listed architecture (``_llseek`` on 32-bit x86) is fine.  Only decidable where
isobox has the table of every listed architecture (x86_64 and aarch64): a profile that
also lists one it has no table for (SCMP_ARCH_X86, as runc's default lists) is taken as
runc takes it.
"""

from __future__ import annotations

import errno
from typing import Any, Mapping, Optional, Sequence

import attrs

from ..errors import InvalidOption
from ..runtime import seccomp as _seccomp
from .bundle import Unsupported

# the spec's architecture names for the ABIs the library compiles (seccomp.Arch.profile_name)
ARCH_NAMES = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}


def _check_names(profile: Mapping[str, Any], arches: Sequence[str]) -> None:
    tables = [_seccomp.ARCHES[m].syscalls for m, name in ARCH_NAMES.items() if name in arches]
    if len(tables) < len(set(arches)):
        return  # a listed architecture isobox has no table for may know the name
    for i, doc in enumerate(profile.get("syscalls") or ()):
        for name in doc.get("names") or ():
            if not any(name in t for t in tables):
                raise InvalidOption(f"config.json: linux.seccomp.syscalls[{i}]: no listed architecture "
                                    f"({', '.join(arches)}) has a syscall named {name!r}")


def _action(action: Any, errno_ret: Any, where: str) -> int:
    if action == "SCMP_ACT_ALLOW":
        return _seccomp.RET_ALLOW
    if action == "SCMP_ACT_ERRNO":
        return _seccomp.ret_errno(errno_ret if isinstance(errno_ret, int) else errno.EPERM)
    raise Unsupported(f"config.json: linux.seccomp{where}: action {action!r} is not supported yet "
                      "(SCMP_ACT_ALLOW and SCMP_ACT_ERRNO are)")


def compile_profile(profile: Mapping[str, Any], caps: Sequence[str]) -> Optional[bytes]:
    """The packed filter for ``profile`` on this machine, or None where the library has no
    syscall table (it then runs unfiltered, as `default_filter` does)."""
    machine = _seccomp.machine_name()
    arch = _seccomp.ARCHES.get(machine)
    if arch is None:
        return None
    if profile.get("flags"):
        raise Unsupported(f"config.json: linux.seccomp.flags {profile['flags']} are not supported yet")
    if profile.get("listenerPath"):
        raise Unsupported("config.json: linux.seccomp.listenerPath (SCMP_ACT_NOTIFY) is not supported yet")
    arches = profile.get("architectures") or []
    if arches and ARCH_NAMES.get(machine) not in arches:
        raise Unsupported(f"config.json: linux.seccomp.architectures {arches} leave out this machine's "
                          f"{ARCH_NAMES.get(machine)}")
    _check_names(profile, list(arches) or [ARCH_NAMES[machine]])
    default = _action(profile.get("defaultAction"), profile.get("defaultErrnoRet"), ".defaultAction")
    rules = []
    for i, doc in enumerate(profile.get("syscalls") or ()):
        ret = _action(doc.get("action"), doc.get("errnoRet"), f".syscalls[{i}]")
        args = tuple(_seccomp.Arg(a["index"], a["op"], a["value"], a.get("valueTwo", 0))
                     for a in doc.get("args") or ())
        rules.append(_seccomp.Rule(tuple(doc.get("names") or ()), ret, args))
    if not rules:
        if default == _seccomp.RET_ALLOW:
            return None
        # a profile of one verdict: the compiler needs one name to place it
        rules.append(_seccomp.Rule(("read",), default))
    plan = _seccomp.plan(arch, _seccomp.capability_names(caps), _seccomp._kernel_version(), rules)
    policies = {nr: (p if p.ret is not None else attrs.evolve(p, default=default))
                for nr, p in plan.policies.items()}
    # above the newest named syscall: ENOSYS (runc's patchbpf) for an allowlist; a
    # denylist (default ALLOW) lets newer calls through as it lets every unnamed one
    beyond = default if default == _seccomp.RET_ALLOW else plan.beyond
    plan = attrs.evolve(plan, policies=policies, default=default, beyond=beyond)
    return _seccomp.pack(_seccomp.compile_plan(plan))
