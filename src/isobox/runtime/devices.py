"""Host devices: which device nodes a container may use, as Docker and Podman decide it.

The threat: a rootful container keeps CAP_MKNOD (Docker's default capabilities do), so
its root can `mknod` any node, /dev/kvm, a loop device, the host's disks, and open it:
the kernel asks the driver behind the (major, minor), wherever the node lies. Docker and
Podman let `mknod` happen but refuse to *open* anything outside a short allowlist, with
the devices cgroup: the v1 `devices` controller, or on cgroup v2 an eBPF program of type
BPF_PROG_TYPE_CGROUP_DEVICE attached to the container's cgroup. isobox does the same
(cgroups.py applies it); nodev mounts are the second wall where no cgroup is writable.

This module owns the policy and its two compiled forms:

* `DeviceRule`: one line of the devices cgroup's grammar (`c 1:3 rwm`), allow or deny.
* `DEFAULT_RULES`: Docker's effective default allowlist (below, with where it comes from).
* `Device`: what a caller asks for, `docker run --device HOST[:CONTAINER[:PERMS]]`;
  `Device.resolve()` stats the host path into `DeviceNode`s (the nodes to put in the
  container, each with the rule that lets it be opened).
* `policy(rules)`: the exceptions a v1 devices cgroup holds after `deny a` and the rules
  in order (the kernel's semantics, security/device_cgroup.c); both compiled forms are
  made from it, so v1 and v2 enforce the same thing.
* `bpf_program(rules)`: that policy as eBPF instructions for the v2 device hook.
"""

from __future__ import annotations

import os
import posixpath
import stat
import struct
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import attrs

from ..errors import InvalidOption

# The kernel's own dev_t is 12 bits of major and 20 of minor (MINORBITS, include/linux/kdev_t.h);
# userspace's 64-bit dev_t is wider, but no node can name a device outside these.
MAJOR_MAX = (1 << 12) - 1
MINOR_MAX = (1 << 20) - 1

ACCESS_ORDER = "rwm"


def _access(value: str) -> str:
    """Docker's permission grammar (docker/cli validDeviceMode): a non-empty set of r, w
    and m, each at most once. Kept in canonical order so equal sets compare equal."""
    if not isinstance(value, str) or not value or any(c not in ACCESS_ORDER for c in value) \
            or len(set(value)) != len(value):
        raise InvalidOption(f"device permissions must be a non-empty combination of r, w and m, got {value!r}")
    return "".join(c for c in ACCESS_ORDER if c in value)


def _number(limit: int, what: str) -> Callable[[object, Any, Optional[int]], None]:
    def check(instance: object, attribute: Any, value: Optional[int]) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            raise InvalidOption(f"device {what} must be between 0 and {limit} (or None for '*'), got {value!r}")
    return check


@attrs.frozen
class DeviceRule:
    """One rule of the devices cgroup (Documentation/admin-guide/cgroup-v1/devices.rst):
    `type` is 'c' (char), 'b' (block) or 'a' (all: only as `deny a`, the reset to
    deny-everything), `major`/`minor` None for '*', `access` a subset of "rwm" (read,
    write, mknod). `str(rule)` is the line the kernel reads and lists (`c 1:3 rwm`)."""

    type: str
    major: Optional[int] = attrs.field(default=None, validator=_number(MAJOR_MAX, "major"))
    minor: Optional[int] = attrs.field(default=None, validator=_number(MINOR_MAX, "minor"))
    access: str = attrs.field(default="rwm", converter=_access)
    allow: bool = True

    def __attrs_post_init__(self) -> None:
        if self.type not in ("a", "b", "c"):
            raise InvalidOption(f"device type must be 'c', 'b' or 'a', got {self.type!r}")
        if self.type == "a":
            # "a" allowed would be --privileged's "every device"; isobox has no such mode
            if self.allow:
                raise InvalidOption("a rule allowing every device ('a') is not supported")
            if self.major is not None or self.minor is not None:
                raise InvalidOption("the 'a' rule takes no major or minor")

    @classmethod
    def from_cgroup(cls, line: str, allow: bool = True) -> "DeviceRule":
        """A line of devices.list, devices.allow/deny, or `--device-cgroup-rule`:
        `c 1:3 rwm`, `b 8:* r`, `a` (which the kernel lists as `a *:* rwm`)."""
        parts = line.split()
        try:
            if parts and parts[0] == "a" and parts[1:] in ([], ["*:*", "rwm"]):
                return cls("a", allow=allow)
            kind, numbers, access = parts
            major_s, minor_s = numbers.split(":")
            return cls(kind, None if major_s == "*" else int(major_s),
                       None if minor_s == "*" else int(minor_s), access, allow)
        except ValueError as exc:
            raise InvalidOption(f"invalid device cgroup rule {line!r} (expected e.g. 'c 1:3 rwm')") from exc

    def __str__(self) -> str:
        if self.type == "a":
            return "a *:* rwm"
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


