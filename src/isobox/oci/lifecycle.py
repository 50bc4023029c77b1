"""The runtime spec's operations (runtime.md, "Operations") on one container: create, start,
state, kill, delete, and run (all of them in one process).

The hand-off (spawn.c, the exec fifo): `create` makes ``exec.fifo`` in the container's
state directory, passes the child an fd of that directory, and waits only until the child
reports that it is set up and about to open the FIFO for writing — an open(2) that blocks
until a reader comes (fifo(7)).  `create` then exits: the child has no parent-death
signal (Spec.pdeathsig=False, unlike the library's containers, which die with their
owner), so it waits, reparented to the caller's subreaper (containerd's shim, conmon) or
to init, with no Python anywhere between its clone and its execve.  `start` opens the
FIFO to read, reads the one byte the child writes once its open returned, and removes
the FIFO: the container is "running" from then on, and the child goes on to its seccomp
filter and execve.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import select
import signal
import socket
import time
from typing import Any, Dict, List, Optional

from ..errors import ContainerError, ContainerNotFound, InvalidOption, SetupError
from ..host import native
from ..host.privilege import Privilege
from ..runtime import cgroups as _cgroups
from ..runtime import devices as _devices
from ..runtime.state import start_time
from . import plan as _plan
from .bundle import BundleConfig
from .seccomp import compile_profile
from . import hooks as _hooks
from .state import OCI_VERSION, Record, StateDir, spec_state

# how long start waits for the child to get past its open of the fifo
START_TIMEOUT = 10.0


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _console(path: Optional[str]) -> Optional[socket.socket]:
    if path is None:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise SetupError(f"connect to the console socket {path}", exc.errno or 0) from exc
    return sock


def _cgroup(cfg: BundleConfig, cid: str, privilege: Privilege) -> Optional[_cgroups.Group]:
    """The container's group, made by the library's cgroups: the device policy (its
    default rules, plus one per linux.devices node) and the limits bundle.py read, at
    ``cgroupsPath`` as runc places it (absolute: below each hierarchy's root; relative:
    below our own group), else at isobox-runtime-<id> below our own group."""
    nodes = [_devices.DeviceNode(d.path, d.path, d.type, d.major, d.minor, d.mode, d.uid, d.gid)
             for d in cfg.devices if d.type in ("c", "b")]
    pids, memory, cpus = cfg.limits
    limits = _cgroups.Limits(pids=-1 if pids is None else pids, memory=memory, cpus=cpus)
    layout = _cgroups.Layout.read()
    name = f"isobox-runtime-{cid}"
    if cfg.cgroups_path:
        name = cfg.cgroups_path.strip("/")
        if cfg.cgroups_path.startswith("/"):
            mounts = _cgroups.mount_points()
            layout = _cgroups.Layout({c: pathlib.Path(mounts[c]) for c in layout.v1 if c in mounts},
                                     pathlib.Path(mounts[""]) if layout.v2 is not None and "" in mounts else None)
    return _cgroups.Group.for_container(name, limits, nodes, layout, privilege=privilege)


def _write_id_maps(pid: int, cfg: BundleConfig, privilege: Privilege) -> None:
    """The bundle's uid/gid mappings, written as the kernel takes them (user_namespaces(7));
    without root only a single mapping of our own ids is allowed, after setgroups "deny"."""
    if not cfg.uid_mappings or not cfg.gid_mappings:
        raise InvalidOption("config.json: a user namespace needs linux.uidMappings and linux.gidMappings")
    if not privilege.rootful:
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
    for name, maps in (("uid_map", cfg.uid_mappings), ("gid_map", cfg.gid_mappings)):
        text = "".join(f"{m.container} {m.host} {m.size}\n" for m in maps)
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(text)
        except OSError as exc:
            raise SetupError(f"write the container's {name}", exc.errno or 0,
                             "rootless, only your own id can be mapped") from exc


def create(state: StateDir, bundle: str, pid_file: Optional[str], console_socket: Optional[str]) -> Record:
    """Set the container up and leave its process waiting for `start`."""
    cfg = BundleConfig.load(bundle)
    privilege = Privilege.current()
    seccomp = compile_profile(cfg.seccomp, _cap_names(cfg)) if cfg.seccomp else None
    _plan.clone_flags(cfg)  # refusals before anything is made
    if cfg.terminal and console_socket is None:
        raise InvalidOption("config.json asks for a terminal: pass --console-socket")
    state.make()
    group: Optional[_cgroups.Group] = None
    dir_fd = -1
    console: Optional[socket.socket] = None
    try:
        with state.locked():
            # writable by the container's user, whoever it is (runc's 0622); only its
            # reader, `start`, is root's alone
            os.mkfifo(state.fifo, 0o600)
            os.chmod(state.fifo, 0o622)
            dir_fd = os.open(state.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            console = _console(console_socket) if cfg.terminal else None
            group = _cgroup(cfg, state.id, privilege)
            entries = group.open_entries() if group is not None else []
            in_userns = "user" in cfg.namespaces
            try:
                spec = _plan.spec(cfg, stdio=(-1, -1, -1),
                                  console_sock=console.fileno() if console else -1,
                                  fifo_dir=dir_fd, fifo_name=state.fifo.name,
                                  cgroup_procs=tuple(entries), seccomp=seccomp,
                                  set_groups=not in_userns or privilege.rootful)
                child = native.spawn(spec)
            finally:
                for fd in entries:
                    os.close(fd)
            try:
                if in_userns:
                    _write_id_maps(child.pid, cfg, privilege)
                if cfg.oom_score_adj is not None:
                    with open(f"/proc/{child.pid}/oom_score_adj", "w") as f:
                        f.write(str(cfg.oom_score_adj))
                # its namespaces exist, its filesystem is not made yet (hooks.py)
                # prestart sees "created", as the validation suite's hooks_stdin expects;
                # createRuntime "creating", as create is still under way
                for kind, status in (("prestart", "created"), ("createRuntime", "creating")):
                    _hooks.run_all(cfg.hooks.get(kind, ()), _hook_state(state.id, child.pid, cfg, status))
                child.release_to_created()
            except BaseException:
                child.abandon()
                _reap(child.pidfd)
                raise
            record = Record(
                id=state.id, pid=child.pid, start_time=start_time(child.pid), bundle=cfg.bundle,
                rootfs=cfg.root, created=_now(), annotations=cfg.annotations,
                cgroup_dirs=tuple(str(d) for d in group.dirs) if group else (),
                cgroup_v2=group.v2 if group else False,
                hooks=_hooks.to_json({k: v for k, v in cfg.hooks.items() if k in ("poststart", "poststop")}),
            )
            state.write_record(record)
            if child.pidfd >= 0:
                os.close(child.pidfd)
            if pid_file:
                _write_pid_file(pid_file, child.pid)
    except BaseException:
        if group is not None:
            group.remove()
        _remove_state(state)
        raise
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)
        if console is not None:
            console.close()
    return record


def _cap_names(cfg: BundleConfig) -> List[str]:
    from ..runtime.seccomp_data import CAPABILITIES

    return [CAPABILITIES[n] for n in cfg.capabilities]


def _reap(pidfd: int) -> None:
    if pidfd < 0:
        return
    try:
        native.wait_exit(pidfd)
    except ContainerError:
        pass
    os.close(pidfd)


def _write_pid_file(path: str, pid: int) -> None:
    """runc writes it whole, through a temporary beside it."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def _remove_state(state: StateDir) -> None:
    for name in (state.fifo, state.path / "state.json", state.path / "state.json.tmp", state.path / "lock"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(state.path)
    except FileNotFoundError:
        pass


def _pidfd(record: Record) -> int:
    """A pidfd of the container's process, or -1 when it has ended (or its pid is another
    process's now)."""
    try:
        fd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        return -1
    if start_time(record.pid) != record.start_time:
        os.close(fd)
        return -1
    return fd


def _hook_state(cid: str, pid: int, cfg: BundleConfig, status: str) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"ociVersion": OCI_VERSION, "id": cid, "status": status, "pid": pid,
                           "bundle": cfg.bundle}
    if cfg.annotations:
        doc["annotations"] = dict(cfg.annotations)
    return doc


