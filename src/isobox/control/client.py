"""How any process finds and controls a container: `ContainerInfo`, `containers` and
`find` read its directory (state.py); `ContainerHandle` controls a running one through
its owner's control socket, which server.py serves (in ``isobox run`` and in the
supervisor of ``isobox run -d``).

The control protocol. Each connection carries one request: a JSON object and a newline,
sent with sendmsg; exec's stdio fds ride on it as SCM_RIGHTS. Replies are JSON lines;
only exec's ``started`` reply and ``root``'s carry an fd. Only the server's own uid, or root, is
served (SO_PEERCRED; the socket is also mode 0600).

========================================  =================================================
request                                   replies
========================================  =================================================
``{"op": "info"}``                        ``{"ok": true, "status", "pid", "exit_code"}``
``{"op": "wait"}``                        ``{"ok": true, "exit_code": N}`` once it exited
``{"op": "kill", "signal": "TERM"}``      ``{"ok": true}``
``{"op": "stop", "timeout": 10}``         ``{"ok": true, "exit_code": N}``
``{"op": "remove", "force": false}``      ``{"ok": true}``; the owner then lets go of it
``{"op": "root"}``                        ``{"ok": true}`` with an O_PATH fd of the
                                          container's "/" attached (copies, copy.py)
``{"op": "resize", "rows", "cols"}``      ``{"ok": true}`` (a container with a terminal)
``{"op": "exec", "argv": [...],``         ``{"ok": true, "event": "started", "pid": P}``
``"env": [...], "workdir", "user",``      (with tty: the terminal's master fd attached),
``"tty": false}`` + fds stdin, stdout,    then ``{"ok": true, "exit_code": N}``. If the
stderr (none with tty)                    client goes away first, the process is killed.
========================================  =================================================

Any failure: ``{"ok": false, "error": "CommandNotFound", "message": ..., "step": ...,
"errno": ...}``, raised again on the client side as the same isobox exception. A request
that does not follow this table (not JSON, not an object, an unknown op or field, a field
of the wrong type, fds where none belong, more than 1 MiB, no newline before EOF, nothing
within 10 s) gets ``{"ok": false, "error": "InvalidOption", "message": <what>}`` and the
connection is closed. Exec's stdio must be pipes or sockets (the client copies between
them and its own fds): any other fd would let the container reopen or chmod it. The owner
bounds what clients make it hold (server.py: connections still sending, parked waits,
execs, other requests, each separately); past a bound the reply is a ContainerError
saying it is busy.

Exit statuses are `Container.wait`'s: N, or -N for a death by signal N.

Both ends reach the socket through an fd of the container's directory (state.socket_path).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pathlib
import select
import socket
import struct
import threading
import time
from typing import (IO, TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Literal, Mapping, NoReturn, Optional,
                    Sequence, Tuple, Union, overload)

import attrs

from .. import errors as _errors
from ..errors import ContainerError, ContainerNotFound, ExitStatusLost, InvalidOption, IsoboxError, SetupError, Timeout
from ..runtime.state import (KEPT_NAME, RunOptions, owner_alive, owner_holds_lock, process_alive, read_options,
                             read_state, socket_path, unlink_name)
from ..host.fs import remove_tree
from ..images.store import Store
from ..runtime.spelling import NAME, Command, Env, log_streams, parse_command, parse_env, signal_number

if TYPE_CHECKING:
    import re

    from ..runtime.protocol import ContainerProtocol
    from ..net.ports import PortMap

    from ..result import RunResult
    from ..runtime import copy
    from ..runtime.container import Container
    from ..images.image import Image

def _tty() -> Any:
    """runtime.tty (termios with it) only for an exec with a terminal."""
    from ..runtime import tty

    return tty


MAX_MESSAGE = 1 << 20
# An owner reaps and records its container's exit within moments; a reader that finds the
# process ended waits this long (seconds) for the record before showing an unknown status.
OWNER_RECORDS_WITHIN = 2.0

StoreArg = Union[Store, str, "os.PathLike[str]", None]


# -- what is on disk -------------------------------------------------------------------------


@attrs.frozen
class ContainerInfo:
    """A container of the store as any process sees it (`isobox ps`, `inspect`).

    ``status`` is "created", "running" or "exited"; ``exit_code`` as `Container.wait`
    reports it; ``options`` how it was made and is owned, as its owner recorded it
    (`RunOptions`: the isobox command and the supervisor record them; None for
    containers made by other programs)."""

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
    options: Optional[RunOptions] = attrs.field(default=None, hash=False)
    ports: Optional["PortMap"] = attrs.field(default=None, hash=False)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def kept(self) -> bool:
        return os.path.lexists(self.path / KEPT_NAME)

    @classmethod
    def from_dir(cls, cdir: pathlib.Path) -> Optional["ContainerInfo"]:
        """None for what is not a live or kept container (being created, or left by an
        owner that died: the next start sweeps it).  A status of "created" or "running"
        is checked against the process itself: a state file its owner could not rewrite
        (a full disk), or a kept container whose owner was killed (its process died
        with it), shows "exited", with an exit code of None (unknown)."""
        deadline = time.monotonic() + OWNER_RECORDS_WITHIN
        while True:
            try:
                state = read_state(cdir)
            except (OSError, ValueError):
                return None
            if not owner_alive(cdir):
                return None
            status, exit_code = state.status, state.exit_code
            if status in ("created", "running") and state.pid is not None \
                    and not process_alive(state.pid, state.pid_start):
                # It ended. An owner that is alive (it holds the lock) records how in a
                # moment: wait for that rather than show an exit code it is about to know.
                if owner_holds_lock(cdir) and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                status, exit_code = "exited", None
            break
        return cls(
            id=state.id,
            name=state.name,
            image=state.image,
            image_digest=state.image_digest,
            command=state.argv,
            status=status,
            exit_code=exit_code,
            created=state.created if state.created is not None else state.recorded,
            finished=state.recorded if status == "exited" else None,
            pid=state.pid,
            owner_pid=state.owner_pid,
            path=cdir,
            options=read_options(cdir),
            ports=state.ports,
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
    if NAME.match(ref):
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


def error_doc(exc: BaseException) -> Dict[str, Any]:
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


def _poll_in(fd: int, timeout: float) -> bool:
    """Whether fd is readable (or at EOF) within ``timeout`` s. poll, not select: a
    process with many files open has fd numbers select cannot take (FD_SETSIZE 1024)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000 + 0.999))))


