"""Resolving Docker's `user` strings against the image's own /etc/passwd and /etc/group.

The rules are Docker's: moby's getUser over runc's libcontainer/user.GetExecUser, with
runc's setgroups:

- the spec is "user[:group]" (a third field is ignored, as runc's parseLine ignores it);
  "" is uid 0. A number (Go's strconv.Atoi: an optional sign, ASCII digits) is always a
  uid, looked up by number; anything else is a name that must exist.
- the first passwd entry that matches wins and gives the name, gid and home. A uid with
  no entry runs with gid 0 and home "/", within 0..2**31-1 (runc's ErrRange).
- an explicit group (name or number, first match; a number need not exist) replaces the
  gid and leaves no supplementary groups but itself. Without one, and with a user found
  by name or number, the supplementary groups are every group listing that name.
- the primary gid is always in the supplementary list (moby since 20.10.18,
  CVE-2022-36109; podman since 4.2 when a user is given, CVE-2022-2989), and runc's
  setgroups gets the list without duplicates (GetAdditionalGroups keeps a set).

Where isobox differs on purpose: lines glibc ignores are ignored (empty, '#' comments,
fewer than 4 passwd / 3 group fields, ids that are not numbers), where runc would read a
garbage line's ids as 0, i.e. as root; an empty home is "/".

The files are read as the container's overlay shows them, from the layer directories
(and, for exec, the container's upper directory) on the host (`isobox.images.overlay`).
A running container writes its upper directory while we read it, so every file is
reached one component at a time from a descriptor of its layer with O_PATH|O_NOFOLLOW: a
directory swapped for a symlink to the host's /etc is refused, never followed. Only what fstat of that O_PATH descriptor shows to be a
regular file is opened for reading (through the descriptor itself, so a FIFO or a
device swapped in meanwhile is never opened: opening a FIFO blocks, and opening a
device node a container made can have effects on the host, as a watchdog's does), and
at most MAX_DB_SIZE bytes are read. A symlink is not followed even inside the layer
(Docker follows it within the container's root); the error then says so.
"""

from __future__ import annotations

import os
import pathlib
import re
import stat
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import attrs

from ..errors import InvalidOption
from ..images import overlay as _overlay

MAX_DB_SIZE = 4 << 20  # an image's passwd file is small; read no more of a giant one
MAX_ID = (1 << 31) - 1  # runc's maxID for ids given as numbers ("for 32-bit systems")
MAX_FILE_ID = 0xFFFFFFFE  # an id in the files must still fit setuid(2) ((uid_t)-1 is "none")

@attrs.frozen
class ResolvedUser:
    uid: int
    gid: int
    groups: Tuple[int, ...] = ()
    home: str = "/"
    name: Optional[str] = None


@attrs.frozen
class ImageFile:
    """A file as the container's overlay shows it: its text (None when it is not there
    or cannot be read) and, when something stopped the lookup, why (for error messages)."""

    text: Optional[str]
    why: Optional[str] = None


# Every container start reads passwd and group. The text of a file is kept by the
# identity of the inode it was read from (device, inode, size, times, mode), as fstat of
# the descriptor the safe lookup reaches reports it: a file that changed, or another file
# swapped in, has another identity and is read again. Bounded: a long-lived process
# running many images keeps the last few.
_cache: Dict[Tuple[int, ...], str] = {}
_CACHE_SIZE = 64


def _identity(st: os.stat_result) -> Tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link (not followed)"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _open_regular(found: _overlay.Found, shown: str) -> "Tuple[Optional[int], Optional[str]]":
    """An fd to read the regular file `overlay.find` saw, or why not: an O_PATH fd of the
    entry (never followed) must be that very inode, a regular file; only then is it
    reopened for reading through itself, so nothing swapped in meanwhile is opened."""
    try:
        pfd = os.open(found.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=found.parent_fd)
    except OSError as exc:
        return None, f"{shown} cannot be looked up: {exc.strerror}"
    try:
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode):
            return None, f"{shown} is {_kind(st.st_mode)}"
        if (st.st_dev, st.st_ino) != (found.st.st_dev, found.st.st_ino):
            return None, f"{shown} changed while it was read"
        # the O_PATH fd is the regular file fstat saw: reopening it cannot reach anything
        # else (O_NONBLOCK all the same: it costs nothing)
        return os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), None
    except OSError as exc:
        return None, f"{shown} cannot be read: {exc.strerror}"
    finally:
        os.close(pfd)


