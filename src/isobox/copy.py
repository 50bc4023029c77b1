"""Copying into and out of a running container (`docker cp`), as tar streams.

The container's root comes from inside its mount namespace (native.container_root: a
helper joins it and hands back an O_PATH fd of "/"), so its own mounts (volumes, tmpfs)
are seen as its processes see them. Every path below it is resolved by the kernel with
the container's root as root (openat2 RESOLVE_IN_ROOT): a symlink in the container,
absolute or `..`, never leads to the host. Walking for `get_archive` goes one component
at a time with O_NOFOLLOW; `put_archive` applies the stream with unpack.apply_layer,
which resolves the same way.
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import tarfile
from typing import IO, TYPE_CHECKING, Iterable, Iterator, List, Optional, Tuple, Union

from . import native
from .errors import ContainerError, InvalidOption

if TYPE_CHECKING:
    import tempfile

    from .container import Container

RESOLVE_IN_ROOT = 0x10
RESOLVE_NO_MAGICLINKS = 0x02


def _open_in(root_fd: int, path: str, flags: int) -> int:
    from ._native._core import lib

    rel = path.lstrip("/") or "."
    fd = int(lib.ib_openat2(root_fd, os.fsencode(rel), flags | os.O_CLOEXEC, 0,
                            RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS))
    if fd < 0:
        raise ContainerError(f"{path}: {os.strerror(-fd)} in the container") from OSError(-fd, os.strerror(-fd))
    return fd


def _root(container: "Container") -> int:
    fds = container._namespace_fds()
    return native.container_root(fds)


def put_archive(container: "Container", path: str, data: Union[bytes, Iterable[bytes]]) -> None:
    """Extract a tar stream into the directory ``path`` of the running container, with
    unpack.apply_layer's safety (whiteout names are refused, not applied)."""
    from .unpack import apply_layer

    _check_path(path)
    root = _root(container)
    try:
        target = _open_in(root, path, os.O_PATH | os.O_DIRECTORY)
    finally:
        os.close(root)
    try:
        chunks = _chunks(data) if isinstance(data, bytes) else iter(data)
        apply_layer(chunks, f"/proc/self/fd/{target}", existing=True)
    finally:
        os.close(target)


def get_archive(container: "Container", path: str, arcname: "str | None" = None) -> bytes:
    """A tar stream of ``path`` (a file, or a directory and everything below it) in the
    running container, named ``arcname`` (default: its last component), as `docker cp`
    makes it. In memory: `copy_from` spools to disk instead."""
    out = io.BytesIO()
    _write_archive(container, path, arcname, out)
    return out.getvalue()


def _write_archive(container: "Container", path: str, arcname: "str | None", out: IO[bytes]) -> None:
    _check_path(path)
    root = _root(container)
    try:
        parent = _open_in(root, posixpath.dirname(path.rstrip("/")) or "/", os.O_PATH | os.O_DIRECTORY)
    finally:
        os.close(root)
    name = posixpath.basename(path.rstrip("/")) or "."
    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, parent, name, arcname or name)
    except FileNotFoundError as exc:
        raise ContainerError(f"{path}: no such file or directory in the container") from exc
    finally:
        os.close(parent)


def _spool(container: "Container") -> "tempfile.SpooledTemporaryFile[bytes]":
    """A file for a tar stream on its way: memory up to 16 MiB, then a file in the
    container's state directory (a container can make a copy as large as it likes)."""
    import tempfile

    return tempfile.SpooledTemporaryFile(max_size=16 << 20, mode="w+b", dir=str(container.dir))


def _read_chunks(f: "tempfile.SpooledTemporaryFile[bytes]", size: int = 1 << 20) -> Iterator[bytes]:
    f.seek(0)
    return iter(lambda: f.read(size), b"")


# Directories below the one copied out. Each open level holds an fd (an unprivileged
# user's soft limit is often 1024), and a container can nest as deep as it likes.
MAX_DEPTH = 512


def _add(tar: tarfile.TarFile, dirfd: int, name: str, arcname: str) -> None:
    """Add dirfd/name (never following a symlink) and, for a directory, what is below:
    depth first, by name, iteratively (a container's tree can be deeper than Python
    recurses), with at most `MAX_DEPTH` levels below it."""
    stack: List[Tuple[int, Iterator[str], str]] = []  # open directories: fd, names left, arcname

    def push(fd: int, base: str) -> None:
        try:
            names = sorted(os.listdir(fd))
        except BaseException:
            os.close(fd)
            raise
        stack.append((fd, iter(names), base))

    try:
        sub = _add_entry(tar, dirfd, name, arcname)
        if sub is not None:
            push(sub, arcname)
        while stack:
            fd, names, base = stack[-1]
            child = next(names, None)
            if child is None:
                os.close(fd)
                stack.pop()
                continue
            sub = _add_entry(tar, fd, child, f"{base}/{child}")
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


def _add_entry(tar: tarfile.TarFile, dirfd: int, name: str, arcname: str) -> Optional[int]:
    """Add dirfd/name itself; for a directory, return an fd of it to walk."""
    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.mtime = int(st.st_mtime)
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(name, dir_fd=dirfd)
        tar.addfile(info)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        with os.fdopen(fd, "rb") as f:
            info.size = os.fstat(f.fileno()).st_size
            tar.addfile(info, f)
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    elif stat.S_ISFIFO(st.st_mode):
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    # sockets and devices are left out, as docker cp leaves out sockets
    return None


def copy_to(container: "Container", host_path: Union[str, "os.PathLike[str]"], path: str) -> None:
    """Copy a host file or directory into the container (`docker cp SRC CONTAINER:DEST`):
    into ``path`` when it is an existing directory, else to ``path`` itself."""
    src = os.fspath(host_path)
    if not os.path.lexists(src):
        raise InvalidOption(f"no such file or directory on the host: {src}")
    _check_path(path)
    into_dir = _is_dir(container, path)
    dest_dir = path if into_dir else (posixpath.dirname(path.rstrip("/")) or "/")
    arcname = os.path.basename(src.rstrip("/")) if into_dir else posixpath.basename(path.rstrip("/"))
    with _spool(container) as buf:
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(src, arcname=arcname)
        put_archive(container, dest_dir, _read_chunks(buf))


def copy_from(container: "Container", path: str, host_path: Union[str, "os.PathLike[str]"]) -> None:
    """Copy a file or directory out of the container (`docker cp CONTAINER:SRC DEST`):
    into ``host_path`` when it is an existing directory, else to ``host_path`` itself.
    Symlinks are copied as symlinks; the stream is applied with the same kernel-resolved
    safety as image layers, so nothing lands outside the destination."""
    from .unpack import apply_layer

    dest = os.path.abspath(os.fspath(host_path))
    into_dir = os.path.isdir(dest)
    target_dir = dest if into_dir else os.path.dirname(dest)
    arcname = (posixpath.basename(path.rstrip("/")) or ".") if into_dir else os.path.basename(dest)
    with _spool(container) as buf:
        _write_archive(container, path, arcname, buf)
        apply_layer(_read_chunks(buf), target_dir, existing=True)


def _is_dir(container: "Container", path: str) -> bool:
    root = _root(container)
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
