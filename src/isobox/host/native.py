"""The boundary to the C core: plain Python data in, `SetupError` out.

Python prepares everything (paths, the mount plan, ids, capabilities, argv, env); this
module only packs it into the C structs of spawn.h, keeps the buffers alive while the
child is set up, and turns a failure record (step, errno) into an exception that names
the step.
"""

from __future__ import annotations

import errno as _errno
import os
import select
import struct
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple

import attrs

from ..errors import CommandNotExecutable, CommandNotFound, ContainerError, ExitStatusLost, HostNotSupported, SetupError

try:
    from .._native._core import ffi as ffi, lib as lib
except ImportError as exc:  # pragma: no cover - a broken install
    raise HostNotSupported(
        f"isobox's native core is not built ({exc}); reinstall with a C compiler: pip install ."
    ) from exc

# CLONE_NEW* (linux/sched.h)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_STRICTATIME = 1 << 24

FAIL_RECORD = struct.Struct("=Ii")

# wait(2): also wait for "clone children", whose exit signal is not SIGCHLD.  The children
# the core starts have none (spawn.c: start_child), so that an application's own reaping
# (SIGCHLD ignored, a waitpid(-1) handler, asyncio's child watchers) never takes their
# exit status: only a wait with __WALL (or __WCLONE) sees them.  execve gives a process
# SIGCHLD again (the kernel's de_thread), so a container's command is visible to such
# reaping: see wait_exit.
WALL = 0x40000000

# ioctl(pidfd, PIDFD_GET_INFO) with PIDFD_INFO_EXIT (Linux 6.15): the exit status of a
# process already reaped, by whoever reaped it, kept for the holders of a pidfd of it.
# _IOWR(0xFF, 11, struct pidfd_info) for the first version of the struct (64 bytes: mask,
# cgroupid, 11 ids, exit_code at offset 60).
_PIDFD_GET_INFO = (3 << 30) | (64 << 16) | (0xFF << 8) | 11
_PIDFD_INFO_EXIT = 1 << 3


def wait_exit(pidfd: int, block: bool = True) -> Optional[int]:
    """The exit status of our child behind ``pidfd`` (N, or -N for a death by signal N),
    reaping it; None when it still runs (``block=False``).  By pidfd, never by pid: after
    an application reaped our child its pid may be another process's.  When the
    application reaped it first, the kernel's copy is read from the pidfd (Linux >= 6.15);
    otherwise ExitStatusLost says what happened."""
    try:
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | WALL | (0 if block else os.WNOHANG))
    except ChildProcessError:
        # Another wait took it.  The kernel files the status for pidfds when it releases
        # the task, a moment after the other waiter claimed it (wait_task_zombie marks it
        # EXIT_DEAD first, then calls release_task): look again for a while.
        status = None
        for delay in (0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1):
            time.sleep(delay)
            status = _reaped_status(pidfd)
            if status is not None:
                break
        if status is None:
            raise ExitStatusLost(
                "its exit status was collected by another wait in this process (SIGCHLD "
                "ignored, or a handler calling waitpid(-1)), and this kernel does not keep "
                "it for pidfds (Linux >= 6.15 does): restore signal.SIG_DFL for SIGCHLD, or "
                "reap only your own children's pids") from None
        return os.waitstatus_to_exitcode(status)
    if result is None:
        return None
    if result.si_code == os.CLD_EXITED:
        return result.si_status
    return -result.si_status  # CLD_KILLED, CLD_DUMPED


