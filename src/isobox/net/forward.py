"""A container's published ports, owned: the host's sockets and the forwarder process.

The sequence (container.py calls each step at its moment of a start):

1. `Forwarder.bind`, before the container is cloned: a socket per `PortBinding` on the
   host (TCP listening, UDP bound), so a port in use fails the start before anything runs
   and a port 0 becomes the kernel's free port, known at once (`Forwarder.ports`).
2. `hold_namespaces`, while the container's first process waits for its go byte: fds of
   its user namespace (rootless) and its network namespace, opened while it is still a
   dumpable copy of its owner (an init that never execs stays non-dumpable later).
3. `start`, once the container runs: the forwarder (_native/forward.c), a copy of this
   process cloned by the long-lived spawner thread (its parent-death signal follows that
   thread), joins those namespaces and serves the sockets. This process then closes its
   own copies of the sockets and namespace fds: the forwarder alone holds them, so the
   ports close when it ends.
4. `finish`: the forwarder ends by itself when the container's pid 1 exits (its pidfd is
   in the forwarder's epoll set: the ports are closed at once, open connections get
   DRAIN_MS); `finish(kill=True)` at removal ends it now and reaps it. Its owner's death
   ends it too (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import errno as _errno
import os
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple, TypeVar

from ..errors import ContainerError, InvalidOption, SetupError
from ..host import native
from .ports import PortBinding, PortMap

if TYPE_CHECKING:
    import socket

UDP_IDLE_MS = 60_000  # a UDP client silent this long loses its flow (conntrack's udp timeout is 30-120 s)
DRAIN_MS = 1_000      # open connections' grace after the container's exit

T = TypeVar("T")


def _bind(binding: PortBinding) -> "socket.socket":
    import socket  # only containers that publish ports pay for the module

    family = socket.AF_INET6 if binding.family_v6 else socket.AF_INET
    kind = socket.SOCK_STREAM if binding.protocol == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(family, kind)
    try:
        if binding.protocol == "tcp":
            # as every server does: a port whose last connections linger in TIME_WAIT
            # (the previous container's) can be bound again at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((binding.host_ip, binding.host_port))
        if binding.protocol == "tcp":
            sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)  # the forwarder accepts and reads until EAGAIN
    except OSError as exc:
        sock.close()
        detail = "the port is in use on the host" if exc.errno == _errno.EADDRINUSE else (
            "no such address on this host" if exc.errno == _errno.EADDRNOTAVAIL else None)
        shown = f"[{binding.host_ip}]" if binding.family_v6 else binding.host_ip
        raise SetupError(f"publish {binding.key} on {shown}:{binding.host_port}", exc.errno or 0, detail) from exc
    return sock


class Forwarder:
    """One container's published ports, from their bind to their forwarder's end (see
    the module docstring). A handle on sockets and a process: a plain class."""

    def __init__(self, sockets: List["socket.socket"], ports: PortMap) -> None:
        self._sockets = sockets
        self.ports = ports
        self._ns_fds: Tuple[int, ...] = ()
        self.pid: Optional[int] = None
        self._pidfd = -1

    @classmethod
    def bind(cls, bindings: Sequence[PortBinding]) -> "Forwarder":
        if len(bindings) > native.lib.IB_FWD_MAX_PORTS:
            raise InvalidOption(f"{len(bindings)} published ports: a container publishes at most "
                                f"{native.lib.IB_FWD_MAX_PORTS}")
        sockets: List["socket.socket"] = []
        bound: List[PortBinding] = []
        try:
            for b in bindings:
                sock = _bind(b)
                sockets.append(sock)
                port = sock.getsockname()[1]
                bound.append(PortBinding(b.container_port, b.protocol, b.host_ip, port))
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return cls(sockets, PortMap(tuple(bound)))

    def hold_namespaces(self, pid: int, clone_flags: int) -> None:
        """Open the namespaces the forwarder joins: user (when the container has its own),
        then net."""
        flags = clone_flags & (native.CLONE_NEWUSER | native.CLONE_NEWNET)
        if not flags & native.CLONE_NEWNET:
            raise ContainerError("published ports need the container's own network namespace")
        try:
            self._ns_fds = native.open_namespaces(pid, flags)
        except OSError as exc:
            raise SetupError("open the container's network namespace", exc.errno or 0) from exc

    def start(self, container_pidfd: int, elsewhere: Callable[[Callable[[], Any]], Any]) -> None:
        """Start the forwarder (cloned by ``elsewhere``, the spawner thread) and wait until
        it serves; then let go of the sockets and namespace fds here."""
        if container_pidfd < 0:
            raise ContainerError("published ports need pidfd support (Linux 5.3)")
        table = [(s.fileno(), native.lib.IB_FWD_TCP if b.protocol == "tcp" else native.lib.IB_FWD_UDP,
                  b.container_port) for s, b in zip(self._sockets, self.ports.bindings)]
        try:
            child = elsewhere(lambda: native.forward(self._ns_fds, container_pidfd, table, UDP_IDLE_MS, DRAIN_MS))
            self.pid, self._pidfd = child.pid, child.pidfd
            child.release()
        finally:
            self._let_go()

    def _let_go(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        for fd in self._ns_fds:
            os.close(fd)
        self._ns_fds = ()

    def finish(self, kill: bool = False) -> bool:
        """Reap the forwarder if it has ended (with ``kill``: end it first, and wait).
        True once it is gone."""
        self._let_go()
        if self._pidfd < 0:
            return True
        if kill:
            try:
                import signal

                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            if native.wait_exit(self._pidfd, block=kill) is None:
                return False
        except (ChildProcessError, ContainerError):
            pass  # reaped by the application's own wait: gone all the same
        os.close(self._pidfd)
        self._pidfd = -1
        return True

    def disown(self) -> None:
        """In a forked copy of the owner: close our fds, leave the forwarder to the owner."""
        self._let_go()
        if self._pidfd >= 0:
            try:
                os.close(self._pidfd)
            except OSError:
                pass
            self._pidfd = -1
