"""Copying into and out of a running container (`docker cp`), as tar streams.

The container's root comes from inside its mount namespace (`Root.open`: its owner's
native.container_root, a helper that joins it and hands back an O_PATH fd of "/"; a
client of the owner gets that fd over the control socket), so its own mounts (volumes,
tmpfs) are seen as its processes see them. Every path below it is resolved by the kernel with
the container's root as root (openat2 RESOLVE_IN_ROOT): a symlink in the container,
absolute or `..`, never leads to the host. Walking for `get_archive` goes one component
at a time with O_PATH|O_NOFOLLOW, and what fstat of that descriptor shows is what is
archived: a regular file is read through the descriptor itself, so a FIFO or a device the
container swaps in after a look is never opened (a FIFO would block us; a device node
the container made could be a device of the host). `put_archive` applies the stream with
unpack.apply_layer, which resolves the same way.

Ownership as `docker cp` gives it: what is copied in belongs to the container's root,
what is copied out to the caller (modes are kept). A copy out is unpacked into a private
directory next to its destination, then moved into place entry by entry, so that only
the caller's write permission on the destination matters (the caller need not own it,
as with /tmp), and a failure names the path and the step.
"""

from __future__ import annotations

import io
import os
import pathlib
import posixpath
import stat
import tarfile
import tempfile
from typing import IO, Callable, Iterable, Iterator, List, Optional, Tuple, Union

import attrs

from ..errors import ContainerError, InvalidOption
from ..host.privilege import Privilege


@attrs.frozen
class Root:
    """A running container as a copy sees it: its ``name`` (for errors), how to ``open``
    an O_PATH fd of its "/" (the caller closes it), and ``spool_dir``, where a copy too
    large for memory waits on its way (the container's state directory), and the
    ``privilege`` of its store (whether what is copied in gets the archive's owners)."""

    name: str
    open: Callable[[], int]
    spool_dir: pathlib.Path
    privilege: Privilege



def _open_in(root_fd: int, path: str, flags: int) -> int:
    from .._native._core import lib

    rel = path.lstrip("/") or "."
    fd = int(lib.ib_openat2(root_fd, os.fsencode(rel), flags | os.O_CLOEXEC, 0,
                            lib.IB_RESOLVE_IN_ROOT | lib.IB_RESOLVE_NO_MAGICLINKS))
    if fd < 0:
        raise ContainerError(f"{path}: {os.strerror(-fd)} in the container") from OSError(-fd, os.strerror(-fd))
    return fd


def put_archive(container: Root, path: str, data: Union[bytes, Iterable[bytes]]) -> None:
    """Extract a tar stream into the directory ``path`` of the running container, with
    unpack.apply_layer's safety (whiteout names are refused, not applied)."""
    from ..images.unpack import apply_layer

    _check_path(path)
    root = container.open()
    try:
        target = _open_in(root, path, os.O_PATH | os.O_DIRECTORY)
    finally:
        os.close(root)
    try:
        chunks = _chunks(data) if isinstance(data, bytes) else iter(data)
        apply_layer(chunks, f"/proc/self/fd/{target}", existing=True, privilege=container.privilege)
    finally:
        os.close(target)


def get_archive(container: Root, path: str, arcname: "str | None" = None) -> bytes:
    """A tar stream of ``path`` (a file, or a directory and everything below it) in the
    running container, named ``arcname`` (default: its last component), as `docker cp`
    makes it. In memory: `copy_from` spools to disk instead."""
    out = io.BytesIO()
    _write_archive(container, path, arcname, out)
    return out.getvalue()


def _write_archive(container: Root, path: str, arcname: "str | None", out: IO[bytes],
                   owner: Optional[Tuple[int, int]] = None) -> None:
    """``owner``: the uid and gid every entry gets (copies out), else their own."""
    _check_path(path)
    root = container.open()
    try:
        parent = _open_in(root, posixpath.dirname(path.rstrip("/")) or "/", os.O_PATH | os.O_DIRECTORY)
    finally:
        os.close(root)
    name = posixpath.basename(path.rstrip("/")) or "."
    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, parent, name, arcname or name, owner, path.rstrip("/") or "/",
                 rootless=not container.privilege.rootful)
    except FileNotFoundError as exc:
        raise ContainerError(f"{path}: no such file or directory in the container") from exc
    finally:
        os.close(parent)


def _spool(container: Root) -> "tempfile.SpooledTemporaryFile[bytes]":
    """A file for a tar stream on its way: memory up to 16 MiB, then a file in the
    container's state directory (a container can make a copy as large as it likes)."""
    return tempfile.SpooledTemporaryFile(max_size=16 << 20, mode="w+b", dir=str(container.spool_dir))


