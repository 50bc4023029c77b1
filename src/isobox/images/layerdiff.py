"""A layer from a directory of changes: an overlay upper directory (a container's writes)
becomes an OCI layer tar, the inverse of unpack.py's `apply_layer`.

The tar is what the OCI image spec's "Representing Changes" asks for, and what Docker's and
containerd's differs write for an overlay upper directory:

* every entry of the upper directory, parents before children, names sorted byte-wise (so
  the same tree always makes the same tar), relative names without a leading ``./``,
  directories ending in ``/``;
* overlayfs's whiteouts (a 0:0 character device, or since Linux 6.7 an empty file with
  ``<ns>.overlay.whiteout``) become empty ``.wh.NAME`` files; a directory with
  ``<ns>.overlay.opaque=y`` is followed by ``.wh..wh..opq`` (``=x`` only marks a directory
  holding xattr whiteouts and is not opaque); overlay's own xattrs (``trusted.overlay.*``,
  ``user.overlay.*``) never reach the tar, other xattrs do (as PAX ``SCHILY.xattr.*``);
* files with more than one link inside the tree are written once and hard-linked after;
  sockets are left out (as Docker's archive leaves them); FIFOs and device nodes are kept;
* owners as the container saw them: a rootless container's files belong on the host to the
  subordinate ids its user namespace maps to, and `IdMap` maps them back; user and group
  names are left empty, as the OCI spec prefers;
* a redirected directory or a metacopy file (overlay's ``redirect_dir=on``/``metacopy=on``,
  which isobox never mounts with) has content only a lower layer holds: `LayerError`;
* ``mtime``, if given, replaces every later modification time (SOURCE_DATE_EPOCH's rule:
  reproducible builds clamp, never raise, a time).

The directory is the container's, so it is hostile: it is walked through directory fds
(os.fwalk, no symlink followed), every file is opened O_NOFOLLOW|O_NONBLOCK relative to its
parent's fd (a FIFO cannot hang us, a symlink swapped in cannot lead us out), and what was
opened must be what was listed (same inode), else `LayerError`.  Commit stops the
container's writes first; this check is for a tree that changes anyway.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from typing import IO, Callable, Collection, Dict, List, Optional, Tuple

import attrs

from ..errors import LayerError
from ..host.idmap import IdMap, IdRange
from .overlay import NAMESPACES, has_xattr, is_opaque, is_whiteout

__all__ = ["DiffStats", "write_layer", "WHITEOUT_PREFIX", "OPAQUE_MARKER"]

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20
_BLOCK = tarfile.BLOCKSIZE
_OVERLAY_XATTRS = tuple(f"{ns}.overlay." for ns in NAMESPACES)


@attrs.frozen
class DiffStats:
    """What `write_layer` wrote: entries (whiteouts and opaque markers included), of them
    the whiteouts and opaque directories, the file bytes, and what was left out."""

    entries: int
    whiteouts: int
    opaque: int
    content_bytes: int
    skipped: Tuple[str, ...] = ()


def _back(ranges: Tuple[IdRange, ...], host_id: int, what: str, path: str) -> int:
    for r in ranges:
        if r.host <= host_id < r.host + r.size:
            return host_id - r.host + r.container
    raise LayerError(f"{path}: {what} {host_id} is not mapped into the container's user namespace")


def _xattrs(fd_path: str, follow: bool) -> Dict[str, bytes]:
    """The xattrs worth keeping (not overlay's own), by name; {} where there are none or
    the file system has none."""
    try:
        names = os.listxattr(fd_path, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return {}
        raise
    out: Dict[str, bytes] = {}
    for name in sorted(names):
        if name.startswith(_OVERLAY_XATTRS):
            continue
        try:
            out[name] = os.getxattr(fd_path, name, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                continue  # gone meanwhile, or a namespace this process may not read
            raise
    return out


class _Writer:
    def __init__(self, out: IO[bytes], ids: Optional[IdMap], mtime: Optional[int],
                 owner: Optional[Callable[[str], Optional[Tuple[int, int]]]] = None) -> None:
        self.out = out
        self.ids = ids
        self.owner = owner
        self.mtime = mtime
        self.links: Dict[Tuple[int, int], str] = {}
        self.entries = self.whiteouts = self.opaque = self.content = 0
        self.skipped: List[str] = []

    def _info(self, name: str, kind: bytes, st: Optional[os.stat_result], path: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.uname = info.gname = ""
        if st is None:  # a whiteout or an opaque marker
            info.mode, info.uid, info.gid, info.mtime = 0o600, 0, 0, 0
            return info
        info.mode = stat.S_IMODE(st.st_mode)
        uid, gid = st.st_uid, st.st_gid
        given = self.owner(name.rstrip("/")) if self.owner is not None else None
        if given is not None:
            info.uid, info.gid = given
        elif self.ids is not None:
            info.uid = _back(self.ids.uids, uid, "uid", path)
            info.gid = _back(self.ids.gids, gid, "gid", path)
        else:
            info.uid, info.gid = uid, gid
        mtime = st.st_mtime_ns // 1_000_000_000
        info.mtime = min(mtime, self.mtime) if self.mtime is not None else mtime
        return info

    def _header(self, info: tarfile.TarInfo, xattrs: Optional[Dict[str, bytes]] = None) -> None:
        if xattrs:
            # PAX records are UTF-8 strings: surrogateescape carries arbitrary bytes, as
            # GNU tar and Go's archive/tar write them
            info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                                for k, v in xattrs.items()}
        self.out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        self.entries += 1

    def marker(self, name: str) -> None:
        self._header(self._info(name, tarfile.REGTYPE, None, name))

    def directory(self, name: str, dfd: int, path: str) -> None:
        st = os.fstat(dfd)
        fd_path = f"/proc/self/fd/{dfd}"
        if has_xattr(dfd, "overlay.redirect"):
            # a directory renamed with redirect_dir=on: its content lives in a lower layer
            # under another name, which a diff of the upper alone cannot see
            raise LayerError(f"{path}: an overlay redirect (redirect_dir=on) is not supported")
        self._header(self._info(name + "/", tarfile.DIRTYPE, st, path), _xattrs(fd_path, True))
        if is_opaque(dfd):
            self.marker(name + "/" + OPAQUE_MARKER)
            self.opaque += 1

    def entry(self, parent: str, name: str, dfd: int, rel: str) -> None:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        mode = st.st_mode
        child = f"/proc/self/fd/{dfd}/{name}"
        if is_whiteout(dfd, os.fsencode(name), st):
            self._whiteout(parent, name)
            return
        if stat.S_ISSOCK(mode):
            self.skipped.append(f"{rel}: a socket")
            return
        if stat.S_ISREG(mode) and has_xattr(dfd, "overlay.metacopy", None, os.fsencode(name)):
            raise LayerError(f"{rel}: an overlay metacopy file (metacopy=on) is not supported")
        key = (st.st_dev, st.st_ino)
        if not stat.S_ISDIR(mode) and st.st_nlink > 1 and key in self.links:
            info = self._info(rel, tarfile.LNKTYPE, st, rel)
            info.linkname = self.links[key]
            self._header(info)
            return
        if stat.S_ISLNK(mode):
            info = self._info(rel, tarfile.SYMTYPE, st, rel)
            info.linkname = os.fsdecode(os.readlink(name, dir_fd=dfd))
            self._header(info, _xattrs(child, False))
        elif stat.S_ISREG(mode):
            self._file(name, dfd, rel, st)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info = self._info(rel, tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE, st, rel)
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self._header(info, _xattrs(child, False))
        elif stat.S_ISFIFO(mode):
            self._header(self._info(rel, tarfile.FIFOTYPE, st, rel), _xattrs(child, False))
        else:  # pragma: no cover - every file type is named above
            self.skipped.append(f"{rel}: file type {stat.S_IFMT(mode):o}")
            return
        if st.st_nlink > 1:
            self.links[key] = rel

    def _whiteout(self, parent: str, name: str) -> None:
        self.marker(parent + WHITEOUT_PREFIX + name)
        self.whiteouts += 1

    def _file(self, name: str, dfd: int, rel: str, st: os.stat_result) -> None:
        try:
            fd = os.open(name, _OPEN_FILE, dir_fd=dfd)
        except OSError as exc:
            raise LayerError(f"{rel}: cannot open: {exc.strerror}") from exc
        try:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
                raise LayerError(f"{rel}: replaced while the layer was being written")
            info = self._info(rel, tarfile.REGTYPE, now, rel)
            info.size = now.st_size
            self._header(info, _xattrs(f"/proc/self/fd/{fd}", True))
            left = now.st_size
            while left > 0:
                chunk = os.read(fd, min(_CHUNK, left))
                if not chunk:
                    raise LayerError(f"{rel}: shrank while the layer was being written")
                self.out.write(chunk)
                left -= len(chunk)
            pad = -now.st_size % _BLOCK
            if pad:
                self.out.write(b"\0" * pad)
            self.content += now.st_size
        finally:
            os.close(fd)


_MAX_DEPTH = 512  # each level holds an fd while its content is written


def _names(dfd: int) -> List[str]:
    return sorted(os.listdir(dfd), key=os.fsencode)


def write_layer(
    upper: "os.PathLike[str] | str",
    out: IO[bytes],
    *,
    ids: Optional[IdMap] = None,
    exclude: Collection[str] = (),
    mtime: Optional[int] = None,
    owner: Optional[Callable[[str], Optional[Tuple[int, int]]]] = None,
) -> DiffStats:
    """Write the changes in ``upper`` (an overlay upper directory, or any directory of new
    files) to ``out`` as an uncompressed OCI layer tar, ending with tar's two zero blocks:
    depth first, each directory before its content, names in byte order.

    ``ids``: the user namespace's map (rootless), through which owners are mapped back to
    the container's ids; ``exclude``: names relative to ``upper`` (e.g. ``"etc/hosts"``)
    to leave out with everything below them; ``mtime``: clamp modification times to it;
    ``owner``: (uid, gid) for a relative name, or None for what the file says (a build's
    staged files, which the builder could not chown without root).
    Raises LayerError naming the path for anything that cannot be written truthfully."""
    skip = {p.strip("/") for p in exclude}
    w = _Writer(out, ids, mtime, owner)
    top = os.fspath(upper)
    try:
        root = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise LayerError(f"cannot write a layer from {top}: {exc.strerror}") from exc
    # (directory fd, its name with a trailing "/", the names left to write in it)
    stack: List[Tuple[int, str, List[str]]] = [(root, "", list(reversed(_names(root))))]
    try:
        while stack:
            dfd, prefix, left = stack[-1]
            if not left:
                os.close(dfd)
                stack.pop()
                continue
            name = left.pop()
            rel = prefix + name
            if rel in skip:
                continue
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                w.entry(prefix, name, dfd, rel)
                continue
            if len(stack) > _MAX_DEPTH:
                raise LayerError(f"{rel}: nested more than {_MAX_DEPTH} directories deep")
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            try:
                if (os.fstat(sub).st_ino, os.fstat(sub).st_dev) != (st.st_ino, st.st_dev):
                    raise LayerError(f"{rel}: replaced while the layer was being written")
                w.directory(rel, sub, rel)
                names = _names(sub)
            except BaseException:
                os.close(sub)
                raise
            stack.append((sub, rel + "/", list(reversed(names))))
        out.write(b"\0" * (2 * _BLOCK))
    except OSError as exc:
        raise LayerError(f"cannot write a layer from {top}: {exc.strerror or exc}") from exc
    finally:
        for dfd, _, _ in stack:
            os.close(dfd)
    return DiffStats(entries=w.entries, whiteouts=w.whiteouts, opaque=w.opaque,
                     content_bytes=w.content, skipped=tuple(w.skipped))
