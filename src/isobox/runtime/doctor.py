"""`isobox.doctor()`: what this host lets isobox do, and why not when it does not.

Each check tries the real thing where it is cheap (a user namespace, an overlay mount in
one), so the report cannot disagree with what `Container.start` will meet.
"""

from __future__ import annotations

import os
import pathlib
import platform
import tempfile
import warnings
from typing import List, Optional

import attrs

from ..host import idmap as _idmap
from ..host import native
from ..host.fs import remove_tree
from ..host.privilege import Privilege
from ..errors import IsoboxError


@attrs.frozen
class Check:
    name: str
    ok: bool
    detail: str


@attrs.frozen
class Report:
    """The host's answers; ``str(report)`` is the text `isobox doctor` prints."""

    checks: List[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def __str__(self) -> str:
        width = max(len(c.name) for c in self.checks)
        return "\n".join(
            f"{'ok ' if c.ok else 'NO '} {c.name.ljust(width)}  {c.detail}" for c in self.checks
        )


def _read(path: str) -> Optional[str]:
    try:
        return pathlib.Path(path).read_text().strip()
    except OSError:
        return None


def _try_child(spec: native.Spec, ids: Optional[_idmap.IdMap]) -> Optional[str]:
    """Run a setup-only child (no exec); None on success, else why it failed."""
    try:
        child = native.spawn(spec)
    except IsoboxError as exc:
        return str(exc)
    try:
        if ids is not None:
            ids.apply(child.pid)
        child.release()
        return None
    except IsoboxError as exc:
        child.abandon()
        return str(exc)
    finally:
        os.waitpid(child.pid, native.WALL)
        if child.pidfd >= 0:
            os.close(child.pidfd)


def _kernel() -> Check:
    release = platform.release()
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        return Check("kernel", True, release)
    ok = (major, minor) >= (5, 11)
    return Check("kernel", ok, release + ("" if ok else ": overlayfs in a user namespace needs 5.11"))


def _userns(privilege: Privilege) -> Check:
    if not privilege.user_namespace:
        return Check("user namespaces", True, "not needed as root")
    ids = _idmap.IdMap(uids=(_idmap.IdRange(0, os.geteuid(), 1),),
                       gids=(_idmap.IdRange(0, os.getegid(), 1),), helpers=False)
    why = _try_child(native.Spec(clone_flags=native.CLONE_NEWUSER, set_ids=False), ids)
    return Check("user namespaces", why is None, why or "an unprivileged user namespace can be created")


def _subids(privilege: Privilege) -> Check:
    if not privilege.user_namespace:
        return Check("subordinate ids", True, "not needed as root")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _idmap.SubordinateIdWarning)  # the report says it
        ids = privilege.id_map()
    assert ids is not None
    if ids.helpers:
        r = ids.uids[1]
        return Check("subordinate ids", True, f"{r.size} ids from {r.host} via newuidmap/newgidmap")
    return Check("subordinate ids", False, f"{ids.fallback_reason}; other users need a range for "
                 "this user in /etc/subuid and /etc/subgid and newuidmap/newgidmap (package uidmap)")


