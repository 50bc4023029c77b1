"""The owner's side of a container's control socket (`Server`): the protocol and its
clients are in control.py. The isobox command serves it while it runs a container in the
foreground, the supervisor while it owns a detached one.

Clients are not trusted to follow the protocol: one loop thread accepts connections and
reads each request (poll, not select: fd numbers can pass 1024), checks it field by field
(check_request) and answers every fault; `wait`s are parked in the loop until the exit,
other requests get a thread within a bound of their own (see the bounds below).

Most containers are never controlled from outside (``isobox run --rm IMAGE true`` is over
before anyone could), so the listening socket comes from the native core, and Python's
socket module (with control.py) is imported only when the first client connects.
"""

from __future__ import annotations

import json
import math
import os
import re
import select
import signal as _signal
import stat
import struct
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import ContainerError, InvalidOption, IsoboxError
from ..host.native import lib, wait_exit
from ..runtime.state import KEPT_NAME, SOCKET_NAME, socket_path
from ..runtime.spelling import parse_env, signal_number


if TYPE_CHECKING:
    import socket

    from ..runtime.container import Container
    from .client import Conn


# Bounds on what clients can make the owner hold. Each is separate, so that one kind of
# request cannot lock out another: `wait` requests (which last until the container
# exits) are parked in the serving loop and take no thread; `exec`s (which last as long as
# their process) have their own threads; info, kill, stop, remove, root and resize have
# theirs, so `stop` and `kill` are served however many waiters and execs there are. A connection
# beyond a bound gets a "busy" error and is closed.
MAX_READING = 64  # connections whose request is still arriving (beyond: the oldest goes)
REQUEST_TIMEOUT = 10.0  # seconds for a whole request to arrive
MAX_WAITERS = 256  # parked `wait` requests (one fd each)
MAX_EXECS = 64  # exec requests being served
MAX_CONTROL = 16  # info, kill, stop, remove, root, resize being served
MAX_FDS = 3  # fds one request can carry (exec's stdio)

# The fields of each request (control.py's table), and what each may be.
FIELDS: Dict[str, Tuple[str, ...]] = {
    "info": (), "wait": (), "kill": ("signal",), "stop": ("timeout",), "remove": ("force",),
    "exec": ("argv", "env", "workdir", "user", "tty", "tty_size"), "root": (), "resize": ("rows", "cols"),
}


