"""Comparing directory trees file by file: what a test checks about a pulled image's
layers against the tree umoci unpacked (support/images.py), overlayfs whiteouts and
opaque directories included."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import attrs

from .host import IS_ROOT


@attrs.frozen
class Entry:
    """What a test compares about one path (ownership only where the caller can chown)."""

    kind: str  # "file", "dir", "symlink", "fifo", "char", "block", "socket"
    mode: int  # permission bits, setuid/setgid/sticky included
    content: Optional[str] = None  # sha256 of a file, target of a symlink
    owner: Optional[Tuple[int, int]] = None

    @classmethod
    def from_stat(cls, path: Path, st: os.stat_result, *, owners: bool) -> "Entry":
        fmt = stat.S_IFMT(st.st_mode)
        kind = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
                stat.S_IFIFO: "fifo", stat.S_IFCHR: "char", stat.S_IFBLK: "block",
                stat.S_IFSOCK: "socket"}[fmt]
        content: Optional[str] = None
        if kind == "file":
            content = _file_digest(path)
        elif kind == "symlink":
            content = os.readlink(path)
        owner = (st.st_uid, st.st_gid) if owners else None
        return cls(kind=kind, mode=stat.S_IMODE(st.st_mode), content=content, owner=owner)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except PermissionError:  # mode 000 file, not root: compare its mode only
        return "<unreadable>"
    return h.hexdigest()


def _walk(root: Path) -> Iterator[Tuple[str, Path, os.stat_result]]:
    """(relative path, path, lstat) for root and everything below, parents first; a
    directory we may not list (mode 000, not root) counts as empty."""
    stack = [""]
    while stack:
        rel = stack.pop()
        path = root / rel if rel else root
        st = os.lstat(path)
        yield (rel or "."), path, st
        if stat.S_ISDIR(st.st_mode):
            try:
                names = sorted(os.listdir(path), reverse=True)
            except PermissionError:
                continue
            stack.extend(f"{rel}/{n}" if rel else n for n in names)


def tree(root: Path, *, owners: bool = IS_ROOT) -> Dict[str, Entry]:
    """Every path below ``root`` with what tests compare about it."""
    return {rel: Entry.from_stat(path, st, owners=owners) for rel, path, st in _walk(root)}


def _xattr(path: Path, name: str) -> Optional[bytes]:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def is_whiteout(path: Path, st: os.stat_result) -> bool:
    """overlayfs' whiteout: a 0/0 character device, or (Linux >= 6.7) a file with the
    overlay.whiteout xattr."""
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    return stat.S_ISREG(st.st_mode) and any(
        _xattr(path, f"{ns}.overlay.whiteout") is not None for ns in ("trusted", "user"))


def is_opaque(path: Path) -> bool:
    return any(_xattr(path, f"{ns}.overlay.opaque") == b"y" for ns in ("trusted", "user"))


def merged_view(layers: Sequence[Path], *, owners: bool = IS_ROOT) -> Dict[str, Tuple[Entry, Path]]:
    """What overlayfs shows for ``layers`` (lowest first), computed from their on-disk
    form: whiteouts hide, opaque directories hide everything below them in lower layers,
    a non-directory hides a lower directory. Maps path -> (entry, the layer file)."""
    view: Dict[str, Tuple[Entry, Path]] = {}

    def drop_below(rel: str) -> None:
        prefix = "" if rel == "." else rel + "/"
        for key in [k for k in view if k.startswith(prefix) and k != rel]:
            del view[key]

    for layer in layers:
        for rel, path, st in _walk(layer):
            if rel != "." and is_whiteout(path, st):
                view.pop(rel, None)
                drop_below(rel)
                continue
            entry = Entry.from_stat(path, st, owners=owners)
            old = view.get(rel)
            if entry.kind != "dir" or (old is not None and old[0].kind != "dir") or is_opaque(path):
                drop_below(rel)
            view[rel] = (entry, path)
    return view


def hardlink_groups(paths: Mapping[str, Path]) -> List[Tuple[str, ...]]:
    """Groups (2 or more) of the given paths that share one inode."""
    groups: Dict[Tuple[int, int], List[str]] = {}
    for rel, path in paths.items():
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            groups.setdefault((st.st_dev, st.st_ino), []).append(rel)
    return sorted(tuple(sorted(g)) for g in groups.values() if len(g) > 1)


def expected_hardlinks(root: Path) -> List[Tuple[str, ...]]:
    return hardlink_groups({rel: path for rel, path, _ in _walk(root)})


__all__ = ["Entry", "tree", "merged_view", "hardlink_groups", "expected_hardlinks", "is_whiteout",
           "is_opaque"]
