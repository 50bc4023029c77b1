"""A container's log files read back: `read` (everything its files keep) and `follow`
(as they grow, across rotations), for `logs()` and `isobox logs [-f]`.

The files are logs.py's (its docstring describes them and their rotation). Readers never
lock out the writer: they open every file of the chain, then check that no name moved
meanwhile (a rotation always changes what the live name is, and names only ever move
towards older numbers), and try again if one did.
"""

from __future__ import annotations

import errno as _errno
import os
import time
from typing import Callable, Iterator, List, Sequence, Tuple, Union

from ..errors import StoreError
from .logs import OPEN_DIR, log_name, rotated_number

# What a reader takes from one file per read(2).
_READ = 1 << 16
# O_NONBLOCK on the reads: a FIFO planted at a log's name must not hang a reader; on a
# regular file it changes nothing.
_OPEN_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _chain_names(dfd: int, live: str) -> List[str]:
    """The stream's files by name, oldest first, the live one last."""
    numbered = []
    has_live = False
    for name in os.listdir(dfd):
        if name == live:
            has_live = True
            continue
        n = rotated_number(name, live)
        if n is not None:
            numbered.append((n, name))
    names = [name for _, name in sorted(numbered, reverse=True)]
    if has_live:
        names.append(live)
    return names


_Opened = List[Tuple[str, int, Tuple[int, int]]]


def _identity(st: os.stat_result) -> Tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _snapshot(dfd: int, cdir: str, live: str) -> _Opened:
    """Open every file of a stream's chain as one instant saw it, oldest first.

    Files are opened one by one while rotation may move them, so after opening, every
    name is looked at again: when the same names still hold the same files, nothing
    moved in between (names only move towards older numbers, and the live name gets a
    new file at every rotation, so no name ever holds a file it held before), and what
    was opened is the chain of that moment. A rotation in the middle (a gap in the
    numbers, or no live file yet) is such a moment too: no output is missing from it."""
    for _ in range(1000):
        opened: _Opened = []
        try:
            for name in _listed(dfd, cdir, live):
                try:
                    fd = os.open(name, _OPEN_READ, dir_fd=dfd)
                except FileNotFoundError:
                    continue
                except OSError as e:
                    # ELOOP: a symlink planted at a log's name, which we never follow
                    raise StoreError(f"container log: open {os.path.join(cdir, name)}: "
                                     f"{os.strerror(e.errno or _errno.EIO)}") from e
                opened.append((name, fd, _identity(os.fstat(fd))))
            if _unmoved(dfd, cdir, live, opened):
                return opened
        except BaseException:
            _close_all(opened)
            raise
        _close_all(opened)
    raise StoreError(f"container log: the {live} files kept rotating while being read")


def _listed(dfd: int, cdir: str, live: str) -> List[str]:
    try:
        return _chain_names(dfd, live)
    except OSError as e:
        # ENOENT: the directory was removed (the container with it)
        raise StoreError(f"container log: list {cdir}: {os.strerror(e.errno or _errno.EIO)}") from e


def _unmoved(dfd: int, cdir: str, live: str, opened: _Opened) -> bool:
    if _listed(dfd, cdir, live) != [name for name, _, _ in opened]:
        return False
    for name, _, ident in opened:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if _identity(st) != ident:
            return False
    return True


def _close_all(opened: _Opened) -> None:
    for _, fd, _ in opened:
        os.close(fd)


def _open_dir(cdir: Union[str, os.PathLike[str]]) -> int:
    try:
        return os.open(cdir, OPEN_DIR)
    except OSError as e:
        raise StoreError(f"container log: open {os.fspath(cdir)}: {os.strerror(e.errno or _errno.EIO)}") from e


def _read_to_end(fd: int) -> bytes:
    parts: List[bytes] = []
    while True:
        chunk = os.read(fd, _READ)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def read(cdir: Union[str, os.PathLike[str]], stream: str) -> bytes:
    """What a container wrote to ``stream`` ("stdout" or "stderr") and its files keep:
    the rotated files, oldest first, then the live one, as one consistent chain even
    while the pump rotates them (empty when nothing was written)."""
    live = log_name(stream)
    dfd = _open_dir(cdir)
    try:
        opened = _snapshot(dfd, os.fspath(cdir), live)
    finally:
        os.close(dfd)
    try:
        return b"".join(_read_to_end(fd) for _, fd, _ in opened)
    except OSError as e:
        raise StoreError(f"container log: read {os.path.join(os.fspath(cdir), live)}: "
                         f"{os.strerror(e.errno or _errno.EIO)}") from e
    finally:
        _close_all(opened)


