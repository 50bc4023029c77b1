"""Containers that outlive the process that started them (``isobox run -d``).

A container dies with its owner (container.py: PR_SET_PDEATHSIG), so a detached one gets
an owner that stays: the supervisor, ``python -m isobox.control.supervisor``.

- The caller (`run_detached`) starts the supervisor with ``start_new_session``, writes one
  JSON request (image, options, store) to its stdin and reads one JSON line back from its
  stdout: ``{"ok": true, "id": ...}`` once the container runs and its control socket
  listens, or ``{"ok": false, "error": CLASS, ...}`` (the isobox exception that stopped
  the start).
- The supervisor forks once at start (its parent exits at once, so nobody has to reap
  it), starts the `Container`, serves its control socket (server.py), writes a tty
  container's output to stdout.log, and on SIGTERM stops the container. When the
  container has exited it marks it ``kept`` (unless ``--rm``: then it removes it),
  answers the waiters, and exits: an exited container is only state on disk, as with
  Docker, and no process is left behind.

Every other process controls it as any container: control.py's `ContainerHandle`.
"""

from __future__ import annotations

import json
import os
import signal as _signal
import sys
import time
from typing import Any, List, Optional, Sequence, Union

from ..runtime.container import Container
from .client import ContainerHandle, ContainerInfo, StoreArg, error_doc, raise_error
from ..errors import ContainerError, IsoboxError
from ..images.image import Image
from ..runtime import tty
from .server import Server
from ..runtime.state import options_from_json, options_to_json, write_options
from ..images.store import Store


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
        [sys.executable, "-m", "isobox.control.supervisor"],
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


class _StopSignals:
    """SIGTERM and SIGINT noted (and waking the loop through a pipe) instead of ending the
    supervisor: installed before the container starts, so a stop asked for at any moment
    the container can be seen is a stop, never an owner dying with its status unknown."""

    def __init__(self) -> None:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.stopping: List[int] = []
        _signal.set_wakeup_fd(self.wake_w)
        for sig in (_signal.SIGTERM, _signal.SIGINT):
            _signal.signal(sig, lambda signum, frame: self.stopping.append(signum))
        _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)

    def close(self) -> None:
        _signal.set_wakeup_fd(-1)
        for fd in (self.wake_r, self.wake_w):
            os.close(fd)


def _supervise(container: Container, server: Server, stop_timeout: float, signals: _StopSignals) -> int:
    """Own the container until it exits: copy a terminal's output to stdout.log, stop it on
    SIGTERM/SIGINT, give up if the store disappears. Returns its exit status."""
    pidfd = os.pidfd_open(container.pid or 0)
    master = container.pty if container.pty is not None else -1
    log = container.log_writer() if master >= 0 else None  # a terminal's output: ours to log
    kill_at: Optional[float] = None

    def each_round(idle: bool) -> None:
        nonlocal kill_at
        if signals.stopping and kill_at is None:
            container.kill(container.stop_signal)
            kill_at = time.monotonic() + stop_timeout
        if kill_at is not None and time.monotonic() >= kill_at:
            container.kill(_signal.SIGKILL)
        if idle and not (container.dir / "lock").exists():
            container.kill(_signal.SIGKILL)  # the store was deleted under us

    try:
        tty.relay(master, pidfd, log.write if log is not None else (lambda data: None),
                  wake_fd=signals.wake_r, each_round=each_round, interval=1.0)
        return container.wait()
    finally:
        signals.close()
        os.close(pidfd)
        if log is not None:
            log.close()


def main() -> int:
    """``python -m isobox.control.supervisor``: read the request on stdin, report on stdout."""
    request = json.loads(sys.stdin.buffer.read())
    if os.fork():
        os._exit(0)  # the caller reaps this one at once; the container's owner lives on
    report = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    container: Optional[Container] = None
    signals = _StopSignals()
    try:
        store = Store.open(request["store"])
        with store.in_use():
            image = Image.get(request["image"], platform=request.get("platform"), store=store)
            options = options_from_json(request["options"])
            container = Container(image, request.get("command"), store=store, **options)
            container.start()
        write_options(container.dir, {"command": request.get("command"), **options},
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
        doc = error_doc(exc if isinstance(exc, IsoboxError) else ContainerError(f"supervisor: {exc!r}"))
        report.write(json.dumps(doc) + "\n")
        report.close()
        return 1
    log = os.open(container.dir / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.dup2(log, 2)
    os.close(log)
    os.dup2(devnull, 1)
    report.write(json.dumps({"ok": True, "id": container.id, "name": container.name}) + "\n")
    report.close()
    code = _supervise(container, server, float(request.get("stop_timeout", 10)), signals)
    server.finish(code)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
