"""The stdio of a container's processes: never a file of the host (logs.py says why),
always pipes (or the process's terminal). What the caller gives as input is fed into a
pipe by a thread; what an exec'd process writes is read as it comes, until it exits.
"""

from __future__ import annotations

import os
import select
import signal as _signal
import threading
import time
from typing import Optional, Tuple

from ..host import native
from . import tty as _tty


def wait_exec(pidfd: int, outputs: Tuple[int, int, int],
               timeout: Optional[float]) -> Tuple[Optional[int], Tuple[bytes, bytes, bytes]]:
    """Wait for an exec'd process (our child; closes its pidfd), reading its stdout and
    stderr pipes and its terminal (each -1 when absent) as it writes, so it never blocks on
    a full pipe or pty.  Once it exited, what is already there is read and no more: a
    process it left in the background may keep the pipes open.  Returns (status, or None
    after a timeout kill; (stdout, stderr, terminal output))."""
    deadline = None if timeout is None else time.monotonic() + timeout
    got = [bytearray(), bytearray(), bytearray()]
    index = {fd: i for i, fd in enumerate(outputs) if fd >= 0}
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        for fd in index:
            poller.register(fd, select.POLLIN)
        exited = False
        while not exited:
            wait_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            events = poller.poll(wait_ms)
            if not events and deadline is not None and time.monotonic() >= deadline:
                _signal.pidfd_send_signal(pidfd, _signal.SIGKILL)
                native.wait_exit(pidfd)
                return None, (bytes(got[0]), bytes(got[1]), bytes(got[2]))
            for fd, _ in events:
                if fd == pidfd:
                    exited = True
                elif not _drain(fd, got[index[fd]]):
                    poller.unregister(fd)
                    del index[fd]
        for fd, i in index.items():
            while _drain(fd, got[i], block=False):
                pass
        code = native.wait_exit(pidfd)
        assert code is not None
        return code, (bytes(got[0]), bytes(got[1]), bytes(got[2]))
    finally:
        os.close(pidfd)


def _drain(fd: int, out: bytearray, block: bool = True) -> bool:
    """Read what a pipe or terminal has; False at its end (EIO once a terminal's slave
    side is closed)."""
    if not block and not _tty.readable(fd):
        return False
    chunk = _tty.read_chunk(fd)
    if chunk is None:
        return True
    out += chunk
    return bool(chunk)


def feed_bytes(w: int, data: bytes) -> None:
    """Write ``data`` into the pipe ``w`` and close it, from a thread (a pipe holds 64 KiB,
    and a command may write before it reads all of its input)."""
    def feed() -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
        except OSError:  # EPIPE: it stopped reading
            pass
        finally:
            os.close(w)

    threading.Thread(target=feed, name="isobox-stdin", daemon=True).start()


def feed(src: int) -> int:
    """A pipe fed from ``src`` (a file or a terminal the caller gave as stdin) by a daemon
    thread; returns its read end. The caller's fd stays the caller's."""
    r, w = os.pipe2(os.O_CLOEXEC)
    src = os.dup(src)  # the caller may close theirs while we copy
    os.set_inheritable(src, False)

    def copy() -> None:
        try:
            while True:
                try:
                    chunk = os.read(src, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                view = memoryview(chunk)
                while view:
                    view = view[os.write(w, view):]
        except OSError:  # EPIPE: the container closed its stdin or exited
            pass
        finally:
            os.close(src)
            os.close(w)

    threading.Thread(target=copy, name="isobox-stdin", daemon=True).start()
    return r