def has_exited(pidfd: int) -> bool:
    """Whether the process behind pidfd ended (readable pidfd), without reaping it."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _reaped_status(pidfd: int) -> Optional[int]:
    import fcntl

    buf = bytearray(64)
    struct.pack_into("=Q", buf, 0, _PIDFD_INFO_EXIT)
    try:
        fcntl.ioctl(pidfd, _PIDFD_GET_INFO, buf)
    except OSError:
        return None  # Linux < 6.13 (no PIDFD_GET_INFO), or not reaped yet
    mask, = struct.unpack_from("=Q", buf, 0)
    if not mask & _PIDFD_INFO_EXIT:
        return None
    status: int = struct.unpack_from("=i", buf, 60)[0]
    return status

def step_name(step: int) -> str:
    """A fixed step's name, as the user reads it in an error ("set hostname"): from its
    entry in spawn.h's step lists, the one place that names them."""
    name = lib.ib_step_name(step)
    return ffi.string(name).decode() if name != ffi.NULL else f"step {step}"


# The plan's records (Op, Spec, and rootfs.RootfsPlan, mounts.MountPlan) are built once per
# start and handed to C; they are compared by identity (eq=False): an __eq__ and __hash__
# over every field would buy nothing, and attrs generating them at import cost ~1 ms of
# every `isobox run`.
@attrs.frozen(eq=False)
class Op:
    """One step of the mount plan; `name` is how an error names it ("mount /proc")."""

    kind: int
    name: str
    target: str
    source: Optional[str] = None
    fstype: Optional[str] = None
    flags: int = 0
    data: Optional[str] = None
    strv: Tuple[str, ...] = ()
    upper: Optional[str] = None
    work: Optional[str] = None
    mode: int = 0
    dev: int = 0
    optional: bool = False
    userxattr: bool = False
    ref: int = -1  # IB_OP_ATTACH: index of its IB_OP_OPEN_TREE op
    chmod: bool = False  # IB_OP_CHOWN_IN: restore the mode after chown
    in_place: bool = False  # IB_OP_REMOUNT: the target is already a mount point
    volatile: bool = False  # IB_OP_OVERLAY: never sync the upper layer


@attrs.frozen(eq=False)
class Spec:
    """Everything the child does, as plain values (see struct ib_spec)."""

    clone_flags: int
    ops: Tuple[Op, ...] = ()
    hostname: Optional[str] = None
    loopback_up: bool = False
    rlimits: Tuple[Tuple[int, int, int], ...] = ()
    set_ids: bool = True
    set_groups: bool = True
    uid: int = 0
    gid: int = 0
    groups: Tuple[int, ...] = ()
    caps: Tuple[int, ...] = ()
    no_new_privs: bool = True
    stdio: Tuple[int, int, int] = (-1, -1, -1)
    workdir: Optional[str] = None
    argv: Tuple[str, ...] = ()
    env: Tuple[str, ...] = ()
    path: str = ""
    init: bool = False
    console_sock: int = -1
    tty_size: Tuple[int, int] = (24, 80)  # rows, columns of a new terminal
    seccomp: Optional[bytes] = None  # packed struct sock_filter[] (seccomp.py)
    root_sock: int = -1  # join only: send the container's root instead of running argv
    cgroup_procs: Tuple[int, ...] = ()  # open files that move their writer into a cgroup (cgroups.py)
    pdeathsig: bool = True  # die with the thread that started it; False: outlive it (isobox-runtime)
    umask: int = 0o022
    exec_fifo_dir: int = -1  # with exec_fifo: wait until `start` opens that FIFO (oci/)
    exec_fifo: Optional[str] = None
    # the spec's capability sets as masks (oci/), or None: the library's (Docker's) rule
    cap_sets: Optional[Tuple[int, int, int, int]] = None  # effective, permitted, inheritable, ambient
    userns_root: bool = False  # become the new user namespace's root before the plan (oci/)


