"""Resolving Docker's `user` strings against the image's own /etc/passwd and /etc/group.

Accepted as Docker accepts them: "", "name", "uid", "name:group", "uid:gid", "name:gid",
"uid:group". A name must exist in the image; a number need not (Docker runs unknown uids
with gid 0 unless one is given). Supplementary groups are the groups that list the user.
"""

from __future__ import annotations

import os
import pathlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import attrs

from .errors import InvalidOption

MAX_DB_SIZE = 4 << 20  # an image's passwd file is small; refuse to read a giant one


@attrs.frozen
class ResolvedUser:
    uid: int
    gid: int
    groups: Tuple[int, ...] = ()
    home: str = "/"
    name: Optional[str] = None


# Every container start reads passwd and group.  A file found in the image's top layer is
# read again only when its lstat identity changes: nothing above it can hide it, and a
# symlink swapped in for a parent directory leads lstat to another file.
_top_layer_cache: Dict[Tuple[str, str], Tuple[Tuple[int, ...], str]] = {}


def _identity(st: os.stat_result) -> Tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


def read_image_file(layers: Sequence[pathlib.Path], relpath: str) -> Optional[str]:
    """The file as the container would see it: the topmost layer that has it wins.

    Components that are symlinks are not followed (a hostile image could point etc/ at
    the host's /etc); a whiteout or a non-regular file hides it."""
    if layers:
        top = os.path.join(layers[-1], relpath.strip("/"))
        cached = _top_layer_cache.get((str(layers[-1]), relpath))
        if cached is not None:
            try:
                if _identity(os.lstat(top)) == cached[0]:
                    return cached[1]
            except OSError:
                pass
    parts = relpath.strip("/").split("/")
    for index in range(len(layers) - 1, -1, -1):
        state, path = _find(layers[index], parts)
        if state == "hidden":
            return None
        if state == "absent" or path is None:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as f:
            identity = _identity(os.fstat(f.fileno()))
            text = f.read(MAX_DB_SIZE).decode("utf-8", "replace")
        if index == len(layers) - 1:
            _top_layer_cache[(str(layers[index]), relpath)] = (identity, text)
        return text
    return None


def _find(layer: pathlib.Path, parts: List[str]) -> Tuple[str, Optional[pathlib.Path]]:
    """("found", path), ("absent", None) or ("hidden", None) for one layer."""
    path = layer
    for i, part in enumerate(parts):
        if os.path.lexists(path / f".wh.{part}"):
            return "hidden", None
        path = path / part
        try:
            st = os.lstat(path)
        except OSError:
            return "absent", None
        if i < len(parts) - 1:
            if not _is_dir(st.st_mode):
                return ("hidden", None) if _is_chr(st.st_mode) and st.st_rdev == 0 else ("absent", None)
        elif not _is_reg(st.st_mode):
            return ("hidden", None) if _is_chr(st.st_mode) and st.st_rdev == 0 else ("absent", None)
    return "found", path


def _is_dir(mode: int) -> bool:
    return (mode & 0o170000) == 0o040000


def _is_reg(mode: int) -> bool:
    return (mode & 0o170000) == 0o100000


def _is_chr(mode: int) -> bool:
    return (mode & 0o170000) == 0o020000


def _entries(text: Optional[str], fields: int) -> Iterator[List[str]]:
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= fields:
            yield parts


def resolve_user(spec: str, layers: Sequence[pathlib.Path]) -> ResolvedUser:
    spec = (spec or "").strip()
    if not spec:
        spec = "0"
    user_part, _, group_part = spec.partition(":")
    passwd = read_image_file(layers, "etc/passwd")
    group_db = read_image_file(layers, "etc/group")

    uid: Optional[int] = None
    gid: Optional[int] = None
    name: Optional[str] = None
    home = "/"
    if user_part.isdigit():
        uid = int(user_part)
        for e in _entries(passwd, 7):
            if e[2] == user_part:
                name, gid, home = e[0], _int(e[3]), e[5] or "/"
                break
    else:
        for e in _entries(passwd, 7):
            if e[0] == user_part:
                name, uid, gid, home = e[0], _int(e[2]), _int(e[3]), e[5] or "/"
                break
        if uid is None:
            raise InvalidOption(f"unable to find user {user_part}: no matching entries in passwd file")
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            gid = None
            for e in _entries(group_db, 3):
                if e[0] == group_part:
                    gid = _int(e[2])
                    break
            if gid is None:
                raise InvalidOption(f"unable to find group {group_part}: no matching entries in group file")
    if gid is None:
        gid = 0
    # as initgroups(3) and Docker: the primary group, then every group listing the user
    groups: List[int] = [gid]
    if name is not None and not group_part:
        for e in _entries(group_db, 4):
            g = _int(e[2])
            if name in e[3].split(",") and g is not None and g not in groups:
                groups.append(g)
    assert uid is not None
    if uid > 0xFFFFFFFE or gid > 0xFFFFFFFE:
        raise InvalidOption(f"user {spec!r}: id out of range")
    return ResolvedUser(uid=uid, gid=gid, groups=tuple(groups), home=home, name=name)


def _int(text: str) -> Optional[int]:
    return int(text) if text.isdigit() else None
