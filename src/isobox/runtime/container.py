"""`Container`: one sandboxed process from an image, and its lifecycle.

A container is created from validated options (`ContainerConfig`, nothing touches the
host until `start`), started by the native core (native.py walks the plan rootfs.py makes),
and owned by the Python process that started it: the kernel kills it when its owner dies
(PR_SET_PDEATHSIG), and a later start sweeps the state its owner could not remove.

State lives under the store's containers/<id>/: upper/ and work/ (overlayfs), stdout.log,
stderr.log, state.json (state.py's `ContainerState`, written here only), layers.json (the
store's record of the layers it uses, `Store.hold_layers`), and lock, which the owner holds
(flock) as long as it owns the container; the root's mount point and /etc/hosts & co. in a
runtime directory (rundir.py). Its options are `ContainerConfig` (config.py); what is
process-wide about starting it is in spawn.py, its stdio in stdio.py, its terminal in
tty.py. It answers `ContainerProtocol` (protocol.py), as a handle on a container another
process owns does.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import os
import pathlib
import posixpath
import re
import select
import signal as _signal
import stat
import threading
import time
from typing import IO, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union, overload
from typing import TYPE_CHECKING, Literal

import attrs

from ..host import native
from . import cgroups as _cgroups
from . import rundir as _rundir
from . import devices as _devices_mod
from . import logread as _logread
from . import logs as _logs
from . import seccomp as _seccomp
from ..errors import (
    ContainerError,
    ExitStatusLost,
    InvalidImage,
    InvalidOption,
    SetupError,
    IsoboxError,
    NameConflict,
    Timeout,
)
from ..images.image import Image
from .config import ContainerConfig, check_tty_size, config_to_json
from .mounts import Mount, Volume, plan_mounts
from .rootfs import RootfsPlan
from ..host.fs import remove_tree
from ..host.privilege import Privilege
from ..images.store import Store
from .state import STATE_NAME, ContainerState, owner_alive, read_state, start_time, unlink_name, write_state
from .spelling import Command, log_streams, parse_command, parse_env, signal_number
from . import spawn as _spawn
from . import stdio as _stdio
from . import tty as _tty
from . import wait as _wait
from .users import ResolvedUser, resolve_user

if TYPE_CHECKING:
    from . import copy as _copy
    from ..net import forward as _forward
    from ..net.ports import PortBinding, PortMap

    from ..host import idmap as _idmap
    from ..result import RunResult


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docker's default capability set (moby oci/caps/defaults.go), by number (linux/capability.h).
DEFAULT_CAPABILITIES = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
    "SETUID": 7, "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_CHROOT": 18,
    "MKNOD": 27, "AUDIT_WRITE": 29, "SETFCAP": 31,
}

class Status(str, enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    REMOVED = "removed"


# --- state on disk ------------------------------------------------------------------------


# Store roots this process has swept (see Container.start): a fact about this process,
# not a cache of the store's contents.
_swept_stores: "set[pathlib.Path]" = set()


def _make_owned_dir(cdir: pathlib.Path) -> int:
    """Make a container's directory, owned (its lock held) from the instant the lock file
    exists: the lock is made under a temporary name, locked, then renamed into place.
    Until then the directory has no lock file, which owner_alive reads as "being created";
    with the lock file created first and locked after, another start's sweep could take
    the lock in between and remove the new directory.  Returns the lock's fd."""
    cdir.mkdir(mode=0o700)
    tmp = cdir / f".lock-{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.rename(tmp, cdir / "lock")
    except BaseException:
        os.close(fd)
        raise
    return fd


def sweep_stale(store: Store) -> List[str]:
    """Remove what owners that died could not (their containers died with them), and
    what they had left to their remover thread (unheld directories under ``tmp/``)."""
    store.sweep_temporaries()
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
        if owner_alive(cdir):
            continue
        try:
            name: Optional[str] = read_state(cdir).name
        except (OSError, ValueError):
            name = None
        try:
            remove_tree(cdir, store.privilege)
        except (OSError, IsoboxError):
            continue
        if name:
            unlink_name(names / name, entry.name)
        _cgroups.sweep(f"isobox-{entry.name}")
        removed.append(entry.name)
    # runtime directories whose container directory is gone (made after it, removed after it)
    run = _rundir.store_runtime_dir(store)
    try:
        entries = list(os.scandir(run)) if run is not None else []
    except FileNotFoundError:
        entries = []
    for entry in entries:
        if not (store.containers / entry.name).exists():
            try:
                remove_tree(entry.path, store.privilege)
            except (OSError, IsoboxError):
                continue
            _rundir.release_container_dir(pathlib.Path(entry.path))
    return removed