def _overlay(privilege: Privilege) -> Check:
    in_userns = privilege.user_namespace
    tmp = tempfile.mkdtemp(prefix="isobox-doctor-")
    try:
        for d in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(tmp, d))
        op = native.Op(native.lib.IB_OP_OVERLAY, "mount overlay", os.path.join(tmp, "merged"),
                       strv=(os.path.join(tmp, "lower"),), upper=os.path.join(tmp, "upper"),
                       work=os.path.join(tmp, "work"), userxattr=in_userns)
        flags = native.CLONE_NEWNS | (native.CLONE_NEWUSER if in_userns else 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", _idmap.SubordinateIdWarning)  # _subids reports it
            ids = privilege.id_map()
        why = _try_child(native.Spec(clone_flags=flags, ops=(op,), set_ids=False), ids)
    finally:
        remove_tree(pathlib.Path(tmp), privilege)  # overlayfs leaves work/work with mode 000
    where = "in a user namespace" if in_userns else "as root"
    return Check("overlayfs", why is None, why or f"overlay mounts {where} work")


def _cgroups() -> Check:
    mounts = _read("/proc/self/mounts") or ""
    v2 = [l.split()[1] for l in mounts.splitlines() if l.split()[2:3] == ["cgroup2"]]
    v1 = [l.split()[1] for l in mounts.splitlines() if l.split()[2:3] == ["cgroup"]]
    if v2 and not v1:
        root = v2[0]
        controllers = _read(os.path.join(root, "cgroup.controllers")) or ""
        own = (_read("/proc/self/cgroup") or "").split("::")[-1]
        delegated = os.access(os.path.join(root, own.lstrip("/")), os.W_OK)
        return Check("cgroups", True, f"v2 at {root}, controllers: {controllers or 'none'}; "
                     + ("this user's cgroup is writable (delegated)" if delegated
                        else "no delegation to this user: resource limits need root"))
    if v1:
        detail = f"v1 ({len(v1)} hierarchies)" + (f" with a cgroup2 mount at {v2[0]} (hybrid)" if v2 else "")
        return Check("cgroups", True, detail + "; resource limits use v1 controllers as root only")
    return Check("cgroups", False, "no cgroup filesystem is mounted")


def _device_policy(privilege: Privilege) -> Check:
    """Make and remove the group a container would get: the device cgroup and the default
    pids limit are applied only where one can be made (cgroups.Group.for_container)."""
    from .cgroups import Group, Limits

    try:
        group = Group.for_container(f"isobox-probe-{os.getpid()}", Limits(), privilege=privilege)
    except IsoboxError as exc:
        return Check("device policy, pids", False, str(exc))
    if group is None:
        # rootless without delegation is a setting, not a fault: devices stay closed anyway
        return Check("device policy, pids", not privilege.rootful,
                     "no cgroup can be made: the default pids limit (2048) and the device cgroup "
                     "are not applied (rootless containers still cannot open devices: their "
                     "mounts are nodev, and mknod is refused in a user namespace)")
    try:
        where = "v2 (BPF device program)" if group.v2 else "v1 (devices controller)"
        parts = [f"cgroup {where}",
                 f"pids limit {group.pids_max if group.pids_max is not None else 'none'}",
                 "device policy " + ("applied" if group.devices else "not applied")]
        return Check("device policy, pids", group.devices, "; ".join(parts + list(group.notes)))
    finally:
        try:
            group.remove()
        except OSError:
            pass


def _seccomp() -> Check:
    from . import seccomp

    machine = os.uname().machine
    if machine in seccomp.SUPPORTED_MACHINES:
        return Check("seccomp", True, f"Docker's default profile, compiled for {machine}")
    return Check("seccomp", False, f"no syscall table for {machine}: containers run without a "
                 f"seccomp filter (isobox has one for {', '.join(seccomp.SUPPORTED_MACHINES)})")


def _exit_status() -> Check:
    release = platform.release()
    try:
        version = tuple(int(x) for x in release.split(".")[:2])
    except ValueError:
        version = (0, 0)
    if version >= (6, 15):
        return Check("exit statuses", True, "kept for pidfds (PIDFD_INFO_EXIT): right even if the "
                     "application reaps children itself")
    return Check("exit statuses", True, "Linux < 6.15 keeps no exit status for pidfds: an application "
                 "that ignores SIGCHLD or reaps with waitpid(-1) makes isobox raise ExitStatusLost")


def _pidfd() -> Check:
    try:
        fd = os.pidfd_open(os.getpid())
        os.close(fd)
        return Check("pidfd", True, "pidfd_open works: signals cannot hit a recycled pid")
    except (OSError, AttributeError) as exc:
        return Check("pidfd", False, f"no pidfd ({exc}): falling back to pids")


def doctor() -> Report:
    """Check what this host allows: kernel, user namespaces, subordinate ids, overlayfs,
    cgroups, the device policy and pids limit, seccomp, pidfd and exit statuses."""
    if platform.system() != "Linux":
        return Report([Check("linux", False, f"isobox needs Linux; this is {platform.system()}")])
    privilege = Privilege.current()  # what a store opened now would decide
    return Report([_kernel(), _userns(privilege), _subids(privilege), _overlay(privilege), _cgroups(),
                   _device_policy(privilege), _seccomp(), _pidfd(), _exit_status()])