def read_image_file(layers: Sequence[pathlib.Path], relpath: str) -> ImageFile:
    """The file as the container would see it (`overlay.find`: the topmost layer that has
    it wins; a whiteout, an opaque directory or a non-directory on the way hides the
    layers below). See the module docstring for how it is reached without being led
    elsewhere."""
    shown = "/" + relpath.strip("/")
    try:
        found = _overlay.find(layers, relpath)
    except OSError as exc:
        return ImageFile(None, f"{shown} cannot be looked up: {exc.strerror}")
    if found is None:
        return ImageFile(None)
    if isinstance(found, _overlay.Blocked):
        return ImageFile(None, f"/{found.path} is {_kind(found.st.st_mode)}")
    try:
        if not stat.S_ISREG(found.st.st_mode):
            return ImageFile(None, f"{shown} is {_kind(found.st.st_mode)}")
        key = _identity(found.st)
        cached = _cache.get(key)
        if cached is not None:
            return ImageFile(cached)
        rfd, why = _open_regular(found, shown)
    finally:
        os.close(found.parent_fd)
    if rfd is None:
        return ImageFile(None, why)
    try:
        data = b""
        while len(data) < MAX_DB_SIZE:
            chunk = os.read(rfd, MAX_DB_SIZE - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        return ImageFile(None, f"{shown} cannot be read: {exc.strerror}")
    finally:
        os.close(rfd)
    text = data.decode("utf-8", "replace")
    if len(_cache) >= _CACHE_SIZE:
        _cache.pop(next(iter(_cache)))
    _cache[key] = text
    return ImageFile(text)


_NUMBER = re.compile(r"[+-]?[0-9]+")


def _atoi(text: str) -> Optional[int]:
    """Go's strconv.Atoi: an optional sign and ASCII digits, within int64; else None."""
    if not _NUMBER.fullmatch(text):
        return None
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 63) else None


def _passwd(text: Optional[str]) -> Iterator[Tuple[str, int, int, str]]:
    """(name, uid, gid, home) of each usable line."""
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < 4:
            continue
        uid, gid = _atoi(parts[2]), _atoi(parts[3])
        if uid is None or gid is None or not (0 <= uid <= MAX_FILE_ID and 0 <= gid <= MAX_FILE_ID):
            continue
        home = parts[5] if len(parts) > 5 else ""
        yield parts[0], uid, gid, home or "/"


def _groups(text: Optional[str]) -> Iterator[Tuple[str, int, List[str]]]:
    """(name, gid, members) of each usable line (runc does not strip group lines)."""
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < 3:
            continue
        gid = _atoi(parts[2])
        if gid is None or not 0 <= gid <= MAX_FILE_ID:
            continue
        members = parts[3].split(",") if len(parts) > 3 and parts[3] else []
        yield parts[0], gid, members


def resolve_user(spec: Optional[str], layers: Sequence[pathlib.Path]) -> ResolvedUser:
    """Resolve ``spec`` against the files the layers (lowest first) show, by Docker's
    rules (module docstring). Raises InvalidOption naming what was not found."""
    spec = spec or ""
    fields = spec.split(":")
    user_part = fields[0]
    group_part = fields[1] if len(fields) > 1 else ""
    passwd = read_image_file(layers, "etc/passwd")
    group_db = read_image_file(layers, "etc/group")

    uid_arg = _atoi(user_part) if user_part else 0
    name: Optional[str] = None
    home = "/"
    uid = gid = 0
    for entry_name, entry_uid, entry_gid, entry_home in _passwd(passwd.text):
        if (entry_uid == uid_arg) if uid_arg is not None else (entry_name == user_part):
            name, uid, gid, home = entry_name, entry_uid, entry_gid, entry_home
            break
    else:
        if uid_arg is None:
            raise InvalidOption(f"unable to find user {user_part}: no matching entries in passwd file"
                                + _because(passwd))
        if not 0 <= uid_arg <= MAX_ID:
            raise InvalidOption(f"user {spec!r}: uids and gids must be in range 0-{MAX_ID}")
        uid = uid_arg

    if group_part:
        gid_arg = _atoi(group_part)
        for entry_name, entry_gid, _ in _groups(group_db.text):
            if (entry_gid == gid_arg) if gid_arg is not None else (entry_name == group_part):
                gid = entry_gid
                break
        else:
            if gid_arg is None:
                raise InvalidOption(f"unable to find group {group_part}: no matching entries in group file"
                                    + _because(group_db))
            if not 0 <= gid_arg <= MAX_ID:
                raise InvalidOption(f"user {spec!r}: uids and gids must be in range 0-{MAX_ID}")
            gid = gid_arg
        return ResolvedUser(uid=uid, gid=gid, groups=(gid,), home=home, name=name)

    groups: List[int] = [gid]
    if name is not None:
        for _, entry_gid, members in _groups(group_db.text):
            if name in members and entry_gid not in groups:
                groups.append(entry_gid)
    return ResolvedUser(uid=uid, gid=gid, groups=tuple(groups), home=home, name=name)


def _because(found: ImageFile) -> str:
    return f" ({found.why})" if found.why else ""
