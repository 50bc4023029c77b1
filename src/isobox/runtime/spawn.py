"""Starting children, process-wide: the thread that clones them, what a fork of the owning
process must let go of, the pipes a start hands over, and the fds a process may hold.

What is here is about the process, not one container (its threads, its forks, its fd
limit), hence module-level state; container.py uses it for every start and exec.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Callable, List, Optional, Tuple, TypeVar

from ..errors import ContainerError, SetupError
from ..host import native


# --- the spawning thread --------------------------------------------------------------------
#
# PR_SET_PDEATHSIG fires when the *thread* that cloned the child exits, not the process
# (prctl(2)).  A container started from a short-lived worker thread would die with it, so
# clones are made by one long-lived daemon thread.  A shared-memory clone (the usual one,
# spawn.c: ib_spawn_shared) keeps that thread asleep until the child execs, so it always
# goes there, and the calling thread does the parent's side meanwhile; the copying clones
# (init=True, exec's join) go there only from threads other than the main thread.
# This is process-wide by nature (it is about the process's threads), hence module-level.

_spawner_lock = threading.Lock()
_spawner: Optional["_Spawner"] = None


class _Spawner(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="isobox-spawner", daemon=True)
        self.requests: "list[Tuple[Callable[[], Any], threading.Event, list[Any]]]" = []
        self.cond = threading.Condition()

    def run(self) -> None:  # pragma: no cover - exercised through in_spawner
        while True:
            with self.cond:
                while not self.requests:
                    self.cond.wait()
                fn, done, box = self.requests.pop(0)
            try:
                box.append(fn())
            except BaseException as exc:
                box.append(exc)
            done.set()

    def submit(self, fn: Callable[[], Any]) -> Tuple[threading.Event, List[Any]]:
        done = threading.Event()
        box: List[Any] = []
        with self.cond:
            self.requests.append((fn, done, box))
            self.cond.notify()
        return done, box


T = TypeVar("T")


def _the_spawner() -> _Spawner:
    global _spawner
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():  # also after a fork
            _spawner = _Spawner()
            _spawner.start()
        return _spawner


def in_spawner(fn: Callable[[], T]) -> T:
    """Run fn (which clones) on a thread that lives as long as the process."""
    if threading.current_thread() is threading.main_thread():
        return fn()
    done, box = _the_spawner().submit(fn)
    done.wait()
    if isinstance(box[0], BaseException):
        raise box[0]
    result: T = box[0]
    return result


def on_spawner(fn: Callable[[], object]) -> None:
    """Run fn on the spawner thread without waiting for it: a shared-memory clone keeps
    that thread asleep until the child has exec'd, while this one releases the child."""
    _the_spawner().submit(fn)


# --- fork -------------------------------------------------------------------------------------
#
# An application may fork (multiprocessing, os.fork) while it owns containers, and while
# another of its threads starts one.  The copy owns none of them: its inherited handles
# must neither reap nor remove nor rewrite their state (only the owner can; its waitpid
# is the one that works), nor keep anything alive after the owner is gone (the lock that
# says "owned", a container's stdin).  The spawner thread and its lock do not exist in
# the copy: they are made anew on first use.  (The core's own registry of in-flight pipes
# is closed in the copy by its pthread_atfork handler, spawn.c.)

_started: "weakref.WeakSet[Any]" = weakref.WeakSet()


def disown_after_fork(container: Any) -> None:
    """Have ``container`` (a started `Container`) let go, in a forked copy of this
    process, of what only its owner may hold (its ``_disown``)."""
    _started.add(container)


def _after_fork_in_child() -> None:
    global _spawner_lock, _spawner
    _spawner_lock = threading.Lock()
    _spawner = None
    for c in list(_started):
        c._disown()


os.register_at_fork(after_in_child=_after_fork_in_child)


def spawn_child(spec: native.Spec) -> native.Child:
    if spec.init:
        # the init never execs: its clone cannot share our memory (spawn.c)
        return in_spawner(lambda: native.spawn(spec))
    return native.spawn_shared(spec, on_spawner)


def pipes() -> Tuple[int, int, int, int]:
    """Two pipes (read, write, read, write), registered with the core (spawn.c: ib_pipes)."""
    fds = native.ffi.new("int[4]")
    rc = native.lib.ib_pipes(fds)
    if rc < 0:
        raise SetupError("create the container's output pipes", -rc)
    return fds[0], fds[1], fds[2], fds[3]


# -- file descriptors ---------------------------------------------------------------------------

FDS_PER_CONTAINER = 6  # the owner's lock, a pidfd, two pipes and two log files (logs.py); +1 with ports (the forwarder's pidfd)
_fd_limit_raised = False


def raise_fd_limit() -> None:
    """Once per process, at its first container: the soft RLIMIT_NOFILE up to the hard
    one, as Go's runtime, nginx and systemd's advice do for programs that hold many fds
    (1024 soft allows ~170 running containers).  Not at import: a program that only
    parses references keeps its limits.  Its children (and containers) inherit the raised
    limit; one that still calls select() on fds above 1024 would need it lowered again."""
    global _fd_limit_raised
    if _fd_limit_raised:
        return
    _fd_limit_raised = True
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass


def fd_limit_error() -> ContainerError:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        held = len(os.listdir("/proc/self/fd"))
    except OSError:
        held = -1
    return ContainerError(
        f"too many open files: this process holds {held} of its RLIMIT_NOFILE of {soft} "
        f"(hard limit {hard}), and each running container holds {FDS_PER_CONTAINER}; raise the "
        "hard limit (ulimit -Hn, LimitNOFILE= in a systemd unit) or run fewer containers here")
