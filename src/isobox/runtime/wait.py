"""Readiness waits for services in containers: a listening port, a line in the logs.

A port is seen from the container's own network namespace without entering it and
without any tool in the image: /proc/<pid>/net/tcp and tcp6 list the sockets of the
namespace that process lives in, and a listening socket is in state 0A (TCP_LISTEN).
A published port is ready when this says so: its forwarder connects to that very port
in that namespace (net/forward.py), so a listener there is what a client will reach.

They wait on any `WaitTarget` (protocol.py): a `Container` owned here, or a
`ContainerHandle` on one another process owns (its pid 1 is readable from here as from
its owner: the same user, or root).
"""

from __future__ import annotations

import re
import time
from typing import Callable, Pattern, Union

from ..errors import ContainerError, Timeout
from .protocol import WaitTarget

TCP_LISTEN = "0A"


def listening_ports(pid: int) -> "set[int]":
    """TCP ports with a listening socket in the network namespace of process pid."""
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f, None)  # the header
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == TCP_LISTEN:
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            continue
    return ports


def wait_for_port(container: WaitTarget, port: int, timeout: float = 30.0) -> None:
    """Return once something in the container listens on TCP ``port``."""
    def ready() -> bool:
        pid = container.pid
        return pid is not None and port in listening_ports(pid)

    _until(container, ready, timeout, f"port {port} to listen")


def wait_for_log(container: WaitTarget, pattern: Union[str, bytes, Pattern[bytes]],
                 timeout: float = 30.0) -> None:
    """Return once the container's output (stdout or stderr) matches ``pattern`` (a
    regular expression, or text to find)."""
    if isinstance(pattern, str):
        pattern = pattern.encode()
    regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
    _until(container, lambda: regex.search(container.logs()) is not None, timeout,
           f"{regex.pattern!r} in its output")


def _until(container: WaitTarget, ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if ready():
            return
        if container.status != "running":
            tail = container.logs()[-2000:].decode("utf-8", "replace")
            raise ContainerError(
                f"container {container.name} exited ({container.exit_code}) while waiting for "
                f"{what}; its last output:\n{tail}")
        if time.monotonic() >= deadline:
            raise Timeout(f"container {container.name}: no {what} after {timeout} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
