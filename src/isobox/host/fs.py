"""Files on the host: whole-file replacement and the one tree remover.

Everything isobox writes for others to read (store records, a container's state) is
replaced whole, by rename, so a reader sees the old file or the new one (`replace_file`,
`write_json`).

Everything isobox removes (a container's directory, a layer, a volume, a pull's
temporary, a copy's staging directory, the entry a layer replaces) goes through
`remove_tree`, which tries, in order:

1. the C walk (``_native/fsops.c``: ib_remove_tree): the usual case, fast, three fds
   whatever the depth, making read-only and mode-000 directories (overlayfs's
   ``work/work``) removable;
2. the Python walk (`_remove_walk`) where the C walk stops: it makes a top directory
   the caller may not read the caller's own first, and has no depth limit (the C walk
   stops at 65536 levels);
3. rootless (`Privilege`), when even that is refused: the files belong to the caller's
   subordinate ids (a rootless container's writes, a rootless pull's layers), which only
   a user namespace with the same map may remove, so the C walk runs there.

Neither walk ever follows a symlink, and both check, on the way back up, that each
parent is still the directory they came down from.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import stat
from typing import TYPE_CHECKING, Any, List, Mapping, Optional, Tuple, Union

from ..errors import StoreError

from .privilege import Privilege

if TYPE_CHECKING:
    from .idmap import IdMap

PathLike = Union[str, "os.PathLike[str]"]

_O_DIR_FD = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_AT_FDCWD = -100  # fcntl.h


# -- whole-file replacement ---------------------------------------------------------------


def replace_file(path: PathLike, data: bytes, tmp: PathLike, *, durable: bool, mode: int = 0o644) -> None:
    """Write ``data`` to ``tmp``, then rename it over ``path``: readers see the old file or
    the new one, never half of one. ``durable`` fsyncs first (store records must survive
    a crash; a container's state is swept if lost, and is written on every start)."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_json(path: pathlib.Path, doc: Mapping[str, Any]) -> None:
    """Replace a state file whole (no fsync: a lost one is swept with its container).

    On a full disk (a container's own output can fill it) a new file may find no block
    while the old one's still holds the new text: then the file is overwritten in place,
    so "exited" is still recorded rather than "running" left standing (issue 9).  A
    reader meanwhile may see half of it, and reads again (control.py)."""
    data = json.dumps(doc).encode()
    try:
        replace_file(path, data, f"{path}.tmp", durable=False)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        try:
            os.unlink(f"{path}.tmp")
        except OSError:
            pass
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise exc from None  # a first write: no old file's blocks to reuse
        try:
            if os.fstat(fd).st_blocks * 512 < len(data):
                raise
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)


# -- the tree remover ---------------------------------------------------------------------


def remove_tree(path: Union[PathLike, bytes], privilege: Optional[Privilege] = None, *,
                dir_fd: Optional[int] = None) -> None:
    """Remove a file or a directory tree; a missing path is fine.

    ``path`` is relative to ``dir_fd`` when given (as with `os.unlink`), and its last
    component is never followed.  ``privilege`` (default: this process's,
    `Privilege.current`; callers with a store pass the store's): as root nothing is made
    writable first and a refusal is final; rootless, its `Privilege.id_map` is the map of
    the user namespace that may remove files of the caller's subordinate ids (never with
    ``dir_fd``: a user namespace's helper cannot see our fds).  The order of attempts is
    the module docstring's."""
    p = os.fspath(path)
    try:
        st = os.lstat(p, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(p, dir_fd=dir_fd)
        return
    from .native import ffi, lib

    if lib.ib_remove_tree(_AT_FDCWD if dir_fd is None else dir_fd, ffi.new("char[]", os.fsencode(p))) == 0:
        return
    privilege = privilege or Privilege.current()
    try:
        if dir_fd is not None:
            _remove_walk(dir_fd, p, privilege.rootful)
            return
        parent, name = os.path.split(os.path.abspath(p))
        try:
            pfd = os.open(parent, _O_PATH_DIR)
        except FileNotFoundError:
            return  # removed meanwhile
        try:
            _remove_walk(pfd, name, privilege.rootful)
        finally:
            os.close(pfd)
    except PermissionError:
        ids = privilege.id_map() if dir_fd is None else None  # None as root: nothing more to try
        if ids is None:
            raise
        _remove_in_userns(pathlib.Path(os.fsdecode(p)), ids)


def _remove_walk(dirfd: int, name: Union[str, bytes], rootful: bool) -> None:
    """Removes the directory tree at name under dirfd without following any symlink,
    making directories writable where their mode forbids it (a finished layer holds 0555
    directories).

    Iterative, and with two fds open at most whatever the depth (a container or a layer
    can nest directories deeper than Python recurses, and than an unprivileged user's
    1024 fds): it goes down with openat and back up with "..", checking that each
    parent is still the directory it came from. ``rootful``: root needs no mode changed."""
    path: List[Tuple[Union[str, bytes], Tuple[int, int]]] = []  # from the top: name, (dev, ino)

    def enter(parent: int, child: Union[str, bytes]) -> int:
        # Every directory entered is made rwx for its owner first, so its children can be
        # opened, chmod-ed and unlinked in turn (needless, and skipped, as root).
        try:
            fd = os.open(child, _O_DIR_FD, dir_fd=parent)
        except PermissionError:
            # not readable; its parent is searchable (entered before), so chmod it by
            # name: fchmodat follows a final symlink, but the lstat proves there is none
            if not stat.S_ISDIR(os.lstat(child, dir_fd=parent).st_mode):
                raise
            os.chmod(child, 0o700, dir_fd=parent)
            fd = os.open(child, _O_DIR_FD, dir_fd=parent)
        try:
            st = os.fstat(fd)
            if not rootful and stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
                os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
        except BaseException:
            os.close(fd)
            raise
        path.append((child, (st.st_dev, st.st_ino)))
        return fd

    fd = enter(dirfd, name)
    try:
        while True:
            sub: Optional[str] = None
            with os.scandir(fd) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        sub = entry.name
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if sub is not None:
                inner = enter(fd, sub)
                os.close(fd)
                fd = inner
                continue
            child, _ = path.pop()  # fd is empty now: remove it from its parent
            if not path:
                os.close(fd)
                fd = -1
                os.rmdir(child, dir_fd=dirfd)
                return
            up = os.open("..", _O_DIR_FD, dir_fd=fd)
            st = os.fstat(up)
            os.close(fd)
            fd = up
            if (st.st_dev, st.st_ino) != path[-1][1]:
                raise OSError(errno.ESTALE, "a directory moved while its tree was being removed")
            os.rmdir(child, dir_fd=fd)
    finally:
        if fd >= 0:
            os.close(fd)


def _remove_in_userns(path: pathlib.Path, ids: "IdMap") -> None:
    """Remove a tree holding files of the caller's subordinate ids, which the caller
    cannot: the C walk (IB_OP_RMTREE) run as root of a user namespace with the same map."""
    from . import native

    if not ids.helpers:
        raise StoreError(f"cannot remove {path}: permission denied")
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
