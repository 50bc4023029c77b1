"""A container's log files: written from its pipes by a pump thread (read back by logread.py).

The container's stdout and stderr are pipes (container.py makes them); the host ends are
handed to `attach`, and from then on one daemon thread of the process ("isobox-logs")
moves the bytes into files of the container's directory, for every container of the
process at once (epoll, level-triggered: at most one write per ready pipe and round, so a
container that floods its pipe, or whose file sits on a slow disk, holds up the others by
one write at most, and one that writes nothing costs nothing but its fds).

Why pipes and not the files themselves as fds 1 and 2 (issue 9): a process that reopens
``/proc/self/fd/1`` gets a new open file description of what fd 1 is. For a host file
that is the host file, which a container's real root can then fchmod, ftruncate or
write at any offset; for a pipe it is only the pipe (pipe(7), proc(5)).

On disk, per stream (``stdout`` and ``stderr``), in the container's directory:

- ``<stream>.log``: the live file, mode 0600;
- ``<stream>.log.1`` ... ``<stream>.log.<max_files-1>``: older output, .1 the newest.

Rotation is that of Docker's json-file and local drivers (moby
daemon/logger/loggerutils/logfile.go): when the live file holds ``max_size`` bytes and
more come, ``.N-1`` becomes ``.N`` (replacing the oldest), ..., the live file becomes
``.1`` and a new live file starts; with ``max_files=1`` the live file is unlinked and
created anew, not truncated, as Docker does, so a reader in the middle of it still reads
it to its end. Docker checks the size before each log entry, so its files overshoot by up
to one entry; ours hold raw bytes and are cut at exactly ``max_size``. The invariant, for
a stream of T bytes written through one policy (max_size M, max_files F) and none lost::

    read() == written[T - kept:],  kept = T if T <= F*M else (F-1)*M + (T-1) % M + 1

(the live file holds 1..M bytes once anything was written, every rotated file exactly M).

Every file is opened with O_NOFOLLOW, and from the first rotation on every name is
reached through an fd of the container's directory (opened then, so a sink that never
rotates holds no fd of it); renames never follow symlinks (rename(2)): nothing planted in
the directory redirects a write elsewhere.

A write that fails (ENOSPC, EDQUOT, EIO, EFBIG, a rotation or open that fails) never
blocks the container: that chunk is drained from the pipe and dropped (spliced to
/dev/null) and counted in `Sink.lost` with the step, the path and the errno. The next
chunk tries the file again, so logging resumes once space is back: Docker's drivers do
the same (each entry is written or lost on its own), a full disk is mostly a passing
state (a cleanup frees it), and the output after it is what explains what happened. The
gap is never silent: `Sink.lost` says how many bytes of which stream, and why.

The bytes move with splice(2), page references from the pipe into the file without a
copy through Python, at an offset we keep ourselves (splice refuses O_APPEND files with
EINVAL). Where splice is missing (Python 3.9 has no os.splice) or refused (a file
system without splice_write), read(2) and pwrite(2) do the same job.

Readers are logread.py's (`read`, `follow`); the names are this module's (`log_name`,
`rotated_number`).
"""

from __future__ import annotations

import errno as _errno
import fcntl
import os
import re
import select
import stat
import struct
import termios
import threading
import time
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Union

import attrs

from ..errors import ContainerError, InvalidOption, StoreError

STREAMS = ("stdout", "stderr")

# The most one write moves. A pipe holds 64 KiB unless its owner raised it (pipe(7): at
# most /proc/sys/fs/pipe-max-size, 1 MiB by default), so one splice takes what is there.
_CHUNK = 1 << 20

# os.splice exists from Python 3.10 on (setup.cfg allows 3.9): None means read+pwrite.
_splice: Optional[Callable[..., int]] = getattr(os, "splice", None)
# SPLICE_F_NONBLOCK: never wait on the pipe (the read end is O_NONBLOCK as well).
# SPLICE_F_MOVE is left out: a no-op since Linux 2.6.21 (splice(2)).
_SPLICE_FLAGS = getattr(os, "SPLICE_F_NONBLOCK", 2)

_OPEN_LOG = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


# -- the policy -------------------------------------------------------------------------------------

# Docker parses max-size with go-units' FromHumanSize: decimal multiples (10m is
# 10,000,000 bytes), an optional space, and an "i" and a "b" that change nothing (so
# "10MiB" is 10,000,000 bytes there too); a fraction is truncated to whole bytes.
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?([kmgtp])?i?b?", re.IGNORECASE)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}