def _char(major: Optional[int], minor: Optional[int], access: str = "rwm") -> DeviceRule:
    return DeviceRule("c", major, minor, access)


# Docker's effective default policy. moby's oci/defaults.go starts the spec's device
# rules with `deny a` and allows c 1:5, 1:3, 1:9, 1:8, 5:0, 5:1 and denies c 10:229
# (fuse); runc appends its AllowedDevices (libcontainer/specconv/spec_linux.go), which the
# user cannot remove: mknod of any char and block device, null, random, full, tty, zero,
# urandom, all of /dev/pts (136:*), ptmx and tun. crun, Podman's runtime, has the same
# list (libcrun cgroup.c default_devices; without 10:200 in its newest versions). The
# deny of 10:229 is a no-op under `deny a` (there is nothing to remove), so it is left
# out: fuse is mknod-only, as in Docker. What each is for:
DEFAULT_RULES: Tuple[DeviceRule, ...] = (
    DeviceRule("c", None, None, "m"),  # mknod of any node, never open: CAP_MKNOD keeps its
    DeviceRule("b", None, None, "m"),  # meaning (images with nodes in them, tar, cp -a)
    _char(1, 3),    # /dev/null
    _char(1, 5),    # /dev/zero
    _char(1, 7),    # /dev/full
    _char(1, 8),    # /dev/random
    _char(1, 9),    # /dev/urandom
    _char(5, 0),    # /dev/tty: the process's own controlling terminal
    # /dev/console of the host. Docker and crun allow it (moby defaults.go, crun
    # default_devices); the container's own /dev/console is a bind of its pty (136:*).
    _char(5, 1),
    _char(5, 2),    # /dev/ptmx: new ptys on the container's own devpts instance
    _char(136, None),  # /dev/pts/*: the ptys themselves
    # /dev/net/tun: in runc since Docker's first days, dropped in runc 1.2.0-rc1 and put
    # back for the regressions (runc#3468). Opening it is harmless; creating an interface
    # (TUNSETIFF) needs CAP_NET_ADMIN, which containers do not have.
    _char(10, 200),
)

BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR = 1, 2  # include/uapi/linux/bpf.h
BPF_DEVCG_ACC_MKNOD, BPF_DEVCG_ACC_READ, BPF_DEVCG_ACC_WRITE = 1, 2, 4
ACCESS_BITS = {"m": BPF_DEVCG_ACC_MKNOD, "r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE}
TYPE_CODES = {"b": BPF_DEVCG_DEV_BLOCK, "c": BPF_DEVCG_DEV_CHAR}


def access_bits(access: str) -> int:
    return sum(ACCESS_BITS[c] for c in access)


def _access_text(bits: int) -> str:
    return "".join(c for c in ACCESS_ORDER if bits & ACCESS_BITS[c])


def policy(rules: Iterable[DeviceRule]) -> Tuple[DeviceRule, ...]:
    """The allow rules a v1 devices cgroup holds after `deny a` and then `rules` in order,
    with the kernel's semantics (security/device_cgroup.c, default-deny behaviour): an
    allow with the same type, major and minor as an earlier one adds its access to it
    (dev_exception_add); a deny takes access away from the rule with exactly its type,
    major and minor (dev_exception_rm: a deny never punches a hole in a wildcard); `deny a`
    starts over. A request is then allowed when one rule matches its type, major and
    minor and holds all of its access (match_exception). cgroup v2's program enforces
    exactly these rules (`bpf_program`), as runc's emulator makes its v2 rules from v1's."""
    held: Dict[Tuple[str, Optional[int], Optional[int]], int] = {}
    for rule in rules:
        if rule.type == "a":
            held.clear()
            continue
        key = (rule.type, rule.major, rule.minor)
        if rule.allow:
            held[key] = held.get(key, 0) | access_bits(rule.access)
        elif key in held:
            left = held[key] & ~access_bits(rule.access)
            if left:
                held[key] = left
            else:
                del held[key]
    return tuple(DeviceRule(t, major, minor, _access_text(bits)) for (t, major, minor), bits in held.items())


def allows(rules: Iterable[DeviceRule], kind: str, major: int, minor: int, access: str) -> bool:
    """Whether the policy of `rules` lets a process `access` the device (kind, major,
    minor): the kernel's match_exception over `policy(rules)`."""
    want = access_bits(_access(access))
    for rule in policy(rules):
        if rule.type == kind and rule.major in (None, major) and rule.minor in (None, minor) \
                and want & ~access_bits(rule.access) == 0:
            return True
    return False


# --- the cgroup v2 program ---------------------------------------------------------------
#
# A BPF_PROG_TYPE_CGROUP_DEVICE program gets `struct bpf_cgroup_dev_ctx { u32 access_type;
# u32 major; u32 minor; }` with access_type = type | access << 16 (include/uapi/linux/bpf.h)
# and returns 1 to allow, 0 to deny (EPERM). The shape is systemd's, crun's (ebpf.c) and
# runc's (devicefilter.go): load the fields into R2..R5, then one block per rule that
# jumps to the next block on any mismatch and otherwise returns the rule's verdict; the
# last block denies.

# opcodes (include/uapi/linux/bpf_common.h, bpf.h)
BPF_LDX_MEM_W = 0x61      # BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
BPF_ALU32_AND_K = 0x54    # BPF_ALU | BPF_AND | BPF_K: dst = (u32)(dst & imm)
BPF_ALU32_RSH_K = 0x74    # BPF_ALU | BPF_RSH | BPF_K: dst = (u32)dst >> imm
BPF_ALU32_MOV_X = 0xBC    # BPF_ALU | BPF_MOV | BPF_X: dst = (u32)src
BPF_ALU64_MOV_K = 0xB7    # BPF_ALU64 | BPF_MOV | BPF_K: dst = imm
BPF_JNE_K = 0x55          # BPF_JMP | BPF_JNE | BPF_K: if dst != imm: pc += off
BPF_JNE_X = 0x5D          # BPF_JMP | BPF_JNE | BPF_X: if dst != src: pc += off
BPF_EXIT = 0x95           # BPF_JMP | BPF_EXIT: return R0
R0, R1, R2, R3, R4, R5 = range(6)

BpfInsn = Tuple[int, int, int, int, int]  # code, dst, src, off, imm
_INSN = struct.Struct("=BBhi")  # struct bpf_insn: u8 code; u8 dst:4, src:4; s16 off; s32 imm


def pack_insns(insns: List[BpfInsn]) -> bytes:
    """Pack as `struct bpf_insn`; the register nibbles are bitfields, whose order follows
    the byte order (dst_reg is the low nibble on little-endian machines)."""
    little = sys.byteorder == "little"
    return b"".join(
        _INSN.pack(code, (dst | src << 4) if little else (dst << 4 | src), off, imm)
        for code, dst, src, off, imm in insns
    )


def unpack_insns(data: bytes) -> List[BpfInsn]:
    little = sys.byteorder == "little"
    out: List[BpfInsn] = []
    for code, regs, off, imm in _INSN.iter_unpack(data):
        dst, src = (regs & 0xF, regs >> 4) if little else (regs >> 4, regs & 0xF)
        out.append((code, dst, src, off, imm))
    return out


def bpf_insns(rules: Iterable[DeviceRule]) -> List[BpfInsn]:
    """The device program for `policy(rules)`, as (code, dst, src, off, imm) tuples."""
    p: List[BpfInsn] = [
        (BPF_LDX_MEM_W, R2, R1, 0, 0), (BPF_ALU32_AND_K, R2, 0, 0, 0xFFFF),  # R2 = type
        (BPF_LDX_MEM_W, R3, R1, 0, 0), (BPF_ALU32_RSH_K, R3, 0, 0, 16),      # R3 = access
        (BPF_LDX_MEM_W, R4, R1, 4, 0),                                       # R4 = major
        (BPF_LDX_MEM_W, R5, R1, 8, 0),                                       # R5 = minor
    ]
    for rule in policy(rules):
        # every rule of a policy allows (the default denies); each test jumps over the
        # rest of the block, to the next one, when the request does not match
        block: List[Tuple[int, int, int, int]] = [(BPF_JNE_K, R2, 0, TYPE_CODES[rule.type])]
        bits = access_bits(rule.access)
        if bits != 7:  # "rwm" holds any request: no test
            # the request's access must be within the rule's: (R3 & bits) == R3; R1 (the
            # context pointer) is free once the fields are loaded
            block += [(BPF_ALU32_MOV_X, R1, R3, 0), (BPF_ALU32_AND_K, R1, 0, bits),
                      (BPF_JNE_X, R1, R3, 0)]
        if rule.major is not None:
            block.append((BPF_JNE_K, R4, 0, rule.major))
        if rule.minor is not None:
            block.append((BPF_JNE_K, R5, 0, rule.minor))
        n = len(block) + 2  # the tests, then mov R0 and exit
        for i, (code, dst, src, imm) in enumerate(block):
            off = n - i - 1 if code in (BPF_JNE_K, BPF_JNE_X) else 0
            p.append((code, dst, src, off, imm))
        p += [(BPF_ALU64_MOV_K, R0, 0, 0, 1), (BPF_EXIT, 0, 0, 0, 0)]
    p += [(BPF_ALU64_MOV_K, R0, 0, 0, 0), (BPF_EXIT, 0, 0, 0, 0)]
    return p


def bpf_program(rules: Iterable[DeviceRule]) -> bytes:
    """The packed device program for `policy(rules)` (see `bpf_insns`)."""
    return pack_insns(bpf_insns(rules))


# --- what the caller asks for ------------------------------------------------------------


def _container_path(value: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise InvalidOption(f"a device's path in the container must be absolute, got {value!r}")
    clean = posixpath.normpath(value)
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")
    if clean == "/":
        raise InvalidOption("a device cannot be put at / in the container")
    return clean


def _host_path(value: str) -> str:
    # a converter, not a validator: it runs before `path`'s default is taken from it
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise InvalidOption(f"a device's host path must be absolute, got {value!r}")
    return value


@attrs.frozen
class DeviceNode:
    """One device node to put in a container: at `path` inside it, a node of `type` ('c'
    or 'b') with `major`/`minor`, whose host node is `host` (for a bind) with the host's
    `mode` (permission bits), `uid` and `gid` (as containerd's DeviceFromPath takes them),
    opened with `access`."""

    path: str
    host: str
    type: str
    major: int
    minor: int
    mode: int
    uid: int
    gid: int
    access: str = "rwm"

    @property
    def rule(self) -> DeviceRule:
        """The cgroup rule that lets the container use this node."""
        return DeviceRule(self.type, self.major, self.minor, self.access)


@attrs.frozen
class Device:
    """A host device for the container, as `docker run --device HOST[:CONTAINER[:PERMS]]`
    asks: the node at `host` (a symlink is followed, as Docker does) appears at `path` in
    the container (default: the same path) and may be used with `access` (default "rwm").
    A host directory adds every device node below it, each at the same place under `path`
    (moby's DevicesFromPath); a path that is neither raises InvalidOption at `resolve()`.
    Like Docker, the container path may be anywhere, not only under /dev."""

    host: str = attrs.field(converter=_host_path)
    path: str = attrs.field(default=attrs.Factory(lambda self: self.host, takes_self=True),
                            converter=_container_path)
    access: str = attrs.field(default="rwm", converter=_access)

    @classmethod
    def parse(cls, spec: str) -> "Device":
        """Docker's `--device` syntax (docker/cli parseDevice and validateLinuxPath):
        HOST, HOST:CONTAINER, HOST:PERMS (when the second part is a valid permission set),
        HOST:CONTAINER:PERMS."""
        if not isinstance(spec, str) or spec.count(":") > 2 or spec.startswith(":") or not spec:
            raise InvalidOption(f"invalid device {spec!r} (expected HOST[:CONTAINER[:PERMS]])")
        parts = spec.split(":")
        host, path, access = parts[0], parts[0], "rwm"
        if len(parts) == 3:
            path, access = parts[1], parts[2]
        elif len(parts) == 2:
            try:
                access = _access(parts[1])
            except InvalidOption:
                path = parts[1]
        return cls(host=host, path=path, access=access)

    def resolve(self) -> Tuple[DeviceNode, ...]:
        """Stat the host path: the node(s) to put in the container. Raises InvalidOption
        when the path does not exist or holds no device node."""
        try:
            st = os.stat(self.host)
        except OSError as exc:
            raise InvalidOption(f"device {self.host}: {exc.strerror}") from exc
        node = self._node(self.host, self.path, st)
        if node is not None:
            return (node,)
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidOption(f"device {self.host} is not a device node (nor a directory of them)")
        nodes: List[DeviceNode] = []
        # below a directory, entries are taken as they are (lstat): a symlink inside is not
        # followed, as neither filepath.WalkDir nor DeviceFromPath's Lstat does in moby
        for top, dirs, files in os.walk(self.host, followlinks=False):
            dirs.sort()
            for name in sorted(files):
                host = os.path.join(top, name)
                try:
                    entry = os.lstat(host)
                except OSError:
                    continue  # gone meanwhile
                rel = os.path.relpath(host, self.host)
                found = self._node(host, posixpath.join(self.path, rel), entry)
                if found is not None:
                    nodes.append(found)
        if not nodes:
            raise InvalidOption(f"device directory {self.host} holds no device nodes")
        return tuple(nodes)

    def _node(self, host: str, path: str, st: os.stat_result) -> Optional[DeviceNode]:
        if stat.S_ISCHR(st.st_mode):
            kind = "c"
        elif stat.S_ISBLK(st.st_mode):
            kind = "b"
        else:
            return None
        return DeviceNode(path=path, host=host, type=kind, major=os.major(st.st_rdev),
                          minor=os.minor(st.st_rdev), mode=stat.S_IMODE(st.st_mode),
                          uid=st.st_uid, gid=st.st_gid, access=self.access)


def rules_for(nodes: Iterable[DeviceNode]) -> Tuple[DeviceRule, ...]:
    """The default rules plus one allow rule per node: a container's device policy."""
    return DEFAULT_RULES + tuple(node.rule for node in nodes)


__all__ = ["Device", "DeviceNode", "DeviceRule", "DEFAULT_RULES", "policy", "allows",
           "bpf_program", "bpf_insns", "rules_for"]
