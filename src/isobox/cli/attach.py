"""Attached to a process in a container (`isobox run` in the foreground, `isobox exec`):
our stdin copied in, its output copied out, our terminal in raw mode with -it, and the
signals we take (SIGINT/SIGTERM/SIGHUP, SIGWINCH) noted and handed to the copying loop.
Light on purpose: `exec` imports it and needs none of the container machinery; termios
and tty are imported where a terminal is set up, since `exec` without -t needs neither."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple


def write_all(fd: int, data: bytes) -> bool:
    """False once ``fd`` is gone (EPIPE: `isobox run ... | head`)."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BrokenPipeError:
            return False
        view = view[n:]
    return True


def copy_thread(src: int, dst: int, close_dst: bool) -> threading.Thread:
    """Copy src to dst until EOF, in a daemon thread (stdin to a container's pipe, an
    exec's pipes to our terminal)."""

    def run() -> None:
        try:
            while True:
                try:
                    data = os.read(src, 65536)
                except OSError:
                    break
                if not data or not write_all(dst, data):
                    break
        finally:
            if close_dst:
                os.close(dst)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


class Signals:
    """While attached: SIGINT/SIGTERM/SIGHUP and SIGWINCH are noted and wake the loop (a
    pipe through signal.set_wakeup_fd) instead of raising; restored on exit."""

    CAUGHT = ("SIGINT", "SIGTERM", "SIGHUP", "SIGWINCH")

    def __init__(self) -> None:
        self.pending: List[int] = []
        self.wake_r = self.wake_w = -1
        self._old: Dict[int, Any] = {}
        self._old_wakeup = -1

    def __enter__(self) -> "Signals":
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_wakeup = signal.set_wakeup_fd(self.wake_w)
        for name in self.CAUGHT:
            num = getattr(signal, name)
            self._old[num] = signal.signal(num, lambda signum, frame: self.pending.append(signum))
        return self

    def take(self) -> List[int]:
        try:
            os.read(self.wake_r, 256)
        except BlockingIOError:
            pass
        taken, self.pending[:] = list(self.pending), []
        return taken

    def __exit__(self, *exc: Any) -> None:
        for num, handler in self._old.items():
            signal.signal(num, handler)
        signal.set_wakeup_fd(self._old_wakeup)
        os.close(self.wake_r)
        os.close(self.wake_w)


class RawTerminal:
    """Our terminal in raw mode while attached with -it (keys go to the container as
    typed, Ctrl-C included), restored afterwards whatever happens."""

    def __init__(self, fd: int, enabled: bool) -> None:
        self.fd = fd
        self.enabled = enabled
        self._saved: Any = None

    def __enter__(self) -> "RawTerminal":
        if self.enabled:
            import termios
            import tty

            self._saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


def terminal_size() -> Optional[Tuple[int, int]]:
    """Our terminal's size, or None when there is none or it does not know its size: a
    pty nobody sized reports 0x0 (`script`, some CI runners), and podman and Docker then
    go on with their default, as we do (None: the container's 24x80, or no resize)."""
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


def set_winsize(master: int, size: Optional[Tuple[int, int]]) -> None:
    if size is None:
        return
    import termios

    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))


def tty_loop(master: int, interactive: bool, done_fd: int, signals: Signals,
              on_signal: Callable[[int], None], log: Optional[Callable[[bytes], None]] = None) -> None:
    """Copy our stdin to the terminal's master and its output to our stdout (and the
    log), until ``done_fd`` is readable (the process exited) and the output is drained.
    SIGWINCH resizes the terminal; other signals go to ``on_signal``."""
    poller = select.poll()
    poller.register(master, select.POLLIN)
    poller.register(done_fd, select.POLLIN)
    poller.register(signals.wake_r, select.POLLIN)
    if interactive:
        poller.register(0, select.POLLIN)
    out_ok = True
    master_open = True
    while True:
        events = dict(poller.poll())
        for sig in signals.take():
            if sig == signal.SIGWINCH:
                set_winsize(master, terminal_size())
            else:
                on_signal(sig)
        if master in events and master_open:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every slave fd is closed
                data = b""
            if not data:
                poller.unregister(master)
                master_open = False
            else:
                if log is not None:
                    log(data)
                out_ok = out_ok and write_all(1, data)
        if interactive and 0 in events:
            data = os.read(0, 65536)
            if data:
                write_all(master, data)
            else:
                poller.unregister(0)
                interactive = False
        if done_fd in events:
            break
    drain = select.poll()  # not select: the master's fd number can exceed FD_SETSIZE
    drain.register(master, select.POLLIN)
    while master_open and drain.poll(0):
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        if log is not None:
            log(data)
        out_ok = out_ok and write_all(1, data)