class Conn:
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
                if left <= 0 or not _poll_in(self.sock.fileno(), left):
                    raise socket.timeout("no reply")
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 65536, 4)
            except ConnectionResetError:  # the owner closed without reading us: it is gone
                data, fds = b"", []
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

    def peer_uid(self) -> int:
        creds = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        return int(uid)

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def take_fds(self) -> List[int]:
        fds, self.fds = self.fds, []
        return fds

    def close(self) -> None:
        for fd in self.take_fds():
            os.close(fd)
        self.sock.close()


def connect(cdir: pathlib.Path) -> Optional[Conn]:
    """A connection to the container's owner, or None when nobody serves it."""
    try:
        dfd = os.open(cdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(socket_path(dfd))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(dfd)
    return Conn(sock)


# -- the client ---------------------------------------------------------------------------------


class _Pump:
    """Copies between one of the caller's fds and one end of a pipe given to the
    container, in a thread: the container only ever holds the pipe (see
    `ContainerHandle.exec_start`). splice(2) moves the bytes in the kernel where both
    ends allow it (it refuses O_APPEND files and terminals: then read and write).

    ``src`` is read until EOF, or until `stop`: an output pump then takes what the pipe
    holds at that moment (everything the exited process wrote) and ends, so a
    background process that keeps the pipe open cannot hold the caller. ``dst`` -1
    discards. The pipe end (``src`` of an output, ``dst`` of the input) is ours and
    closed at the end; the caller's fd is never closed or changed."""

    def __init__(self, src: int, dst: int, *, output: bool) -> None:
        self.src, self.dst, self.output = src, dst, output
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._splice = dst >= 0
        self.thread = threading.Thread(target=self._run, name="isobox-exec-pump", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass

    def _move(self) -> bool:
        """One chunk from src to dst; False at EOF or when dst is gone."""
        if self._splice:
            try:
                n = os.splice(self.src, self.dst, 1 << 16)
                return n > 0
            except BlockingIOError:
                _wait_writable(self.dst)
                return True
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EBADF, errno.ESPIPE):
                    return False  # EPIPE and the like: the reader went away
                self._splice = False  # not spliceable (O_APPEND file, terminal): copy
        try:
            data = os.read(self.src, 1 << 16)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        view = memoryview(data)
        while view and self.dst >= 0:
            try:
                view = view[os.write(self.dst, view):]
            except BlockingIOError:
                _wait_writable(self.dst)
            except OSError:
                return False
        return True

    def _run(self) -> None:
        pipe_end = self.src if self.output else self.dst
        try:
            poller = select.poll()
            poller.register(self.src, select.POLLIN)
            poller.register(self._stop_r, select.POLLIN)
            while True:
                events = dict(poller.poll())
                if self._stop_r in events:
                    if self.output:  # what the exited process wrote is in the pipe now
                        while _readable(self.src) and self._move():
                            pass
                    return
                if not self._move():
                    return
        finally:
            os.close(pipe_end)
            os.close(self._stop_r)
            os.close(self._stop_w)


def _readable(fd: int) -> bool:
    return _poll_in(fd, 0)


def _wait_writable(fd: int) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.poll(1000)


class RemoteExec:
    """A process started in a container by its owner (`ContainerHandle.exec_start`).

    ``master`` is the terminal's master fd with tty (yours to read, write and resize,
    and to close), else -1. ``fileno()`` becomes readable when the exit status arrives."""

    def __init__(self, conn: Conn, pid: int, master: int, pumps: Sequence[_Pump] = ()) -> None:
        self._conn = conn
        self.pid = pid
        self.master = master
        self.exit_code: Optional[int] = None
        self._pumps = list(pumps)

    def fileno(self) -> int:
        return self._conn.sock.fileno()

    def wait(self, timeout: Optional[float] = None) -> int:
        """The exit status, once the process exited and what it wrote reached your fds."""
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
        self._finish_pumps()
        return self.exit_code

    def _finish_pumps(self) -> None:
        for pump in self._pumps:
            pump.stop()
        for pump in self._pumps:
            if pump.output:
                pump.thread.join()
        self._pumps = [p for p in self._pumps if p.thread.is_alive()]

    def close(self) -> None:
        """Let go of the process: if it still runs, its owner kills it."""
        self._conn.close()
        self._finish_pumps()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def __enter__(self) -> "RemoteExec":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ContainerHandle:
    """A container of the store seen from any process, with the face of a `Container`
    (`ContainerProtocol`: wait, stop, kill, exec, logs, readiness waits, copies, resize,
    remove). A running container is controlled through its owner's control socket
    (detached containers and foreground ``isobox run``); an exited one is state on disk.
    Containers owned by other programs (a `Container` in some Python process) can be
    listed and their logs read, but only their owner controls them (a `ContainerError`
    says so)."""

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
        """"created", "running", "exited" or "removed", read again."""
        try:
            return self.info().status
        except ContainerNotFound:
            return "removed"

    @property
    def pid(self) -> Optional[int]:
        """Its pid 1 as the host sees it (as last read)."""
        return self._info.pid

    @property
    def exit_code(self) -> Optional[int]:
        """Its exit status once it exited (read again), else None."""
        try:
            return self.info().exit_code
        except ContainerNotFound:
            return self._info.exit_code

    def __repr__(self) -> str:
        return f"<ContainerHandle {self.name} {self.id[:12]}>"

    def _request(self, doc: Mapping[str, Any], fds: Sequence[int] = ()) -> Optional[Conn]:
        conn = connect(self.path)
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
        """Wait until the container exits: its status (-N for a death by signal N);
        `ExitStatusLost` when its owner ended before it could record one."""
        try:
            reply = self._call({"op": "wait"}, timeout)
        except socket.timeout:
            raise Timeout(f"container {self.name} still running after {timeout} s") from None
        if reply is not None:
            return int(reply["exit_code"])
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.info()
            if info.status == "exited":
                if info.exit_code is not None:
                    return int(info.exit_code)
                if not owner_holds_lock(info.path):
                    raise self._lost(info)
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"container {self.name} still running after {timeout} s")
            time.sleep(0.05)  # an owner without a socket, or one that is just letting go

    def _lost(self, info: ContainerInfo) -> ExitStatusLost:
        return ExitStatusLost(f"container {info.name}: its owner (process {info.owner_pid}) ended before "
                              "it could record how the container exited")

    def kill(self, signal: Union[int, str] = "KILL") -> None:
        """Send a signal to the container's pid 1 (`docker kill`): a name ("TERM",
        "SIGTERM") or a number. A container that is not running (any more) is left alone,
        as `Container.kill` leaves it."""
        signal_number(signal)
        if self._call({"op": "kill", "signal": signal if isinstance(signal, str) else int(signal)}) is None \
                and self.info().running:
            raise self._unserved("kill")

    def stop(self, timeout: float = 10) -> int:
        """The image's StopSignal (or SIGTERM), SIGKILL after ``timeout`` s; the status, as
        `wait` gives it."""
        reply = self._call({"op": "stop", "timeout": timeout})
        if reply is not None:
            return int(reply["exit_code"])
        info = self.info()
        if info.running:
            raise self._unserved("stop")
        if info.exit_code is not None:
            return int(info.exit_code)
        if not owner_holds_lock(info.path):
            raise self._lost(info)
        raise ContainerError(f"container {info.name} has exited, and its owner (process {info.owner_pid}) "
                             "has not recorded how yet")

    def commit(self, tag: Optional[str] = None, *, changes: Sequence[str] = (),
               message: Optional[str] = None, author: Optional[str] = None,
               compression: str = "gzip") -> "Image":
        """`Container.commit` from any process: what the owner recorded (the image, the
        options) and the container's directory, running (not paused) or exited."""
        from ..images.image import Image
        from ..runtime.commit import commit
        from ..runtime.config import config_from_json
        from ..runtime.state import read_state

        try:
            state = read_state(self.path)
        except (OSError, ValueError):
            raise ContainerNotFound(f"no such container: {self.name}") from None
        if state.config is None:
            raise ContainerError(f"container {self.name}: its record (from an older isobox) "
                                 "lacks what a commit needs")
        if state.image_digest is None:
            raise ContainerError(f"container {self.name} runs an image made from a directory: "
                                 "commit it from its owner (Container.commit)")
        try:
            cfg = config_from_json(state.config)
        except (InvalidOption, KeyError, TypeError, ValueError) as exc:
            raise ContainerError(f"container {self.name}: its recorded options do not read: {exc}") from None
        image = Image.get(f"{state.image}@{state.image_digest}" if state.image else state.image_digest,
                          store=self._store)
        return commit(self._store, self.path, image, cfg, state.argv, self._store.privilege.id_map(), tag,
                      changes=changes, message=message, author=author, compression=compression)

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
            remove_tree(info.path, self._store.privilege)
            unlink_name(self._store.containers / ".names" / info.name, info.id)
            from ..runtime.cgroups import sweep  # its owner died before removing its groups

            sweep(f"isobox-{info.id}")
        finally:
            os.close(fd)

    @overload
    def logs(self, stream: str = ..., follow: Literal[False] = ...) -> bytes: ...

    @overload
    def logs(self, stream: str = ..., *, follow: Literal[True]) -> Iterator[bytes]: ...

    def logs(self, stream: str = "both", follow: bool = False) -> Union[bytes, Iterator[bytes]]:
        """What the container wrote: "stdout", "stderr" or "both" (stdout, then stderr), as
        far as its rotated log files keep it (logs.py). ``follow=True`` yields output as it
        comes, until the container is no longer running and everything was read."""
        from ..runtime import logread

        if follow:
            return (data for _, data in self.follow_logs(stream))
        return b"".join(logread.read(self.path, name) for name in log_streams(stream))

    def follow_logs(self, stream: str = "both") -> Iterator[Tuple[str, bytes]]:
        """(stream name, chunk) as the container writes them, from the oldest kept byte on,
        across rotations, until it is no longer running and everything was read (`isobox
        logs -f`). Its owner records "exited" only once the last output is in the files."""
        from ..runtime import logread

        return logread.follow(self.path, log_streams(stream), lambda: self.status != "running")

    # -- published ports, readiness, copies, the terminal: as `Container`'s ---------------------

    @property
    def ports(self) -> Dict[str, List[Dict[str, str]]]:
        """The published ports as bound, as docker-py's ``container.ports`` (empty once it
        exited: its forwarder ended with it)."""
        info = self.info()
        return info.ports.docker() if info.ports and info.running else {}

    def _port_map(self) -> "PortMap":
        from ..net.ports import PortMap

        return self._info.ports or PortMap()

    def host_port(self, port: Union[int, str]) -> int:
        """The host port that reaches the container's ``port`` (6379, "53/udp")."""
        return self._port_map().find(port, self.name).host_port

    def address(self, port: Union[int, str]) -> Tuple[str, int]:
        """(host, port) a client on this host connects to for the container's ``port``."""
        from ..net.ports import client_address

        return client_address(self._port_map().find(port, self.name))

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        """Return once something in the container listens on TCP ``port`` (seen in its
        own network namespace); raise if it exits first or after ``timeout``."""
        from ..runtime import wait  # not on the way of `isobox exec` and `ps`

        wait.wait_for_port(self, port, timeout)

    def wait_for_log(self, pattern: Union[str, bytes, "re.Pattern[bytes]"], timeout: float = 30.0) -> None:
        """Return once the container's output matches ``pattern`` (text or a regex)."""
        from ..runtime import wait

        wait.wait_for_log(self, pattern, timeout)

    # copy.py (tarfile, the native core) is imported on the first copy: the clients that
    # `isobox exec` and `ps` are never copy

    def copy_to(self, host_path: Union[str, "os.PathLike[str]"], path: str) -> None:
        """Copy a host file or directory into the running container, as `Container.copy_to`."""
        from ..runtime import copy

        copy.copy_to(self._copy_root(), host_path, path)

    def copy_from(self, path: str, host_path: Union[str, "os.PathLike[str]"]) -> None:
        """Copy a file or directory out of the running container, as `Container.copy_from`."""
        from ..runtime import copy

        copy.copy_from(self._copy_root(), path, host_path)

    def put_archive(self, path: str, data: Union[bytes, Iterable[bytes]]) -> None:
        """Extract a tar stream into the container's directory ``path``."""
        from ..runtime import copy

        copy.put_archive(self._copy_root(), path, data)

    def get_archive(self, path: str) -> bytes:
        """A tar stream of ``path`` in the container."""
        from ..runtime import copy

        return copy.get_archive(self._copy_root(), path)

    def _copy_root(self) -> "copy.Root":
        from ..runtime import copy

        return copy.Root(self.name, self._open_root, self.path, self._store.privilege)

    def _open_root(self) -> int:
        """The container's "/" (an O_PATH fd, ours to close), from its owner, which alone
        can join its mount namespace. Copies are done here, as the caller, with it: as
        the owner's own user only, so that what is copied in belongs to the container's
        root as with `Container.copy_to` (root's files in a rootless container would
        belong to nobody there)."""
        owner_uid = os.stat(self.path).st_uid
        if os.geteuid() != owner_uid:
            raise ContainerError(f"container {self.name}: copy as the user who owns it (uid {owner_uid})")
        conn = self._request({"op": "root"})
        if conn is None:
            raise self._unserved("copy into or out of")
        try:
            reply = conn.recv()
            fds = conn.take_fds()
        finally:
            conn.close()
        if reply is None or not reply.get("ok"):
            for fd in fds:
                os.close(fd)
            if reply is None:  # it went away meanwhile: say why (ended, or not serving)
                raise self._unserved("copy into or out of")
            raise_error(reply)
        for fd in fds[1:]:
            os.close(fd)
        if not fds:
            raise ContainerError(f"container {self.name}: its owner sent no root")
        return fds[0]

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal's window size (a container run with a terminal)."""
        if self._call({"op": "resize", "rows": int(rows), "cols": int(cols)}) is None:
            raise self._unserved("resize")

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
        """Start a process in the running container with these fds as its stdio (-1: no
        input; output dropped), or with a new terminal (``tty``: its master comes back as
        ``.master``). The container is handed pipes, never these fds: threads here copy
        between them and the pipes until the process exits (`RemoteExec.wait` returns
        once its output has arrived). A process holding one of your fds could reopen it
        through /proc/self/fd (and truncate your file), change its mode or owner, or read
        what you type into your terminal after it ends."""
        argv = [str(a) for a in command]
        if not argv:
            raise InvalidOption("exec needs a command")
        doc = {"op": "exec", "argv": argv, "env": [f"{k}={v}" for k, v in parse_env(env)],
               "workdir": workdir, "user": user, "tty": tty,
               "tty_size": list(tty_size) if tty_size else None}
        given: List[int] = []  # the pipe ends that go to the container
        pumps: List[_Pump] = []
        try:
            if not tty:
                for i, fd in enumerate(stdio):
                    r, w = os.pipe2(os.O_CLOEXEC)
                    if i == 0:
                        given.append(r)
                        if fd >= 0:
                            pumps.append(_Pump(fd, w, output=False))
                        else:
                            os.close(w)  # no input: EOF at once
                    else:
                        given.append(w)
                        pumps.append(_Pump(r, fd, output=True))  # -1: read and dropped
            conn = self._request(doc, given)
        except BaseException:
            for pump in pumps:
                pump.stop()
            raise
        finally:
            for fd in given:
                os.close(fd)
        if conn is None:
            for pump in pumps:
                pump.stop()
            raise self._unserved("exec in")
        try:
            reply = conn.recv()
            if reply is None:  # it went away meanwhile: say why (ended, or not serving)
                raise self._unserved("exec in")
            if not reply.get("ok"):
                raise_error(reply)
            got = conn.take_fds()
            master = got[0] if tty and got else -1
            for fd in got[1:] if tty else got:
                os.close(fd)
            return RemoteExec(conn, int(reply["pid"]), master, pumps)
        except BaseException:
            conn.close()
            for pump in pumps:
                pump.stop()
            raise

    def exec(
        self,
        command: Command,
        *,
        env: Env = None,
        workdir: Optional[str] = None,
        user: Optional[str] = None,
        tty: bool = False,
        tty_size: Optional[Tuple[int, int]] = None,
        stdin: Union[None, bytes, int, IO[Any]] = None,
        timeout: Optional[float] = None,
    ) -> RunResult:
        """Run another process in the running container and collect its output, as
        `Container.exec`: a timeout kills that process (`Timeout`, with what it wrote as
        ``.stdout`` and ``.stderr``), never the container; with ``tty=True`` the terminal's
        output is the result's stdout."""
        import tempfile

        from ..result import RunResult

        argv = parse_command(command)
        if not argv:
            raise InvalidOption("exec needs a command")
        deadline = None if timeout is None else time.monotonic() + timeout
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
                tempfile.TemporaryFile() as inp:
            in_fd = -1
            if isinstance(stdin, bytes):
                inp.write(stdin)
                inp.seek(0)
                in_fd = inp.fileno()
            elif stdin is not None:
                in_fd = stdin if isinstance(stdin, int) else int(stdin.fileno())
            proc = self.exec_start(argv, env=env, workdir=workdir, user=user, tty=tty, tty_size=tty_size,
                                   stdio=(in_fd, out.fileno(), err.fileno()))
            with proc:
                terminal = bytearray()
                try:
                    if tty and proc.master >= 0:
                        if not _tty().relay(proc.master, proc.fileno(), terminal.extend, deadline=deadline):
                            raise Timeout(f"exec {argv[0]} in {self.name} still running after {timeout} s: killed")
                        code = proc.wait()
                    else:
                        code = proc.wait(timeout)
                except Timeout as exc:
                    proc.close()  # its owner kills it; what it wrote is in our files
                    out.seek(0)
                    err.seek(0)
                    exc.stdout = bytes(terminal) if tty else out.read()  # type: ignore[attr-defined]
                    exc.stderr = err.read()  # type: ignore[attr-defined]
                    raise
            out.seek(0)
            err.seek(0)
            return RunResult(argv, code, bytes(terminal) if tty else out.read(), err.read())


if TYPE_CHECKING:
    # mypy checks that a handle is the same face as a `Container` (runtime/protocol.py)
    def _one_face(handle: ContainerHandle, container: "Container") -> Tuple[ContainerProtocol, ContainerProtocol]:
        return handle, container
