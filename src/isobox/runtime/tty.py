"""Terminals, in one place: the pty a container (or a process exec'd in it) gets, its size,
our own terminal in raw mode, and the loop that copies between a pty and its reader.

Used by the container (its master comes from the child), the supervisor (a detached
container's terminal, copied to its log), the isobox command (``run -it``, ``exec -it``:
our terminal in raw mode, sized and resized on SIGWINCH) and a `ContainerHandle`'s
``exec(tty=True)``.

The pty itself is made by the child, inside the container's own /dev/pts (spawn.c:
setup_console), and its master fd comes back over a socket pair (`console_pair`,
`receive_master`): the host's /dev/pts is never involved.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import termios
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

from ..errors import ContainerError

if TYPE_CHECKING:
    import socket

DEFAULT_SIZE = (24, 80)  # rows, columns: what a terminal nobody sized gets (Docker's too)


def console_pair() -> "Tuple[socket.socket, socket.socket]":
    """A socket pair for the child to send its terminal's master on (the child's end is
    the second)."""
    import socket  # only a terminal needs it (`isobox run` imports no socket otherwise)

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return a, b


def receive_master(sock: "socket.socket") -> int:
    """The pty master the child sent (spawn.c: setup_console), close-on-exec."""
    import socket

    _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    if not fds:
        raise ContainerError("the container did not send its terminal")
    os.set_inheritable(fds[0], False)
    return fds[0]


def set_size(fd: int, rows: int, cols: int) -> None:
    """Set a terminal's window size (TIOCSWINSZ): its processes get SIGWINCH."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def terminal_size() -> Optional[Tuple[int, int]]:
    """Our terminal's size (rows, columns), or None when there is none or it does not
    know its size: a pty nobody sized reports 0x0 (`script`, some CI runners), and
    podman and Docker then go on with their default, as we do."""
    for fd in (1, 0, 2):
        if os.isatty(fd):
            try:
                size = os.get_terminal_size(fd)
            except OSError:
                return None
            if size.lines <= 0 or size.columns <= 0:
                return None
            return size.lines, size.columns
    return None


class RawMode:
    """Our terminal ``fd`` in raw mode while attached (keys go to the container as typed,
    Ctrl-C included), restored afterwards whatever happens; nothing when not ``enabled``."""

    def __init__(self, fd: int, enabled: bool) -> None:
        self.fd = fd
        self.enabled = enabled
        self._saved: Any = None

    def __enter__(self) -> "RawMode":
        if self.enabled:
            import tty  # the standard library's

            self._saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


def read_chunk(fd: int) -> Optional[bytes]:
    """What a pty master (or pipe) has, up to 64 KiB; b"" at its end (a master reads EIO
    once every slave fd is closed); None when a non-blocking fd has nothing yet."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def readable(fd: int, timeout: float = 0) -> bool:
    """poll, not select: fd numbers can pass FD_SETSIZE (1024) in a busy owner."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def write_all(fd: int, data: bytes) -> bool:
    """Write all of ``data``; False when the reader went away (EPIPE and the like)."""
    view = memoryview(data)
    try:
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
                poller.poll(1000)
    except OSError:
        return False
    return True


def relay(
    master: int,
    done_fd: int,
    output: Callable[[bytes], None],
    *,
    input_fd: int = -1,
    wake_fd: int = -1,
    each_round: Optional[Callable[[bool], None]] = None,
    interval: Optional[float] = None,
    deadline: Optional[float] = None,
) -> bool:
    """Copy what the terminal ``master`` (-1: none) writes to ``output``, and what
    ``input_fd`` (-1: none) has to the terminal, until ``done_fd`` is readable (the
    process exited: a pidfd, or an exec's reply socket); then what the terminal still
    holds, and no more (a process left in the background may keep it open).

    ``wake_fd`` (a signal wakeup pipe) is drained when readable; ``each_round(idle)`` is
    called after every wake-up of the loop (``idle``: nothing happened within
    ``interval`` seconds). Returns False when ``deadline`` (time.monotonic) passed first."""
    poller = select.poll()
    for fd in (master, done_fd, wake_fd, input_fd):
        if fd >= 0:
            poller.register(fd, select.POLLIN)
    master_open = master >= 0
    while True:
        wait = interval
        if deadline is not None:
            left = max(0.0, deadline - time.monotonic())
            wait = left if wait is None else min(wait, left)
        events = dict(poller.poll(None if wait is None else int(wait * 1000) + 1))
        if master_open and master in events:
            data = read_chunk(master)
            if data:
                output(data)
            elif data is not None:
                poller.unregister(master)
                master_open = False
        if input_fd >= 0 and input_fd in events:
            data = read_chunk(input_fd)
            if data:
                write_all(master, data)
            elif data is not None:
                poller.unregister(input_fd)
                input_fd = -1
        if wake_fd >= 0 and wake_fd in events:
            try:
                os.read(wake_fd, 256)
            except BlockingIOError:
                pass
        if each_round is not None:
            each_round(not events)
        if done_fd in events:
            break
        if deadline is not None and time.monotonic() >= deadline:
            return False
    while master_open and readable(master):
        data = read_chunk(master)
        if not data:
            break
        output(data)
    return True