class Child:
    """A started child waiting for `release`; owns its pidfd and pipe ends. A handle on
    a process, not a value: a plain class (building an attrs class is ~0.5 ms of every
    `isobox run`)."""

    __slots__ = ("pid", "pidfd", "sync_fd", "err_fd", "spec", "keepalive")

    def __init__(self, pid: int, pidfd: int, sync_fd: int, err_fd: int, spec: Spec,
                 keepalive: List[Any]) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.sync_fd = sync_fd
        self.err_fd = err_fd
        self.spec = spec
        self.keepalive = keepalive

    def release(self) -> None:
        """Let the child go (id maps are written) and wait until it execs or fails.

        The sync pipe stays open until the child has exec'd: the child checks it after
        re-arming its parent-death signal (see spawn.c)."""
        try:
            os.write(self.sync_fd, b"G")
            record = _read_record(self.err_fd)
        finally:
            self.abandon()
        if record is not None:
            raise failure(self.spec, *record)

    def release_to_created(self) -> None:
        """Let a child with an exec fifo go and wait until it reports that it waits for
        `start` (spawn.c: IB_STEP_CREATED); our pipe ends are closed then, and the child
        no longer depends on this process."""
        try:
            os.write(self.sync_fd, b"G")
            record = _read_record(self.err_fd)
        finally:
            self.abandon()
        if record is None:
            raise SetupError("report created", _errno.ESRCH, "the child exited before it was set up")
        if record[0] != lib.IB_STEP_CREATED:
            raise failure(self.spec, *record)

    def abandon(self) -> None:
        """Close our ends without releasing: the child sees EOF and exits.  They are the
        core's registered fds of a start in flight (spawn.c: ib_close): in a process forked
        meanwhile they were closed already, and are not closed twice."""
        for fd in (self.sync_fd, self.err_fd):
            if fd >= 0:
                lib.ib_close(fd)
        self.sync_fd = self.err_fd = -1
        self.keepalive.clear()


def failure(spec: Spec, step: int, err: int) -> SetupError:
    if step >= lib.IB_STEP_PLAN:
        index = step - lib.IB_STEP_PLAN
        name = spec.ops[index].name if index < len(spec.ops) else f"plan step {index}"
        return SetupError(name, err)
    if step == lib.IB_STEP_EXEC:
        command = spec.argv[0] if spec.argv else "?"
        if err == _errno.ENOENT:
            return CommandNotFound(f"exec {command}", err, "not found in the container")
        if err in (_errno.EACCES, _errno.ENOEXEC, _errno.EPERM):
            return CommandNotExecutable(f"exec {command}", err)
        return SetupError(f"exec {command}", err)
    if step == lib.IB_STEP_CHDIR:
        detail = "it resolves outside the container" if err == _errno.EXDEV else None
        return SetupError(f"chdir to the working directory {spec.workdir}", err, detail)
    if step == lib.IB_STEP_EXEC_CHECK:
        command = spec.argv[0] if spec.argv else "?"
        detail = ("magic links such as /proc/self/exe or /proc/self/fd/N are refused, also "
                  "as a script's interpreter") if err == _errno.ELOOP else None
        return SetupError(f"resolve the command {command} inside the container", err, detail)
    return SetupError(step_name(step), err)