def _read_chunks(f: "tempfile.SpooledTemporaryFile[bytes]", size: int = 1 << 20) -> Iterator[bytes]:
    f.seek(0)
    return iter(lambda: f.read(size), b"")


# Directories below the one copied out. Each open level holds an fd (an unprivileged
# user's soft limit is often 1024), and a container can nest as deep as it likes.
MAX_DEPTH = 512


def _add(tar: tarfile.TarFile, dirfd: int, name: str, arcname: str,
         owner: Optional[Tuple[int, int]] = None, where: str = "", *, rootless: bool = False) -> None:
    """Add dirfd/name (never following a symlink) and, for a directory, what is below:
    depth first, by name, iteratively (a container's tree can be deeper than Python
    recurses), with at most `MAX_DEPTH` levels below it. ``where`` is its path in the
    container, for errors."""
    stack: List[Tuple[int, Iterator[str], str]] = []  # open directories: fd, names left, arcname

    def entry(fd: int, child: str, arc: str) -> Optional[int]:
        try:
            return _add_entry(tar, fd, child, arc, owner)
        except OSError as exc:
            if fd == dirfd and isinstance(exc, FileNotFoundError):
                raise  # the path asked for: _write_archive says so
            shown = where + arc[len(arcname):]
            hint = ""
            if isinstance(exc, PermissionError) and rootless:
                hint = (" (a rootless copy reads as the calling user, who cannot read what only "
                        "another user of the container may read)")
            raise ContainerError(f"{shown}: cannot copy it out of the container: "
                                 f"{exc.strerror or exc}{hint}") from exc

    def push(fd: int, base: str) -> None:
        try:
            names = sorted(os.listdir(fd))
        except BaseException:
            os.close(fd)
            raise
        stack.append((fd, iter(names), base))

    try:
        sub = entry(dirfd, name, arcname)
        if sub is not None:
            push(sub, arcname)
        while stack:
            fd, names, base = stack[-1]
            child = next(names, None)
            if child is None:
                os.close(fd)
                stack.pop()
                continue
            sub = entry(fd, child, f"{base}/{child}")
            if sub is None:
                continue
            if len(stack) > MAX_DEPTH:
                os.close(sub)
                raise ContainerError(f"{arcname}: directories nest more than {MAX_DEPTH} levels deep; "
                                     "copy a subdirectory")
            push(sub, f"{base}/{child}")
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _add_entry(tar: tarfile.TarFile, dirfd: int, name: str, arcname: str,
               owner: Optional[Tuple[int, int]] = None) -> Optional[int]:
    """Add dirfd/name itself; for a directory, return an fd of it to walk. The entry is
    looked at once, through an O_PATH descriptor that never follows it, and only that
    descriptor's file is read (see the module docstring)."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        st = os.fstat(fd)
        info = tarfile.TarInfo(arcname)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = owner if owner is not None else (st.st_uid, st.st_gid)
        info.mtime = int(st.st_mtime)
        if stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink("", dir_fd=fd)  # readlinkat(2) on the link itself
            tar.addfile(info)
        elif stat.S_ISREG(st.st_mode):
            # the reopened file is the one fstat saw (O_NONBLOCK: costs nothing, and a
            # mandatory lock cannot stall us)
            rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(rfd, "rb") as f:
                info.size = os.fstat(f.fileno()).st_size
                try:
                    tar.addfile(info, f)
                except OSError as exc:
                    if exc.errno is not None:
                        raise
                    # tarfile's "unexpected end of data": the container truncated it
                    raise ContainerError(f"{arcname}: the file shrank while it was copied") from exc
        elif stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        elif stat.S_ISFIFO(st.st_mode):
            info.type = tarfile.FIFOTYPE
            tar.addfile(info)
        # sockets and devices are left out, as docker cp leaves out sockets
        return None
    finally:
        os.close(fd)


def copy_to(container: Root, host_path: Union[str, "os.PathLike[str]"], path: str) -> None:
    """Copy a host file or directory into the container (`docker cp SRC CONTAINER:DEST`):
    into ``path`` when it is an existing directory, else to ``path`` itself. What is
    copied belongs to the container's root, as with Docker."""
    src = os.fspath(host_path)
    if not os.path.lexists(src):
        raise InvalidOption(f"no such file or directory on the host: {src}")
    _check_path(path)
    into_dir = _is_dir(container, path)
    dest_dir = path if into_dir else (posixpath.dirname(path.rstrip("/")) or "/")
    arcname = os.path.basename(src.rstrip("/")) if into_dir else posixpath.basename(path.rstrip("/"))

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with _spool(container) as buf:
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(src, arcname=arcname, filter=as_root)
        put_archive(container, dest_dir, _read_chunks(buf))