class BadRequest(InvalidOption):
    """A request that does not follow the protocol (internal: answered, never raised to
    a caller of isobox; the client sees it as InvalidOption)."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_request(doc: Any, nfds: int) -> Dict[str, Any]:
    """The request, checked field by field before anything is done for it; BadRequest
    names what is wrong. Unknown fields are refused, as runc's nsexec refuses an unknown
    attribute: a client newer than its server learns it at once."""
    if not isinstance(doc, dict):
        raise BadRequest(f"a request is a JSON object, got {type(doc).__name__} {_show(doc)}")
    op = doc.get("op")
    if not isinstance(op, str) or op not in FIELDS:
        raise BadRequest(f"unknown request {_show(op)}: one of {', '.join(sorted(FIELDS))}")
    for key in doc:
        if key != "op" and key not in FIELDS[op]:
            raise BadRequest(f"{op} request: unknown field {_show(key)}")

    def field(name: str, ok: Callable[[Any], bool], what: str) -> None:
        if name in doc and not ok(doc[name]):
            raise BadRequest(f"{op} request: {name!r} must be {what}, got {_show(doc[name])}")

    def text(value: Any) -> bool:
        return isinstance(value, str) and "\0" not in value

    if op == "kill":
        field("signal", lambda v: (_is_int(v) and 1 <= v <= 64)
              or (text(v) and re.fullmatch(r"[A-Za-z0-9+-]{1,16}", v) is not None),
              "a signal number (1-64) or name")
        if "signal" in doc:
            try:
                number = signal_number(doc["signal"])
            except (InvalidOption, ValueError):
                number = 0
            if not 1 <= number <= 64:
                raise BadRequest(f"kill request: unknown signal {_show(doc['signal'])}")
    elif op == "stop":
        field("timeout", lambda v: (_is_int(v) or isinstance(v, float)) and math.isfinite(v)
              and 0 <= v <= 1 << 31, "a number of seconds, 0 or more")
    elif op == "remove":
        field("force", lambda v: isinstance(v, bool), "true or false")
    elif op == "resize":
        for name in ("rows", "cols"):
            if name not in doc:
                raise BadRequest(f"resize request: {name!r} is missing")
            field(name, lambda v: _is_int(v) and 0 < v < 65536, "a whole number (1-65535)")
    elif op == "exec":
        if "argv" not in doc:
            raise BadRequest("exec request: 'argv' is missing")
        field("argv", lambda v: isinstance(v, list) and bool(v) and all(text(a) for a in v),
              "a non-empty list of strings")
        # NAME=value only: a bare NAME would take the owner's own environment
        field("env", lambda v: v is None or (isinstance(v, list) and all(
            text(e) and "=" in e and not e.startswith("=") for e in v)), "a list of \"NAME=value\" strings")
        field("workdir", lambda v: v is None or (text(v) and v.startswith("/")), "an absolute path")
        field("user", lambda v: v is None or text(v), "a string")
        field("tty", lambda v: isinstance(v, bool), "true or false")
        field("tty_size", lambda v: v is None or (isinstance(v, list) and len(v) == 2 and all(
            _is_int(n) and 0 < n < 65536 for n in v)), "[rows, columns] (1-65535)")
        want = 0 if doc.get("tty") else 3
        if nfds != want:
            raise BadRequest(f"exec request: {'a tty exec takes no fds' if want == 0 else 'needs three fds: stdin, stdout, stderr'}"
                             f", got {nfds}")
        return doc
    if nfds:
        raise BadRequest(f"{op} request: takes no fds, got {nfds}")
    return doc


def check_stdio(fds: Sequence[int]) -> None:
    """Refuse exec stdio that is not an anonymous pipe or a socket. A process holding a
    file, a terminal, a device or a named FIFO of the host can reopen it through
    /proc/self/fd (and truncate a file), or chmod and chown it (rootful container root
    has CAP_FOWNER and CAP_CHOWN: the host's /dev/null). isobox's own clients send pipes
    (control.py); this is defense in depth for any other client of the socket, and for
    a client of an older isobox, which passed its own files."""
    for name, fd in zip(("stdin", "stdout", "stderr"), fds):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(("pipe:", "socket:")):
            continue
        st = os.fstat(fd)
        kind = ("a named FIFO" if stat.S_ISFIFO(st.st_mode) else "a regular file" if stat.S_ISREG(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a directory" if stat.S_ISDIR(st.st_mode) else "not a pipe")
        raise BadRequest(f"exec request: {name} must be a pipe or a socket, not {kind}: the "
                         "container could reopen it through /proc/self/fd")


class _Pending:
    """A connection whose request is still arriving (read by the serving loop)."""

    def __init__(self, sock: "socket.socket", allowed: bool) -> None:
        self.sock = sock
        self.allowed = allowed
        self.buf = b""
        self.fds: List[int] = []
        self.deadline = time.monotonic() + REQUEST_TIMEOUT

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.sock.close()


def _reply(sock: "socket.socket", doc: Mapping[str, Any]) -> None:
    """A best-effort reply from the serving loop: small, so it fits the socket's buffer
    (the loop never blocks on a client that does not read)."""
    try:
        sock.send(json.dumps(doc).encode() + b"\n", socket_module().MSG_DONTWAIT)
    except OSError:
        pass


def _error(message: str, error: str = "InvalidOption") -> Dict[str, Any]:
    return {"ok": False, "error": error, "message": message}


def error_doc_of(exc: BaseException) -> Dict[str, Any]:
    """The reply for a refused request: BadRequest reaches the client as InvalidOption."""
    return {"ok": False, "error": "InvalidOption" if isinstance(exc, BadRequest) else type(exc).__name__,
            "message": str(exc)}


def socket_module() -> Any:
    import socket

    return socket


class Server:
    """Serves a running `Container`'s control socket, in the process that owns the
    container: one loop thread accepts connections, reads their requests and parks
    `wait` requests; exec and the other requests run in threads of their own, within
    the bounds above. ``finish`` is the owner's last word once the container has exited:
    it keeps (or with ``auto_remove`` removes) the container, answers waiters and stops
    serving."""

    def __init__(self, container: Container, *, auto_remove: bool = False) -> None:
        self.container = container
        self.auto_remove = auto_remove
        self.lock = threading.Lock()  # finish and remove, one at a time
        self.exited = threading.Event()
        self.exit_code: Optional[int] = None
        self.removed = False
        self._fd = -1  # the listening socket
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._threads: List[threading.Thread] = []
        self._closing = False
        self._active = 0
        self._active_cond = threading.Condition()
        self._slots = {"exec": threading.BoundedSemaphore(MAX_EXECS),
                       "control": threading.BoundedSemaphore(MAX_CONTROL)}

    def start(self) -> None:
        if not self.auto_remove:
            # kept from the start, not only once it exited: if this owner is killed, the
            # container dies with it and stays listed, exited, until removed, as Docker
            # keeps a dead container (ContainerInfo tells the truth about its process)
            fd = os.open(self.container.dir / KEPT_NAME, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.close(fd)
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
        t = threading.Thread(target=self._loop, name="isobox-control", daemon=True)
        t.start()
        self._threads.append(t)

    # -- the serving loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        listener: Optional["socket.socket"] = None
        pending: Dict[int, _Pending] = {}
        waiters: Dict[int, "socket.socket"] = {}
        poller = select.poll()  # not select: fd numbers can exceed FD_SETSIZE
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        try:
            while True:
                now = time.monotonic()
                for fd, conn in list(pending.items()):
                    if conn.deadline <= now:
                        _reply(conn.sock, _error(f"no complete request within {REQUEST_TIMEOUT:g} s"))
                        poller.unregister(fd)
                        del pending[fd]
                        conn.close()
                timeout = min((c.deadline for c in pending.values()), default=None)
                events = poller.poll(None if timeout is None else max(0, int((timeout - now) * 1000) + 1))
                # requests that arrived first, new connections last (see _accept)
                for fd, _ in sorted(events, key=lambda event: event[0] == self._fd):
                    if fd == self._wake_r:
                        try:
                            os.read(self._wake_r, 64)
                        except BlockingIOError:
                            pass
                    elif fd == self._fd:
                        if listener is None:
                            import socket  # the first client: see the module docstring

                            listener = socket.socket(fileno=os.dup(self._fd))
                            listener.setblocking(False)
                        self._accept(listener, pending, waiters, poller)
                    elif fd in pending:
                        self._read(pending, waiters, poller, fd)
                    elif fd in waiters:
                        self._watch_waiter(waiters, poller, fd)
                if self.exited.is_set():
                    for fd, sock in waiters.items():
                        _reply(sock, {"ok": True, "exit_code": self.exit_code})
                        poller.unregister(fd)
                        sock.close()
                    waiters.clear()
                if self._closing:
                    return
        except Exception as exc:  # pragma: no cover - a bug here must not pass silently
            print(f"isobox: the control socket stopped serving: {exc!r}", file=sys.stderr)
            raise
        finally:
            # closed without a word: to a client, a connection closed before its reply is
            # an owner that no longer serves, and it reads the container's state on disk
            for conn in pending.values():
                conn.close()
            for sock in waiters.values():
                if self.exited.is_set():
                    _reply(sock, {"ok": True, "exit_code": self.exit_code})
                sock.close()
            if listener is not None:
                listener.close()

    def _accept(self, listener: "socket.socket", pending: Dict[int, _Pending],
                waiters: Dict[int, "socket.socket"], poller: Any) -> None:
        from .client import Conn

        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and the like: the connection waits in the backlog
                return
            sock.setblocking(False)
            if len(pending) >= MAX_READING:
                # the oldest goes, not the newest: a request is sent at once after connect,
                # so connections that hold a place without sending one cannot lock the
                # others out (of a `stop`, say) for REQUEST_TIMEOUT
                fd, oldest = min(pending.items(), key=lambda item: item[1].deadline)
                self._read(pending, waiters, poller, fd)  # its request may be there, unread
                if fd in pending:
                    _reply(oldest.sock, _error(f"the container's owner is busy ({MAX_READING} connections "
                                               "are sending requests) and no request came on this one: "
                                               "try again", "ContainerError"))
                    poller.unregister(fd)
                    del pending[fd]
                    oldest.close()
            try:
                allowed = Conn(sock).peer_uid() in (os.geteuid(), 0)
            except OSError:
                sock.close()
                continue
            pending[sock.fileno()] = _Pending(sock, allowed)
            poller.register(sock.fileno(), select.POLLIN)

    def _read(self, pending: Dict[int, _Pending], waiters: Dict[int, "socket.socket"], poller: Any,
              fd: int) -> None:
        import socket

        from .client import MAX_MESSAGE

        conn = pending[fd]
        problem: Optional[str] = None
        try:
            data, ancillary, flags, _ = conn.sock.recvmsg(
                65536, socket.CMSG_SPACE(MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary, flags = b"", [], 0
            problem = ""  # reset by the client: nobody to answer
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                conn.fds.extend(struct.unpack(f"{len(payload) // 4}i", payload[:len(payload) // 4 * 4]))
        if flags & socket.MSG_CTRUNC:
            problem = f"a request carries at most {MAX_FDS} fds"
        elif not data and problem is None:
            problem = ("the request ended without a newline" if conn.buf
                       else "no request: the connection was closed before one was sent")
        conn.buf += data
        if problem is None and b"\n" not in conn.buf:
            if len(conn.buf) <= MAX_MESSAGE:
                return
            problem = f"request longer than {MAX_MESSAGE} bytes"
        poller.unregister(fd)
        del pending[fd]
        if problem is not None:
            if problem:
                _reply(conn.sock, _error(problem))
            conn.close()
            return
        line = conn.buf.partition(b"\n")[0]
        if len(line) > MAX_MESSAGE:
            _reply(conn.sock, _error(f"request longer than {MAX_MESSAGE} bytes"))
            conn.close()
            return
        self._dispatch(conn, line, waiters, poller)

    def _dispatch(self, conn: _Pending, line: bytes, waiters: Dict[int, "socket.socket"], poller: Any) -> None:
        if not conn.allowed:
            _reply(conn.sock, _error("permission denied", "ContainerError"))
            conn.close()
            return
        try:
            try:
                doc = json.loads(line)
            except (ValueError, RecursionError) as exc:
                raise BadRequest(f"a request is one line of JSON: {exc}") from None
            doc = check_request(doc, len(conn.fds))
            if doc["op"] == "exec" and not doc.get("tty"):
                check_stdio(conn.fds)
        except BadRequest as exc:
            _reply(conn.sock, error_doc_of(exc))
            conn.close()
            return
        op = doc["op"]
        if op == "wait":
            if self.exited.is_set():
                _reply(conn.sock, {"ok": True, "exit_code": self.exit_code})
                conn.close()
            elif len(waiters) >= MAX_WAITERS:
                _reply(conn.sock, _error(f"the container's owner is busy ({MAX_WAITERS} clients wait "
                                         "for its exit): try again", "ContainerError"))
                conn.close()
            else:
                waiters[conn.sock.fileno()] = conn.sock
                poller.register(conn.sock.fileno(), select.POLLIN)
            return
        slot = self._slots["exec" if op == "exec" else "control"]
        if not slot.acquire(blocking=False):
            bound = MAX_EXECS if op == "exec" else MAX_CONTROL
            _reply(conn.sock, _error(f"the container's owner is busy ({bound} {op if op == 'exec' else 'control'} "
                                     "requests in progress): try again", "ContainerError"))
            conn.close()
            return
        with self._active_cond:
            self._active += 1
        try:
            threading.Thread(target=self._serve, args=(conn, doc, slot), name=f"isobox-control-{op}",
                             daemon=True).start()
        except BaseException:
            self._done(slot)
            conn.close()
            raise

    def _watch_waiter(self, waiters: Dict[int, "socket.socket"], poller: Any, fd: int) -> None:
        """A parked waiter's socket became readable: it went away (EOF, reset), or sent
        more than its request, which is read and dropped."""
        sock = waiters[fd]
        try:
            gone = sock.recv(65536) == b""
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            gone = True
        if gone:
            poller.unregister(fd)
            del waiters[fd]
            sock.close()

    def _done(self, slot: threading.BoundedSemaphore) -> None:
        slot.release()
        with self._active_cond:
            self._active -= 1
            self._active_cond.notify_all()

    def _serve(self, pending: _Pending, doc: Mapping[str, Any], slot: threading.BoundedSemaphore) -> None:
        from .client import Conn, error_doc

        pending.sock.setblocking(True)
        conn = Conn(pending.sock)
        conn.fds, pending.fds = pending.fds, []
        op = doc["op"]
        try:
            handler = getattr(self, f"_op_{op}")
            try:
                handler(conn, doc)
            except Exception as exc:  # every failure is answered, none kills the owner
                if not isinstance(exc, IsoboxError):
                    exc = ContainerError(f"{op}: {exc}")
                try:
                    conn.send(error_doc(exc))
                except OSError:
                    pass
        finally:
            conn.close()
            self._done(slot)

    # -- the requests ------------------------------------------------------------------------------

    def _running(self) -> bool:
        return not self.removed and self.container.status == "running"

    def _op_info(self, conn: Conn, doc: Mapping[str, Any]) -> None:
        c = self.container
        conn.send({"ok": True, "status": "removed" if self.removed else c.status, "pid": c.pid,
                   "exit_code": c.exit_code})

    def _op_kill(self, conn: Conn, doc: Mapping[str, Any]) -> None:
        signum = signal_number(doc.get("signal", "KILL"))  # checked by check_request
        if self._running():  # one that is not running any more is left alone (protocol.py)
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

    def _op_root(self, conn: Conn, doc: Mapping[str, Any]) -> None:
        # the client copies with it, as the user it is (client.py: ContainerHandle._open_root)
        if self.removed:
            raise ContainerError(f"container {self.container.name} is not running")
        root = self.container._open_root()
        try:
            conn.send({"ok": True}, [root])
        finally:
            os.close(root)

    def _op_resize(self, conn: Conn, doc: Mapping[str, Any]) -> None:
        if self.removed:
            raise ContainerError(f"container {self.container.name} is not running")
        self.container.resize(int(doc["rows"]), int(doc["cols"]))
        conn.send({"ok": True})

    def _op_exec(self, conn: Conn, doc: Mapping[str, Any]) -> None:
        fds = conn.take_fds()
        master = -1
        try:
            argv = tuple(doc["argv"])  # every field checked by check_request
            tty = bool(doc.get("tty"))
            workdir = doc.get("workdir")
            if workdir is not None:
                from ..runtime.config import ContainerConfig

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
        self._closing = True
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