def _argv_area() -> Tuple[int, int]:
    """Where our command line lives (proc(5): /proc/self/stat fields 48 and 49)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[45]), int(fields[46])  # fields 48, 49 counted from pid as 1
    except (OSError, IndexError, ValueError):
        return 0, 0


def _cstr(keep: List[Any], value: Optional[str]) -> Any:
    if value is None:
        return ffi.NULL
    buf = ffi.new("char[]", os.fsencode(value))
    keep.append(buf)
    return buf


def _cstrv(keep: List[Any], values: Sequence[str]) -> Any:
    arr = ffi.new("const char *[]", len(values) + 1)
    keep.append(arr)
    for i, v in enumerate(values):
        arr[i] = _cstr(keep, v)
    arr[len(values)] = ffi.NULL
    return arr


def _pack(spec: Spec) -> Tuple[Any, List[Any]]:
    """The C struct for spec, and the buffers that must outlive the child's setup."""
    keep: List[Any] = []
    c = ffi.new("struct ib_spec *")
    keep.append(c)
    c.clone_flags = spec.clone_flags
    ops = ffi.new("struct ib_op[]", max(len(spec.ops), 1))
    keep.append(ops)
    for i, op in enumerate(spec.ops):
        o = ops[i]
        o.kind = op.kind
        o.opt = ((lib.IB_OPT_OPTIONAL if op.optional else 0)
                 | (lib.IB_OPT_USERXATTR if op.userxattr else 0)
                 | (lib.IB_OPT_CHMOD if op.chmod else 0)
                 | (lib.IB_OPT_IN_PLACE if op.in_place else 0)
                 | (lib.IB_OPT_VOLATILE if op.volatile else 0))
        o.source = _cstr(keep, op.source)
        o.target = _cstr(keep, op.target)
        o.fstype = _cstr(keep, op.fstype)
        o.flags = op.flags
        o.data = _cstr(keep, op.data)
        o.strv = _cstrv(keep, op.strv) if op.strv else ffi.NULL
        o.upper = _cstr(keep, op.upper)
        o.work = _cstr(keep, op.work)
        o.mode = op.mode
        o.dev = op.dev
        o.ref = op.ref
    c.ops = ops
    c.n_ops = len(spec.ops)
    c.hostname = _cstr(keep, spec.hostname)
    c.loopback_up = int(spec.loopback_up)
    rl = ffi.new("struct ib_rlimit[]", max(len(spec.rlimits), 1))
    keep.append(rl)
    for i, (res, soft, hard) in enumerate(spec.rlimits):
        rl[i].resource, rl[i].soft, rl[i].hard = res, soft, hard
    c.rlimits = rl
    c.n_rlimits = len(spec.rlimits)
    c.set_ids = int(spec.set_ids)
    c.set_groups = int(spec.set_groups)
    c.uid, c.gid = spec.uid, spec.gid
    groups = ffi.new("uint32_t[]", list(spec.groups) or [0])
    keep.append(groups)
    c.groups = groups
    c.n_groups = len(spec.groups)
    caps = ffi.new("int[]", list(spec.caps) or [0])
    keep.append(caps)
    c.caps = caps
    c.n_caps = len(spec.caps)
    c.no_new_privs = int(spec.no_new_privs)
    c.stdio = list(spec.stdio)
    c.workdir = _cstr(keep, spec.workdir)
    c.file = _cstr(keep, spec.argv[0]) if spec.argv else ffi.NULL
    c.argv = _cstrv(keep, spec.argv)
    c.envp = _cstrv(keep, spec.env)
    c.path = _cstr(keep, spec.path)
    c.init = int(spec.init)
    c.console_sock = spec.console_sock
    c.tty_rows, c.tty_cols = spec.tty_size
    c.root_sock = spec.root_sock
    procs = ffi.new("int[]", list(spec.cgroup_procs) or [-1])
    keep.append(procs)
    c.cgroup_procs = procs
    c.n_cgroup_procs = len(spec.cgroup_procs)
    if spec.seccomp:
        filt = ffi.new("char[]", spec.seccomp)
        keep.append(filt)
        c.seccomp_filter = filt
        c.seccomp_len = len(spec.seccomp) // 8
    if spec.init:
        c.argv_start, c.argv_end = _argv_area()
    c.pdeathsig = int(spec.pdeathsig)
    c.umask = spec.umask
    c.exec_fifo_dir = spec.exec_fifo_dir
    c.exec_fifo = _cstr(keep, spec.exec_fifo)
    c.userns_root = int(spec.userns_root)
    if spec.cap_sets is not None:
        c.cap_sets = 1
        c.cap_effective, c.cap_permitted, c.cap_inheritable, c.cap_ambient = spec.cap_sets
    return c, keep


def spawn(spec: Spec) -> Child:
    """Clone the child; it waits for `Child.release`. Raises SetupError for clone itself."""
    c, keep = _pack(spec)
    out = ffi.new("struct ib_child *")
    rc = lib.ib_spawn(c, out)
    if rc < 0:
        raise SetupError("clone", -rc, _clone_advice(-rc, spec.clone_flags))
    return Child(out.pid, out.pidfd, out.sync_fd, out.err_fd, spec, keep)


