"""overlayfs's on-disk form of a layer directory, and a path looked up through a stack of
them as the mounted overlay would show it (Documentation/filesystems/overlayfs.rst). The
one owner of these facts: unpack.py writes them, layerdiff.py reads a container's upper
directory, users.py and the build look files up in an image without mounting it.

* a whiteout is a 0:0 character device, or (overlayfs >= 6.7) an empty regular file with
  ``<ns>.overlay.whiteout``;
* a directory with ``<ns>.overlay.opaque=y`` hides what the layers below hold under it
  (``=x`` only marks a directory holding xattr whiteouts); overlayfs ignores it on a
  layer's root;
* ``<ns>`` is ``trusted`` for an overlay real root mounts and ``user`` for one mounted
  with ``-o userxattr``; both are looked for.

The lookup walks one component at a time from an O_PATH fd of each layer, never
following a symlink (a link on the way is not a directory, and hides the layers below as
overlayfs's own lookup would not follow it either), so it cannot leave a layer.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import List, Optional, Sequence, Set, Tuple, Union

import attrs

__all__ = ["has_xattr", "is_whiteout", "is_opaque", "Found", "Blocked", "find", "listdir", "NAMESPACES"]

NAMESPACES = ("trusted", "user")
_O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_O_PATH_DIR = _O_PATH | os.O_DIRECTORY


def has_xattr(fd: int, name: str, value: Optional[bytes] = None, child: bytes = b"") -> bool:
    """Whether the file at ``fd`` (any fd, O_PATH included; or its entry ``child``, not
    followed) has ``trusted.<name>`` or ``user.<name>``, with ``value`` if one is given.
    getxattr takes no O_PATH fd: the fd's /proc/self/fd link is followed, the child not."""
    path = f"/proc/self/fd/{fd}".encode() + (b"/" + child if child else b"")
    for ns in NAMESPACES:
        try:
            got = os.getxattr(path, f"{ns}.{name}", follow_symlinks=not child)
        except OSError:
            continue
        if value is None or got == value:
            return True
    return False


def is_whiteout(dirfd: int, name: bytes, st: os.stat_result) -> bool:
    """Whether the entry ``name`` of directory ``dirfd``, whose lstat is ``st``, is a
    whiteout (``name`` empty: ``dirfd`` is the entry itself)."""
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    return (stat.S_ISREG(st.st_mode) and st.st_size == 0
            and has_xattr(dirfd, "overlay.whiteout", None, name))


def is_opaque(fd: int) -> bool:
    return has_xattr(fd, "overlay.opaque", b"y")


@attrs.frozen
class Found:
    """An entry as the overlay shows it: the layer (index, lowest first) that holds it,
    an O_PATH fd of its parent directory there (the caller closes it), its name and lstat."""

    layer: int
    parent_fd: int
    name: bytes
    st: os.stat_result


@attrs.frozen
class Blocked:
    """Nothing shows at the path because ``path`` (relative), a non-directory on the way
    whose lstat is ``st``, hides it (a symlink is never followed)."""

    path: str
    st: os.stat_result


def _split(path: Union[str, bytes]) -> Tuple[bytes, ...]:
    raw = os.fsencode(path)
    return tuple(p for p in raw.split(b"/") if p and p != b".")


def find(layers: Sequence[Union[str, "os.PathLike[str]"]],
         path: Union[str, bytes]) -> Union[Found, Blocked, None]:
    """``path`` (relative to the root) through ``layers`` (lowest first) as the overlay
    shows it: `Found`, or None where nothing shows there, or `Blocked` when a
    non-directory on the way hides it. The highest layer holding an entry wins; a
    whiteout hides it and everything below; an opaque directory on the way hides the
    layers below it. The root itself is never found."""
    parts = _split(path)
    if not parts:
        return None
    for index in range(len(layers) - 1, -1, -1):
        try:
            fd = os.open(layers[index], _O_PATH_DIR)
        except FileNotFoundError:
            continue
        opaque = False
        try:
            for depth, comp in enumerate(parts[:-1]):
                # opened first, then looked at: what is judged is what was opened
                try:
                    child = os.open(comp, _O_PATH, dir_fd=fd)
                except FileNotFoundError:
                    break  # this layer does not decide; an opaque parent still hides below
                os.close(fd)
                fd = child
                st = os.fstat(fd)
                if not stat.S_ISDIR(st.st_mode):
                    # a whiteout, file or link over the way hides the rest
                    if is_whiteout(fd, b"", st):
                        return None
                    return Blocked(os.fsdecode(b"/".join(parts[:depth + 1])), st)
                opaque = opaque or is_opaque(fd)
            else:
                try:
                    st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    pass
                else:
                    if is_whiteout(fd, parts[-1], st):
                        return None
                    found, fd = fd, -1
                    return Found(layer=index, parent_fd=found, name=parts[-1], st=st)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                return None  # swapped for a non-directory while we looked: nothing there now
            raise
        finally:
            if fd >= 0:
                os.close(fd)
        if opaque:
            return None
    return None


def listdir(layers: Sequence[Union[str, "os.PathLike[str]"]], path: Union[str, bytes]) -> List[str]:
    """The names the overlay shows in directory ``path`` (relative; "" for the root), sorted:
    the union of the layers' entries from the top down, less whiteouts and what they hide,
    down to the first layer where the directory or a parent of it is opaque; nothing
    below a layer where something on the way is not a directory."""
    parts = _split(path)
    shown: Set[bytes] = set()
    hidden: Set[bytes] = set()
    for index in range(len(layers) - 1, -1, -1):
        try:
            fd = os.open(layers[index], _O_PATH_DIR)
        except FileNotFoundError:
            continue
        opaque = False
        try:
            present = True
            for comp in parts:
                try:
                    child = os.open(comp, _O_PATH, dir_fd=fd)
                except FileNotFoundError:
                    present = False
                    break
                os.close(fd)
                fd = child
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    return _names(shown)  # a whiteout or non-directory hides the rest
                opaque = opaque or is_opaque(fd)
            if present:
                dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
                try:
                    for name in os.listdir(dfd):
                        raw = os.fsencode(name)
                        if raw in shown or raw in hidden:
                            continue
                        st = os.stat(raw, dir_fd=dfd, follow_symlinks=False)
                        (hidden if is_whiteout(dfd, raw, st) else shown).add(raw)
                finally:
                    os.close(dfd)
        finally:
            os.close(fd)
        if opaque:
            break
    return _names(shown)


def _names(raw: Set[bytes]) -> List[str]:
    return sorted((os.fsdecode(n) for n in raw), key=os.fsencode)
