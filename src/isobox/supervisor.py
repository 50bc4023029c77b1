"""Containers that outlive the process that started them, and how other processes find
and control containers: `containers`, `get_container`, `ContainerHandle`, `run_detached`.

A container dies with its owner (container.py: PR_SET_PDEATHSIG), so `isobox run -d`
gives it an owner that stays: the supervisor, ``python -m isobox.supervisor``. Three
kinds of process take part:

- the *caller* (`run_detached`, used by ``isobox run -d``) starts the supervisor with
  ``start_new_session``, writes one JSON request (image, options, store) to its stdin and
  reads one JSON line back from its stdout: ``{"ok": true, "id": ...}`` once the container
  runs and its control socket listens, or ``{"ok": false, "error": CLASS, ...}`` (the
  isobox exception that stopped the start).
- the *supervisor* forks once at start (its parent exits at once, so nobody has to reap
  it), starts the `Container`, serves its control socket, writes a tty container's output
  to stdout.log, and on SIGTERM stops the container. When the container has exited it
  marks it ``kept`` (unless ``--rm``: then it removes it), answers the waiters, and exits:
  an exited container is only state on disk, as with Docker, and no process is left
  behind. The foreground ``isobox run`` serves the same socket from a thread while it
  owns its container, so ``isobox exec`` works on both.
- *clients* (`ContainerHandle`) connect to ``containers/<id>/control.sock``.

The control protocol. Each connection carries one request: a JSON object and a newline,
sent with sendmsg; exec's stdio fds ride on it as SCM_RIGHTS. Replies are JSON lines;
only exec's ``started`` reply may carry an fd. Only the server's own uid, or root, is
served (SO_PEERCRED; the socket is also mode 0600).

========================================  =================================================
request                                   replies
========================================  =================================================
``{"op": "info"}``                        ``{"ok": true, "status", "pid", "exit_code"}``
``{"op": "wait"}``                        ``{"ok": true, "exit_code": N}`` once it exited
``{"op": "kill", "signal": "TERM"}``      ``{"ok": true}``
``{"op": "stop", "timeout": 10}``         ``{"ok": true, "exit_code": N}``
``{"op": "remove", "force": false}``      ``{"ok": true}``; the owner then lets go of it
``{"op": "exec", "argv": [...],``         ``{"ok": true, "event": "started", "pid": P}``
``"env": [...], "workdir", "user",``      (with tty: the terminal's master fd attached),
``"tty": false}`` + fds stdin, stdout,    then ``{"ok": true, "exit_code": N}``. If the
stderr (none with tty)                    client goes away first, the process is killed.
========================================  =================================================

Any failure: ``{"ok": false, "error": "CommandNotFound", "message": ..., "step": ...,
"errno": ...}``, raised again on the client side as the same isobox exception.

Exit statuses are `Container.wait`'s: N, or -N for a death by signal N.

Paths: a socket address holds at most 107 bytes, and the store can be deep (a test's tmp
dir), so both ends reach the socket through ``/proc/self/fd/<fd of the directory>/``.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import select
import signal as _signal
import socket
import struct
import sys
import threading
import time
from typing import IO, Any, Dict, Iterator, List, Mapping, NoReturn, Optional, Sequence, Tuple, Union

import attrs

from . import errors as _errors
from .container import NAME_RE, Container, _owner_alive, _signum, _unlink_name
from .store import remove_tree
from .container import _env as _parse_env
from .errors import ContainerError, ContainerNotFound, InvalidOption, IsoboxError, SetupError, Timeout
from .mounts import Bind, Mount, Tmpfs, Volume
from .result import RunResult
from .store import Store

SOCKET_NAME = "control.sock"
OPTIONS_NAME = "options.json"  # how the container was made, for inspect (written by the owner)
KEPT_NAME = "kept"  # see container._owner_alive
MAX_MESSAGE = 1 << 20

StoreArg = Union[Store, str, "os.PathLike[str]", None]


# -- options as JSON -------------------------------------------------------------------------


def mounts_to_json(mounts: Sequence[Mount]) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    for m in mounts:
        if isinstance(m, Bind):
            out.append({"type": "bind", "source": m.source, "target": m.target, "read_only": m.read_only})
        elif isinstance(m, Volume):
            out.append({"type": "volume", "name": m.name, "target": m.target, "read_only": m.read_only})
        else:
            out.append({"type": "tmpfs", "target": m.target, "size": m.size, "mode": m.mode, "exec": m.exec})
    return out


def mounts_from_json(docs: Sequence[Mapping[str, Any]]) -> Tuple[Mount, ...]:
    out: List[Mount] = []
    for d in docs:
        kind = d.get("type")
        if kind == "bind":
            out.append(Bind(d["source"], d["target"], read_only=bool(d.get("read_only"))))
        elif kind == "volume":
            out.append(Volume(d["name"], d["target"], read_only=bool(d.get("read_only"))))
        elif kind == "tmpfs":
            out.append(Tmpfs(d["target"], size=d.get("size"), mode=int(d.get("mode", 0o1777)),
                             exec=bool(d.get("exec"))))
        else:
            raise InvalidOption(f"unknown mount type {kind!r}")
    return tuple(out)


def options_to_json(options: Mapping[str, Any]) -> Dict[str, Any]:
    """`Container` keyword arguments (plus ``command``) as a JSON object."""
    doc = dict(options)
    if "mounts" in doc:
        doc["mounts"] = mounts_to_json(doc["mounts"] or ())
    if isinstance(doc.get("env"), Mapping):
        doc["env"] = [f"{k}={v}" for k, v in doc["env"].items()]
    return doc


def options_from_json(doc: Mapping[str, Any]) -> Dict[str, Any]:
    options = dict(doc)
    if "mounts" in options:
        options["mounts"] = mounts_from_json(options["mounts"] or ())
    return options


# -- what is on disk -------------------------------------------------------------------------


@attrs.frozen
class ContainerInfo:
    """A container of the store as any process sees it (`isobox ps`, `inspect`).

    ``status`` is "created", "running" or "exited"; ``exit_code`` as `Container.wait`
    reports it; ``options`` what its owner recorded (``options.json``, written by the
    isobox command and the supervisor; empty for containers made by other programs)."""

    id: str
    name: str
    image: Optional[str]
    image_digest: Optional[str]
    command: Tuple[str, ...]
    status: str
    exit_code: Optional[int]
    created: float
    finished: Optional[float]
    pid: Optional[int]
    owner_pid: Optional[int]
    path: pathlib.Path
    options: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def kept(self) -> bool:
        return os.path.lexists(self.path / KEPT_NAME)

    @classmethod
    def from_dir(cls, cdir: pathlib.Path) -> Optional["ContainerInfo"]:
        """None for what is not a live or kept container (being created, or left by an
        owner that died: the next start sweeps it)."""
        try:
            state_path = cdir / "state.json"
            state = json.loads(state_path.read_text())
            mtime = state_path.stat().st_mtime
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict) or not _owner_alive(cdir):
            return None
        try:
            options = json.loads((cdir / OPTIONS_NAME).read_text())
        except (OSError, ValueError):
            options = {}
        status = str(state.get("status") or "created")
        return cls(
            id=str(state.get("id") or cdir.name),
            name=str(state.get("name") or ""),
            image=state.get("image"),
            image_digest=state.get("image_digest"),
            command=tuple(str(a) for a in state.get("argv") or ()),
            status=status,
            exit_code=state.get("exit_code"),
            created=float(state.get("created") or mtime),
            finished=mtime if status == "exited" else None,
            pid=state.get("pid"),
            owner_pid=state.get("owner_pid"),
            path=cdir,
            options=options if isinstance(options, dict) else {},
        )


def containers(all: bool = False, store: StoreArg = None) -> List[ContainerInfo]:  # noqa: A002
    """The store's containers, newest first: running ones, and with ``all=True`` also
    created and exited ones (`isobox ps [-a]`)."""
    root = Store.open(store).containers
    found: List[ContainerInfo] = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return found
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        info = ContainerInfo.from_dir(pathlib.Path(entry.path))
        if info is not None and (all or info.running):
            found.append(info)
    found.sort(key=lambda i: i.created, reverse=True)
    return found


def find(ref: str, store: StoreArg = None) -> ContainerInfo:
    """A container by name, full id or unique id prefix, as Docker looks them up."""
    st = Store.open(store)
    if NAME_RE.match(ref):
        try:
            cid = os.readlink(st.containers / ".names" / ref)
        except OSError:
            cid = None
        if cid and "/" not in cid and not cid.startswith("."):
            info = ContainerInfo.from_dir(st.containers / cid)
            if info is not None:
                return info
    if ref and all(ch in "0123456789abcdef" for ch in ref):
        matches = [i for i in containers(all=True, store=st) if i.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ContainerNotFound(f"{len(matches)} containers have ids starting with {ref!r}: give more of the id")
    raise ContainerNotFound(f"no such container: {ref}")


def get_container(ref: str, store: StoreArg = None) -> "ContainerHandle":
    """A handle on a container by name or id (prefix), from any process."""
    return ContainerHandle(find(ref, store), Store.open(store))


# -- the wire -----------------------------------------------------------------------------------


def _error_doc(exc: BaseException) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, SetupError):
        doc.update(step=exc.step, errno=exc.errno, detail=exc.detail)
    return doc


def raise_error(doc: Mapping[str, Any]) -> NoReturn:
    """Raise the isobox exception a reply (or the supervisor's report) describes."""
    cls = getattr(_errors, str(doc.get("error")), None)
    if not (isinstance(cls, type) and issubclass(cls, IsoboxError)):
        cls = ContainerError
    if issubclass(cls, SetupError):
        raise cls(str(doc.get("step")), int(doc.get("errno") or 0), doc.get("detail"))
    raise cls(str(doc.get("message")))


class _Conn:
    """JSON lines over a unix stream socket, with fds (SCM_RIGHTS)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.fds: List[int] = []

    def send(self, doc: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
        data = json.dumps(doc).encode() + b"\n"
        if fds:
            sent = socket.send_fds(self.sock, [data], list(fds))
            data = data[sent:]
        if data:
            self.sock.sendall(data)

    def recv(self, timeout: Optional[float] = None) -> Optional[Mapping[str, Any]]:
        """The next message (fds that came with it are appended to ``.fds``); None at EOF.
        Raises socket.timeout after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    raise socket.timeout("no reply")
            data, fds, _, _ = socket.recv_fds(self.sock, 65536, 4)
            for fd in fds:
                os.set_inheritable(fd, False)
            self.fds.extend(fds)
            if not data:
                if self.buf:
                    raise ContainerError("the control socket closed in the middle of a message")
                return None
            self.buf += data
            if len(self.buf) > MAX_MESSAGE:
                raise ContainerError("control message too long")
        line, _, self.buf = self.buf.partition(b"\n")
        doc = json.loads(line)
        if not isinstance(doc, dict):
            raise ContainerError("malformed control message")
        return doc

    def take_fds(self) -> List[int]:
        fds, self.fds = self.fds, []
        return fds

    def close(self) -> None:
        for fd in self.take_fds():
            os.close(fd)
        self.sock.close()


def _streams(stream: str) -> Tuple[str, ...]:
    if stream not in ("both", "stdout", "stderr"):
        raise InvalidOption(f"stream must be 'stdout', 'stderr' or 'both', got {stream!r}")
    return ("stdout", "stderr") if stream == "both" else (stream,)


def _dir_path(dfd: int) -> str:
    return f"/proc/self/fd/{dfd}/{SOCKET_NAME}"


def _connect(cdir: pathlib.Path) -> Optional[_Conn]:
    """A connection to the container's owner, or None when nobody serves it."""
    try:
        dfd = os.open(cdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(_dir_path(dfd))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(dfd)
    return _Conn(sock)


# -- the client ---------------------------------------------------------------------------------


class RemoteExec:
    """A process started in a container by its owner (`ContainerHandle.exec_start`).

    ``master`` is the terminal's master fd with tty (yours to read, write and resize,
    and to close), else -1. ``fileno()`` becomes readable when the exit status arrives."""

    def __init__(self, conn: _Conn, pid: int, master: int) -> None:
        self._conn = conn
        self.pid = pid
        self.master = master
        self.exit_code: Optional[int] = None

    def fileno(self) -> int:
        return self._conn.sock.fileno()

    def wait(self, timeout: Optional[float] = None) -> int:
        if self.exit_code is not None:
            return self.exit_code
        try:
            doc = self._conn.recv(timeout)
        except socket.timeout:
            raise Timeout(f"exec still running after {timeout} s") from None
        if doc is None:
            raise ContainerError("the container's owner went away during exec")
        if not doc.get("ok"):
            raise_error(doc)
        self.exit_code = int(doc["exit_code"])
        return self.exit_code

    def close(self) -> None:
        """Let go of the process: if it still runs, its owner kills it."""
        self._conn.close()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def __enter__(self) -> "RemoteExec":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ContainerHandle:
    """A container of the store seen from any process: wait, stop, kill, exec, logs and
    remove it. A running container is controlled through its owner's control socket
    (detached containers and foreground ``isobox run``); an exited one is state on disk.
    Containers owned by other programs (a `Container` in some Python process) can be
    listed and their logs read, but only their owner controls them."""

    def __init__(self, info: ContainerInfo, store: Store) -> None:
        self._info = info
        self._store = store

    @property
    def id(self) -> str:
        return self._info.id

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def path(self) -> pathlib.Path:
        return self._info.path

    def info(self) -> ContainerInfo:
        """Read the container's state again; ContainerNotFound once it was removed."""
        info = ContainerInfo.from_dir(self._info.path)
        if info is None:
            raise ContainerNotFound(f"no such container: {self._info.name}")
        self._info = info
        return info

    @property
    def status(self) -> str:
        try:
            return self.info().status
        except ContainerNotFound:
            return "removed"

    def __repr__(self) -> str:
        return f"<ContainerHandle {self.name} {self.id[:12]}>"

    def _request(self, doc: Mapping[str, Any], fds: Sequence[int] = ()) -> Optional[_Conn]:
        conn = _connect(self.path)
        if conn is None:
            return None
        try:
            conn.send(doc, fds)
        except (BrokenPipeError, ConnectionResetError):
            conn.close()
            return None
        return conn

    def _call(self, doc: Mapping[str, Any], timeout: Optional[float] = None) -> Optional[Mapping[str, Any]]:
        """One request and its reply; None when nobody serves the container (any more)."""
        conn = self._request(doc)
        if conn is None:
            return None
        try:
            reply = conn.recv(timeout)
        except ConnectionResetError:
            reply = None
        finally:
            conn.close()
        if reply is not None and not reply.get("ok"):
            raise_error(reply)
        return reply

    def _unserved(self, what: str) -> ContainerError:
        info = self.info()
        if info.running:
            return ContainerError(
                f"container {info.name} is owned by process {info.owner_pid}, which does not "
                f"serve control requests: {what} it from that program")
        return ContainerError(f"container {info.name} is not running")

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait until the container exits: its status (-N for a death by signal N)."""
        try:
            reply = self._call({"op": "wait"}, timeout)
        except socket.timeout:
            raise Timeout(f"container {self.name} still running after {timeout} s") from None
        if reply is not None:
            return int(reply["exit_code"])
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.info()
            if info.status == "exited" and info.exit_code is not None:
                return int(info.exit_code)
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"container {self.name} still running after {timeout} s")
            time.sleep(0.05)  # an owner without a socket, or one that is just letting go

    def kill(self, signal: Union[int, str] = "KILL") -> None:
        """Send a signal to the container's pid 1 (`docker kill`)."""
        _signum(signal)
        if self._call({"op": "kill", "signal": signal if isinstance(signal, str) else int(signal)}) is None:
            raise self._unserved("kill")

    def stop(self, timeout: float = 10) -> Optional[int]:
        """The image's StopSignal (or SIGTERM), SIGKILL after ``timeout`` s; the status."""
        reply = self._call({"op": "stop", "timeout": timeout})
        if reply is not None:
            return int(reply["exit_code"])
        info = self.info()
        if info.running:
            raise self._unserved("stop")
        return info.exit_code

    def remove(self, force: bool = False) -> None:
        """Delete the container (`docker rm`); a running one needs ``force`` (killed first)."""
        reply = self._call({"op": "remove", "force": force})
        if reply is not None:
            return
        try:
            info = self.info()
        except ContainerNotFound:
            return
        if info.running:
            raise self._unserved("remove")
        self._remove_on_disk(info)

    def _remove_on_disk(self, info: ContainerInfo) -> None:
        """Remove an exited container nobody serves: once we hold its lock exclusively,
        its owner (which may be exiting right now, or be a program that keeps it) is gone
        and nothing else changes the directory while we remove it."""
        try:
            fd = os.open(info.path / "lock", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # removed meanwhile
        try:
            deadline = time.monotonic() + 5
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ContainerError(
                            f"container {info.name} is still owned by process {info.owner_pid}: "
                            "remove it from that program") from None
                    time.sleep(0.01)
            try:
                os.unlink(info.path / KEPT_NAME)  # from here on, a failure leaves garbage the next start sweeps
            except FileNotFoundError:
                pass
            remove_tree(info.path)
            _unlink_name(self._store.containers / ".names" / info.name, info.id)
        finally:
            os.close(fd)

    def logs(self, stream: str = "both") -> bytes:
        """What the container wrote: "stdout", "stderr" or "both" (stdout, then stderr)."""
        out = b""
        for name in _streams(stream):
            try:
                out += (self.path / f"{name}.log").read_bytes()
            except FileNotFoundError:
                pass
        return out

    def follow_logs(self, stream: str = "both") -> Iterator[Tuple[str, bytes]]:
        """(stream name, chunk) as the container writes them, from the start, until it
        is no longer running and everything was read (`isobox logs -f`)."""
        return self._follow(_streams(stream))

    def _follow(self, names: Sequence[str]) -> Iterator[Tuple[str, bytes]]:
        files: List[Tuple[str, IO[bytes]]] = []
        try:
            for name in names:
                try:
                    files.append((name, open(self.path / f"{name}.log", "rb")))
                except FileNotFoundError:
                    pass
            delay = 0.005
            while True:
                done = self.status != "running"
                got = False
                for name, f in files:
                    chunk = f.read(65536)
                    while chunk:
                        got = True
                        yield name, chunk
                        chunk = f.read(65536)
                if done:
                    return
                delay = 0.005 if got else min(delay * 2, 0.1)
                time.sleep(delay)
        finally:
            for _, f in files:
                f.close()

    def exec_start(
        self,
        command: Sequence[str],
        *,
        env: Union[Mapping[str, str], Sequence[str], None] = None,
        workdir: Optional[str] = None,
        user: Optional[str] = None,
        tty: bool = False,
        stdio: Tuple[int, int, int] = (-1, -1, -1),
        tty_size: Optional[Tuple[int, int]] = None,
    ) -> RemoteExec:
        """Start a process in the running container with these fds as its stdio (sent to
        the owner; -1: /dev/null), or with a new terminal (``tty``: its master comes back
        as ``.master``). Pass pipes rather than your terminal: a process holding your
        terminal could read what you type after it, or change its settings."""
        argv = [str(a) for a in command]
        if not argv:
            raise InvalidOption("exec needs a command")
        doc = {"op": "exec", "argv": argv, "env": [f"{k}={v}" for k, v in _parse_env(env)],
               "workdir": workdir, "user": user, "tty": tty,
               "tty_size": list(tty_size) if tty_size else None}
        opened: List[int] = []
        fds: List[int] = []
        if not tty:
            for i, fd in enumerate(stdio):
                if fd < 0:
                    fd = os.open(os.devnull, (os.O_RDONLY if i == 0 else os.O_WRONLY) | os.O_CLOEXEC)
                    opened.append(fd)
                fds.append(fd)
        try:
            conn = self._request(doc, fds)
        finally:
            for fd in opened:
                os.close(fd)
        if conn is None:
            raise self._unserved("exec in")
        try:
            reply = conn.recv()
            if reply is None:
                raise ContainerError(f"container {self.name}: its owner went away")
            if not reply.get("ok"):
                raise_error(reply)
            got = conn.take_fds()
            master = got[0] if tty and got else -1
            for fd in got[1:] if tty else got:
                os.close(fd)
            return RemoteExec(conn, int(reply["pid"]), master)
        except BaseException:
            conn.close()
            raise

    def exec(
        self,
        command: Sequence[str],
        *,
        env: Union[Mapping[str, str], Sequence[str], None] = None,
        workdir: Optional[str] = None,
        user: Optional[str] = None,
        stdin: Optional[bytes] = None,
        timeout: Optional[float] = None,
    ) -> RunResult:
        """Run a process in the container and collect its output, like `Container.exec`."""
        import tempfile

        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
                tempfile.TemporaryFile() as inp:
            if stdin is not None:
                inp.write(stdin)
                inp.seek(0)
            proc = self.exec_start(command, env=env, workdir=workdir, user=user,
                                   stdio=(inp.fileno() if stdin is not None else -1, out.fileno(), err.fileno()))
            with proc:
                code = proc.wait(timeout)
            out.seek(0)
            err.seek(0)
            return RunResult(tuple(command), code, out.read(), err.read())


# -- the server (in the container's owner) --------------------------------------------------------


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return int(uid)


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


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
        self._sock: Optional[socket.socket] = None
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._threads: List[threading.Thread] = []
        self._active = 0
        self._active_cond = threading.Condition()

    def start(self) -> None:
        cdir = self.container.dir
        dfd = os.open(cdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            path = _dir_path(dfd)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            old = os.umask(0o077)
            try:
                sock.bind(path)
            finally:
                os.umask(old)
            os.chmod(path, 0o600)
            sock.listen(16)
        except BaseException:
            sock.close()
            raise
        finally:
            os.close(dfd)
        self._sock = sock
        t = threading.Thread(target=self._accept_loop, name="isobox-control", daemon=True)
        t.start()
        self._threads.append(t)

    def _accept_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            ready = select.select([sock.fileno(), self._wake_r], [], [])[0]
            if self._wake_r in ready:
                return
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with self._active_cond:
                self._active += 1
            threading.Thread(target=self._serve, args=(conn,), name="isobox-control-conn", daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        conn = _Conn(sock)
        try:
            uid = _peer_uid(sock)
            if uid not in (os.geteuid(), 0):
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
                    conn.send(_error_doc(exc))
                except OSError:
                    pass
        except (OSError, ValueError, socket.timeout, ContainerError):
            pass  # a client that went away or spoke nonsense: nothing to answer
        finally:
            conn.close()
            with self._active_cond:
                self._active -= 1
                self._active_cond.notify_all()

    # -- the requests ------------------------------------------------------------------------------

    def _running(self) -> bool:
        return not self.removed and self.container.status == "running"

    def _op_info(self, conn: _Conn, doc: Mapping[str, Any]) -> None:
        c = self.container
        conn.send({"ok": True, "status": "removed" if self.removed else c.status, "pid": c.pid,
                   "exit_code": c.exit_code})

    def _op_wait(self, conn: _Conn, doc: Mapping[str, Any]) -> None:
        while not self.exited.wait(0.5):
            if _closed_by_peer(conn.sock):
                return
        conn.send({"ok": True, "exit_code": self.exit_code})

    def _op_kill(self, conn: _Conn, doc: Mapping[str, Any]) -> None:
        signum = _signum(doc.get("signal", "KILL"))
        if not self._running():
            raise ContainerError(f"container {self.container.name} is not running")
        self.container.kill(signum)
        conn.send({"ok": True})

    def _op_stop(self, conn: _Conn, doc: Mapping[str, Any]) -> None:
        timeout = float(doc.get("timeout", 10))
        c = self.container
        code = c.stop(timeout) if self._running() else c.exit_code
        conn.send({"ok": True, "exit_code": code})

    def _op_remove(self, conn: _Conn, doc: Mapping[str, Any]) -> None:
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

    def _op_exec(self, conn: _Conn, doc: Mapping[str, Any]) -> None:
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
            pid, master = self.container._exec_spawn(
                argv, _parse_env(doc.get("env") or ()), workdir, doc.get("user"), tty, stdio,
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
        pidfd = os.pidfd_open(pid)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            poller.register(conn.sock, select.POLLIN | select.POLLHUP)
            watching = True
            while True:
                events = dict(poller.poll())
                if pidfd in events:
                    break
                if watching and conn.sock.fileno() in events and _closed_by_peer(conn.sock):
                    # nobody will read the result: kill it (docker exec would leave it running)
                    _signal.pidfd_send_signal(pidfd, _signal.SIGKILL)
                    poller.unregister(conn.sock)
                    watching = False
        finally:
            os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        conn.send({"ok": True, "exit_code": os.waitstatus_to_exitcode(status)})

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
        if self._sock is None:  # never started
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
            return
        os.write(self._wake_w, b"x")
        for t in self._threads:
            t.join()
        self._threads.clear()
        self._sock.close()
        self._sock = None
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


def write_options(container: Container, options: Mapping[str, Any], **extra: Any) -> None:
    """Record how the container was made (``options.json``), for inspect. Mode 0600: the
    environment may hold secrets."""
    doc = {"options": options_to_json(options), **extra}
    path = container.dir / OPTIONS_NAME
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


# -- starting one (the caller's side) --------------------------------------------------------------


def run_detached(
    image: str,
    command: Union[str, Sequence[str], None] = None,
    *,
    platform: Optional[str] = None,
    auto_remove: bool = False,
    stop_timeout: float = 10,
    store: StoreArg = None,
    **options: Any,
) -> ContainerHandle:
    """Start a container from a stored image (pull it first) that outlives this process,
    owned by a supervisor process (`isobox run -d`). Options are `Container`'s, except
    ``stdin`` (True keeps an empty stdin open, as ``docker run -di``). Setup failures are
    raised here as the same isobox exceptions `Container.start` raises."""
    st = Store.open(store)
    request = {
        "store": str(st.root),
        "image": image,
        "platform": platform,
        "command": list(command) if isinstance(command, (list, tuple)) else command,
        "options": options_to_json(options),
        "auto_remove": auto_remove,
        "stop_timeout": stop_timeout,
    }
    import subprocess  # only `run -d` starts a supervisor

    proc = subprocess.Popen(
        [sys.executable, "-m", "isobox.supervisor"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, cwd="/", close_fds=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(json.dumps(request).encode())
        proc.stdin.close()
        line = proc.stdout.readline()
        proc.wait()
        if not line:
            detail = proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise ContainerError("the supervisor failed to start" + (f": {detail[-1]}" if detail else ""))
    finally:
        proc.stdout.close()
        proc.stderr.close()
    report = json.loads(line)
    if not report.get("ok"):
        raise_error(report)
    info = ContainerInfo.from_dir(st.containers / report["id"])
    if info is None:
        raise ContainerError(f"container {report.get('name')} is gone already")
    return ContainerHandle(info, st)


# -- the supervisor process ---------------------------------------------------------------------------


def _supervise(container: Container, server: Server, stop_timeout: float) -> int:
    """Own the container until it exits: copy a terminal's output to stdout.log, stop it on
    SIGTERM/SIGINT, give up if the store disappears. Returns its exit status."""
    pidfd = os.pidfd_open(container.pid or 0)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _signal.set_wakeup_fd(wake_w)
    stopping: List[int] = []
    for sig in (_signal.SIGTERM, _signal.SIGINT):
        _signal.signal(sig, lambda signum, frame: stopping.append(signum))
    _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    log_fd = -1
    master = container.pty if container.pty is not None else -1
    if master >= 0:
        log_fd = os.open(container.dir / "stdout.log", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    kill_at: Optional[float] = None
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        if master >= 0:
            poller.register(master, select.POLLIN)
        while True:
            events = dict(poller.poll(1000))
            if master >= 0 and master in events:
                if not _copy_once(master, log_fd):
                    poller.unregister(master)
                    master = -1
            if wake_r in events:
                try:
                    os.read(wake_r, 64)
                except BlockingIOError:
                    pass
            if pidfd in events:
                break
            if stopping and kill_at is None:
                container.kill(container.image.config.stop_signal or _signal.SIGTERM)
                kill_at = time.monotonic() + stop_timeout
            if kill_at is not None and time.monotonic() >= kill_at:
                container.kill(_signal.SIGKILL)
            if not events and not (container.dir / "lock").exists():
                container.kill(_signal.SIGKILL)  # the store was deleted under us
        code = container.wait()
        while master >= 0 and _copy_once(master, log_fd, block=False):
            pass
        return code
    finally:
        _signal.set_wakeup_fd(-1)
        for fd in (pidfd, wake_r, wake_w, log_fd):
            if fd >= 0:
                os.close(fd)


def _copy_once(src: int, dst: int, block: bool = True) -> bool:
    """Copy what ``src`` (a terminal master) has to ``dst``; False at its end."""
    if not block and not select.select([src], [], [], 0)[0]:
        return False
    try:
        data = os.read(src, 65536)
    except OSError:  # EIO: every slave fd is closed
        return False
    if data and dst >= 0:
        os.write(dst, data)
    return bool(data)


def main() -> int:
    """``python -m isobox.supervisor``: read the request on stdin, report on stdout."""
    request = json.loads(sys.stdin.buffer.read())
    if os.fork():
        os._exit(0)  # the caller reaps this one at once; the container's owner lives on
    report = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    container: Optional[Container] = None
    try:
        from .image import Image

        store = Store.open(request["store"])
        with store.in_use():
            image = Image.get(request["image"], platform=request.get("platform"), store=store)
            options = options_from_json(request["options"])
            container = Container(image, request.get("command"), store=store, **options)
            container.start()
        write_options(container, {"command": request.get("command"), **options},
                      image=request["image"], platform=request.get("platform"),
                      auto_remove=bool(request.get("auto_remove")), detached=True,
                      supervisor_pid=os.getpid(), stop_timeout=request.get("stop_timeout", 10))
        server = Server(container, auto_remove=bool(request.get("auto_remove")))
        server.start()
        if container.pty is not None:
            container.resize(24, 80)
    except BaseException as exc:
        if container is not None:
            container.remove(force=True)
        doc = _error_doc(exc if isinstance(exc, IsoboxError) else ContainerError(f"supervisor: {exc!r}"))
        report.write(json.dumps(doc) + "\n")
        report.close()
        return 1
    log = os.open(container.dir / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.dup2(log, 2)
    os.close(log)
    os.dup2(devnull, 1)
    report.write(json.dumps({"ok": True, "id": container.id, "name": container.name}) + "\n")
    report.close()
    code = _supervise(container, server, float(request.get("stop_timeout", 10)))
    server.finish(code)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
