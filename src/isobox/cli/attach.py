"""Attached to a process in a container (`isobox run` in the foreground, `isobox exec`):
our stdin copied in, its output copied out, and with -t its terminal, sized as ours and
copied to and from ours (in raw mode with -it: runtime/tty.py). The signals we take
(SIGINT/SIGTERM/SIGHUP, SIGWINCH) are noted (control/signals.py) and handed to the
copying loop. Light on purpose: `exec` imports it and needs none of the container
machinery."""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Optional, Tuple

from ..control.signals import NotedSignals


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


def set_winsize(master: int, size: Optional[Tuple[int, int]]) -> None:
    """The terminal ``master`` gets ``size`` (rows, columns); nothing for None (ours does
    not know its size: the container keeps its 24x80)."""
    if size is not None:
        from ..runtime import tty  # termios: only a terminal needs it (not exec without -t)

        tty.set_size(master, size[0], size[1])


def tty_loop(master: int, interactive: bool, done_fd: int, signals: NotedSignals,
             on_signal: Callable[[int], None], log: Optional[Callable[[bytes], None]] = None) -> None:
    """Copy our stdin to the terminal's master and its output to our stdout (and the
    log), until ``done_fd`` is readable (the process exited) and the output is drained
    (tty.relay). SIGWINCH resizes the terminal to ours; other signals go to
    ``on_signal``."""
    from ..runtime import tty

    out_ok = [True]

    def output(data: bytes) -> None:
        if log is not None:
            log(data)
        out_ok[0] = out_ok[0] and write_all(1, data)

    def each_round(idle: bool) -> None:
        for sig in signals.take():
            if sig == signal.SIGWINCH:
                set_winsize(master, tty.terminal_size())
            else:
                on_signal(sig)

    tty.relay(master, done_fd, output, input_fd=0 if interactive else -1, wake_fd=signals.wake_r,
              each_round=each_round)