def spawn_shared(spec: Spec, elsewhere: Callable[[Callable[[], object]], None]) -> Child:
    """Clone the child in our own memory (spawn.c: ib_spawn_shared, the fast path); it
    waits for `Child.release`.  ``elsewhere`` runs the clone on another, long-lived thread,
    which sleeps until the child has exec'd; this thread does the parent's side."""
    c, keep = _pack(spec)
    out = ffi.new("struct ib_child *")
    pipes = ffi.new("int[4]")
    rc = lib.ib_pipes(pipes)  # registered: a fork meanwhile does not keep them (spawn.c)
    if rc < 0:
        raise SetupError("create the pipes", -rc)
    sync_r, sync_w, err_r, err_w = pipes[0], pipes[1], pipes[2], pipes[3]

    def clone() -> object:
        # holds the spec's buffers until the child no longer reads them; closes sync_r
        # and err_w when it returns
        return lib.ib_spawn_shared(c, sync_r, err_w, sync_w, err_r, out), keep

    try:
        elsewhere(clone)
    except BaseException:
        for fd in (sync_r, sync_w, err_r, err_w):
            lib.ib_close(fd)
        raise
    try:
        record = _read_record(err_r)
        if record is None:
            raise SetupError("clone", _errno.ESRCH, "the child died before it was set up")
        if record[0] == lib.IB_STEP_CLONE:
            raise SetupError("clone", record[1], _clone_advice(record[1], spec.clone_flags))
        if record[0] != lib.IB_STEP_READY:
            raise failure(spec, *record)
        pid = out.pid
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # Linux < 5.3
            pidfd = -1
    except BaseException:
        lib.ib_close(sync_w)  # the child sees EOF and exits
        lib.ib_close(err_r)
        raise
    return Child(pid, pidfd, sync_w, err_r, spec, keep)


# The order namespaces are joined in: user first, since it grants the rights to join the
# others; pid last (it only affects children, and the helper forks right after).
NAMESPACE_ORDER = (("user", CLONE_NEWUSER), ("mnt", CLONE_NEWNS), ("uts", CLONE_NEWUTS),
                   ("ipc", CLONE_NEWIPC), ("net", CLONE_NEWNET), ("cgroup", CLONE_NEWCGROUP),
                   ("pid", CLONE_NEWPID))


