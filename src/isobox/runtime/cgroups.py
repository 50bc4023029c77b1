"""A container's cgroup: its device policy, a default pids limit, the caller's memory, pids
and CPU limits, and OOM reporting.

Every container gets a group wherever cgroups can be written (as root; rootless, only a
delegated cgroup v2 subtree), carrying:

* the device policy (devices.py: Docker's default allowlist plus the caller's `devices`):
  mknod of any node, but open(2) only of the allowed ones, as Docker and Podman enforce.
  On cgroup v1 it is the `devices` controller (`devices.deny a`, then one allow per
  rule); on cgroup v2 an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE attached to the
  group (native core, _native/bpf.c), which runs together with, never instead of, the
  programs of the groups above it (BPF_F_ALLOW_MULTI);
* a pids limit of 2048 unless the caller says otherwise (Podman's default, where the pids
  controller is available): a fork bomb stops there instead of exhausting the host's pids.
  `pids_limit=-1` or `0` means no limit, as both Docker and Podman spell it;
* the caller's limits (memory, pids, CPU).

A container's cgroups are children of its owner's own cgroups (per controller, from
/proc/self/cgroup), so whatever accounts for the owner still accounts for its containers,
and isobox never moves or limits a process it did not start. The child is moved in by
the parent while it waits for its go byte (before anything runs in it); the groups are
removed when the container is reaped, and by the next start's sweep after an owner died.

Which hierarchy: cgroup v1 wherever the host has v1 controllers (v1, or "hybrid" with a
cgroup2 mount beside them: the controllers, the devices one too, live in v1 there), else
cgroup v2. Where no group can be made (rootless without delegation), a container runs
without one, silently, unless the caller asked for a limit: then HostNotSupported names
why. `doctor` says what is not applied. What still holds without a cgroup: a rootless
container lives in a user namespace, where every mount it can make or write is nodev
(the kernel marks superblocks made there SB_I_NODEV), and the nodev mounts isobox makes.

Rootless with a delegated v2 subtree: the pids limit (and the caller's limits) apply; the
device program does not, because loading one needs CAP_BPF/CAP_SYS_ADMIN in the initial
user namespace (bpf(2)). Nothing is lost: in the container's user namespace a device node
cannot be opened on a mount made there (SB_I_NODEV again), and mknod of a device is
refused (EPERM: CAP_MKNOD counts only in the initial user namespace, mknod(2)). A
rootless container can open no device its user could not open anyway: nodes it makes are
refused, mounts made in its namespace are nodev, and what is bound in from the host is
opened with the user's own rights.
"""

from __future__ import annotations

import errno
import os
import pathlib
import re
from typing import Dict, List, Optional, Sequence, Union

import attrs

from . import devices as _devices
from ..errors import HostNotSupported, InvalidOption
from ..host.privilege import Privilege

V1_CONTROLLERS = ("memory", "pids", "cpu", "devices")
PERIOD_US = 100_000

# Podman's default (containers.conf pids_limit; `podman run --pids-limit`: "The default is
# 2048 on systems that support the pids cgroup controller"). Docker has none by default.
DEFAULT_PIDS_LIMIT = 2048

# What keeps an unprivileged owner from loading the device program (bpf(2): EPERM without
# CAP_BPF/CAP_SYS_ADMIN, or when an ancestor's program was attached without
# BPF_F_ALLOW_MULTI; ENOSYS on a kernel without CONFIG_BPF_SYSCALL). Anything else, a
# verifier rejection above all, is a bug here and is raised.
_BPF_UNAVAILABLE = (errno.EPERM, errno.EACCES, errno.ENOSYS)
# mkdir of a group we may not create: no root, no delegation, a read-only cgroupfs
_NO_ACCESS = (errno.EACCES, errno.EPERM, errno.EROFS)


