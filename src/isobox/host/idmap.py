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
import pwd
import shutil
import warnings
from typing import List, Optional, Sequence, Tuple

import attrs

from ..errors import HostNotSupported


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
    #: without helpers: why the caller's subordinate ranges are not used (None otherwise)
    fallback_reason: Optional[str] = attrs.field(default=None, eq=False)

    @property
    def single(self) -> bool:
        return not self.helpers

    def maps_uid(self, uid: int) -> bool:
        return any(r.container <= uid < r.container + r.size for r in self.uids)

    def maps_gid(self, gid: int) -> bool:
        return any(r.container <= gid < r.container + r.size for r in self.gids)

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


# Where the ranges and the helpers are looked up. Module constants rather than options or
# environment variables: they are facts of the host, and newuidmap itself reads only the
# real /etc/subuid (a redirected file could only produce maps it refuses); the tests point
# them at files of their own.
SUBUID_FILE = "/etc/subuid"
SUBGID_FILE = "/etc/subgid"
HELPER_DIRS = "/usr/bin:/usr/sbin:/bin:/sbin"  # setuid helpers, also when PATH lacks sbin


class SubordinateIdWarning(UserWarning):
    """Warned when the caller's subordinate id ranges exist but cannot be used (a malformed
    line, an unreadable file, a missing newuidmap): rootless containers then have only
    root, and the warning says why."""


def _find_helper(tool: str) -> Optional[str]:
    return shutil.which(tool) or shutil.which(tool, path=HELPER_DIRS)


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
    return _find_helper(tool) or tool


def _names(uid: int) -> Tuple[str, ...]:
    """How the caller may appear in /etc/subuid: by name or by number (subuid(5))."""
    try:
        return (pwd.getpwuid(uid).pw_name, str(uid))
    except KeyError:
        return (str(uid),)


def _read_range(path: str, uid: int) -> Tuple[Optional[Tuple[int, int]], str, bool]:
    """The caller's first usable range in an /etc/subuid-style file, or None; then why not,
    and whether that is a fault. A missing file or no line for the caller is the ordinary
    host without ranges (no fault); a line for the caller that newuidmap could not use,
    or a file that cannot be read, is one, named with its place."""
    names = _names(uid)
    problem: Optional[str] = None
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                line = raw.decode("utf-8", "replace").strip()
                parts = line.split(":")
                if not line or parts[0] not in names:
                    continue
                where = f"{path}:{number}"
                if len(parts) != 3:
                    problem = problem or (f"{where}: {line!r} needs 3 fields (name:start:count), "
                                          f"has {len(parts)}")
                elif not all(p.isascii() and p.isdigit() for p in parts[1:]):
                    problem = problem or f"{where}: {line!r}: the start or the count is not a number"
                elif int(parts[2]) <= 0:
                    problem = problem or f"{where}: {line!r}: the count must be positive"
                else:
                    return (int(parts[1]), int(parts[2])), "", False
    except FileNotFoundError:
        return None, f"there is no {path}", False
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror}", True
    if problem is not None:
        return None, problem + " (the line is not used)", True
    return None, f"no range for {names[0]} in {path}", False


def for_caller() -> IdMap:
    """The map a rootless container of this caller gets (see the module docstring).

    Falling back to root only is quiet when the host simply has no range for the caller
    (``fallback_reason`` still says so, for `isobox.doctor`); when something was there but
    cannot be used, a `SubordinateIdWarning` says what, since the error that follows
    ("uid 1000 is not mapped") would otherwise blame a range that seems to exist."""
    uid, gid = os.geteuid(), os.getegid()
    sub_u, why_u, bad_u = _read_range(SUBUID_FILE, uid)
    sub_g, why_g, bad_g = _read_range(SUBGID_FILE, uid)
    if sub_u is not None and sub_g is not None:
        missing = [t for t in ("newuidmap", "newgidmap") if _find_helper(t) is None]
        if not missing:
            return IdMap(
                uids=(IdRange(0, uid, 1), IdRange(1, sub_u[0], sub_u[1])),
                gids=(IdRange(0, gid, 1), IdRange(1, sub_g[0], sub_g[1])),
                helpers=True,
            )
        reason = (f"{' and '.join(missing)} not found (in PATH or {HELPER_DIRS}): install the "
                  f"uidmap package to use the ranges in {SUBUID_FILE} and {SUBGID_FILE}")
        fault = True
    elif bad_u or bad_g:
        reason = "; ".join(why for why, bad in ((why_u, bad_u), (why_g, bad_g)) if bad)
        fault = True
    elif sub_u is not None or sub_g is not None:
        reason = (f"{why_g or why_u}, so the range in {SUBUID_FILE if sub_u else SUBGID_FILE} "
                  "is not used either")
        fault = True
    else:
        reason = f"{why_u}; {why_g}"
        fault = False
    reason = f"rootless containers get only root: {reason}"
    if fault:
        warnings.warn(reason, SubordinateIdWarning, stacklevel=2)
    return IdMap(uids=(IdRange(0, uid, 1),), gids=(IdRange(0, gid, 1),), helpers=False,
                 fallback_reason=reason)


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
    spec = native.Spec(clone_flags=native.CLONE_NEWUSER, ops=tuple(ops), set_ids=False)
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