def copy_from(container: Root, path: str, host_path: Union[str, "os.PathLike[str]"]) -> None:
    """Copy a file or directory out of the container (`docker cp CONTAINER:SRC DEST`):
    into ``host_path`` when it is an existing directory, else to ``host_path`` itself.
    Symlinks are copied as symlinks; what is copied belongs to the caller, with its
    modes. The stream is unpacked with the same kernel-resolved safety as image layers,
    into a private directory beside the destination, then moved into place: a file
    replaces a file, a directory is merged into an existing directory, and a directory
    and a non-directory never replace each other (an error says so)."""
    from ..errors import LayerError
    from ..host.fs import remove_tree
    from ..images.unpack import apply_layer

    dest = os.path.abspath(os.fspath(host_path))
    into_dir = os.path.isdir(dest)
    target_dir = dest if into_dir else os.path.dirname(dest)
    arcname = (posixpath.basename(path.rstrip("/")) or ".") if into_dir else os.path.basename(dest)
    what = f"copy {path} out of container {container.name} to {dest}"
    with _spool(container) as buf:
        _write_archive(container, path, arcname, buf, owner=(os.geteuid(), os.getegid()))
        try:
            stage = tempfile.mkdtemp(prefix=".isobox-cp-", dir=target_dir)
        except OSError as exc:
            raise ContainerError(f"{what}: cannot create a file in {target_dir}: {exc.strerror}") from exc
        try:
            try:
                apply_layer(_read_chunks(buf), stage, existing=True, privilege=container.privilege)
            except LayerError as exc:
                raise ContainerError(f"{what}: unpacking into {stage}: {exc}") from exc
            _move_into_place(stage, target_dir, arcname, what)
        finally:
            remove_tree(pathlib.Path(stage), container.privilege)


def _move_into_place(stage: str, target_dir: str, name: str, what: str) -> None:
    """Move ``stage/name`` to ``target_dir/name`` as tar extraction would lay it over what
    is there (rename(2) each entry; merge directories into existing directories),
    never following a symlink of the destination. Iterative, two fds per level."""
    shown = os.path.join(target_dir, name)
    step = f"open {target_dir}"
    stack: List[Tuple[int, int, List[str], str]] = []
    try:
        sfd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            dfd = os.open(target_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except BaseException:
            os.close(sfd)
            raise
        stack.append((sfd, dfd, [name], target_dir))
        while stack:
            sfd, dfd, names, where = stack[-1]
            if not names:
                os.close(sfd)
                os.close(dfd)
                stack.pop()
                continue
            entry = names.pop()
            shown = os.path.join(where, entry)
            step = f"look at {shown}"
            source = os.stat(entry, dir_fd=sfd, follow_symlinks=False)
            try:
                there: Optional[os.stat_result] = os.stat(entry, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                there = None
            if there is not None and stat.S_ISDIR(source.st_mode) and stat.S_ISDIR(there.st_mode):
                step = f"merge into the directory {shown}"
                child_s = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
                try:
                    child_d = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                      dir_fd=dfd)
                except BaseException:
                    os.close(child_s)
                    raise
                stack.append((child_s, child_d, sorted(os.listdir(child_s), reverse=True), shown))
                continue
            if there is not None and stat.S_ISDIR(there.st_mode):
                raise ContainerError(f"{what}: cannot overwrite the directory {shown} with a non-directory")
            if there is not None and stat.S_ISDIR(source.st_mode):
                raise ContainerError(f"{what}: cannot overwrite the non-directory {shown} with a directory")
            step = f"move into place {shown}"
            os.rename(entry, entry, src_dir_fd=sfd, dst_dir_fd=dfd)  # replaces a file atomically
    except OSError as exc:
        raise ContainerError(f"{what}: {step}: {exc.strerror or exc}") from exc
    finally:
        for sfd, dfd, _, _ in stack:
            os.close(sfd)
            os.close(dfd)


def _is_dir(container: Root, path: str) -> bool:
    root = container.open()
    try:
        fd = _open_in(root, path, os.O_PATH)
    except ContainerError:
        return False
    finally:
        os.close(root)
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _check_path(path: str) -> None:
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise InvalidOption(f"container path must be absolute, got {path!r}")


def _chunks(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]