def start(state: StateDir) -> List[str]:
    """Let the created container's process go; the poststart hooks' failures, as warnings."""
    with state.locked():
        record = state.read_record()
        status = state.status(record)
        if status != "created":
            raise ContainerError(f"container {state.id} is {status}, not created: it cannot be started")
        pidfd = _pidfd(record)
        try:
            fifo = os.open(state.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerError(f"container {state.id} was started already") from None
        try:
            poller = select.poll()
            poller.register(fifo, select.POLLIN)
            if pidfd >= 0:
                poller.register(pidfd, select.POLLIN)
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ContainerError(f"container {state.id} did not start within {START_TIMEOUT:g} s")
                events = dict(poller.poll(left * 1000))
                if events.get(fifo, 0) & select.POLLIN:
                    if os.read(fifo, 1) == b"0":
                        break
                if pidfd >= 0 and pidfd in events:
                    raise ContainerError(f"the process of container {state.id} ended before it was started")
        finally:
            os.close(fifo)
            if pidfd >= 0:
                os.close(pidfd)
        os.unlink(state.fifo)
        poststart = _hooks.from_json(record.hooks).get("poststart", ())
        return _hooks.run_warning(poststart, spec_state(state, record, "running", OCI_VERSION))


SIGNALS = {name[3:]: int(sig) for name, sig in signal.Signals.__members__.items()
           if name.startswith("SIG") and not name.startswith("SIG_")}


def parse_signal(text: str) -> int:
    """runc's spelling: a number, or a name with or without "SIG"."""
    if text.isdigit():
        number = int(text)
        if not 0 < number < 65:
            raise InvalidOption(f"invalid signal {text}")
        return number
    name = text.upper()
    name = name[3:] if name.startswith("SIG") else name
    if name not in SIGNALS:
        raise InvalidOption(f"unknown signal {text!r}")
    return SIGNALS[name]


def kill(state: StateDir, sig: int, all_processes: bool) -> None:
    record = state.read_record()
    status = state.status(record)
    if status not in ("created", "running"):
        raise ContainerError(f"container {state.id} is {status}: it cannot be signalled")
    if all_processes and record.cgroup_dirs:
        for pid in _cgroup_pids(record):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    pidfd = _pidfd(record)
    if pidfd < 0:
        raise ContainerError(f"container {state.id} is not running")
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        raise ContainerError(f"container {state.id} is not running") from None
    finally:
        os.close(pidfd)


def _cgroup_pids(record: Record) -> List[int]:
    pids: List[int] = []
    for d in record.cgroup_dirs:
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                pids += [int(line) for line in f if line.strip()]
        except OSError:
            continue
    return sorted(set(pids))


def delete(state: StateDir, force: bool) -> List[str]:
    """Remove the container (stopped, or any with ``force``); the poststop hooks' failures,
    as warnings.  With ``force``, a directory a `create` killed half-way left (no record:
    it had no process yet, or lost it with the record) goes too."""
    with state.locked():
        try:
            record = state.read_record()
        except ContainerNotFound:
            if not force:
                raise
            _remove_state(state)
            return []
        status = state.status(record)
        if status != "stopped":
            if not force:
                raise ContainerError(f"container {state.id} is {status}: delete it with --force, "
                                     "or stop it first")
            pidfd = _pidfd(record)
            if pidfd >= 0:
                try:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    select.select([pidfd], [], [], 10)
                except ProcessLookupError:
                    pass
                finally:
                    os.close(pidfd)
        if record.cgroup_dirs:
            for pid in _cgroup_pids(record):  # the rest of a container without a pid namespace
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _wait_empty(record)
            _cgroups.Group([pathlib.Path(d) for d in record.cgroup_dirs], v2=record.cgroup_v2).remove()
        _remove_state(state)
        poststop = _hooks.from_json(record.hooks).get("poststop", ())
        return _hooks.run_warning(poststop, spec_state(state, record, "stopped", OCI_VERSION))


def _wait_empty(record: Record, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _cgroup_pids(record) and time.monotonic() < deadline:
        time.sleep(0.01)


def wait(record: Record) -> int:
    """The exit status of our own child (`run`): N, or 128+N for a signal, as a shell says."""
    pidfd = _pidfd(record)
    if pidfd < 0:
        return 0
    try:
        code = native.wait_exit(pidfd)
    finally:
        os.close(pidfd)
    if code is None:
        return 0
    return code if code >= 0 else 128 - code
