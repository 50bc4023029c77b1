"""User-namespace id maps: who the caller becomes inside a rootless container.

Two shapes, chosen once per container:
- the caller's /etc/subuid and /etc/subgid ranges through the setuid helpers
  newuidmap/newgidmap (shadow's uidmap package): container root is the caller, ids
  1..N are the range, so images with several users work, as in rootless Podman;
- otherwise a single mapping, caller -> 0, written directly; setgroups must then be
  denied (user_namespaces(7), "The /proc/[pid]/setgroups file") and no other id exists.
"""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
from typing import List, Optional, Sequence, Tuple

import attrs

from .errors import HostNotSupported, StoreError


@attrs.frozen
class IdRange:
    container: int
    host: int
    size: int


@attrs.frozen
class IdMap:
    uids: Tuple[IdRange, ...]
    gids: Tuple[IdRange, ...]
    helpers: bool  # written through newuidmap/newgidmap

    @property
    def single(self) -> bool:
        return not self.helpers

    def maps_uid(self, uid: int) -> bool:
        return any(r.container <= uid < r.container + r.size for r in self.uids)

    def maps_gid(self, gid: int) -> bool:
        return any(r.container <= gid < r.container + r.size for r in self.gids)

    def host_uid(self, uid: int) -> Optional[int]:
        for r in self.uids:
            if r.container <= uid < r.container + r.size:
                return r.host + uid - r.container
        return None

    def apply(self, pid: int) -> None:
        """Write the maps for a child that waits for them. Raises HostNotSupported."""
        if self.helpers:
            for tool, ranges in (("newuidmap", self.uids), ("newgidmap", self.gids)):
                args = [_helper(tool), str(pid)]
                for r in ranges:
                    args += [str(r.container), str(r.host), str(r.size)]
                code, err = _run_helper(args)
                if code != 0:
                    raise HostNotSupported(
                        f"{tool} failed: {err.strip() or code}; "
                        "check the caller's ranges in /etc/subuid and /etc/subgid"
                    )
            return
        try:
            _write(f"/proc/{pid}/setgroups", "deny")
            _write(f"/proc/{pid}/uid_map", _lines(self.uids))
            _write(f"/proc/{pid}/gid_map", _lines(self.gids))
        except OSError as exc:
            raise HostNotSupported(f"cannot write the user namespace id map: {exc}") from exc


def _lines(ranges: Tuple[IdRange, ...]) -> str:
    return "".join(f"{r.container} {r.host} {r.size}\n" for r in ranges)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _run_helper(args: List[str]) -> Tuple[int, str]:
    """Run a setuid helper (newuidmap) and return its status and stderr.  Started by the
    native core rather than subprocess: subprocess's pipes (its exec-error pipe, captured
    output) would be inherited by a process the application forks meanwhile, and the start
    would wait for that process to exit; the core's pidfd keeps the status ours whatever
    the application reaps (native.wait_exit)."""
    from . import native

    err_fd = os.memfd_create("isobox-helper-stderr", os.MFD_CLOEXEC)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        spec = native.Spec(clone_flags=0, set_ids=False, no_new_privs=False,  # setuid helper
                           stdio=(null, null, err_fd), argv=tuple(args), env=("PATH=/usr/bin:/bin",),
                           path="/usr/bin:/bin:/usr/sbin:/sbin")
        child = native.spawn(spec)
        try:
            child.release()
        finally:  # reaped whatever happened (a failed exec exits at once)
            try:
                code = native.wait_exit(child.pidfd) if child.pidfd >= 0 else \
                    os.waitstatus_to_exitcode(os.waitpid(child.pid, native.WALL)[1])
            finally:
                if child.pidfd >= 0:
                    os.close(child.pidfd)
        return code if code is not None else -1, os.pread(err_fd, 4096, 0).decode(errors="replace")
    finally:
        os.close(err_fd)
        os.close(null)


def _helper(tool: str) -> str:
    return shutil.which(tool) or shutil.which(tool, path="/usr/bin:/usr/sbin:/bin:/sbin") or tool


def subid_range(path: str, uid: int) -> Optional[Tuple[int, int]]:
    """The first range for uid (by name or number) in /etc/subuid-style files."""
    try:
        name: Optional[str] = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) != 3 or parts[0] not in (name, str(uid)):
                    continue
                try:
                    start, count = int(parts[1]), int(parts[2])
                except ValueError:
                    continue
                if count > 0:
                    return start, count
    except OSError:
        return None
    return None


def for_caller() -> IdMap:
    """The map a rootless container of this caller gets (see the module docstring)."""
    uid, gid = os.geteuid(), os.getegid()
    sub_u = subid_range("/etc/subuid", uid)
    sub_g = subid_range("/etc/subgid", uid)
    if sub_u and sub_g and shutil.which(_helper("newuidmap")) and shutil.which(_helper("newgidmap")):
        return IdMap(
            uids=(IdRange(0, uid, 1), IdRange(1, sub_u[0], sub_u[1])),
            gids=(IdRange(0, gid, 1), IdRange(1, sub_g[0], sub_g[1])),
            helpers=True,
        )
    return IdMap(uids=(IdRange(0, uid, 1),), gids=(IdRange(0, gid, 1),), helpers=False)


def chown_in_userns(root: str, entries: "Sequence[Tuple[str, int, int, Optional[int]]]", ids: IdMap) -> None:
    """Give files under root (a layer being unpacked without root) their archive owners:
    (relative path, uid, gid, mode to restore or None), done by the native core as root of
    a user namespace with the caller's subordinate ranges, so the host stores subuids.
    Ids outside the ranges are left to the caller (the file stays the container's root's)."""
    from . import native

    ops = []
    for rel, uid, gid, mode in entries:
        if not (ids.maps_uid(uid) and ids.maps_gid(gid)):
            continue
        ops.append(native.Op(
            native.lib.IB_OP_CHOWN_IN, f"chown {rel} to {uid}:{gid}", rel, source=root,
            dev=(uid << 32) | gid, mode=mode or 0, chmod=mode is not None,
            optional=True,  # a later entry of the layer may have removed it
        ))
    if not ops:
        return
    spec = native.Spec(clone_flags=CLONE_NEWUSER, ops=tuple(ops), set_ids=False)
    child = native.spawn(spec)
    try:
        ids.apply(child.pid)
        child.release()
    except BaseException:
        child.abandon()
        raise
    finally:
        os.waitpid(child.pid, native.WALL)
        if child.pidfd >= 0:
            os.close(child.pidfd)


CLONE_NEWUSER = 0x10000000


def remove_in_userns(path: pathlib.Path, ids: Optional[IdMap] = None) -> None:
    """Remove a tree holding files of the caller's subordinate ids (a rootless container's
    writes, a rootless pull's layers), which the caller cannot: from inside a user
    namespace with the same map, by the native core (store.remove_tree calls this when a
    plain removal is refused)."""
    ids = ids or for_caller()
    if not ids.helpers:
        raise StoreError(f"cannot remove {path}: permission denied")
    from . import native

    spec = native.Spec(
        clone_flags=native.CLONE_NEWUSER,
        ops=(native.Op(native.lib.IB_OP_RMTREE, f"remove {path}", str(path)),),
        set_ids=False,
        no_new_privs=True,
    )
    child = native.spawn(spec)
    try:
        ids.apply(child.pid)
        child.release()
    finally:
        _, status = os.waitpid(child.pid, native.WALL)
        if child.pidfd >= 0:
            os.close(child.pidfd)
    if status != 0:
        raise StoreError(f"cannot remove {path} inside the user namespace (status {status})")