class _Follower:
    """One stream read as it grows: the file being read, and where it goes next."""

    def __init__(self, dfd: int, cdir: str, stream: str) -> None:
        self.dfd = dfd
        self.cdir = cdir
        self.stream = stream
        self.live = log_name(stream)
        self.fd = -1
        self.ident = (0, 0)
        self.at_end = False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _is_live(self) -> bool:
        try:
            st = os.stat(self.live, dir_fd=self.dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return _identity(st) == self.ident

    def _next(self) -> bool:
        """Move to the file after the current one (the oldest at the start); False when
        there is none yet (nothing written, or a rotation half done)."""
        opened = _snapshot(self.dfd, self.cdir, self.live)
        pick = None
        if self.fd < 0:
            pick = 0 if opened else None
        else:
            idents = [ident for _, _, ident in opened]
            if self.ident in idents:
                i = idents.index(self.ident)
                pick = i + 1 if i + 1 < len(opened) else None
            elif opened:
                # ours left the chain (max_files=1 unlinks it, or rotation outran us and
                # dropped it): the oldest kept file follows it
                pick = 0
        for j, (_, fd, _) in enumerate(opened):
            if j != pick:
                os.close(fd)
        if pick is None:
            return False
        self.close()
        _, self.fd, self.ident = opened[pick]
        return True

    def take(self, limit: int) -> List[bytes]:
        """Up to about ``limit`` bytes of what is there now; ``at_end`` when all was read
        (the live file is at its end, or it is being replaced and nothing else is kept)."""
        out: List[bytes] = []
        total = 0
        self.at_end = False
        while total < limit:
            if self.fd < 0 and not self._next():
                self.at_end = True
                return out
            chunk = os.read(self.fd, _READ)
            if chunk:
                out.append(chunk)
                total += len(chunk)
                continue
            if self._is_live():
                self.at_end = True
                return out
            # Ours is no longer the live file: the writer finished it before renaming it
            # away, and what it wrote after our last read is there now.
            rest = _read_to_end(self.fd)
            if rest:
                out.append(rest)
                total += len(rest)
            if not self._next():
                self.at_end = True
                return out
        return out


def follow(cdir: Union[str, os.PathLike[str]], streams: Sequence[str], done: Callable[[], bool],
           poll_interval: float = 0.02,
           wait: Callable[[float], None] = time.sleep) -> Iterator[Tuple[str, bytes]]:
    """(stream, bytes) as the container writes them, from the oldest kept byte on, until
    ``done()`` is true and every file was read to its end.

    ``done`` must become true only once every byte is in the files (`Sink.finish`
    returned, or the owner recorded so): checked before each round, a true answer ends
    the following after that round. Removing the directory ends it as well. A rotation is followed: the file renamed away is
    read to its end before the next one. A reader that falls more than max_files - 1
    files behind misses the files dropped meanwhile (they are gone from disk), and goes
    on from the oldest kept file. Between streams, order is not kept (as with Docker).
    ``wait(poll_interval)`` is how a round with nothing new waits: a caller that can tell
    sooner that something happened (the container exited, a signal came) returns early."""
    names = list(streams)
    for s in names:
        log_name(s)
    dfd = _open_dir(cdir)
    followers = [_Follower(dfd, os.fspath(cdir), s) for s in names]
    try:
        while True:
            # a removed directory (the container was removed) ends the following too: no
            # byte will come any more, as Docker's follow ends when its producer is gone
            finished = done() or os.fstat(dfd).st_nlink == 0
            got = False
            for f in followers:
                # a bounded share per round, so a flood on one stream leaves room for the other
                try:
                    chunks = f.take(16 * _READ)
                except OSError as e:
                    raise StoreError(f"container log: read {os.path.join(os.fspath(cdir), f.live)}: "
                                     f"{os.strerror(e.errno or _errno.EIO)}") from e
                for chunk in chunks:
                    got = True
                    yield f.stream, chunk
            if finished and all(f.at_end for f in followers):
                return
            if not got:
                wait(poll_interval)
    finally:
        for f in followers:
            f.close()
        os.close(dfd)
