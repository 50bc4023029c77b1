"""Applying one layer: its entries become files in a directory that overlayfs can stack
as a lower layer, under the descriptor of that directory and nowhere else.

`apply_layer` runs the pipeline: the stream is inflated and hashed into the diff_id in a
thread of its own (`isobox.images.inflate`), its tar headers are read in the caller's
thread (`isobox.images.tar`, within `Limits`), and each entry is applied here.

The archive is hostile until applied:

* Every parent directory is resolved by the kernel, with openat2(RESOLVE_IN_ROOT) from a
  descriptor of ``dest`` (see _native/fsops.c): ``..``, absolute symlinks and symlinked
  parents planted by earlier entries are clamped to ``dest``, as they would be inside the
  container.  The last component is never followed (O_NOFOLLOW, ``follow_symlinks=False``,
  mkdirat, symlinkat, linkat without AT_SYMLINK_FOLLOW), so no entry writes through a
  symlink, and a hard link can only name an inode already inside ``dest``.
* Member names with a ``..`` component are refused outright (no real producer writes
  them); a leading ``/`` or ``./`` is dropped, as tar does.  The layer root can only be
  given directory metadata, never be replaced.
* xattrs in the archive that would forge overlayfs metadata (``trusted.overlay.*``,
  ``user.overlay.*``: whiteouts, redirects, metacopy) are dropped.
* Hard links copy from lower layers at most `Limits.max_total_size` bytes.

OCI semantics on disk (overlayfs's form, Documentation/filesystems/overlayfs.rst,
"whiteouts and opaque directories"):

* ``.wh..wh..opq`` makes its directory opaque: xattr ``<ns>.overlay.opaque=y``, where
  ``<ns>`` is ``trusted`` for an overlay mounted by real root and ``user`` for one mounted
  with ``-o userxattr`` in a user namespace (`apply_layer`'s ``userxattr``).  overlayfs
  ignores the opaque xattr on a layer's *root*, so an opaque marker at the root becomes
  a whiteout for every name of the lower layers' roots (``lower_dirs``).
* ``.wh.NAME`` becomes a whiteout: a 0:0 character device ("device"; unprivileged users
  may create exactly this device since Linux 5.8), or ("xattr", overlayfs >= 6.7) an
  empty regular file with ``<ns>.overlay.whiteout=y`` whose parent directory carries
  ``<ns>.overlay.opaque=x``.
* Whiteouts and opaque markers apply to lower layers only, wherever they stand in the
  archive: they are applied after the last entry.  A whiteout of a name this layer also
  creates keeps the entry (a directory then becomes opaque, hiding the lower one's
  contents); whiteouts inside an opaque directory are dropped as redundant.

Rootless (`isobox.host.privilege.Privilege`, given by the caller), ownership collapses to the caller (the user namespace maps the caller to
root, so the container sees root-owned files), device nodes are skipped and listed in
`LayerStats.skipped`, and xattrs only root may set (``trusted.*``, ``security.*``) are
skipped.  As root, uid/gid, devices and ``security.capability`` are applied; chown always
comes before chmod and the xattrs, since chown clears set-id bits and file capabilities.
Directory modes and times are applied last, deepest first, after their content.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import attrs

from ..errors import HostNotSupported, InvalidOption, LayerError
from ..host.fs import remove_tree
from ..host.privilege import Privilege
from .digest import is_digest
from . import overlay as _overlay
from .inflate import FromSource, Inflater
from .manifest import LAYER_MEDIA_TYPES
from .tar import CHR, DIR, FIFO, LNK, REG, SYM, Entry, Limits, TarReader

try:
    from .._native._core import lib as _lib
except ImportError:  # pragma: no cover - a broken install; apply_layer says so
    _lib = None

__all__ = ["Limits", "LayerStats", "apply_layer", "LAYER_MEDIA_TYPES"]

log = logging.getLogger(__name__)

_MiB = 1024 * 1024


def _check_diff_id(value: object) -> None:
    if not (is_digest(value) and str(value).startswith("sha256:")):
        raise ValueError(f"a diff_id is a sha256 digest, not {value!r}")


@attrs.frozen
class LayerStats:
    """What applying a layer found: its diff_id (sha256 of the uncompressed tar, as the
    image config lists it), size and entry count."""

    diff_id: str = attrs.field(validator=lambda _i, _a, v: _check_diff_id(v))
    size: int = attrs.field(validator=attrs.validators.ge(0))
    entries: int = attrs.field(validator=attrs.validators.ge(0))
    #: "path: reason" for each entry or xattr not applied for want of privilege
    skipped: Tuple[str, ...] = ()
    #: True when the result depends on ``lower_dirs`` (a hard link to a lower file, an
    #: opaque marker at the root): such a directory is only valid on top of those layers,
    #: so a store must key it by chain ID rather than diff_id.
    depends_on_lower: bool = False
    #: Without root: (path, uid, gid, mode to restore or None) of entries the archive gives
    #: another owner than root; the caller may apply them inside a user namespace with
    #: subordinate ids (idmap.chown_in_userns), else they stay the caller's.
    owners: Tuple[Tuple[str, int, int, Optional[int]], ...] = ()


# --------------------------------------------------------------------------- files

_DIRFD_CACHE = 32  # walk-ordered archives need few; pulls apply several layers at once
_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_O_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_O_DIR_FD = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WHITEOUT_PREFIX = b".wh."
_OPAQUE_MARKER = b".wh..wh..opq"
_AUFS_META = b".wh..wh."  # aufs's own bookkeeping (plnk, orph, aufs): skipped, as Docker does


def _split(path: bytes, what: str) -> Tuple[bytes, ...]:
    if b"\0" in path:
        raise LayerError(f"{what} {path!r} contains a NUL byte")
    parts = tuple(p for p in path.split(b"/") if p and p != b".")
    if b".." in parts:
        raise LayerError(f"{what} {path!r} contains '..'")
    return parts


def _show(parts: Sequence[bytes]) -> str:
    return os.fsdecode(b"/".join(parts)) or "/"


class _DirMeta:
    __slots__ = ("ident", "mode", "uid", "gid", "atime_ns", "mtime_ns", "xattrs")

    def __init__(
        self,
        ident: Tuple[int, int],
        mode: int,
        uid: Optional[int],
        gid: Optional[int],
        atime_ns: Optional[int],
        mtime_ns: Optional[int],
        xattrs: Optional[Dict[str, bytes]],
    ) -> None:
        self.ident = ident
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.atime_ns = atime_ns
        self.mtime_ns = mtime_ns
        self.xattrs = xattrs


def _clamp_ns(ns: int) -> int:
    return max(-(2**63), min(ns, 2**63 - 1))


class _LayerWriter:
    """Writes the entries of one layer's archive under the descriptor of ``dest``;
    `apply_layer` feeds it what `TarReader` reads."""

    def __init__(
        self,
        dest: str,
        lower_dirs: Sequence[str],
        whiteout_format: str,
        format_is_default: bool,
        namespace: str,
        limits: Limits,
        privilege: Privilege,
        existing: bool = False,
    ) -> None:
        self.privilege = privilege
        self.can_chown = privilege.can_chown
        self.can_mknod = privilege.can_mknod
        self.rootful = privilege.rootful  # trusted.* and security.* xattrs
        self.existing = existing
        self.whiteout_format = whiteout_format
        self.format_is_default = format_is_default
        self.ns = namespace
        self.limits = limits
        self.lower_dirs = list(lower_dirs)
        self.root_fd = os.open(dest, _O_PATH_DIR)
        self.skipped: List[str] = []
        self.owners: Dict[bytes, Tuple[int, int, Optional[int]]] = {}
        self.depends_on_lower = False
        self.copied = 0
        self._dirfds: Dict[Tuple[bytes, ...], Tuple[int, Tuple[bytes, ...]]] = {}
        self._stale: List[int] = []  # dropped from the cache, closed after the entry
        self._dirs: Dict[Tuple[bytes, ...], _DirMeta] = {}
        self._whiteouts: Dict[Tuple[bytes, ...], Set[bytes]] = {}
        self._opaque: Set[Tuple[bytes, ...]] = set()
        self._skipped_paths: Set[Tuple[bytes, ...]] = set()
        self._lower_copies: Dict[Tuple[bytes, ...], Tuple[bytes, ...]] = {}
        try:
            if not existing and os.listdir(dest):
                raise LayerError(f"{dest} is not empty: apply a layer to a new directory")
            self._root_path = os.readlink(f"/proc/self/fd/{self.root_fd}".encode())
            st = os.fstat(self.root_fd)
            # New files take dest's group when dest is set-gid: then always chown.
            self.owner = (-1, -1) if st.st_mode & stat.S_ISGID else (os.geteuid(), os.getegid())
            self.umask_keeps = 0o777 & ~_umask()
            # dest gets 0755 (as Docker's layer directories) unless the archive says otherwise
            self._dirs[()] = _DirMeta((st.st_dev, st.st_ino),
                                      stat.S_IMODE(st.st_mode) if existing else 0o755,
                                      None, None, None, None, None)
        except BaseException:
            os.close(self.root_fd)
            raise

    def close(self) -> None:
        self._forget_dirfds()
        self._close_stale()
        os.close(self.root_fd)

    # -- resolution
    def _forget_dirfds(self) -> None:
        """Empties the cache; the descriptors stay open until the current entry is done,
        since its code may still hold them."""
        self._stale.extend(fd for fd, _ in self._dirfds.values())
        self._dirfds.clear()

    def _close_stale(self) -> None:
        for fd in self._stale:
            os.close(fd)
        self._stale.clear()

    def _openat2(self, dirfd: int, path: bytes, flags: int) -> int:
        """openat2 under dest's root; -errno on failure."""
        fd: int = _lib.ib_openat2(
            dirfd,
            path or b".",
            flags,
            0,
            _lib.IB_RESOLVE_IN_ROOT | _lib.IB_RESOLVE_NO_MAGICLINKS | _lib.IB_RESOLVE_NO_XDEV,
        )
        if fd == -errno.ENOSYS:
            raise HostNotSupported("applying layers needs openat2(2): Linux 5.6 or newer")
        return fd

    def _canonical(self, fd: int, literal: Tuple[bytes, ...]) -> Tuple[bytes, ...]:
        """The symlink-free path of a directory fd under dest (via /proc), so records made
        through a symlinked parent meet those made directly."""
        try:
            real = os.readlink(f"/proc/self/fd/{fd}".encode())
        except OSError:  # no /proc: the literal path is the best we know
            return literal
        root = self._root_path
        if real == root:
            return ()
        if not real.startswith(root.rstrip(b"/") + b"/"):
            raise LayerError(f"{_show(literal)} resolved outside the layer")  # cannot happen
        return tuple(real[len(root.rstrip(b"/")) + 1 :].split(b"/"))

    def dirfd(self, parts: Tuple[bytes, ...]) -> Tuple[int, Tuple[bytes, ...]]:
        """An O_PATH descriptor of the directory at ``parts`` (parents made as needed, 0755
        as tar makes them) and its canonical path.  Owned by the cache."""
        found = self._lookup(parts, create=True)
        if found is None:  # pragma: no cover - create=True raises instead
            raise LayerError(f"cannot open directory {_show(parts)}")
        return found

    def existing_dirfd(self, parts: Tuple[bytes, ...]) -> Optional[int]:
        """Like dirfd, but None when the directory does not exist."""
        found = self._lookup(parts, create=False)
        return None if found is None else found[0]

    def _lookup(
        self, parts: Tuple[bytes, ...], create: bool
    ) -> Optional[Tuple[int, Tuple[bytes, ...]]]:
        if not parts:
            return self.root_fd, ()
        hit = self._dirfds.get(parts)
        if hit is not None:
            return hit
        fd = self._openat2(self.root_fd, b"/".join(parts), _O_PATH_DIR)
        if fd == -errno.ENOENT and create:
            fd = self._make_parents(parts)
        if fd < 0:
            if not create and fd in (-errno.ENOENT, -errno.ENOTDIR):
                return None
            err = OSError(-fd, os.strerror(-fd))
            raise LayerError(f"cannot open directory {_show(parts)}: {err.strerror}") from err
        canon = self._canonical(fd, parts)
        if len(self._dirfds) >= _DIRFD_CACHE:
            self._forget_dirfds()
        self._dirfds[parts] = (fd, canon)
        return fd, canon

    def _make_parents(self, parts: Tuple[bytes, ...]) -> int:
        parent_fd = self.root_fd
        try:
            for i in range(1, len(parts) + 1):
                fd = self._openat2(self.root_fd, b"/".join(parts[:i]), _O_PATH_DIR)
                if fd == -errno.ENOENT:
                    try:
                        os.mkdir(parts[i - 1], 0o700, dir_fd=parent_fd)
                    except FileExistsError:  # a dangling symlink or a file in the way
                        return -errno.ENOTDIR
                    fd = self._openat2(self.root_fd, b"/".join(parts[:i]), _O_PATH_DIR)
                    if fd >= 0:
                        st = os.fstat(fd)
                        canon = self._canonical(fd, parts[:i])
                        if canon not in self._dirs:
                            self._dirs[canon] = _DirMeta(
                                (st.st_dev, st.st_ino), 0o755, None, None, None, None, None
                            )
                if fd < 0 or i == len(parts):
                    return fd
                if parent_fd != self.root_fd:
                    os.close(parent_fd)
                parent_fd = fd
            return -errno.ENOENT  # pragma: no cover - the loop returns
        finally:
            if parent_fd != self.root_fd:
                os.close(parent_fd)

    def _make_room(self, pfd: int, name: bytes, keep_dir: bool = False) -> bool:
        """Removes what stands at name so an entry can take its place (tar and OCI: a new
        entry replaces a non-directory; anything but a directory replaces a directory and
        its contents).  Returns True when an existing directory is kept."""
        try:
            st = os.lstat(name, dir_fd=pfd)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            remove_tree(name, self.privilege, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)
        self._forget_dirfds()  # a cached descriptor may name what was just removed
        return False

    # -- entries
    def apply(self, e: Entry, reader: TarReader) -> None:
        try:
            self._apply(e, reader)
        finally:
            if self._stale:
                self._close_stale()

    def _apply(self, e: Entry, reader: TarReader) -> None:
        parts = _split(e.name, "member name")
        for part in parts[:-1]:
            if part.startswith(_WHITEOUT_PREFIX):
                if part.startswith(_AUFS_META):
                    return
                raise LayerError(f"whiteout {_show(parts)} cannot be a directory")
        if not parts:
            if e.kind != DIR:
                raise LayerError("an entry would replace the layer root with a non-directory")
            self._dirs[()] = self._meta_for(e, self._dirs[()].ident)
            return
        name = parts[-1]
        if name.startswith(_WHITEOUT_PREFIX):
            self._whiteout(parts)
            return
        if self._skipped_paths or self._lower_copies:  # a new entry takes this name
            self._skipped_paths.discard(parts)
            for target in [t for t, p in self._lower_copies.items() if p == parts]:
                del self._lower_copies[target]
        pfd, pcanon = self.dirfd(parts[:-1])
        kind = e.kind
        if kind == REG:
            self._file(pfd, name, e, reader)
        elif kind == DIR:
            self._dir(pfd, pcanon, name, e)
        elif kind == SYM:
            self._symlink(pfd, name, e)
        elif kind == LNK:
            self._hardlink(pfd, parts, e)
        elif kind == FIFO:
            self._node(pfd, parts, e, stat.S_IFIFO)
        elif kind == CHR:
            self._node(pfd, parts, e, stat.S_IFCHR)
        else:
            self._node(pfd, parts, e, stat.S_IFBLK)
        if not self.can_chown and (e.uid or e.gid) and kind in (REG, DIR, SYM, FIFO):
            # chown(2) clears set-id bits of files: remember the mode to put back
            setid = kind == REG and e.mode & (stat.S_ISUID | stat.S_ISGID)
            self.owners[b"/".join(parts)] = (e.uid, e.gid, e.mode if setid else None)

    def _meta_for(self, e: Entry, ident: Tuple[int, int]) -> _DirMeta:
        return _DirMeta(ident, e.mode, e.uid, e.gid, e.atime_ns, e.mtime_ns, e.xattrs)

    def _whiteout(self, parts: Tuple[bytes, ...]) -> None:
        name = parts[-1]
        if self.existing:
            raise LayerError(f"{_show(parts)}: whiteout names are not copied into a container")
        if name.startswith(_AUFS_META) and name != _OPAQUE_MARKER:
            return
        target = name[len(_WHITEOUT_PREFIX) :]
        if target in (b"", b".", b".."):
            raise LayerError(f"malformed whiteout {_show(parts)}")
        try:
            _, canon = self.dirfd(parts[:-1])
        except LayerError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.ENOTDIR:
                # below a non-directory this layer made (umoci writes "f" then
                # "f/.wh.x"): that entry already hides everything below it
                return
            raise
        if name == _OPAQUE_MARKER:
            self._opaque.add(canon)
        else:
            self._whiteouts.setdefault(canon, set()).add(target)

    def _file(self, pfd: int, name: bytes, e: Entry, reader: TarReader) -> None:
        # Plain modes are given to open(2) directly (saving a fchmod) when the umask
        # keeps them whole and no chown or xattr comes after that could need the
        # owner's write permission or clear set-id bits.
        chown = self.can_chown and (e.uid, e.gid) != self.owner
        direct = not (e.mode & ~self.umask_keeps or chown or e.xattrs)
        mode = e.mode if direct else 0o600
        try:
            fd = os.open(name, _O_NEW_FILE, mode, dir_fd=pfd)
        except FileExistsError:
            self._make_room(pfd, name)
            fd = os.open(name, _O_NEW_FILE, mode, dir_fd=pfd)
        try:
            if e.sparse is not None:
                reader.copy_sparse_to(fd, e.sparse, e.size)
            elif e.size:
                reader.copy_to(fd, e.size)
            if chown:
                os.fchown(fd, e.uid, e.gid)
            if e.xattrs:
                self._set_xattrs(fd, e.xattrs, e.name)
            if not direct:
                os.fchmod(fd, e.mode)
            os.utime(fd, ns=(_clamp_ns(e.atime_ns), _clamp_ns(e.mtime_ns)))
        finally:
            os.close(fd)

    def _dir(self, pfd: int, pcanon: Tuple[bytes, ...], name: bytes, e: Entry) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
        except FileExistsError:
            if not self._make_room(pfd, name, keep_dir=True):
                os.mkdir(name, 0o700, dir_fd=pfd)
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        self._dirs[pcanon + (name,)] = self._meta_for(e, (st.st_dev, st.st_ino))

    def _symlink(self, pfd: int, name: bytes, e: Entry) -> None:
        if not e.link or b"\0" in e.link:
            raise LayerError(f"symlink {e.name!r} has an invalid target {e.link!r}")
        try:
            os.symlink(e.link, name, dir_fd=pfd)
        except FileExistsError:
            self._make_room(pfd, name)
            os.symlink(e.link, name, dir_fd=pfd)
        self._finish_node(pfd, name, e, chmod=False)

    def _finish_node(self, pfd: int, name: bytes, e: Entry, chmod: bool) -> None:
        """Metadata of an entry we hold no descriptor of (symlink, fifo, device)."""
        if self.can_chown:
            os.chown(name, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)
        if e.xattrs:
            # xattrs of a symlink or special file: no fd can carry them (O_PATH fds refuse
            # fsetxattr), so name it under the parent's /proc magic link, not followed.
            self._set_xattrs(f"/proc/self/fd/{pfd}/".encode() + name, e.xattrs, e.name)
        if chmod:  # name was just made by mknod/mkfifo: not a symlink, nothing to follow
            os.chmod(name, e.mode, dir_fd=pfd)
        os.utime(
            name,
            ns=(_clamp_ns(e.atime_ns), _clamp_ns(e.mtime_ns)),
            dir_fd=pfd,
            follow_symlinks=False,
        )

    def _node(self, pfd: int, parts: Tuple[bytes, ...], e: Entry, kind: int) -> None:
        name = parts[-1]
        if kind != stat.S_IFIFO and not self.can_mknod:
            self._skip(parts, "device node needs root (mknod)")
            return
        device = os.makedev(e.devmajor, e.devminor) if kind != stat.S_IFIFO else 0
        for attempt in (1, 2):
            try:
                os.mknod(name, kind | 0o600, device, dir_fd=pfd)
                break
            except FileExistsError:
                if attempt == 2:
                    raise
                self._make_room(pfd, name)
            except PermissionError:  # root without CAP_MKNOD (inside some containers)
                self._skip(parts, "device node refused by the host (mknod: EPERM)")
                return
        self._finish_node(pfd, name, e, chmod=True)

    def _skip(self, parts: Tuple[bytes, ...], why: str) -> None:
        self._skipped_paths.add(parts)
        self.skipped.append(f"{_show(parts)}: {why}")

    def _hardlink(self, pfd: int, parts: Tuple[bytes, ...], e: Entry) -> None:
        name = parts[-1]
        target = _split(e.link, "hard link target")
        if not target:
            raise LayerError(f"hard link {_show(parts)} points at the layer root")
        if target[-1].startswith(_WHITEOUT_PREFIX):
            raise LayerError(f"hard link {_show(parts)} points at a whiteout")
        if target in self._skipped_paths:
            self._skip(parts, f"hard link to skipped {_show(target)}")
            return
        target = self._lower_copies.get(target, target)
        tfd = self.existing_dirfd(target[:-1])
        for attempt in (1, 2):
            if tfd is None:
                break
            try:
                # linkat without AT_SYMLINK_FOLLOW: a symlink target is linked itself,
                # never followed, so the new name is always an inode inside dest
                os.link(target[-1], name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
                return
            except FileNotFoundError:
                break
            except FileExistsError:
                src = os.stat(target[-1], dir_fd=tfd, follow_symlinks=False)
                dst = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                if stat.S_ISDIR(src.st_mode):
                    raise LayerError(f"hard link {_show(parts)} to directory {_show(target)}")
                if (src.st_dev, src.st_ino) == (dst.st_dev, dst.st_ino):
                    return
                if attempt == 2:
                    raise
                if target[: len(parts)] == parts:
                    # the target lives below the name being replaced: hold its inode
                    # under a temporary name while the old tree goes, then rename
                    tmp = b".isobox-link-" + os.urandom(8).hex().encode()
                    os.link(target[-1], tmp, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
                    self._make_room(pfd, name)
                    os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
                    return
                self._make_room(pfd, name)
            except PermissionError as exc:  # a directory, or a host's protected_hardlinks
                raise LayerError(f"cannot hard link {_show(parts)} to {_show(target)}") from exc
        self._link_from_lower(pfd, parts, target)

    def _link_from_lower(
        self, pfd: int, parts: Tuple[bytes, ...], target: Tuple[bytes, ...]
    ) -> None:
        """A hard link to a file of a lower layer: overlayfs layers cannot share an inode,
        so the file is copied (as overlayfs's own copy-up does); later links to the same
        target link to this copy."""
        self.depends_on_lower = True
        name = parts[-1]
        found = self._find_in_lowers(target)
        if found is None:
            raise LayerError(f"hard link {_show(parts)} points at missing {_show(target)}")
        tfd, st = found
        try:
            self._make_room(pfd, name)
            if stat.S_ISREG(st.st_mode):
                self._copy_file(tfd, target[-1], pfd, name, st)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(target[-1], dir_fd=tfd), name, dir_fd=pfd)
                if self.can_chown:
                    os.chown(name, st.st_uid, st.st_gid, dir_fd=pfd, follow_symlinks=False)
            else:
                raise LayerError(
                    f"hard link {_show(parts)} to lower {_show(target)}: "
                    "only files and symlinks can be copied up"
                )
            self._lower_copies[target] = parts
        finally:
            os.close(tfd)

    def _find_in_lowers(
        self, target: Tuple[bytes, ...]
    ) -> Optional[Tuple[int, os.stat_result]]:
        """The lower layers' view of ``target``, as overlayfs would merge them
        (`overlay.find`): an O_PATH fd of its parent (the caller closes it) and its lstat."""
        found = _overlay.find(self.lower_dirs, b"/".join(target))
        if not isinstance(found, _overlay.Found):
            return None
        return found.parent_fd, found.st

    def _copy_file(
        self, sfd_dir: int, sname: bytes, pfd: int, name: bytes, st: os.stat_result
    ) -> None:
        # What is written counts: a sparse file's holes are kept (below), not written.
        self.copied += min(st.st_size, st.st_blocks * 512)
        if self.copied > self.limits.max_total_size:
            raise LayerError("hard links copy more than Limits.max_total_size from lower layers")
        src = os.open(sname, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd_dir)
        try:
            dst = os.open(name, _O_NEW_FILE, 0o600, dir_fd=pfd)
            try:
                # Only the data segments are copied (lseek(2) SEEK_DATA/SEEK_HOLE, Linux
                # 3.1; file systems without them report one segment), then the size is
                # set: a sparse lower file stays sparse, as overlayfs's copy-up keeps it.
                pos = 0
                while pos < st.st_size:
                    try:
                        start = os.lseek(src, pos, os.SEEK_DATA)
                    except OSError as exc:
                        if exc.errno == errno.ENXIO:  # only a hole is left
                            break
                        raise
                    end = min(os.lseek(src, start, os.SEEK_HOLE), st.st_size)
                    os.lseek(dst, start, os.SEEK_SET)
                    while start < end:
                        n = os.sendfile(dst, src, start, min(end - start, 64 * _MiB))
                        if n == 0:  # the file shrank under us
                            break
                        start += n
                    pos = end if start >= end else st.st_size
                os.ftruncate(dst, st.st_size)
                if self.can_chown:
                    os.fchown(dst, st.st_uid, st.st_gid)
                os.fchmod(dst, stat.S_IMODE(st.st_mode))
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(dst)
        finally:
            os.close(src)

    # -- xattrs
    def _xattr_allowed(self, key: str) -> Optional[str]:
        """None when the archive's xattr may be set here, else why not."""
        if key.startswith(("trusted.overlay.", "user.overlay.")):
            return "overlayfs metadata from the archive is refused"
        if key.startswith("user."):
            return None
        if key == "security.capability" or key.startswith("trusted."):
            return None if self.rootful else "needs root"
        return "namespace not restored from layers"

    def _set_xattrs(self, target: Union[int, bytes], xattrs: Dict[str, bytes], what: bytes) -> None:
        for key, value in xattrs.items():
            why = self._xattr_allowed(key)
            if why is None:
                try:
                    if isinstance(target, int):
                        os.setxattr(target, key, value)
                    else:
                        os.setxattr(target, key, value, follow_symlinks=False)
                    continue
                except OSError as exc:
                    why = exc.strerror or str(exc)
            self.skipped.append(f"{os.fsdecode(what)}: xattr {key}: {why}")

    # -- end of the layer
    def finish(self) -> None:
        self._forget_dirfds()
        self._apply_whiteouts()
        self._apply_dir_metadata()

    def _open_dir(self, parts: Tuple[bytes, ...]) -> Optional[int]:
        """A read fd of the directory at canonical ``parts``, or None if none is there."""
        if not parts:
            return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.root_fd)
        if len(parts) == 1:
            pfd = self.root_fd
        else:
            pfd = self._openat2(self.root_fd, b"/".join(parts[:-1]), _O_PATH_DIR)
            if pfd < 0:
                return None
        try:
            return os.open(parts[-1], _O_DIR_FD, dir_fd=pfd)
        except OSError:
            return None
        finally:
            if pfd != self.root_fd:
                os.close(pfd)

    def _opaque_xattr(self, fd: int, value: bytes) -> None:
        os.setxattr(fd, f"{self.ns}.overlay.opaque", value)

    def _apply_whiteouts(self) -> None:
        opaque = set(self._opaque)
        if () in opaque:
            # overlayfs ignores the opaque xattr on a lower layer's root: hide each name of
            # the lower roots with a whiteout instead.
            opaque.discard(())
            self.depends_on_lower = True
            at_root = self._whiteouts.setdefault((), set())
            for lower in self.lower_dirs:
                at_root.update(os.fsencode(n) for n in os.listdir(lower))
        whiteouts: Dict[Tuple[bytes, ...], List[bytes]] = {}
        for parent, wanted in self._whiteouts.items():
            fd = self._open_dir(parent)
            if fd is None:
                continue
            try:
                for name in sorted(wanted):
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        whiteouts.setdefault(parent, []).append(name)
                        continue
                    if stat.S_ISDIR(st.st_mode):  # deleted below, recreated here
                        opaque.add(parent + (name,))
            finally:
                os.close(fd)
        for parts in sorted(opaque):
            fd = self._open_dir(parts)
            if fd is None:
                continue
            try:
                self._opaque_xattr(fd, b"y")
            except OSError as exc:
                raise LayerError(
                    f"cannot mark {_show(parts)} opaque ({self.ns}.overlay.opaque)"
                ) from exc
            finally:
                os.close(fd)
        for parent, names in whiteouts.items():
            if any(parent[:i] in opaque for i in range(len(parent) + 1)):
                continue  # an opaque directory already hides everything below
            fd = self._open_dir(parent)
            if fd is None:
                continue
            try:
                for name in names:
                    self._make_whiteout(fd, parent, name)
            finally:
                os.close(fd)

    def _make_whiteout(self, fd: int, parent: Tuple[bytes, ...], name: bytes) -> None:
        if self.whiteout_format == "device":
            try:
                # a 0:0 character device; any user may make one since Linux 5.8
                # (a3c751a50fe6 "vfs: allow unprivileged whiteout creation")
                os.mknod(name, stat.S_IFCHR, 0, dir_fd=fd)
                return
            except PermissionError as exc:
                if not self.format_is_default:
                    raise LayerError(
                        f"cannot create whiteout {_show(parent + (name,))}"
                    ) from exc
                log.warning("mknod of a whiteout refused; using xattr whiteouts (Linux >= 6.7)")
                self.whiteout_format = "xattr"
        try:
            wfd = os.open(name, _O_NEW_FILE, 0o600, dir_fd=fd)
            try:
                os.setxattr(wfd, f"{self.ns}.overlay.whiteout", b"y")
            finally:
                os.close(wfd)
            # the parent says it holds xattr whiteouts, so overlayfs looks for them
            self._opaque_xattr(fd, b"x")
        except OSError as exc:
            raise LayerError(f"cannot create whiteout {_show(parent + (name,))}") from exc

    def _apply_dir_metadata(self) -> None:
        # Deepest first: a directory's mode may forbid the caller to enter it, and
        # creating content changes its mtime.
        for parts in sorted(self._dirs, key=len, reverse=True):
            meta = self._dirs[parts]
            fd = self._open_dir(parts)
            if fd is None:
                continue
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != meta.ident:
                    continue  # replaced by a later entry
                if self.can_chown and meta.uid is not None and meta.gid is not None:
                    os.fchown(fd, meta.uid, meta.gid)
                if meta.xattrs:
                    self._set_xattrs(fd, meta.xattrs, b"/".join(parts) or b"/")
                os.fchmod(fd, meta.mode)
                if meta.mtime_ns is not None:
                    atime = meta.atime_ns if meta.atime_ns is not None else meta.mtime_ns
                    os.utime(fd, ns=(_clamp_ns(atime), _clamp_ns(meta.mtime_ns)))
            finally:
                os.close(fd)