def parse_bytes(value: Union[int, str, None]) -> Optional[int]:
    """Docker's memory units: 64m, 1g, 512k, or a number of bytes."""
    if value is None:
        return None
    if isinstance(value, int):
        if value <= 0:
            raise InvalidOption(f"memory limit must be positive, got {value}")
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([bkmgBKMG]?)[bB]?\s*", str(value))
    if not m:
        raise InvalidOption(f"invalid memory size {value!r} (use bytes or e.g. 64m, 1g)")
    n = int(m.group(1)) * {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    if n < 6 << 20:
        raise InvalidOption(f"memory limit {value!r} is below Docker's minimum of 6m")
    return n


@attrs.frozen
class Limits:
    """What to limit. memory and cpus: None means no limit. pids: None means the default
    (DEFAULT_PIDS_LIMIT where a cgroup can carry it), -1 or 0 no limit (Docker's and
    Podman's spellings), a positive number that limit."""

    memory: Optional[int] = attrs.field(default=None, converter=parse_bytes)
    pids: Optional[int] = None
    cpus: Optional[float] = None

    def __attrs_post_init__(self) -> None:
        if self.pids is not None and (isinstance(self.pids, bool) or not isinstance(self.pids, int)
                                      or self.pids < -1):
            raise InvalidOption(f"pids_limit must be a positive number, or -1 or 0 for no limit, got {self.pids!r}")
        if self.cpus is not None and not 0.01 <= self.cpus <= 1024:
            raise InvalidOption(f"cpus must be between 0.01 and 1024, got {self.cpus}")

    @property
    def any(self) -> bool:
        """Whether the caller asked for a limit: then a cgroup is required."""
        return self.memory is not None or self.cpus is not None or (self.pids or 0) > 0

    @property
    def pids_max(self) -> Optional[int]:
        """The pids limit to set, None for none."""
        if self.pids is None:
            return DEFAULT_PIDS_LIMIT
        return self.pids if self.pids > 0 else None


class Layout:
    """Where this process's cgroups are: per v1 controller its directory, and its
    directory in the unified (v2) hierarchy, from /proc/self/mounts and /proc/self/cgroup."""

    __slots__ = ("v1", "v2")

    def __init__(self, v1: Dict[str, pathlib.Path], v2: Optional[pathlib.Path]) -> None:
        self.v1 = v1
        self.v2 = v2

    @classmethod
    def read(cls) -> "Layout":
        mounts, own = _mounts(), _own_paths()
        v1 = {c: pathlib.Path(mounts[c]) / own[c].lstrip("/")
              for c in V1_CONTROLLERS if c in mounts and c in own}
        v2 = pathlib.Path(mounts[""]) / own[""].lstrip("/") if "" in mounts and "" in own else None
        return cls(v1, v2)

    @property
    def uses_v2(self) -> bool:
        return self.v2 is not None and not self.v1


def _own_paths() -> Dict[str, str]:
    """controller (or "" for v2) -> our cgroup path, from /proc/self/cgroup."""
    out: Dict[str, str] = {}
    for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def mount_points() -> Dict[str, str]:
    """Each v1 controller's mount point, and "" for the unified (v2) one: where an
    absolute cgroup path (an OCI bundle's cgroupsPath) starts."""
    return _mounts()


def _mounts() -> Dict[str, str]:
    """controller (or "" for v2) -> mount point."""
    out: Dict[str, str] = {}
    for line in pathlib.Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        if fields[2] == "cgroup2":
            out.setdefault("", fields[1])
        elif fields[2] == "cgroup":
            for opt in fields[3].split(","):
                if opt in V1_CONTROLLERS:
                    out.setdefault(opt, fields[1])
    return out


class Group:
    """One container's cgroups (one directory per v1 controller, or one on v2). A handle
    on kernel objects, not a value: a plain class (building an attrs instance costs more,
    and this is made for every container start).

    `pids_max` is the pids limit in force (None: none); `devices` whether the device
    policy is enforced; `notes` says what a default could not be applied and why."""

    __slots__ = ("dirs", "v2", "pids_max", "devices", "notes")

    def __init__(self, dirs: List[pathlib.Path], v2: bool) -> None:
        self.dirs = dirs
        self.v2 = v2
        self.pids_max: Optional[int] = None
        self.devices = False
        self.notes: List[str] = []

    @classmethod
    def for_container(cls, name: str, limits: Limits,
                      devices: Sequence[_devices.DeviceNode] = (),
                      layout: Optional[Layout] = None, *,
                      privilege: Optional[Privilege] = None) -> Optional["Group"]:
        """The group of a container about to start: the device policy (the default rules
        plus one per node of `devices`), the pids limit and the caller's limits. None when
        this host lets us make no group and the caller asked for no limit; with a limit
        asked for, HostNotSupported says why instead. `layout` defaults to this process's
        cgroups (tests pass a v2-only one to exercise v2 on a hybrid host); `privilege`
        (the container's store's; default: this process's) whether a v2 device program
        can be loaded."""
        layout = layout or Layout.read()
        extra = tuple(node.rule for node in devices)
        if layout.uses_v2:
            assert layout.v2 is not None
            privilege = privilege or Privilege.current()
            return cls._create_v2(layout.v2, name, limits, _devices.DEFAULT_RULES + extra,
                                  privilege.device_program)
        if layout.v1:
            return cls._create_v1(layout.v1, name, limits, extra)
        if limits.any:
            raise HostNotSupported("no cgroup hierarchy is mounted on this host: resource limits need one")
        return None

    @classmethod
    def create(cls, name: str, limits: Limits) -> "Group":
        """A group that must exist (the caller asked for limits): HostNotSupported when
        none can be made."""
        group = cls.for_container(name, limits)
        if group is None:
            raise HostNotSupported("cannot create a cgroup on this host: resource limits need root "
                                   "or a cgroup v2 subtree delegated to this user")
        return group

    @classmethod
    def _create_v1(cls, own: Dict[str, pathlib.Path], name: str, limits: Limits,
                   extra: Sequence[_devices.DeviceRule]) -> Optional["Group"]:
        pids_max = limits.pids_max
        explicit = [c for c, v in (("memory", limits.memory), ("cpu", limits.cpus),
                                   ("pids", limits.pids if (limits.pids or 0) > 0 else None))
                    if v is not None]
        missing = [c for c in explicit if c not in own]
        if missing:
            raise HostNotSupported(f"no cgroup controller for {', '.join(missing)} on this host")
        wanted = list(explicit)
        group = cls([], v2=False)
        if pids_max is not None and "pids" not in wanted:
            if "pids" in own:
                wanted.append("pids")
            else:
                group.notes.append("no pids controller: the default pids limit is not applied")
        if "devices" in own:
            wanted.append("devices")
        else:
            group.notes.append("no devices controller: the device policy is not enforced")
        if not wanted:
            return None
        try:
            for c in wanted:
                d = own[c] / name
                if not _mkdir(d, required=bool(explicit)):
                    group.remove()
                    return None
                group.dirs.append(d)
                if c == "memory":
                    _write(d / "memory.limit_in_bytes", str(limits.memory))
                elif c == "cpu":
                    _write(d / "cpu.cfs_period_us", str(PERIOD_US))
                    _write(d / "cpu.cfs_quota_us", str(int((limits.cpus or 1) * PERIOD_US)))
                elif c == "pids":
                    _write(d / "pids.max", str(pids_max))
                    group.pids_max = pids_max
                else:
                    _v1_device_policy(d, extra)
                    group.devices = True
        except BaseException:
            group.remove()
            raise
        return group

    @classmethod
    def _create_v2(cls, parent: pathlib.Path, name: str, limits: Limits,
                   rules: Sequence[_devices.DeviceRule], device_program: bool) -> Optional["Group"]:
        pids_max = limits.pids_max
        explicit = [c for c, v in (("memory", limits.memory), ("cpu", limits.cpus),
                                   ("pids", limits.pids if (limits.pids or 0) > 0 else None))
                    if v is not None]
        available = _read_words(parent / "cgroup.controllers")
        missing = [c for c in explicit if c not in available]
        if missing:
            raise HostNotSupported(
                f"no cgroup controller for {', '.join(missing)} in {parent} (cgroup.controllers: "
                f"{' '.join(available) or 'none'}); delegate it to this cgroup")
        group = cls([], v2=True)
        wanted = list(explicit)
        if pids_max is not None and "pids" not in wanted:
            if "pids" in available:
                wanted.append("pids")
            else:
                group.notes.append(f"no pids controller in {parent}: the default pids limit is not applied")
        # Loading a device program needs CAP_BPF/CAP_SYS_ADMIN in the initial user
        # namespace; a rootless owner has neither, and needs it not (module docstring).
        if not device_program:
            group.notes.append("rootless: no device program (the user namespace keeps device nodes unusable)")
        enabled = _read_words(parent / "cgroup.subtree_control")
        enable = [c for c in wanted if c not in enabled]
        if enable:
            # a v2 cgroup with processes cannot give its children controllers ("no internal
            # processes", cgroup-v2.rst): enabling them in our own cgroup fails then
            try:
                _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in enable))
            except HostNotSupported as exc:
                if explicit:
                    raise HostNotSupported(
                        f"cannot enable {', '.join(enable)} for child cgroups of {parent}: {exc}; "
                        "run isobox from a cgroup without processes of its own, or delegated to you"
                    ) from exc
                # only the default was wanted: go without it
                wanted = []
                group.notes.append(f"cannot enable pids for child cgroups of {parent} ({exc}): "
                                   "the default pids limit is not applied")
        if not wanted and not device_program:
            return None  # a group that would carry nothing
        d = parent / name
        if not _mkdir(d, required=bool(explicit)):
            return None
        group.dirs.append(d)
        try:
            if limits.memory is not None:
                _write(d / "memory.max", str(limits.memory))
                if (d / "memory.swap.max").exists():
                    _write(d / "memory.swap.max", "0")
            if "pids" in wanted and pids_max is not None:
                _write(d / "pids.max", str(pids_max))
                group.pids_max = pids_max
            if limits.cpus is not None:
                _write(d / "cpu.max", f"{int(limits.cpus * PERIOD_US)} {PERIOD_US}")
            if device_program:
                why = attach_device_program(d, rules)
                if why is None:
                    group.devices = True
                else:
                    group.notes.append(why)
        except BaseException:
            group.remove()
            raise
        return group

    def add(self, pid: int) -> None:
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def open_entries(self) -> List[int]:
        """Write fds through which a single-threaded process enters the groups itself by
        writing "0": each v1 hierarchy's `tasks` (moving oneself there skips the global
        lock a move by pid takes, see spawn.c's enter_cgroups), v2's `cgroup.procs`."""
        entry = "cgroup.procs" if self.v2 else "tasks"
        fds: List[int] = []
        try:
            for d in self.dirs:
                fds.append(os.open(d / entry, os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of the group."""
        for d in self.dirs:
            events = d / ("memory.events" if self.v2 else "memory.oom_control")
            try:
                text = events.read_text()
            except OSError:
                continue
            m = re.search(r"^oom_kill (\d+)$", text, re.M)
            if m and int(m.group(1)) > 0:
                return True
        return False

    def remove(self) -> None:
        """Remove the directories (EBUSY, a process still in one, is left to the sweep).
        On v2 this also detaches and frees the device program: the cgroup held it."""
        for d in self.dirs:
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
        self.dirs = []


def _v1_device_policy(d: pathlib.Path, extra: Sequence[_devices.DeviceRule]) -> None:
    """`deny a`, then Docker's default allow rules and the caller's, one write each (the
    kernel parses one rule per write(2)). The devices controller refuses (EPERM) to allow
    in a child what its parent does not: the owner's own group is stricter there, and the
    device stays denied, as it is for the owner. For a default rule that is fine; for one
    the caller asked for it is an error naming the rule."""
    _write(d / "devices.deny", "a")
    fd = os.open(d / "devices.allow", os.O_WRONLY | os.O_CLOEXEC)
    try:
        for rule, required in [(r, False) for r in _devices.policy(_devices.DEFAULT_RULES)] + \
                [(r, True) for r in extra]:
            try:
                os.write(fd, str(rule).encode())
            except OSError as exc:
                if exc.errno == errno.EPERM and not required:
                    continue
                raise HostNotSupported(
                    f"cannot allow device {rule} in {d}: {exc.strerror}"
                    + ("; the owner's own devices cgroup does not allow it" if exc.errno == errno.EPERM else "")
                ) from exc
    finally:
        os.close(fd)


def attach_device_program(d: pathlib.Path, rules: Sequence[_devices.DeviceRule]) -> Optional[str]:
    """Load the device program for `rules` and attach it to the v2 cgroup `d`. Returns
    None, or why the host does not let us (EPERM, ENOSYS: see _BPF_UNAVAILABLE); raises
    for anything else (a program the verifier refuses is a bug here)."""
    from ..host.native import ffi, lib  # the native core, only where a v2 group is made

    program = _devices.bpf_program(rules)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        log = ffi.new("char[]", 1 << 16)
        failed = ffi.new("int *")
        rc = lib.ib_bpf_device_filter(fd, program, len(program) // 8, log, 1 << 16, failed)
    finally:
        os.close(fd)
    if rc == 0:
        return None
    what = "load" if failed[0] == lib.IB_BPF_LOAD else "attach"
    if -rc in _BPF_UNAVAILABLE:
        return f"cannot {what} the device program on {d} ({os.strerror(-rc)}): the device policy is not enforced"
    text = ffi.string(log).decode(errors="replace").strip()
    raise HostNotSupported(f"cannot {what} the device program on {d}: {os.strerror(-rc)}"
                           + (f"\n{text}" if text else ""))


def sweep(name: str) -> None:
    """Remove a dead container's groups (its owner could not)."""
    mounts, own = _mounts(), _own_paths()
    for c, mount in mounts.items():
        if c in own:
            try:
                os.rmdir(pathlib.Path(mount) / own[c].lstrip("/") / name)
            except OSError:
                pass


def _read_words(path: pathlib.Path) -> List[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _mkdir(d: pathlib.Path, required: bool) -> bool:
    """Create the group's directory: False when we may not and nothing requires it."""
    try:
        d.mkdir()
    except FileExistsError:
        pass
    except OSError as exc:
        if not required and exc.errno in _NO_ACCESS:
            return False
        raise HostNotSupported(
            f"cannot create the cgroup {d}: {exc.strerror}; resource limits need root or a "
            "cgroup v2 subtree delegated to this user"
        ) from exc
    return True


def _write(path: pathlib.Path, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        raise HostNotSupported(f"cannot write {path}: {exc.strerror}") from exc
