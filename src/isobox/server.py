"""The owner's side of a container's control socket (`Server`): the protocol and its
clients are in control.py. The isobox command serves it while it runs a container in the
foreground, the supervisor while it owns a detached one.

Most containers are never controlled from outside (``isobox run --rm IMAGE true`` is over
before anyone could), so the listening socket comes from the native core, and Python's
socket module (with control.py) is imported only when the first client connects.
"""

from __future__ import annotations

import os
import select
import signal as _signal
import threading
import time
from typing import TYPE_CHECKING, Any, List, Mapping, Optional

from .errors import ContainerError, InvalidOption, IsoboxError
from .native import lib, wait_exit
from .state import KEPT_NAME, SOCKET_NAME, socket_path
from .syntax import parse_env, signal_number

if TYPE_CHECKING:
    import socket

    from .container import Container
    from .control import Conn


class Server:
    """Serves a running `Container`'s control socket from threads (see the module
    docstring), in the process that owns the container. ``finish`` is the owner's last
    word once the container has exited: it keeps (or with ``auto_remove`` removes) the
    container, answers waiters and stops serving."""

    def __init__(self, container: Container, *, auto_remove: bool = False) -> None:
        self.container = container
        self.auto_remove = auto_remove
        self.lock = threading.Lock()  # finish and remove, one at a time
        self.exited = threading.Event()
        self.exit_code: Optional[int] = None
        self.removed = False
        self._fd = -1  # the listening socket
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._threads: List[threading.Thread] = []
        self._active = 0
        self._active_cond = threading.Condition()

    def start(self) -> None:
        dfd = os.open(self.container.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            path = socket_path(dfd)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            fd = lib.ib_listen_unix(os.fsencode(path), 16)
        finally:
            os.close(dfd)
        if fd < 0:
            raise ContainerError(f"cannot serve the control socket: {os.strerror(-fd)}")
        self._fd = fd
        t = threading.Thread(target=self._accept_loop, name="isobox-control", daemon=True)
        t.start()
        self._threads.append(t)

    def _accept_loop(self) -> None:
        listener: Optional["socket.socket"] = None
        try:
            while True:
                ready = select.select([self._fd, self._wake_r], [], [])[0]
                if self._wake_r in ready:
                    return
                if listener is None:
                    import socket  # the first client: see the module docstring

                    listener = socket.socket(fileno=os.dup(self._fd))
                try:
                    sock, _ = listener.accept()
                except OSError:
                    continue
                with self._active_cond:
                    self._active += 1
                threading.Thread(target=self._serve, args=(sock,), name="isobox-control-conn", daemon=True).start()
        finally:
            if listener is not None:
                listener.close()

    def _serve(self, sock: "socket.socket") -> None:
        from .control import Conn, error_doc

        conn = Conn(sock)
        try:
            if conn.peer_uid() not in (os.geteuid(), 0):
                conn.send({"ok": False, "error": "ContainerError", "message": "permission denied"})
                return
            doc = conn.recv(timeout=10)
            if doc is None:
                return
            op = doc.get("op")
            handler = getattr(self, f"_op_{op}", None) if isinstance(op, str) else None
            if handler is None:
                conn.send({"ok": False, "error": "InvalidOption", "message": f"unknown request {op!r}"})
                return
            try:
                handler(conn, doc)
            except (IsoboxError, OSError, ValueError, KeyError, TypeError) as exc:
                if not isinstance(exc, IsoboxError):
                    exc = ContainerError(f"{op}: {exc}")
                try:
                    conn.send(error_doc(exc))
                except OSError:
                    pass
        except (OSError, ValueError, ContainerError):
            pass  # a client that went away (or timed out) or spoke nonsense: nothing to answer
        finally:
            conn.close()
            with self._active_cond:
                self._active -= 1
                self._active_cond.notify_all()

    # -- the requests ------------------------------------------------------------------------------

    def _running(self) -> bool:
        return not self.removed and self.container.status == "running"

    def _op_info(self, conn: Conn, doc: Mapping[str, Any]) -> None:
        c = self.container
        conn.send({"ok": True, "status": "removed" if self.removed else c.status, "pid": c.pid,
                   "exit_code": c.exit_code})

    def _op_wait(self, conn: Conn, doc: Mapping[str, Any]) -> None:
        while not self.exited.wait(0.5):
            if conn.closed_by_peer():
                return
        conn.send({"ok": True, "exit_code": self.exit_code})

    def _op_kill(self, conn: Conn, doc: Mapping[str, Any]) -> None:
        signum = signal_number(doc.get("signal", "KILL"))
        if not self._running():
            raise ContainerError(f"container {self.container.name} is not running")
        self.container.kill(signum)
        conn.send({"ok": True})

    def _op_stop(self, conn: Conn, doc: Mapping[str, Any]) -> None:
        timeout = float(doc.get("timeout", 10))
        c = self.container
        code = c.stop(timeout) if self._running() else c.exit_code
        conn.send({"ok": True, "exit_code": code})

    def _op_remove(self, conn: Conn, doc: Mapping[str, Any]) -> None:
        with self.lock:
            if not self.removed:
                if self._running() and not doc.get("force"):
                    raise ContainerError(
                        f"container {self.container.name} is running: stop it first or remove it with force")
                self.removed = True
                try:
                    os.unlink(self.container.dir / KEPT_NAME)
                except FileNotFoundError:
                    pass
                self.container.remove(force=True)
        conn.send({"ok": True})

    def _op_exec(self, conn: Conn, doc: Mapping[str, Any]) -> None:
        fds = conn.take_fds()
        master = -1
        try:
            argv = tuple(str(a) for a in doc["argv"])
            if not argv:
                raise InvalidOption("exec needs a command")
            tty = bool(doc.get("tty"))
            if not tty and len(fds) != 3:
                raise InvalidOption("exec without tty needs three fds: stdin, stdout, stderr")
            workdir = doc.get("workdir")
            if workdir is not None:
                from .container import ContainerConfig

                workdir = ContainerConfig(workdir=workdir).workdir
            if self.removed:
                raise ContainerError(f"container {self.container.name} is not running")
            stdio = (fds[0], fds[1], fds[2]) if not tty else (-1, -1, -1)
            size = doc.get("tty_size")
            pid, pidfd, master = self.container._exec_spawn(
                argv, parse_env(doc.get("env") or ()), workdir, doc.get("user"), tty, stdio,
                (int(size[0]), int(size[1])) if size else None)
        finally:
            for fd in fds:
                os.close(fd)
        try:
            conn.send({"ok": True, "event": "started", "pid": pid}, [master] if master >= 0 else [])
        except OSError:
            pass
        finally:
            if master >= 0:
                os.close(master)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            poller.register(conn.sock, select.POLLIN | select.POLLHUP)
            watching = True
            while True:
                events = dict(poller.poll())
                if pidfd in events:
                    break
                if watching and conn.sock.fileno() in events and conn.closed_by_peer():
                    # nobody will read the result: kill it (docker exec would leave it running)
                    _signal.pidfd_send_signal(pidfd, _signal.SIGKILL)
                    poller.unregister(conn.sock)
                    watching = False
            code = wait_exit(pidfd)  # by pidfd: the owner's own reaping cannot take it
        finally:
            os.close(pidfd)
        conn.send({"ok": True, "exit_code": code})

    # -- the end -------------------------------------------------------------------------------------

    def finish(self, code: int) -> None:
        """The container exited with ``code``: keep or remove it, answer, stop serving."""
        with self.lock:
            self.exit_code = code
            if not self.removed:
                if self.auto_remove:
                    self.removed = True
                    self.container.remove(force=True)
                else:
                    try:
                        fd = os.open(self.container.dir / KEPT_NAME, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
                        os.close(fd)
                    except FileNotFoundError:
                        pass
            self.exited.set()
        self.close()

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting; let requests in flight answer (up to ``timeout`` s)."""
        if self._wake_w < 0:
            return
        if self._fd < 0:  # never started
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
            return
        os.write(self._wake_w, b"x")
        for t in self._threads:
            t.join()
        self._threads.clear()
        os.close(self._fd)
        self._fd = -1
        if not self.removed:
            try:
                os.unlink(self.container.dir / SOCKET_NAME)
            except (FileNotFoundError, ContainerError):
                pass
        deadline = time.monotonic() + timeout
        with self._active_cond:
            while self._active and time.monotonic() < deadline:
                self._active_cond.wait(max(0.0, deadline - time.monotonic()))
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._wake_r = self._wake_w = -1