def _umask() -> int:
    """The process umask, read without setting it (os.umask would race other threads)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777  # unknown: never trust open(2)'s mode, always fchmod


# --------------------------------------------------------------------------- API


def apply_layer(
    chunks: Iterable[bytes],
    dest: Union[str, "os.PathLike[str]"],
    *,
    media_type: Optional[str] = None,
    limits: Limits = Limits(),
    lower_dirs: Sequence[Union[str, "os.PathLike[str]"]] = (),
    whiteout_format: Optional[str] = None,
    userxattr: Optional[bool] = None,
    existing: bool = False,
    privilege: Optional[Privilege] = None,
) -> LayerStats:
    """Applies one layer stream to ``dest``, an existing empty directory (a temporary name
    the caller renames once this returns; after an exception the caller removes it with
    `isobox.host.fs.remove_tree`).

    ``chunks`` are the blob's bytes as they arrive (gzip, zstd or plain tar, by magic
    bytes; ``media_type``, if given, must be a layer type).  Exceptions the iterator
    raises (a digest mismatch) propagate unchanged; the stream is always read to its end.

    ``lower_dirs`` are the layers below, lowest first: a hard link to a file of a lower
    layer is resolved there and copied, and an opaque marker at the root whites out their
    names.  Either makes the result depend on them (`LayerStats.depends_on_lower`).

    ``whiteout_format``: "device" (0:0 character devices; the default, for root and, since
    Linux 5.8, for everyone, falling back to "xattr" if mknod is refused) or "xattr"
    (overlayfs >= 6.7 xattr whiteouts).  ``userxattr``: the layer will be mounted with
    ``-o userxattr`` in a user namespace, so overlay metadata goes to ``user.overlay.*``
    instead of ``trusted.overlay.*``; default: ``privilege``'s (`Privilege.overlay_xattrs`).

    ``privilege`` (default: this process's, `Privilege.current`; a pull passes its
    store's) says whether entries get their archive's owners, device nodes are made and
    ``trusted.*`` xattrs are set, or entries stay the caller's (`LayerStats.owners`).

    ``existing=True`` applies a plain tar stream into a directory that already has content
    (copies into a container, `docker cp`): its mode is kept, and whiteout names are refused
    rather than applied.

    Raises LayerError for malformed or hostile input, and never writes outside ``dest``.
    """
    if _lib is None:
        raise HostNotSupported("isobox's native core is not built; reinstall: pip install .")
    if media_type is not None and media_type not in LAYER_MEDIA_TYPES:
        raise LayerError(f"{media_type!r} is not a layer media type isobox can apply")
    if whiteout_format not in (None, "device", "xattr"):
        raise InvalidOption(f"whiteout_format must be 'device' or 'xattr', not {whiteout_format!r}")
    privilege = privilege or Privilege.current()
    namespace = privilege.overlay_xattrs if userxattr is None else "user" if userxattr else "trusted"
    if namespace == "trusted" and not privilege.rootful:
        raise InvalidOption("trusted.overlay.* xattrs need root: pass userxattr=True")
    try:
        writer = _LayerWriter(
            os.fspath(dest),
            [os.fspath(d) for d in lower_dirs],
            whiteout_format or "device",
            whiteout_format is None,
            namespace,
            limits,
            privilege,
            existing,
        )
    except OSError as exc:
        raise LayerError(f"cannot apply a layer to {os.fspath(dest)!r}: {exc.strerror}") from exc
    inflater = Inflater(chunks, limits.max_total_size)
    inflater.start()
    source_error: Optional[Exception] = None
    try:
        reader = TarReader(inflater.get, limits)
        try:
            while True:
                entry = reader.next()
                if entry is None:
                    break
                try:
                    writer.apply(entry, reader)
                except OSError as exc:
                    raise LayerError(
                        f"cannot apply {os.fsdecode(entry.name)!r}: {exc.strerror or exc}"
                    ) from exc
            inflater.drain()
            writer.finish()
        except FromSource as exc:
            source_error = exc.original  # raised below, outside this handler's context
        except OSError as exc:
            raise LayerError(f"cannot apply layer: {exc.strerror or exc}") from exc
        except RecursionError as exc:  # pragma: no cover - defensive; code is iterative
            raise LayerError("layer nests too deeply") from exc
    finally:
        inflater.close()
        writer.close()
    if source_error is not None:
        raise source_error
    if writer.skipped:
        log.warning(
            "layer %s: %d entries or xattrs not applied without privilege: %s%s",
            inflater.hasher.digest[:19],
            len(writer.skipped),
            "; ".join(writer.skipped[:5]),
            " ..." if len(writer.skipped) > 5 else "",
        )
    return LayerStats(
        diff_id=inflater.hasher.digest,
        size=inflater.size,
        entries=reader.entries,
        skipped=tuple(writer.skipped),
        depends_on_lower=writer.depends_on_lower,
        owners=tuple((os.fsdecode(p), u, g, m) for p, (u, g, m) in writer.owners.items()),
    )
