"""Resource limits through cgroups: memory, pids and CPU, and OOM reporting.

A container's cgroups are children of its owner's own cgroups (per controller, from
/proc/self/cgroup), so whatever accounts for the owner still accounts for its containers,
and isobox never moves or limits a process it did not start. The child is moved in by
the parent while it waits for its go byte (before anything runs in it); the groups are
removed when the container is reaped, and by the next start's sweep after an owner died.

Both hierarchies: cgroup v2 (the unified hierarchy, where our cgroup is writable: root,
or a delegated subtree) and v1 (the memory, pids and cpu controllers, as root). Where
neither can be written, asking for a limit raises HostNotSupported naming why.
"""

from __future__ import annotations

import errno
import os
import pathlib
import re
from typing import Dict, List, Optional, Union

import attrs

from .errors import HostNotSupported, InvalidOption

V1_CONTROLLERS = ("memory", "pids", "cpu")
PERIOD_US = 100_000


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
    """What to limit; None means no limit."""

    memory: Optional[int] = attrs.field(default=None, converter=parse_bytes)
    pids: Optional[int] = None
    cpus: Optional[float] = None

    def __attrs_post_init__(self) -> None:
        if self.pids is not None and self.pids < 1:
            raise InvalidOption(f"pids_limit must be at least 1, got {self.pids}")
        if self.cpus is not None and not 0.01 <= self.cpus <= 1024:
            raise InvalidOption(f"cpus must be between 0.01 and 1024, got {self.cpus}")

    @property
    def any(self) -> bool:
        return self.memory is not None or self.pids is not None or self.cpus is not None


def _own_paths() -> Dict[str, str]:
    """controller (or "" for v2) -> our cgroup path, from /proc/self/cgroup."""
    out: Dict[str, str] = {}
    for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


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
    on kernel objects, not a value: a plain class (building an attrs class is ~0.5 ms of
    every `isobox run`, and most containers have no limits)."""

    __slots__ = ("dirs", "v2")

    def __init__(self, dirs: List[pathlib.Path], v2: bool) -> None:
        self.dirs = dirs
        self.v2 = v2

    @classmethod
    def create(cls, name: str, limits: Limits) -> "Group":
        mounts, own = _mounts(), _own_paths()
        v2_root = mounts.get("")
        if v2_root is not None and "" in own:
            controllers = (pathlib.Path(v2_root) / "cgroup.controllers")
            available = controllers.read_text().split() if controllers.exists() else []
            wanted = [c for c, v in (("memory", limits.memory), ("pids", limits.pids),
                                     ("cpu", limits.cpus)) if v is not None]
            if all(c in available for c in wanted):
                return cls._create_v2(pathlib.Path(v2_root), own[""], name, limits, wanted)
        missing = [c for c in V1_CONTROLLERS if c not in mounts or c not in own]
        needed = [c for c, v in (("memory", limits.memory), ("pids", limits.pids),
                                 ("cpu", limits.cpus)) if v is not None]
        if any(c in missing for c in needed):
            raise HostNotSupported(
                f"no cgroup controller for {', '.join(c for c in needed if c in missing)} on this host")
        group = cls([], v2=False)
        try:
            for c in needed:
                d = pathlib.Path(mounts[c]) / own[c].lstrip("/") / name
                _mkdir(d)
                group.dirs.append(d)
                if c == "memory":
                    _write(d / "memory.limit_in_bytes", str(limits.memory))
                elif c == "pids":
                    _write(d / "pids.max", str(limits.pids))
                else:
                    _write(d / "cpu.cfs_period_us", str(PERIOD_US))
                    _write(d / "cpu.cfs_quota_us", str(int((limits.cpus or 1) * PERIOD_US)))
        except BaseException:
            group.remove()
            raise
        return group

    @classmethod
    def _create_v2(cls, root: pathlib.Path, own: str, name: str, limits: Limits,
                   wanted: List[str]) -> "Group":
        parent = root / own.lstrip("/")
        d = parent / name
        # a v2 cgroup with processes cannot have children with controllers ("no internal
        # processes"): enabling them in our own cgroup fails then, and we say so
        try:
            _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        except HostNotSupported as exc:
            raise HostNotSupported(
                f"cannot enable {', '.join(wanted)} for child cgroups of {parent}: {exc}; "
                "run isobox from a cgroup without processes of its own, or delegated to you"
            ) from exc
        _mkdir(d)
        group = cls([d], v2=True)
        try:
            if limits.memory is not None:
                _write(d / "memory.max", str(limits.memory))
                _write(d / "memory.swap.max", "0") if (d / "memory.swap.max").exists() else None
            if limits.pids is not None:
                _write(d / "pids.max", str(limits.pids))
            if limits.cpus is not None:
                _write(d / "cpu.max", f"{int(limits.cpus * PERIOD_US)} {PERIOD_US}")
        except BaseException:
            group.remove()
            raise
        return group

    def add(self, pid: int) -> None:
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def open_procs(self) -> List[int]:
        """Write fds of the groups' cgroup.procs, for a process that enters them itself."""
        fds: List[int] = []
        try:
            for d in self.dirs:
                fds.append(os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
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
        for d in self.dirs:
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
        self.dirs = []


def sweep(name: str) -> None:
    """Remove a dead container's groups (its owner could not)."""
    mounts, own = _mounts(), _own_paths()
    for c, mount in mounts.items():
        if c in own:
            try:
                os.rmdir(pathlib.Path(mount) / own[c].lstrip("/") / name)
            except OSError:
                pass


def _mkdir(d: pathlib.Path) -> None:
    try:
        d.mkdir()
    except FileExistsError:
        pass
    except OSError as exc:
        raise HostNotSupported(
            f"cannot create the cgroup {d}: {exc.strerror}; resource limits need root or a "
            "cgroup v2 subtree delegated to this user"
        ) from exc


def _write(path: pathlib.Path, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        raise HostNotSupported(f"cannot write {path}: {exc.strerror}") from exc