# The directory every container of a store mounts its root on, in its own mount namespace
MOUNTPOINT_NAME = ".rootfs"


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
        mounts: Optional[Sequence[Mount]] = None,
        tty: bool = False,
        tty_size: Optional[Tuple[int, int]] = None,
        seccomp: bool = True,
        memory: Union[int, str, None] = None,
        pids_limit: Optional[int] = None,
        cpus: Optional[float] = None,
        devices: Optional[Sequence[Union[str, _devices_mod.Device]]] = None,
        log_max_size: Union[int, str, None] = "20m",
        log_max_files: int = 5,
        ports: Union[Mapping[Any, Any], Sequence["PortBinding"], None] = None,
        publish_all: bool = False,
        stdin: Union[None, bool, int, IO[Any]] = None,
        store: Union[Store, str, "os.PathLike[str]", None] = None,
    ) -> None:
        self._setup(image, ContainerConfig.from_options(
            command, entrypoint=entrypoint, name=name, env=env, workdir=workdir, user=user,
            hostname=hostname, init=init, read_only=read_only, network=network, userns=userns,
            rlimits=rlimits, mounts=mounts, tty=tty, tty_size=tty_size, seccomp=seccomp, memory=memory,
            pids_limit=pids_limit, cpus=cpus, devices=devices, log_max_size=log_max_size,
            log_max_files=log_max_files, ports=ports, publish_all=publish_all), stdin, store)

    @classmethod
    def from_config(cls, image: Image, config: ContainerConfig, *, stdin: Union[None, bool, int, IO[Any]] = None,
                    store: Union[Store, str, "os.PathLike[str]", None] = None) -> "Container":
        """A container from options already checked (`ContainerConfig`, e.g. read back with
        config.config_from_json), with ``stdin`` and ``store`` as `Container` takes them."""
        self = cls.__new__(cls)
        self._setup(image, config, stdin, store)
        return self

    def _setup(self, image: Image, config: ContainerConfig, stdin: Union[None, bool, int, IO[Any]],
               store: Union[Store, str, "os.PathLike[str]", None]) -> None:
        if not isinstance(image, Image):
            raise InvalidOption(f"image must be an isobox.Image, got {type(image).__name__}")
        if not isinstance(config, ContainerConfig):
            raise InvalidOption(f"config must be an isobox.ContainerConfig, got {type(config).__name__}")
        self.image = image
        self.config = config
        self._cgroup: Optional[_cgroups.Group] = None
        self.oom_killed = False  # set when the kernel's OOM killer ended it (memory=...)
        if not (stdin is None or isinstance(stdin, (bool, int)) or hasattr(stdin, "fileno")):
            raise InvalidOption("stdin must be None, True (a pipe), a file descriptor or a file object")
        self._stdin = stdin
        self._stdin_is_ours = True  # the fd given to the child is ours to close
        self.stdin: Optional[IO[bytes]] = None  # with stdin=True: the write end
        self._sink: Optional[_logs.Sink] = None  # the pump of its stdout and stderr
        self.log_lost: Tuple[str, ...] = ()  # what the log files could not take, and why
        self.pty: Optional[int] = None  # with tty=True: the terminal's master fd
        self._env: Dict[str, str] = {}
        self._ns_flags = 0
        self._ns_fds: Tuple[int, ...] = ()
        self._store_arg = store
        # the image's own settings, checked now as podman checks them at create: a StopSignal
        # that names no signal, a relative WorkingDir (runc would refuse it at start)
        self.stop_signal = image.config.stop_signum
        self.workdir = self._workdir()
        self.id = os.urandom(32).hex()
        self.name = self.config.name or f"isobox_{self.id[:12]}"
        self.pid: Optional[int] = None
        self._pid_start: Optional[int] = None
        self._owner = os.getpid()  # the process that may reap, remove and record it
        self._pidfd = -1
        self._lock_fd = -1
        self._status = Status.CREATED
        self._exit_code: Optional[int] = None
        self._reaped = False  # its status was collected (or found lost: _lost)
        self._lost: Optional[ExitStatusLost] = None
        self._reap_lock = threading.Lock()
        self._created: Optional[float] = None
        self._config_json: Optional[Dict[str, Any]] = None  # made at the first state write
        self._store: Optional[Store] = None
        self._rundir: Optional[pathlib.Path] = None  # its runtime directory (rundir.py), if any
        self._ids: Optional[_idmap.IdMap] = None  # its user namespace's map (rootless)
        self._privilege: Optional[Privilege] = None  # its store's, with that map
        self._forwarder: Optional[_forward.Forwarder] = None  # its published ports (net/forward.py)
        self._ports: Optional[PortMap] = None  # as bound: what `ports` answers
        self.argv = self._argv()

    # -- what runs --------------------------------------------------------------------------

    def _workdir(self) -> str:
        """The working directory: the caller's, else the image's (absolute, normalised:
        resolved inside the root either way, see spawn.c), else "/"."""
        if self.config.workdir:
            return posixpath.normpath(self.config.workdir)
        image_dir = self.image.config.working_dir
        if not image_dir:
            return "/"
        if not image_dir.startswith("/") or "\0" in image_dir:
            raise InvalidImage(f"image {self.image.reference or self.image.digest}: WorkingDir "
                               f"{image_dir!r} is not an absolute path")
        return posixpath.normpath(image_dir)

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
            if not self._owned():
                return "exited" if self._has_exited() else "running"
            self._poll()
        return self._status.value

    def _owned(self) -> bool:
        return self._owner == os.getpid()

    def _require_owner(self, what: str) -> None:
        if not self._owned():
            raise ContainerError(
                f"cannot {what} container {self.name}: it is owned by process {self._owner}, "
                f"and this is a fork of it ({os.getpid()}); only its owner can")

    def _has_exited(self) -> bool:
        """Whether the process ended, without reaping it (works in a forked copy too)."""
        if self._reaped:
            return True
        return self._pidfd >= 0 and native.has_exited(self._pidfd)

    def _disown(self) -> None:
        """In a forked copy (see _after_fork_in_child): let go of what only the owner may
        hold.  The lock is a shared open file description: closing our fd of it leaves the
        owner's lock in place."""
        for attr in ("_lock_fd",):
            fd = getattr(self, attr)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, attr, -1)
        for fd in self._ns_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._ns_fds = ()
        if self._forwarder is not None:
            self._forwarder.disown()
        if self.stdin is not None:
            try:
                self.stdin.close()
            except OSError:
                pass

    @property
    def exit_code(self) -> Optional[int]:
        return self._exit_code

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "Container":
        if self._status is not Status.CREATED:
            raise ContainerError(f"container {self.name} was already started")
        _spawn.raise_fd_limit()
        try:
            return self._start()
        except OSError as exc:
            if exc.errno == errno.EMFILE:
                raise _spawn.fd_limit_error() from exc
            raise
        except SetupError as exc:
            if exc.errno == errno.EMFILE:
                raise _spawn.fd_limit_error() from exc
            raise

    def _start(self) -> "Container":
        self._owner = os.getpid()
        cfg = self.config
        store = Store.open(self._store_arg)
        privilege = store.privilege  # rootful or rootless: decided when the store was opened
        if cfg.userns is not None and cfg.userns != privilege.user_namespace:
            raise InvalidOption(
                "userns=True as root is not supported: its layers would need id-shifted "
                "mounts; run isobox as an unprivileged user for a rootless container"
                if cfg.userns else "userns=False needs root"
            )
        user = resolve_user(cfg.user if cfg.user is not None else self.image.config.user, self.image.layers)
        # the id map, read now, stays with the container: its files are removed with it
        privilege = privilege.with_id_map()
        ids = privilege.id_map()
        if ids is not None:
            for kind, value, mapped in (("uid", user.uid, ids.maps_uid), ("gid", user.gid, ids.maps_gid)):
                if not mapped(value):
                    raise InvalidOption(
                        f"{kind} {value} is not mapped in this rootless container: only "
                        + (("root exists without a subordinate id range; add one for this user to "
                            "/etc/subuid and /etc/subgid (and install uidmap)"
                            + (f" ({ids.fallback_reason})" if ids.fallback_reason else ""))
                           if ids.single else "the ranges in /etc/subuid and /etc/subgid are available")
                    )
            groups = tuple(g for g in user.groups if ids.maps_gid(g))
        else:
            groups = user.groups
        self._ids = ids
        self._privilege = privilege

        self._store = store
        if store.root not in _swept_stores:
            # once per process and store: what an owner that died left is swept by the next
            # process to start a container; within a process it cannot appear unnoticed
            # (our own containers are removed by us), and a sweep costs O(containers)
            sweep_stale(store)
            _swept_stores.add(store.root)
        cdir = store.containers / self.id
        try:
            self._lock_fd = _make_owned_dir(cdir)
            for sub in ("upper", "work"):
                (cdir / sub).mkdir(mode=0o700)
            # the run-time files (the root's mount point, /etc/hosts & co.) on a tmpfs where
            # the host gives one (rundir.py), after the container's directory: a sweep
            # takes a runtime directory whose container directory is gone
            self._rundir = _rundir.make_container_dir(store, self.id)
            # the root's mount point: one empty directory every container of the store
            # mounts on, each in its own mount namespace. Never removed: removing a
            # directory that was a mount point (in any namespace) detaches mounts under the
            # global namespace lock, dearer than the rest of a container's end
            mountpoint = store.containers / MOUNTPOINT_NAME
            if not mountpoint.is_dir():
                mountpoint.mkdir(mode=0o700, exist_ok=True)
            # the upper dir's root is the container's "/": give it the image root's mode
            top = self.image.layers[-1] if self.image.layers else None
            os.chmod(cdir / "upper", (top.stat().st_mode & 0o7777) if top and top.is_dir() else 0o755)
        except OSError as exc:
            self._cleanup()
            raise SetupError(f"create the container's directory {cdir}", exc.errno or 0) from exc
        try:
            self._claim_name(store)
            # the layers we are about to mount stay until this directory goes (prune and
            # rmi keep them); volume removal waits until state.json lists our volumes
            with _host_step(f"record the image's layers in {cdir}"):
                store.hold_layers(self.id, self.image.layers)
            volumes = (store.using_volumes() if any(isinstance(m, Volume) for m in cfg.mounts)
                       else contextlib.nullcontext())
            with volumes:
                self._spawn(cdir, user.home, user.uid, user.gid, groups, ids, privilege)
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
                if other_dir.exists() and owner_alive(other_dir):
                    raise NameConflict(
                        f'the container name "{self.name}" is already in use by container {other[:12]}'
                    ) from None
                unlink_name(link, other)
        raise NameConflict(f'the container name "{self.name}" is already in use')

    def _spawn(
        self, cdir: pathlib.Path, home: str, uid: int, gid: int, groups: Tuple[int, ...],
        ids: Optional[_idmap.IdMap], privilege: Privilege,
    ) -> None:
        cfg = self.config
        hostname = cfg.hostname or self.id[:12]
        plan = RootfsPlan(
            layers=[str(p) for p in self.image.layers],
            upper=str(cdir / "upper"),
            work=str(cdir / "work"),
            mountpoint=str(cdir.parent / MOUNTPOINT_NAME),
            in_userns=privilege.user_namespace,
            mknod_devices=privilege.can_mknod,
            devpts_gid=5 if ids is None or ids.maps_gid(5) else None,
            own_netns=cfg.network == "none",
            read_only=cfg.read_only,
            devices=cfg.devices,
        )
        env = self._env = self._environment(hostname, home)
        flags = (native.CLONE_NEWNS | native.CLONE_NEWPID | native.CLONE_NEWUTS
                 | native.CLONE_NEWIPC | native.CLONE_NEWCGROUP)
        if cfg.network == "none":
            flags |= native.CLONE_NEWNET
        if privilege.user_namespace:
            flags |= native.CLONE_NEWUSER
        self._ns_flags = flags
        etc_files = self._etc_files(self._rundir or cdir, hostname)
        assert self._store is not None
        volumes_root = self._store.volumes
        workdir = self.workdir
        ops = plan.ops(lambda first: plan_mounts(cfg.mounts, etc_files, volumes_root, first), workdir)
        console_parent, console_child = _tty.console_pair() if cfg.tty else (None, None)

        # stdout and stderr are pipes, never host files a container could reopen through
        # /proc/self/fd (logs.py); with a terminal, the terminal is all three.  Registered
        # with the core as a start's fds are: a fork meanwhile does not keep a write end
        # (the pump would wait for EOF until that fork exits).
        out_r = out_w = err_r = err_w = -1
        if not cfg.tty:
            out_r, out_w, err_r, err_w = _spawn.pipes()
        in_fd = -1
        cgroup_fds: List[int] = []
        try:
            in_fd = self._stdin_fd()
            # the device policy and the default pids limit wherever a group can be made,
            # the caller's limits (or HostNotSupported); the child enters it itself before
            # anything else (spawn.c: enter_cgroups)
            self._cgroup = _cgroups.Group.for_container(f"isobox-{self.id}", cfg.limits, cfg.devices,
                                                        privilege=privilege)
            if self._cgroup is not None:
                cgroup_fds = self._cgroup.open_entries()
            spec = native.Spec(
                clone_flags=flags,
                ops=tuple(ops),
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
                stdio=(in_fd, out_w, err_w),
                workdir=workdir,
                argv=self.argv,
                env=tuple(f"{k}={v}" for k, v in env.items()),
                path=env.get("PATH", DEFAULT_PATH),
                init=cfg.init,
                console_sock=console_child.fileno() if console_child else -1,
                tty_size=cfg.tty_size,
                seccomp=_seccomp.default_filter() if cfg.seccomp else None,
                cgroup_procs=tuple(cgroup_fds),
            )
            self._bind_ports()
            with _host_step(f"write {self.dir / STATE_NAME}"):
                self._write_state(Status.CREATED)
            child = _spawn.spawn_child(spec)
        except BaseException:
            for fd in (out_r, err_r):
                if fd >= 0:
                    native.lib.ib_close(fd)
            if self._cgroup is not None:
                self._cgroup.remove()
                self._cgroup = None
            raise
        finally:
            for fd in cgroup_fds:
                os.close(fd)
            for fd in (out_w, err_w):
                if fd >= 0:
                    native.lib.ib_close(fd)
            if in_fd >= 0 and self._stdin_is_ours:
                os.close(in_fd)
            if console_child is not None:
                console_child.close()
        self.pid, self._pidfd = child.pid, child.pidfd
        try:
            if out_r >= 0:
                native.lib.ib_forget(out_r)
                native.lib.ib_forget(err_r)
                fds, out_r, err_r = (out_r, err_r), -1, -1
                self._sink = _logs.attach(cdir, fds[0], fds[1], cfg.log)  # owns them now
            if ids is not None:
                ids.apply(child.pid)
            if self._forwarder is not None:
                self._forwarder.hold_namespaces(child.pid, flags)
            if cfg.init:
                # for exec: the init never execs, so it stays a non-dumpable copy of this
                # process whose /proc/<pid>/ns a rootless owner cannot open later (its mm
                # belongs to the host's user namespace): open them now, while it may.  A
                # command's /proc/<pid>/ns is opened when needed (see _joining), so a
                # running container holds two fds (lock, pidfd) plus its log pump's four.
                self._ns_fds = native.open_namespaces(child.pid, flags)
            child.release()
            if console_parent is not None:
                self.pty = _tty.receive_master(console_parent)
        except BaseException:
            for fd in (out_r, err_r):
                if fd >= 0:
                    native.lib.ib_close(fd)
            child.abandon()
            self._reap(block=True)
            raise
        finally:
            if console_parent is not None:
                console_parent.close()
        self._status = Status.RUNNING
        self._pid_start = start_time(child.pid)
        _spawn.disown_after_fork(self)
        if self._forwarder is not None:
            self._forwarder.start(self._pidfd, _spawn.in_spawner)
        try:
            self._write_state(Status.RUNNING)
        except OSError:
            pass  # "created" stays on disk; readers check the pid (control.py): true enough

    def _stdin_fd(self) -> int:
        """What the container reads: /dev/null, a pipe whose write end is ``.stdin``, or the
        caller's fd when it is a pipe or socket already.  Anything else the caller gives (a
        file, a terminal) is fed through a pipe by a thread: the container could reopen a
        file through /proc/self/fd with write access, or read a terminal after it ended."""
        self._stdin_is_ours = True
        if self._stdin is None or self._stdin is False:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        if self._stdin is True:
            r, w = os.pipe2(os.O_CLOEXEC)
            self.stdin = os.fdopen(w, "wb", buffering=0)
            return r
        fd = self._stdin if isinstance(self._stdin, int) else int(self._stdin.fileno())
        mode = os.fstat(fd).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            self._stdin_is_ours = False
            return fd
        return _stdio.feed(fd)

    def _etc_files(self, folder: pathlib.Path, hostname: str) -> List[Tuple[str, str]]:
        """/etc/hostname, /etc/hosts and /etc/resolv.conf as Docker provides them, made in
        ``folder`` (the runtime directory) and bound in."""
        if self.config.network == "host":
            hosts = _read_host("/etc/hosts")
        else:
            hosts = (b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                     b"fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\n"
                     b"ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
        resolv = _read_host("/etc/resolv.conf")
        if self.config.network != "host":
            # a loopback resolver of the host means nothing in the container's own network
            resolv = b"".join(line for line in resolv.splitlines(keepends=True)
                              if not re.match(rb"\s*nameserver\s+(127\.|::1\b)", line))
        for name, data in (("hosts", hosts), ("hostname", hostname.encode() + b"\n"),
                           ("resolv.conf", resolv)):
            with _host_step(f"write {folder / name}"):
                (folder / name).write_bytes(data)
        return [(str(folder / "hostname"), "/etc/hostname"), (str(folder / "hosts"), "/etc/hosts"),
                (str(folder / "resolv.conf"), "/etc/resolv.conf")]

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
        if self.config.tty:
            env.setdefault("TERM", "xterm")
        return env

    def _write_state(self, status: Status) -> None:
        if self._created is None:
            self._created = time.time()
            self._config_json = config_to_json(self.config)
        write_state(self.dir, ContainerState(
            id=self.id,
            name=self.name,
            status=status.value,
            image=self.image.reference,
            image_digest=self.image.digest,
            argv=self.argv,
            volumes=tuple(sorted({m.name for m in self.config.mounts if isinstance(m, Volume)})),
            pid=self.pid,
            pid_start=self._pid_start,
            owner_pid=os.getpid(),
            created=self._created,
            exit_code=self._exit_code,
            log_lost=self.log_lost,
            config=self._config_json,
            ports=self._ports,
        ))

    # -- waiting and signals --------------------------------------------------------------------

    def _reap(self, block: bool) -> bool:
        """Collect the exit status if the process has exited; True when it has.

        Threads may call this at once (one waits while others exec, kill or stop): the
        status is collected under a lock, and a blocking wait happens before it, without
        reaping (WNOWAIT), so it never holds the lock while the container runs."""
        if self.pid is None or self._reaped:
            return True
        if not self._owned():
            return self._has_exited()  # a forked copy: never reap, never record
        if block:
            if self._pidfd >= 0:
                poller = select.poll()
                poller.register(self._pidfd, select.POLLIN)
                poller.poll()
            else:
                try:
                    os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT | native.WALL)
                except ChildProcessError:
                    pass
        with self._reap_lock:
            return self._reap_locked(block)

    def _reap_locked(self, block: bool) -> bool:
        if self.pid is None or self._reaped:
            return True
        try:
            if self._pidfd >= 0:
                # by pidfd: an application's own reaping cannot mislead it (native.wait_exit)
                code = native.wait_exit(self._pidfd, block)
                if code is None:
                    return False
            else:  # Linux < 5.3
                pid, status = os.waitpid(self.pid, native.WALL | (0 if block else os.WNOHANG))
                if pid == 0:
                    return False
                code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code, self._lost = None, ExitStatusLost(
                f"container {self.name}: its exit status was collected by another wait in "
                "this process (SIGCHLD ignored, or a handler calling waitpid(-1))")
        except ExitStatusLost as exc:
            code, self._lost = None, ExitStatusLost(f"container {self.name}: {exc}")
        self._exit_code = code
        self._reaped = True
        self._finish_logs()
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        for fd in self._ns_fds:
            os.close(fd)
        self._ns_fds = ()
        if self._forwarder is not None:
            self._forwarder.finish()  # reaped here if it has ended already, else at removal
        if self._cgroup is not None:
            self.oom_killed = self._cgroup.oom_killed()
            try:
                self._cgroup.remove()
            except OSError:
                pass  # still busy (a process escaped to it?): the next sweep retries
            self._cgroup = None
        if self._status is Status.RUNNING:
            self._status = Status.EXITED
            try:
                self._write_state(Status.EXITED)
            except OSError:
                pass
        return True

    def _finish_logs(self) -> None:
        """Once pid 1 is gone (and with it every process of its pid namespace), wait for
        the pump to write the rest of its output, and keep what it could not."""
        sink, self._sink = self._sink, None
        if sink is None:
            return
        if not sink.finish(timeout=10):
            sink.close()  # a writer survived (it cannot: its pid namespace died): give up
        self.log_lost = tuple(str(loss) for loss in sink.lost.values())

    def _poll(self) -> None:
        self._reap(block=False)

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the container's process to end: its exit status, or -N for a death by
        signal N (as subprocess reports it). Raises Timeout when it outlives ``timeout``."""
        if self._status is Status.CREATED:
            raise ContainerError(f"container {self.name} has not been started")
        if not self._reaped:
            self._require_owner("wait for")
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
        if self._lost is not None:
            raise self._lost
        assert self._exit_code is not None
        return self._exit_code

    def kill(self, signal: Union[int, str] = "KILL") -> None:
        """Send a signal to the container's pid 1 (`docker kill`): a name ("TERM",
        "SIGTERM") or a number. A pid 1 without a handler ignores all but SIGKILL
        (pid_namespaces(7)); init=True forwards them. A container that is not running
        (any more) is left alone, as subprocess leaves a finished process."""
        signum = signal_number(signal)
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
        self._require_owner("stop")
        self.kill(self.stop_signal)
        try:
            return self.wait(timeout)
        except Timeout:
            self.kill(_signal.SIGKILL)
            return self.wait()

    @overload
    def logs(self, stream: str = ..., follow: Literal[False] = ...) -> bytes: ...

    @overload
    def logs(self, stream: str = ..., *, follow: Literal[True]) -> Iterator[bytes]: ...

    def logs(self, stream: str = "both", follow: bool = False) -> Union[bytes, Iterator[bytes]]:
        """What the container wrote: ``stream`` is "stdout", "stderr" or "both" (stdout
        then stderr: they are kept in separate files), as far as the log files keep it
        (``log_max_size`` × ``log_max_files`` per stream). ``follow=True`` yields output as
        it comes, until the container has exited and everything was read."""
        if follow:
            return (data for _, data in self.follow_logs(stream))
        return b"".join(_logread.read(self.dir, s) for s in log_streams(stream))

    def follow_logs(self, stream: str = "both") -> Iterator[Tuple[str, bytes]]:
        """``(stream name, chunk)`` as the container writes them, from the oldest kept byte
        on, across rotations, until it has exited and everything was read."""
        return _logread.follow(self.dir, log_streams(stream),
                            lambda: self._status is not Status.RUNNING or self._reap(block=False))

    def log_writer(self) -> _logs.Writer:
        """A writer of the container's stdout log, with its rotation: for a terminal's
        output, which its reader (the isobox command, the supervisor) copies there (a
        terminal is not a pipe the log pump could own)."""
        return _logs.Writer(self.dir, "stdout", self.config.log)

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal's window size (tty=True)."""
        if self.pty is None:
            raise ContainerError(f"container {self.name} has no terminal (tty=False)")
        _tty.set_size(self.pty, rows, cols)

    # -- exec ---------------------------------------------------------------------------------

    def exec(
        self,
        command: Command,
        *,
        env: Union[Mapping[str, str], Sequence[str], None] = None,
        workdir: Optional[str] = None,
        user: Optional[str] = None,
        tty: bool = False,
        tty_size: Optional[Tuple[int, int]] = None,
        stdin: Union[None, bytes, int, IO[Any]] = None,
        timeout: Optional[float] = None,
    ) -> RunResult:
        """Run another process in the running container (`docker exec`): its namespaces,
        root, user resolution and security settings; the result is like `run`'s.
        A timeout kills the exec'd process, never the container. With ``tty=True`` the
        output of the terminal is returned as stdout."""
        argv = parse_command(command)
        if not argv:
            raise InvalidOption("exec needs a command")
        cfg_workdir = ContainerConfig(workdir=workdir).workdir if workdir else None
        extra_env = parse_env(env)
        if self._status is not Status.RUNNING or self._reap(block=False):
            raise ContainerError(f"container {self.name} is not running")
        # Pipes only, never a host file (not even /dev/null, which the container's root
        # could fchmod through /proc/self/fd): see logs.py.
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        master = -1
        try:
            if isinstance(stdin, bytes):
                _stdio.feed_bytes(in_w, stdin)  # takes in_w
            elif stdin is not None:
                os.close(in_w)
                os.close(in_r)
                in_r = _stdio.feed(stdin if isinstance(stdin, int) else int(stdin.fileno()))
            else:
                os.close(in_w)  # EOF at once, as /dev/null would give
            in_w = -1
            _, pidfd, master = self._exec_spawn(argv, extra_env, cfg_workdir, user, tty,
                                                (in_r, out_w, err_w), tty_size)
            for fd in (in_r, out_w, err_w):
                os.close(fd)
            in_r = out_w = err_w = -1
            code, (stdout, stderr, tty_out) = _stdio.wait_exec(pidfd, (out_r, err_r, master), timeout)
            if tty:
                stdout = tty_out
            if code is None:
                exc = Timeout(f"exec {argv[0]} in {self.name} still running after {timeout} s: killed")
                exc.stdout, exc.stderr = stdout, stderr  # type: ignore[attr-defined]
                raise exc
            from ..result import RunResult  # only exec and oneshot.run need it

            return RunResult(argv, code, stdout, stderr)
        finally:
            for fd in (out_r, err_r, master, in_r, in_w, out_w, err_w):
                if fd >= 0:
                    os.close(fd)

    def _exec_spawn(
        self, argv: Tuple[str, ...], extra_env: Tuple[Tuple[str, str], ...], workdir: Optional[str],
        user: Optional[str], tty: bool, stdio: Tuple[int, int, int],
        tty_size: Optional[Tuple[int, int]] = None,
    ) -> Tuple[int, int, int]:
        """Start ``argv`` in the running container with ``stdio`` (with ``tty``: a new
        terminal instead): (pid, pidfd, the terminal's master fd or -1), once it has
        exec'd.  The caller waits for it (our child: native.wait_exit on the pidfd, never
        by pid) and closes the pidfd and the master. `exec` uses it, and so does the
        control socket's exec, which streams (server.py)."""
        self._require_owner("exec in")
        if self._status is not Status.RUNNING or self._reap(block=False):
            raise ContainerError(f"container {self.name} is not running")
        if self._pidfd < 0:
            raise ContainerError("exec needs pidfd support (Linux 5.3)")
        resolved = self._resolve_exec_user(user)
        env_map = dict(self._env)
        env_map.update(extra_env)
        if tty:
            env_map.setdefault("TERM", "xterm")
        console_parent, console_child = _tty.console_pair() if tty else (None, None)
        cgroup_fds: List[int] = self._cgroup.open_entries() if self._cgroup is not None else []
        try:
            spec = native.Spec(
                clone_flags=0,
                rlimits=self.config.rlimits,  # as runc exec: the container's, not ours
                set_ids=True,
                set_groups=self._ids is None or self._ids.helpers,
                uid=resolved.uid,
                gid=resolved.gid,
                groups=resolved.groups,
                caps=tuple(DEFAULT_CAPABILITIES.values()),
                no_new_privs=True,
                stdio=stdio,
                workdir=posixpath.normpath(workdir) if workdir else self.workdir,
                argv=argv,
                env=tuple(f"{k}={v}" for k, v in env_map.items()),
                path=env_map.get("PATH", DEFAULT_PATH),
                console_sock=console_child.fileno() if console_child else -1,
                tty_size=check_tty_size(tty_size),
                seccomp=_seccomp.default_filter() if self.config.seccomp else None,
                cgroup_procs=tuple(cgroup_fds),
            )
            with self._joining() as ns_fds:
                pid, pidfd = _spawn.in_spawner(lambda: native.join(spec, ns_fds))
            if console_child is not None:
                console_child.close()
                console_child = None
            try:
                master = _tty.receive_master(console_parent) if console_parent is not None else -1
            except BaseException:
                _signal.pidfd_send_signal(pidfd, _signal.SIGKILL)
                try:
                    native.wait_exit(pidfd)
                finally:
                    os.close(pidfd)
                raise
            return pid, pidfd, master
        finally:
            for sock in (console_parent, console_child):
                if sock is not None:
                    sock.close()
            for fd in cgroup_fds:
                os.close(fd)

    # -- published ports (net/) -----------------------------------------------------------------

    def _bind_ports(self) -> None:
        """The host's side of the published ports, bound before the container is cloned
        (a port in use fails here; port 0 becomes the kernel's choice, known at once)."""
        bindings = self.config.ports
        if self.config.publish_all:
            from ..net.ports import exposed_bindings

            bindings += exposed_bindings(self.image.config.exposed_ports, bindings)
        if bindings:
            from ..net.forward import Forwarder

            self._forwarder = Forwarder.bind(bindings)
            self._ports = self._forwarder.ports

    @property
    def ports(self) -> Dict[str, List[Dict[str, str]]]:
        """The published ports as bound, as docker-py's ``container.ports``:
        ``{"6379/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32768"}]}``; empty unless it
        runs (its forwarder ends with it), as Docker's."""
        return self._ports.docker() if self._ports and self.status == "running" else {}

    def _port_map(self) -> PortMap:
        from ..net.ports import PortMap

        return self._ports or PortMap()

    def host_port(self, port: Union[int, str]) -> int:
        """The host port that reaches the container's ``port`` (6379, "53/udp")."""
        return self._port_map().find(port, self.name).host_port

    def address(self, port: Union[int, str]) -> Tuple[str, int]:
        """(host, port) a client on this host connects to for the container's ``port``
        (loopback for a wildcard address such as 0.0.0.0)."""
        from ..net.ports import client_address

        return client_address(self._port_map().find(port, self.name))

    # -- readiness ------------------------------------------------------------------------------

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        """Return once something in the container listens on TCP ``port`` (seen in its
        own network namespace); raise if it exits first or after ``timeout``."""
        _wait.wait_for_port(self, port, timeout)

    def wait_for_log(self, pattern: Union[str, bytes, "re.Pattern[bytes]"], timeout: float = 30.0) -> None:
        """Return once the container's output matches ``pattern`` (text or a regex)."""
        _wait.wait_for_log(self, pattern, timeout)

    # -- copies (docker cp) ---------------------------------------------------------------------
    #
    # copy.py is imported when first used: it needs tarfile and tempfile, ~5 ms of the
    # ~75 ms an `isobox run` takes, for something most containers never do.

    def copy_to(self, host_path: Union[str, "os.PathLike[str]"], path: str) -> None:
        """Copy a host file or directory into the running container (see copy.py)."""
        from . import copy

        copy.copy_to(self._copy_root(), host_path, path)

    def copy_from(self, path: str, host_path: Union[str, "os.PathLike[str]"]) -> None:
        """Copy a file or directory out of the running container (see copy.py)."""
        from . import copy

        copy.copy_from(self._copy_root(), path, host_path)

    def put_archive(self, path: str, data: Union[bytes, Iterable[bytes]]) -> None:
        """Extract a tar stream into the container's directory ``path`` (docker-py's name)."""
        from . import copy

        copy.put_archive(self._copy_root(), path, data)

    def get_archive(self, path: str) -> bytes:
        """A tar stream of ``path`` in the container (docker-py's name)."""
        from . import copy

        return copy.get_archive(self._copy_root(), path)

    def _copy_root(self) -> "_copy.Root":
        from . import copy

        if self._privilege is None:  # never started (what joining it would say)
            raise ContainerError(f"container {self.name} is not running")
        return copy.Root(self.name, self._open_root, self.dir, self._privilege)

    def _open_root(self) -> int:
        """An O_PATH fd of the running container's "/" as its processes see it (from
        inside its mount namespace: its volumes and tmpfs included), the caller's to
        close. Copies resolve every path below it in the kernel (copy.py); the control
        socket hands it to the owner's clients for theirs (server.py)."""
        with self._joining() as fds:
            return native.container_root(fds)

    @contextlib.contextmanager
    def _joining(self) -> Iterator[Tuple[int, ...]]:
        """Fds of the running container's namespaces, in joining order, for the span of a
        join (exec, copies). Opened from /proc/<pid>/ns: pid 1 is our unreaped child, so
        its pid cannot name another process meanwhile."""
        self._require_owner("enter")
        if self._status is not Status.RUNNING or self._reap(block=False) or self.pid is None:
            raise ContainerError(f"container {self.name} is not running")
        if self._ns_fds:
            yield self._ns_fds
            return
        try:
            fds = native.open_namespaces(self.pid, self._ns_flags)
        except OSError as exc:
            if self._reap(block=False):
                raise ContainerError(f"container {self.name} is not running") from exc
            raise SetupError(f"open the namespaces of container {self.name}", exc.errno or 0) from exc
        try:
            yield fds
        finally:
            for fd in fds:
                os.close(fd)

    def _resolve_exec_user(self, user: Optional[str]) -> ResolvedUser:
        spec = user if user is not None else (
            self.config.user if self.config.user is not None else self.image.config.user)
        # the container's own /etc/passwd as it is now: its upper dir sits on top
        resolved = resolve_user(spec, list(self.image.layers) + [self.dir / "upper"])
        if self._ids is not None:
            if not (self._ids.maps_uid(resolved.uid) and self._ids.maps_gid(resolved.gid)):
                raise InvalidOption(f"user {spec!r} is not mapped in this rootless container")
            resolved = attrs.evolve(resolved, groups=tuple(g for g in resolved.groups if self._ids.maps_gid(g)))
        return resolved

    def commit(self, tag: Optional[str] = None, *, changes: Sequence[str] = (),
               message: Optional[str] = None, author: Optional[str] = None,
               compression: str = "gzip") -> Image:
        """The container's writes as a new image (``docker commit``), tagged ``tag`` (None:
        untagged, by its ID): the container's configuration, then ``changes`` (Dockerfile
        lines: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR), one
        new layer (``compression`` "gzip" or "zstd"). See `isobox.runtime.commit`."""
        from .commit import commit

        if self._store is None:
            raise ContainerError(f"container {self.name} was never started: nothing to commit")
        return commit(self._store, self.dir, self.image, self.config, self.argv, self._ids, tag,
                      changes=changes, message=message, author=author, compression=compression)

    def remove(self, force: bool = False) -> None:
        """Delete the container's state. A running container needs ``force=True`` (it is
        killed first), as `docker rm -f`."""
        if self._status is Status.REMOVED:
            return
        self._require_owner("remove")
        if self._status is Status.RUNNING and not self._reap(block=False):
            if not force:
                raise ContainerError(f"container {self.name} is running: stop it first or use force=True")
            self.kill(_signal.SIGKILL)
            self.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self.pid is not None and not self._reaped:
            self.kill(_signal.SIGKILL)
            self._reap(block=True)
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        if self._forwarder is not None:
            self._forwarder.finish(kill=True)  # its ports are free when remove returns
            self._forwarder = None
        if self._store is not None:
            cdir = self._store.containers / self.id
            try:
                self._store.release_layers(self.id)
                # gone at once; its writable layer is removed by the store's remover
                # thread (most of a container's end on a disk; see Store.remove_later)
                self._store.remove_later(cdir, self._privilege)
                if self._rundir is not None:
                    remove_tree(self._rundir, self._privilege)
                    _rundir.release_container_dir(self._rundir)
                    self._rundir = None
            finally:
                unlink_name(self._store.containers / ".names" / self.name, self.id)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        self._status = Status.REMOVED

    def __enter__(self) -> "Container":
        if self._status is Status.CREATED:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._owned():  # a forked copy leaving the block leaves the owner's container be
            self.remove(force=True)

    def __repr__(self) -> str:
        return f"<Container {self.name} {self._status.value} {' '.join(self.argv)!r}>"


def _read_host(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError:
        return b""


@contextlib.contextmanager
def _host_step(what: str) -> Iterator[None]:
    """A host-side step of a start: an OSError (a full disk, a quota) becomes a SetupError
    naming the step and its path, never a bare errno (issue 9)."""
    try:
        yield
    except OSError as exc:
        raise SetupError(what, exc.errno or 0) from exc