def open_namespaces(pid: int, flags: int) -> Tuple[int, ...]:
    """Fds of the process's namespaces named by flags, in joining order."""
    fds: List[int] = []
    try:
        for name, flag in NAMESPACE_ORDER:
            if flags & flag:
                fds.append(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        for fd in fds:
            os.close(fd)
        raise
    return tuple(fds)


def _start_join(spec: Spec, ns_fds: Sequence[int]) -> Child:
    """The join helper (spawn.c: join_main), waiting for its go byte."""
    c, keep = _pack(spec)
    out = ffi.new("struct ib_child *")
    fds = ffi.new("int[]", list(ns_fds) or [-1])
    keep.append(fds)
    rc = lib.ib_join(c, fds, len(ns_fds), out)
    if rc < 0:
        raise SetupError("clone", -rc)
    return Child(out.pid, -1, out.sync_fd, out.err_fd, spec, keep)


def join(spec: Spec, ns_fds: Sequence[int]) -> Tuple[int, int]:
    """Start a process inside the namespaces behind ns_fds (see open_namespaces).

    Returns the joined process's (pid, pidfd) once it has exec'd (our child: wait for it
    with wait_exit); raises SetupError otherwise."""
    helper = _start_join(spec, ns_fds)
    pid = pidfd = -1
    try:
        os.write(helper.sync_fd, b"G")
        first = _read_record(helper.err_fd)
        if first is None:
            raise SetupError("join the container", _errno.ESRCH, "the helper exited early")
        step, value = first
        if step != lib.IB_STEP_JOINED:
            raise failure(spec, step, value)
        pid = value
        pidfd = os.pidfd_open(pid)  # while it waits for its own go byte (spawn.c)
        os.write(helper.sync_fd, b"G")
        rest = _read_record(helper.err_fd)
        if rest is not None:
            raise failure(spec, *rest)
    except BaseException:
        if pidfd >= 0:
            try:
                wait_exit(pidfd)
            except ContainerError:
                pass
            os.close(pidfd)
        elif pid > 0:
            try:
                os.waitpid(pid, WALL)
            except ChildProcessError:
                pass
        raise
    finally:
        helper.abandon()
        os.waitpid(helper.pid, WALL)
    return pid, pidfd


def forward(ns_fds: Sequence[int], pidfd: int, ports: Sequence[Tuple[int, int, int]],
            udp_idle_ms: int, drain_ms: int) -> Child:
    """Start the forwarder of published ports (forward.c): ``ports`` are (host socket fd,
    IB_FWD_TCP or IB_FWD_UDP, the container's port); it joins the namespaces behind
    ``ns_fds`` (user first, then net) and serves until the process behind ``pidfd`` exits.
    It waits for `Child.release`, which raises its failure as a SetupError."""
    keep: List[Any] = []
    c = ffi.new("struct ib_fwd_spec *")
    keep.append(c)
    fds = ffi.new("int[]", list(ns_fds) or [-1])
    keep.append(fds)
    c.ns_fds, c.n_ns_fds, c.pidfd = fds, len(ns_fds), pidfd
    table = ffi.new("struct ib_fwd_port[]", max(len(ports), 1))
    keep.append(table)
    for i, (fd, proto, port) in enumerate(ports):
        table[i].fd, table[i].proto, table[i].port = fd, proto, port
    c.ports, c.n_ports = table, len(ports)
    c.udp_idle_ms, c.drain_ms = udp_idle_ms, drain_ms
    out = ffi.new("struct ib_fwd_child *")
    rc = lib.ib_forward_start(c, out)
    if rc < 0:
        raise SetupError("clone the forwarder of published ports", -rc)
    return Child(out.pid, out.pidfd, out.sync_fd, out.err_fd, Spec(clone_flags=0), keep)


def container_root(ns_fds: Sequence[int]) -> int:
    """An O_PATH fd of the container's root directory as its processes see it (with its
    mounts), for copies into and out of it; resolve below it with RESOLVE_IN_ROOT."""
    import socket

    parent, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        helper = _start_join(Spec(clone_flags=0, set_ids=False, root_sock=child_sock.fileno()), ns_fds)
        try:
            helper.release()
        finally:
            os.waitpid(helper.pid, WALL)
        child_sock.close()
        _, received, _, _ = socket.recv_fds(parent, 1, 1)
        if not received:
            raise SetupError("send the container's root directory", _errno.EPROTO)
        os.set_inheritable(received[0], False)
        return received[0]
    finally:
        parent.close()
        if child_sock.fileno() >= 0:
            child_sock.close()


def _read_record(fd: int) -> Optional[Tuple[int, int]]:
    data = b""
    while len(data) < FAIL_RECORD.size:
        chunk = os.read(fd, FAIL_RECORD.size - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) == FAIL_RECORD.size:
        step, err = FAIL_RECORD.unpack(data)
        return step, err
    if data:
        raise SetupError("read the child's status", _errno.EPROTO)
    return None


def _clone_advice(err: int, flags: int) -> Optional[str]:
    """EPERM/ENOSPC from clone usually mean a host knob: name it (STYLE rule 9)."""
    if not flags & CLONE_NEWUSER:
        return None
    if err in (_errno.EPERM, _errno.EACCES):
        for knob, bad in (
            ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
            ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1"),
        ):
            try:
                with open(knob) as f:
                    if f.read().strip() == bad:
                        return f"user namespaces are disabled by {knob}; set it to {1 - int(bad)}"
            except OSError:
                pass
        return "user namespaces are not allowed for this user on this host"
    if err == _errno.ENOSPC:
        return "the user namespace limit is reached: see /proc/sys/user/max_user_namespaces"
    return None