def parse_size(text: str) -> int:
    """Bytes from a size as Docker's ``--log-opt max-size`` takes it ("10m", "512k",
    "1.5g", "20000"); raises `InvalidOption` for anything else or for less than 1 byte."""
    m = _SIZE.fullmatch(text)
    if m is None:
        raise InvalidOption(f"log max-size: {text!r} is not a size (a number of bytes, or with k, m, g, t or p)")
    number, unit = m.group(1), (m.group(2) or "").lower()
    whole, _, frac = number.partition(".")
    scale = _UNITS[unit]
    # exact decimal arithmetic: a float would make 1.1m 1099999 bytes
    value = int(whole) * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)
    if value < 1:
        raise InvalidOption(f"log max-size: {text!r} must be at least 1 byte (as Docker's json-file requires)")
    return value


def _to_size(value: Union[int, str, None]) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_size(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOption(f"log max_size must be a number of bytes, a size such as '10m' or None, got {value!r}")
    return value


def _check_size(_inst: object, _attr: object, value: Optional[int]) -> None:
    if value is not None and value < 1:
        raise InvalidOption(f"log max_size must be at least 1 byte, got {value}")


def _check_files(_inst: object, _attr: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOption(f"log max_files must be an integer of at least 1 (the live file counts), got {value!r}")


@attrs.frozen
class LogPolicy:
    """How much of a container's output is kept: at most ``max_files`` files of at most
    ``max_size`` bytes per stream, the live one included (``max_size=None``: one file
    without bound). The defaults are those of Docker's ``local`` log driver (20 MiB x 5):
    Docker's json-file default keeps everything, and 300 MB of output became a 300 MB
    host file (issue 9)."""

    max_size: Optional[int] = attrs.field(default=20 * 1024 * 1024, converter=_to_size, validator=_check_size)
    max_files: int = attrs.field(default=5, validator=_check_files)

    @classmethod
    def from_options(cls, opts: Mapping[str, str]) -> "LogPolicy":
        """From Docker's log options (``--log-opt max-size=10m --log-opt max-file=3``);
        options not given keep the defaults, and any other key is refused, as Docker's
        drivers refuse keys they do not know ("unknown log opt")."""
        known = ("max-size", "max-file")
        for key in opts:
            if key not in known:
                raise InvalidOption(f"unknown log option {key!r} (isobox knows {', '.join(known)})")
        policy = cls()
        if "max-size" in opts:
            policy = attrs.evolve(policy, max_size=parse_size(opts["max-size"]))
        if "max-file" in opts:
            text = opts["max-file"]
            # strconv.Atoi's grammar: an optional sign and decimal digits, nothing else
            if not re.fullmatch(r"[+-]?[0-9]+", text):
                raise InvalidOption(f"log max-file: {text!r} is not a whole number")
            policy = attrs.evolve(policy, max_files=int(text))
        return policy

    @property
    def bound(self) -> Optional[int]:
        """The most bytes kept per stream (None: no bound)."""
        return None if self.max_size is None else self.max_size * self.max_files


_DEFAULT = LogPolicy()


@attrs.frozen
class LogLoss:
    """Output of one stream that never reached its log file: ``nbytes`` so far; ``step``
    ("write", "rotate" or "open"), ``path`` and ``errno`` of the last failure."""

    stream: str
    path: str
    step: str
    errno: int
    nbytes: int

    def __str__(self) -> str:
        return (f"{self.stream}: {self.nbytes} bytes of output lost: "
                f"{self.step} {self.path}: {os.strerror(self.errno)}")


def log_name(stream: str) -> str:
    """The live file of a stream; rotated ones add ``.N`` (rotated_number)."""
    if stream not in STREAMS:
        raise InvalidOption(f"log stream must be 'stdout' or 'stderr', got {stream!r}")
    return f"{stream}.log"


def rotated_number(name: str, live: str) -> Optional[int]:
    """N of a rotated file `<live>.N`, or None for any other name."""
    if not name.startswith(live + "."):
        return None
    suffix = name[len(live) + 1:]
    # only the names rotation makes: no sign, no leading zero, ASCII digits
    if not re.fullmatch(r"[1-9][0-9]*", suffix):
        return None
    return int(suffix)


# -- writing ----------------------------------------------------------------------------------------


class _Failed(Exception):
    """A step of making the live file ready failed (internal: becomes a LogLoss)."""

    def __init__(self, step: str, err: int) -> None:
        super().__init__(step, err)
        self.step = step
        self.err = err


class _LogFile:
    """One stream's live file and its rotated predecessors, written at an offset we keep.

    Used by one thread at a time (the pump's lock, or a `Writer`'s owner). Every fd it
    holds is in ``owned`` (added once open, removed before closing): the pump's set, which
    a child after fork closes."""

    def __init__(self, cdir: str, stream: str, policy: LogPolicy, owned: Optional[Set[int]] = None) -> None:
        self.owned: Set[int] = set() if owned is None else owned
        self.cdir = cdir
        self.dfd = -1  # the directory, opened at the first rotation (an idle sink holds no more fds)
        self.stream = stream
        self.name = log_name(stream)
        self.path = os.path.join(cdir, self.name)
        self.policy = policy
        self.fd = -1
        self.offset = 0
        self.pruned = False
        self.lost_bytes = 0
        self.lost_step = ""
        self.lost_errno = 0
        self._open()

    def _open(self) -> None:
        if self.dfd >= 0:
            fd = os.open(self.name, _OPEN_LOG, 0o600, dir_fd=self.dfd)
        else:
            fd = os.open(self.path, _OPEN_LOG, 0o600)
        self.owned.add(fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(_errno.EINVAL, "not a regular file")
        except BaseException:
            self._close(fd)
            raise
        self.fd, self.offset = fd, st.st_size

    def _close(self, fd: int) -> None:
        self.owned.discard(fd)
        os.close(fd)

    def due(self) -> bool:
        """The live file is full (or missing): the next byte needs a rotation (or open)."""
        return self.fd < 0 or (self.policy.max_size is not None and self.offset >= self.policy.max_size)

    def room(self) -> int:
        """Make the live file ready (open it again, rotate it) and say how many bytes it
        takes before the next rotation; only called with bytes in hand, so rotation is
        lazy, as Docker's: output of exactly max_size bytes leaves no empty file behind."""
        limit = self.policy.max_size
        for _ in range(3):
            if self.fd < 0:
                try:
                    self._open()
                except OSError as e:
                    raise _Failed("open", e.errno or _errno.EIO) from e
            if limit is None:
                return _CHUNK
            if self.offset < limit:
                return min(_CHUNK, limit - self.offset)
            self._rotate()
        # someone keeps putting full files at the live name (we only ever create empty ones)
        raise _Failed("rotate", _errno.EEXIST)

    def _rotate(self) -> None:
        files = self.policy.max_files
        try:
            if self.dfd < 0:
                self.dfd = os.open(self.cdir, OPEN_DIR)
                self.owned.add(self.dfd)
        except OSError as e:
            raise _Failed("rotate", e.errno or _errno.EIO) from e
        dfd = self.dfd
        if not self.pruned:
            self._prune()
        try:
            if files == 1:
                os.unlink(self.name, dir_fd=dfd)
            else:
                # renames replace their target: .F-2 -> .F-1 drops the oldest
                for i in range(files - 1, 1, -1):
                    try:
                        os.rename(f"{self.name}.{i - 1}", f"{self.name}.{i}", src_dir_fd=dfd, dst_dir_fd=dfd)
                    except FileNotFoundError:
                        pass
                os.rename(self.name, f"{self.name}.1", src_dir_fd=dfd, dst_dir_fd=dfd)
        except FileNotFoundError:
            pass  # the live name is gone already (removed by hand): start a new one
        except OSError as e:
            # The full live file stays where it is (Docker would truncate it anyway): a
            # later chunk tries again, and nothing that could not be moved is destroyed.
            raise _Failed("rotate", e.errno or _errno.EIO) from e
        fd, self.fd = self.fd, -1
        self._close(fd)
        try:
            self._open()
        except OSError as e:
            raise _Failed("open", e.errno or _errno.EIO) from e

    def _prune(self) -> None:
        """Rotated files beyond max_files (left by an earlier, larger policy) go at the
        first rotation, so the files kept stay within the policy's bound."""
        self.pruned = True
        for name in os.listdir(self.dfd):
            n = rotated_number(name, self.name)
            if n is not None and n >= self.policy.max_files:
                try:
                    os.unlink(name, dir_fd=self.dfd)
                except OSError:
                    pass  # older output stays readable; nothing is lost by keeping it

    def lose(self, nbytes: int, step: str, err: int) -> None:
        self.lost_bytes += nbytes
        self.lost_step, self.lost_errno = step, err

    def loss(self) -> Optional[LogLoss]:
        if not self.lost_bytes:
            return None
        return LogLoss(self.stream, self.path, self.lost_step, self.lost_errno, self.lost_bytes)

    def write(self, data: bytes) -> None:
        """Write bytes in hand (the read+pwrite path, and `Writer`): what cannot be
        written is counted as lost, never raised."""
        view = memoryview(data)
        while view:
            try:
                room = self.room()
            except _Failed as f:
                self.lose(len(view), f.step, f.err)
                return
            try:
                n = os.pwrite(self.fd, view[:room], self.offset)
            except OSError as e:
                self.lose(len(view), "write", e.errno or _errno.EIO)
                return
            self.offset += n
            view = view[n:]

    def close(self) -> None:
        fds = (self.fd, self.dfd)
        self.fd = self.dfd = -1
        for fd in fds:
            if fd >= 0:
                self._close(fd)


# what one _Stream.pump did
_IDLE, _MOVED, _EOF = 0, 1, 2


def _available(fd: int) -> int:
    """Bytes waiting in a pipe (FIONREAD, pipe(7))."""
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


def _hung_up(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return any(ev & select.POLLHUP for _, ev in p.poll(0))


class _Stream:
    """One pipe and the log file it feeds."""

    def __init__(self, sink: "Sink", pipe: int, log: _LogFile) -> None:
        self.sink = sink
        self.pipe = pipe
        self.log = log
        self.use_splice = _splice is not None
        self.retired = False

    def pump(self, devnull: Callable[[], int]) -> int:
        """Move at most one chunk from the pipe: _MOVED, _IDLE (nothing there) or _EOF."""
        log = self.log
        if log.due():
            # rotate (or open) only for bytes that are there: at EOF a rotation would
            # push kept output out for nothing
            if _available(self.pipe) == 0:
                return _EOF if _hung_up(self.pipe) else _IDLE
        try:
            count = log.room()
        except _Failed as f:
            return self._drop(devnull, f.step, f.err)
        if self.use_splice:
            assert _splice is not None
            try:
                n = _splice(self.pipe, log.fd, count, None, log.offset, _SPLICE_FLAGS)
            except BlockingIOError:
                return _IDLE
            except OSError as e:
                if e.errno == _errno.EINVAL:
                    # this file (system) takes no splice: read+pwrite from now on
                    self.use_splice = False
                    return self.pump(devnull)
                return self._drop(devnull, "write", e.errno or _errno.EIO)
            if n == 0:
                return _EOF
            log.offset += n
            return _MOVED
        try:
            data = os.read(self.pipe, count)
        except BlockingIOError:
            return _IDLE
        if not data:
            return _EOF
        log.write(data)
        return _MOVED

    def _drop(self, devnull: Callable[[], int], step: str, err: int) -> int:
        """Drain one chunk the file could not take, so the container never blocks."""
        null = devnull() if self.use_splice else -1
        try:
            if null >= 0:
                assert _splice is not None
                n = _splice(self.pipe, null, _CHUNK, None, None, _SPLICE_FLAGS)
            else:
                n = len(os.read(self.pipe, _CHUNK))
        except BlockingIOError:
            return _IDLE
        if n == 0:
            return _EOF
        self.log.lose(n, step, err)
        return _MOVED


class _Pump:
    """The process's one log thread and what it serves (see the module docstring).

    A lock, held for one write at a time, makes the thread, `attach`, `Sink.finish` and
    `Sink.close` take turns with the fds; nothing else is shared. ``owned`` holds every fd
    of the pump and its streams, each added once open and removed before it is closed,
    so that at any instant (a fork's) every fd in it is open and ours."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.streams: Dict[int, _Stream] = {}
        self.owned: Set[int] = set()
        self.epoll = select.epoll()  # EPOLL_CLOEXEC
        self.owned.add(self.epoll.fileno())
        self.null = -1
        self.thread = threading.Thread(target=self._run, name="isobox-logs", daemon=True)
        self.thread.start()

    def devnull(self) -> int:
        if self.null < 0:
            try:
                self.null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
                self.owned.add(self.null)
            except OSError:
                return -1  # no /dev/null here: drain with read(2)
        return self.null

    def add(self, streams: Sequence[_Stream]) -> None:
        with self.lock:
            for s in streams:
                self.streams[s.pipe] = s
                # a registration made while the thread waits in epoll_wait counts at once
                self.epoll.register(s.pipe, select.EPOLLIN)

    def _run(self) -> None:
        while True:
            events = self.epoll.poll()
            for fd, _mask in events:
                with self.lock:
                    s = self.streams.get(fd)
                    # None: retired meanwhile (an old event; a new stream on a reused fd
                    # number is served harmlessly: at worst its splice finds nothing)
                    if s is not None:
                        self.serve(s)

    def serve(self, s: _Stream) -> int:
        """Pump once, with the lock held; the stream retires at EOF."""
        try:
            what = s.pump(self.devnull)
        except Exception as e:  # a bug must not stop every container's output
            what = self._broken(s, e)
        if what == _EOF:
            self.retire(s, drained=True)
        return what

    def _broken(self, s: _Stream, e: Exception) -> int:
        s.log.close()
        s.log.lose(0, f"pump ({e!r})", getattr(e, "errno", None) or _errno.EIO)
        s.use_splice = False
        try:
            n = len(os.read(s.pipe, _CHUNK))
        except BlockingIOError:
            return _IDLE
        except Exception:
            # cannot even drain: close the pipe, so the container's writes fail
            # (EPIPE) instead of blocking
            return _EOF
        if n == 0:
            return _EOF
        s.log.lose(n, s.log.lost_step, s.log.lost_errno)
        return _MOVED

    def retire(self, s: _Stream, drained: bool) -> None:
        if s.retired:
            return
        s.retired = True
        # unregister and forget before close: the number may be reused at once
        try:
            self.epoll.unregister(s.pipe)
        except OSError:
            pass
        if self.streams.get(s.pipe) is s:
            del self.streams[s.pipe]
        self.owned.discard(s.pipe)
        os.close(s.pipe)
        s.log.close()
        s.sink._retired(drained)

    def orphan(self) -> None:
        """In a child after fork: close this process's copies of the parent's fds (a
        child that lives on would otherwise keep every container's pipes and log files,
        rotated-out ones included, open), never touching the parent's files, pipes or
        epoll set (they are shared open file descriptions). Whatever the thread was
        doing when the fork came, ``owned`` names only fds open at that instant; one
        being opened or closed then stays open in the child (CLOEXEC), the lesser harm."""
        for fd in list(self.owned):
            try:
                os.close(fd)
            except OSError:
                pass
        self.owned.clear()


# One pump per process: a thread and an epoll set are process resources, like the fd
# table, and one thread for all containers is the point (a thread each would cost a
# thread per container). It is made on the first attach and never stops (a daemon
# thread), so later containers pay no thread start.
_PUMP: Optional[_Pump] = None
_PUMP_LOCK = threading.Lock()


def _the_pump() -> _Pump:
    global _PUMP
    pump = _PUMP
    if pump is None:
        with _PUMP_LOCK:
            if _PUMP is None:
                _PUMP = _Pump()
            pump = _PUMP
    return pump


def _after_fork_in_child() -> None:
    """After os.fork the child has no pump thread, and the parent's lock may have been
    copied held: forget the pump (a new one starts on the child's first attach) and drop
    the child's copies of its fds. The parent's sinks are not the child's to act on."""
    global _PUMP, _PUMP_LOCK
    pump = _PUMP
    _PUMP = None
    _PUMP_LOCK = threading.Lock()
    if pump is not None:
        pump.orphan()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Sink:
    """One container's two streams, fed by the process's pump (made by `attach`)."""

    def __init__(self, pump: _Pump, cdir: str) -> None:
        self._pump = pump
        self.cdir = cdir
        self._streams: List[_Stream] = []
        self._left = 0
        self._drained = False
        # held until the sink is done: a bare lock, as threading.Event costs a Condition
        # (several µs, paid by every container start)
        self._done = threading.Lock()
        self._done.acquire()
        self._finished = False

    def _retired(self, drained: bool) -> None:
        # with the pump's lock held
        self._left -= 1
        if not drained:
            self._left = -1
        if self._left == 0:
            self._drained = True
        if self._left <= 0 and not self._finished:
            self._finished = True
            self._done.release()

    def _check_owner(self) -> None:
        if self._pump.pid != os.getpid():
            raise ContainerError(f"the log pump of {self.cdir} belongs to process {self._pump.pid}, "
                                 f"not to this one ({os.getpid()}, a child after fork)")

    def finish(self, timeout: Optional[float] = None) -> bool:
        """Wait until both pipes reached EOF and every byte is in the files; True when
        so, False when ``timeout`` (seconds) passed first. EOF comes once every writer is
        gone: call it after the container's pid 1 exited (its pid namespace dies with
        it) and after this process closed its own copies of the write ends. The files are
        written, not fsynced (Docker does not sync its logs either)."""
        self._check_owner()
        deadline = None if timeout is None else time.monotonic() + timeout
        # Pump our own streams while we wait (we would only sleep otherwise): a container
        # that has exited needs no round trip through the pump thread.
        pump = self._pump
        while not self._finished:
            moved = False
            with pump.lock:
                for s in self._streams:
                    if not s.retired and pump.serve(s) == _MOVED:
                        moved = True
            if not moved or (deadline is not None and time.monotonic() >= deadline):
                break
        left = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if self._done.acquire(timeout=left):
            self._done.release()  # for any other waiter
        return self._drained

    def close(self) -> None:
        """Stop now (the container is being removed): unregister and close every fd,
        whatever is still in the pipes. Does nothing in a child after fork (its copies
        of the fds were closed then)."""
        if self._pump.pid != os.getpid():
            return
        with self._pump.lock:
            for s in self._streams:
                self._pump.retire(s, drained=False)

    @property
    def lost(self) -> Mapping[str, LogLoss]:
        """Per stream, the output dropped because its file could not take it; empty when
        none was. Record it where the container's state is shown (issue 9: a full disk
        must not lose output silently)."""
        out = {}
        for s in self._streams:
            loss = s.log.loss()
            if loss is not None:
                out[s.log.stream] = loss
        return out


def attach(cdir: Union[str, os.PathLike[str]], stdout_r: int, stderr_r: int,
           policy: Optional[LogPolicy] = None) -> Sink:
    """Pump a container's two pipes into its log files (``stdout.log``, ``stderr.log``
    in ``cdir``, created 0600 or appended to, as Docker appends on restart).

    Takes ownership of the two read ends, even when it raises (`StoreError` naming the
    step and the path when the directory or a file cannot be opened). Call it after the
    container is spawned and its write ends closed here (or before: the pump waits)."""
    policy = _DEFAULT if policy is None else policy
    cdir = os.fspath(cdir)
    if stdout_r == stderr_r:
        os.close(stdout_r)
        raise InvalidOption("stdout and stderr need a pipe each")
    pipes = (stdout_r, stderr_r)
    logs: List[_LogFile] = []
    step, path = "start", "the log pump"
    try:
        pump = _the_pump()
        pump.owned.update(pipes)
        for stream in STREAMS:
            step, path = "open", os.path.join(cdir, log_name(stream))
            logs.append(_LogFile(cdir, stream, policy, pump.owned))
        step, path = "set O_NONBLOCK on", "the pipes"
        for fd in pipes:
            os.set_blocking(fd, False)
    except BaseException as e:
        for log in logs:
            log.close()
        for fd in pipes:
            if _PUMP is not None:
                _PUMP.owned.discard(fd)
            os.close(fd)
        if isinstance(e, OSError):
            raise StoreError(f"container log: {step} {path}: {os.strerror(e.errno or _errno.EIO)}") from e
        raise
    sink = Sink(pump, cdir)
    sink._streams = [_Stream(sink, pipe, log) for pipe, log in zip(pipes, logs)]
    sink._left = len(sink._streams)
    pump.add(sink._streams)
    return sink


class Writer:
    """Bytes in hand written to one stream's log with the same rotation and loss
    accounting: a terminal's output, which the isobox command and the supervisor copy
    to the screen and to ``stdout.log`` (a tty is not a pipe the pump could own)."""

    def __init__(self, cdir: Union[str, os.PathLike[str]], stream: str = "stdout",
                 policy: Optional[LogPolicy] = None) -> None:
        cdir = os.fspath(cdir)
        path = os.path.join(cdir, log_name(stream))
        try:
            self._log = _LogFile(cdir, stream, _DEFAULT if policy is None else policy)
        except OSError as e:
            raise StoreError(f"container log: open {path}: {os.strerror(e.errno or _errno.EIO)}") from e

    def write(self, data: bytes) -> None:
        """Append; bytes the file cannot take are counted in `lost`, never raised."""
        self._log.write(data)

    @property
    def lost(self) -> Optional[LogLoss]:
        return self._log.loss()

    def close(self) -> None:
        self._log.close()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
