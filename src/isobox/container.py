"""`Container`: one sandboxed process from an image, and its lifecycle.

A container is created from validated options (`ContainerConfig`, nothing touches the
host until `start`), started by the native core (native.py walks the plan rootfs.py makes),
and owned by the Python process that started it: the kernel kills it when its owner dies
(PR_SET_PDEATHSIG), and a later start sweeps the state its owner could not remove.

State lives under the store's containers/<id>/: upper/ and work/ (overlayfs), rootfs/ (the
mount point, used only inside the container's mount namespace), stdout.log, stderr.log,
state.json, and lock, which the owner holds (flock) as long as it owns the container.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import json
import os
import pathlib
import re
import secrets
import select
import shlex
import shutil
import signal as _signal
import threading
import time
from typing import IO, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import attrs

from . import idmap as _idmap
from . import native
from .errors import (
    ContainerError,
    ContainerNotFound,
    InvalidOption,
    NameConflict,
    SetupError,
    Timeout,
)
from .image import Image
from .rootfs import RootfsPlan
from .store import Store
from .users import resolve_user

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docker's default capability set (moby oci/caps/defaults.go), by number (linux/capability.h).
DEFAULT_CAPABILITIES = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
    "SETUID": 7, "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_CHROOT": 18,
    "MKNOD": 27, "AUDIT_WRITE": 29, "SETFCAP": 31,
}

RLIMITS = {
    "core": 4, "cpu": 0, "data": 2, "fsize": 1, "locks": 10, "memlock": 8, "msgqueue": 12,
    "nice": 13, "nofile": 7, "nproc": 6, "rss": 5, "rtprio": 14, "rttime": 15,
    "sigpending": 11, "stack": 3, "as": 9,
}

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
HOSTNAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,62})$")

Command = Union[str, Sequence[str], None]


def _command(value: Command) -> Optional[Tuple[str, ...]]:
    """A string is split like a command line (shlex, as docker-py does), never by a shell."""
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(shlex.split(value))
    if isinstance(value, bytes):
        raise InvalidOption("command must be a string or a list of strings, not bytes")
    out = tuple(value)
    if not all(isinstance(a, str) for a in out):
        raise InvalidOption(f"command arguments must be strings: {out!r}")
    return out


def _env(value: Union[Mapping[str, str], Sequence[str], None]) -> Tuple[Tuple[str, str], ...]:
    if value is None:
        return ()
    items: List[Tuple[str, str]] = []
    pairs = value.items() if isinstance(value, Mapping) else (
        (e.split("=", 1) + [""])[:2] if "=" in e else (e, None) for e in value
    )
    for key, val in pairs:
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise InvalidOption(f"invalid environment variable name {key!r}")
        if val is None:
            # "NAME" alone takes the caller's value, as `docker run -e NAME` does
            val = os.environ.get(key)
            if val is None:
                continue
        if "\0" in str(val):
            raise InvalidOption(f"environment variable {key} contains a NUL byte")
        items.append((key, str(val)))
    return tuple(items)


def _rlimits(value: Optional[Mapping[str, Any]]) -> Tuple[Tuple[int, int, int], ...]:
    out = []
    for name, limit in (value or {}).items():
        if name not in RLIMITS:
            raise InvalidOption(f"unknown rlimit {name!r}; known: {', '.join(sorted(RLIMITS))}")
        soft, hard = (limit, limit) if isinstance(limit, int) else tuple(limit)
        if not (0 <= soft <= hard):
            raise InvalidOption(f"rlimit {name}: need 0 <= soft <= hard, got {soft}, {hard}")
        out.append((RLIMITS[name], int(soft), int(hard)))
    return tuple(out)


def _check_name(inst: Any, attr: Any, value: Optional[str]) -> None:
    if value is not None and not NAME_RE.match(value):
        raise InvalidOption(f"invalid container name {value!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")


def _check_hostname(inst: Any, attr: Any, value: Optional[str]) -> None:
    if value is not None and not HOSTNAME_RE.match(value):
        raise InvalidOption(f"invalid hostname {value!r}")


def _check_abs(inst: Any, attr: Any, value: Optional[str]) -> None:
    if value is not None and (not value.startswith("/") or "\0" in value):
        raise InvalidOption(f"{attr.name} must be an absolute path, got {value!r}")


def _check_network(inst: Any, attr: Any, value: str) -> None:
    if value not in ("none", "host"):
        raise InvalidOption(f"network must be 'none' or 'host', got {value!r}")


@attrs.frozen
class ContainerConfig:
    """A container's options, checked when built: a bad option fails before the host is
    touched. ``command`` replaces the image's Cmd; ``entrypoint`` replaces its Entrypoint
    and drops its Cmd (Docker's rules)."""

    command: Optional[Tuple[str, ...]] = attrs.field(default=None, converter=_command)
    entrypoint: Optional[Tuple[str, ...]] = attrs.field(default=None, converter=_command)
    name: Optional[str] = attrs.field(default=None, validator=_check_name)
    env: Tuple[Tuple[str, str], ...] = attrs.field(default=(), converter=_env)
    workdir: Optional[str] = attrs.field(default=None, validator=_check_abs)
    user: Optional[str] = None
    hostname: Optional[str] = attrs.field(default=None, validator=_check_hostname)
    init: bool = False
    read_only: bool = False
    network: str = attrs.field(default="none", validator=_check_network)
    userns: Optional[bool] = None
    rlimits: Tuple[Tuple[int, int, int], ...] = attrs.field(default=(), converter=_rlimits)


class Status(str, enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    REMOVED = "removed"


# --- the spawning thread --------------------------------------------------------------------
#
# PR_SET_PDEATHSIG fires when the *thread* that cloned the child exits, not the process
# (prctl(2)).  A container started from a short-lived worker thread would die with it, so
# clones from threads other than the main thread are made by one long-lived daemon thread.
# This is process-wide by nature (it is about the process's threads), hence module-level.

_spawner_lock = threading.Lock()
_spawner: Optional["_Spawner"] = None


class _Spawner(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="isobox-spawner", daemon=True)
        self.requests: "list[Tuple[native.Spec, threading.Event, list[Any]]]" = []
        self.cond = threading.Condition()

    def run(self) -> None:  # pragma: no cover - exercised through spawn_child
        while True:
            with self.cond:
                while not self.requests:
                    self.cond.wait()
                spec, done, box = self.requests.pop(0)
            try:
                box.append(native.spawn(spec))
            except BaseException as exc:
                box.append(exc)
            done.set()


def spawn_child(spec: native.Spec) -> native.Child:
    global _spawner
    if threading.current_thread() is threading.main_thread():
        return native.spawn(spec)
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner = _Spawner()
            _spawner.start()
        spawner = _spawner
    done = threading.Event()
    box: List[Any] = []
    with spawner.cond:
        spawner.requests.append((spec, done, box))
        spawner.cond.notify()
    done.wait()
    if isinstance(box[0], BaseException):
        raise box[0]
    child: native.Child = box[0]
    return child


# --- state on disk ------------------------------------------------------------------------


def _write_json(path: pathlib.Path, doc: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def remove_tree(path: pathlib.Path, ids: Optional[_idmap.IdMap] = None) -> None:
    """Remove a container's directory; files the container created under other subuids
    are removed from inside a user namespace with the same map (the caller cannot)."""
    if not os.path.lexists(path):
        return
    try:
        shutil.rmtree(path)
        return
    except PermissionError:
        pass
    # overlayfs leaves work/work with mode 000: make every directory ours to empty
    for top, dirs, _ in os.walk(path):
        for d in dirs:
            p = os.path.join(top, d)
            if not os.path.islink(p):
                try:
                    os.chmod(p, 0o700)
                except OSError:
                    pass
    try:
        shutil.rmtree(path)
        return
    except OSError as exc:
        if os.geteuid() == 0 or exc.errno not in (errno.EPERM, errno.EACCES):
            raise
    ids = ids or _idmap.for_caller()
    if not ids.helpers:
        raise ContainerError(f"cannot remove {path}: permission denied")
    spec = native.Spec(
        clone_flags=native.CLONE_NEWUSER,
        ops=(native.Op(native.lib.IB_OP_RMTREE, f"remove {path}", str(path)),),
        set_ids=False,
        no_new_privs=True,
    )
    child = spawn_child(spec)
    try:
        ids.apply(child.pid)
        child.release()
    finally:
        _, status = os.waitpid(child.pid, 0)
        if child.pidfd >= 0:
            os.close(child.pidfd)
    if status != 0:
        raise ContainerError(f"cannot remove {path} inside the user namespace (status {status})")


def _owner_alive(cdir: pathlib.Path) -> bool:
    """The owner holds the lock file: if we can take it, nobody owns the container."""
    try:
        fd = os.open(cdir / "lock", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        # being created right now, or a crash before the lock existed: judge by age
        try:
            return time.time() - cdir.stat().st_mtime < 60
        except FileNotFoundError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def sweep_stale(store: Store) -> List[str]:
    """Remove what owners that died could not (their containers died with them)."""
    removed: List[str] = []
    names = store.containers / ".names"
    try:
        entries = list(os.scandir(store.containers))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        cdir = pathlib.Path(entry.path)
        if _owner_alive(cdir):
            continue
        try:
            name = json.loads((cdir / "state.json").read_text()).get("name")
        except (OSError, ValueError):
            name = None
        try:
            remove_tree(cdir)
        except (OSError, ContainerError):
            continue
        if name:
            _unlink_name(names / name, entry.name)
        removed.append(entry.name)
    return removed


def _unlink_name(link: pathlib.Path, cid: str) -> None:
    try:
        if os.readlink(link) == cid:
            os.unlink(link)
    except OSError:
        pass


# --- the container ----------------------------------------------------------------------------


class Container:
    """A sandboxed process from `image`; see the module docstring.

    Use it as a context manager to start it and always clean up::

        with Container(image, ["redis-server"], name="cache") as c:
            ...
    """

    def __init__(
        self,
        image: Image,
        command: Command = None,
        *,
        entrypoint: Command = None,
        name: Optional[str] = None,
        env: Union[Mapping[str, str], Sequence[str], None] = None,
        workdir: Optional[str] = None,
        user: Optional[str] = None,
        hostname: Optional[str] = None,
        init: bool = False,
        read_only: bool = False,
        network: str = "none",
        userns: Optional[bool] = None,
        rlimits: Optional[Mapping[str, Any]] = None,
        stdin: Union[None, int, IO[Any]] = None,
        store: Union[Store, str, "os.PathLike[str]", None] = None,
    ) -> None:
        if not isinstance(image, Image):
            raise InvalidOption(f"image must be an isobox.Image, got {type(image).__name__}")
        self.image = image
        self.config = ContainerConfig(
            command=command, entrypoint=entrypoint, name=name, env=env, workdir=workdir,
            user=user, hostname=hostname, init=init, read_only=read_only, network=network,
            userns=userns, rlimits=rlimits,
        )
        if stdin is not None and not isinstance(stdin, int) and not hasattr(stdin, "fileno"):
            raise InvalidOption("stdin must be None, a file descriptor or a file object")
        self._stdin = stdin
        self._store_arg = store
        self.id = secrets.token_hex(32)
        self.name = self.config.name or f"isobox_{self.id[:12]}"
        self.pid: Optional[int] = None
        self._pidfd = -1
        self._lock_fd = -1
        self._status = Status.CREATED
        self._exit_code: Optional[int] = None
        self._store: Optional[Store] = None
        self._ids: Optional[_idmap.IdMap] = None
        self.argv = self._argv()

    # -- what runs --------------------------------------------------------------------------

    def _argv(self) -> Tuple[str, ...]:
        img = self.image.config
        cfg = self.config
        entrypoint = cfg.entrypoint if cfg.entrypoint is not None else (img.entrypoint or ())
        if cfg.command is not None:
            cmd: Tuple[str, ...] = cfg.command
        elif cfg.entrypoint is not None:
            cmd = ()  # a new entrypoint drops the image's Cmd
        else:
            cmd = img.cmd or ()
        argv = tuple(entrypoint) + tuple(cmd)
        if not argv or not argv[0]:
            raise InvalidOption("no command specified: the image has no Cmd or Entrypoint; pass command=")
        return argv

    @property
    def dir(self) -> pathlib.Path:
        if self._store is None:
            raise ContainerError("the container has not been started")
        return self._store.containers / self.id

    @property
    def status(self) -> str:
        if self._status is Status.RUNNING:
            self._poll()
        return self._status.value

    @property
    def exit_code(self) -> Optional[int]:
        return self._exit_code

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "Container":
        if self._status is not Status.CREATED:
            raise ContainerError(f"container {self.name} was already started")
        cfg = self.config
        in_userns = cfg.userns if cfg.userns is not None else os.geteuid() != 0
        if in_userns and os.geteuid() == 0:
            raise InvalidOption(
                "userns=True as root is not supported: its layers would need id-shifted "
                "mounts; run isobox as an unprivileged user for a rootless container"
            )
        if not in_userns and os.geteuid() != 0:
            raise InvalidOption("userns=False needs root")
        user = resolve_user(cfg.user if cfg.user is not None else self.image.config.user, self.image.layers)
        ids = _idmap.for_caller() if in_userns else None
        if ids is not None:
            for kind, value, mapped in (("uid", user.uid, ids.maps_uid), ("gid", user.gid, ids.maps_gid)):
                if not mapped(value):
                    raise InvalidOption(
                        f"{kind} {value} is not mapped in this rootless container: only "
                        + ("root exists without a subordinate id range; add one for this user to "
                           "/etc/subuid and /etc/subgid (and install uidmap)" if ids.single
                           else "the ranges in /etc/subuid and /etc/subgid are available")
                    )
            groups = tuple(g for g in user.groups if ids.maps_gid(g))
        else:
            groups = user.groups
        self._ids = ids

        store = Store.open(self._store_arg)
        self._store = store
        sweep_stale(store)
        cdir = store.containers / self.id
        for sub in ("upper", "work", "rootfs"):
            (cdir / sub).mkdir(parents=True, mode=0o700)
        # the upper dir's root is the container's "/": give it the image root's mode
        top = self.image.layers[-1] if self.image.layers else None
        os.chmod(cdir / "upper", (top.stat().st_mode & 0o7777) if top and top.is_dir() else 0o755)
        self._lock_fd = os.open(cdir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
        try:
            self._claim_name(store)
            self._spawn(cdir, user.home, user.uid, user.gid, groups, ids, in_userns)
        except BaseException:
            self._cleanup()
            raise
        return self

    def _claim_name(self, store: Store) -> None:
        names = store.containers / ".names"
        names.mkdir(exist_ok=True)
        link = names / self.name
        for _ in range(2):
            try:
                os.symlink(self.id, link)
                return
            except FileExistsError:
                try:
                    other = os.readlink(link)
                except FileNotFoundError:
                    continue
                other_dir = store.containers / other
                if other_dir.exists() and _owner_alive(other_dir):
                    raise NameConflict(
                        f'the container name "{self.name}" is already in use by container {other[:12]}'
                    ) from None
                _unlink_name(link, other)
        raise NameConflict(f'the container name "{self.name}" is already in use')

    def _spawn(
        self, cdir: pathlib.Path, home: str, uid: int, gid: int, groups: Tuple[int, ...],
        ids: Optional[_idmap.IdMap], in_userns: bool,
    ) -> None:
        cfg = self.config
        hostname = cfg.hostname or self.id[:12]
        plan = RootfsPlan(
            layers=[str(p) for p in self.image.layers],
            upper=str(cdir / "upper"),
            work=str(cdir / "work"),
            mountpoint=str(cdir / "rootfs"),
            in_userns=in_userns,
            mknod_devices=not in_userns,
            devpts_gid=5 if ids is None or ids.maps_gid(5) else None,
            own_netns=cfg.network == "none",
            read_only=cfg.read_only,
        )
        env = self._environment(hostname, home)
        flags = (native.CLONE_NEWNS | native.CLONE_NEWPID | native.CLONE_NEWUTS
                 | native.CLONE_NEWIPC | native.CLONE_NEWCGROUP)
        if cfg.network == "none":
            flags |= native.CLONE_NEWNET
        if in_userns:
            flags |= native.CLONE_NEWUSER

        out_fd = os.open(cdir / "stdout.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        err_fd = os.open(cdir / "stderr.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        in_fd = self._stdin_fd()
        try:
            spec = native.Spec(
                clone_flags=flags,
                ops=tuple(plan.ops()),
                hostname=hostname,
                loopback_up=cfg.network == "none",
                rlimits=cfg.rlimits,
                set_ids=True,
                set_groups=ids is None or ids.helpers,
                uid=uid,
                gid=gid,
                groups=groups,
                caps=tuple(DEFAULT_CAPABILITIES.values()),
                no_new_privs=True,
                stdio=(in_fd, out_fd, err_fd),
                workdir=cfg.workdir or self.image.config.working_dir or "/",
                argv=self.argv,
                env=tuple(f"{k}={v}" for k, v in env.items()),
                path=env.get("PATH", DEFAULT_PATH),
                init=cfg.init,
            )
            self._write_state(Status.CREATED)
            child = spawn_child(spec)
        finally:
            os.close(out_fd)
            os.close(err_fd)
            if self._stdin is None:
                os.close(in_fd)
        self.pid, self._pidfd = child.pid, child.pidfd
        try:
            if ids is not None:
                ids.apply(child.pid)
            child.release()
        except BaseException:
            child.abandon()
            self._reap(block=True)
            raise
        self._status = Status.RUNNING
        self._write_state(Status.RUNNING)

    def _stdin_fd(self) -> int:
        if self._stdin is None:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        if isinstance(self._stdin, int):
            return self._stdin
        return int(self._stdin.fileno())

    def _environment(self, hostname: str, home: str) -> Dict[str, str]:
        env: Dict[str, str] = {}
        for entry in self.image.config.env:
            key, sep, value = entry.partition("=")
            if sep:
                env[key] = value
        env.update(self.config.env)
        env.setdefault("PATH", DEFAULT_PATH)
        env.setdefault("HOSTNAME", hostname)
        env.setdefault("HOME", home or "/")
        return env

    def _write_state(self, status: Status) -> None:
        _write_json(self.dir / "state.json", {
            "id": self.id,
            "name": self.name,
            "image": self.image.reference,
            "image_digest": self.image.digest,
            "layers": [str(p) for p in self.image.layers],
            "argv": list(self.argv),
            "status": status.value,
            "pid": self.pid,
            "owner_pid": os.getpid(),
            "created": time.time(),
            "exit_code": self._exit_code,
        })

    # -- waiting and signals --------------------------------------------------------------------

    def _reap(self, block: bool) -> bool:
        """Collect the exit status if the process has exited; True when it has."""
        if self.pid is None or self._exit_code is not None:
            return True
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            # someone else reaped it (os.wait() elsewhere): the status is lost
            pid, status = self.pid, 255 << 8
        if pid == 0:
            return False
        self._exit_code = os.waitstatus_to_exitcode(status)
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        if self._status is Status.RUNNING:
            self._status = Status.EXITED
            try:
                self._write_state(Status.EXITED)
            except OSError:
                pass
        return True

    def _poll(self) -> None:
        self._reap(block=False)

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the container's process to end: its exit status, or -N for a death by
        signal N (as subprocess reports it). Raises Timeout when it outlives ``timeout``."""
        if self._status is Status.CREATED:
            raise ContainerError(f"container {self.name} has not been started")
        if self._exit_code is not None:
            return self._exit_code
        if timeout is not None and self._pidfd >= 0:
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            if not poller.poll(max(0, int(timeout * 1000))):
                raise Timeout(f"container {self.name} still running after {timeout} s")
        elif timeout is not None:
            deadline = time.monotonic() + timeout
            while not self._reap(block=False):
                if time.monotonic() >= deadline:
                    raise Timeout(f"container {self.name} still running after {timeout} s")
                time.sleep(0.005)
        self._reap(block=True)
        assert self._exit_code is not None
        return self._exit_code

    def kill(self, sig: Union[int, str] = _signal.SIGKILL) -> None:
        """Send a signal to the container's pid 1 (Docker's `kill`). A pid 1 without a
        handler ignores all but SIGKILL (pid_namespaces(7)); init=True forwards them."""
        signum = _signum(sig)
        if self._status is not Status.RUNNING or self._reap(block=False):
            return
        try:
            if self._pidfd >= 0:
                _signal.pidfd_send_signal(self._pidfd, signum)
            elif self.pid is not None:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10) -> int:
        """The image's StopSignal (default SIGTERM), then SIGKILL after ``timeout`` s."""
        if self._status is Status.CREATED:
            raise ContainerError(f"container {self.name} has not been started")
        self.kill(self.image.config.stop_signal or _signal.SIGTERM)
        try:
            return self.wait(timeout)
        except Timeout:
            self.kill(_signal.SIGKILL)
            return self.wait()

    def logs(self, *, stdout: bool = True, stderr: bool = True) -> bytes:
        """What the container wrote so far: stdout, then stderr (kept in separate files)."""
        out = b""
        for want, fname in ((stdout, "stdout.log"), (stderr, "stderr.log")):
            if want:
                try:
                    out += (self.dir / fname).read_bytes()
                except FileNotFoundError:
                    pass
        return out

    def remove(self, force: bool = False) -> None:
        """Delete the container's state. A running container needs ``force=True`` (it is
        killed first), as `docker rm -f`."""
        if self._status is Status.REMOVED:
            return
        if self._status is Status.RUNNING and not self._reap(block=False):
            if not force:
                raise ContainerError(f"container {self.name} is running: stop it first or use force=True")
            self.kill(_signal.SIGKILL)
            self.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self.pid is not None and self._exit_code is None:
            self.kill(_signal.SIGKILL)
            self._reap(block=True)
        if self._store is not None:
            cdir = self._store.containers / self.id
            try:
                remove_tree(cdir, self._ids)
            finally:
                _unlink_name(self._store.containers / ".names" / self.name, self.id)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        self._status = Status.REMOVED

    def __enter__(self) -> "Container":
        if self._status is Status.CREATED:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove(force=True)

    def __repr__(self) -> str:
        return f"<Container {self.name} {self._status.value} {' '.join(self.argv)!r}>"


def _signum(sig: Union[int, str]) -> int:
    if isinstance(sig, int):
        return int(sig)
    name = sig.upper()
    if name.isdigit():
        return int(name)
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(getattr(_signal.Signals, name))
    except AttributeError:
        raise InvalidOption(f"unknown signal {sig!r}") from None
