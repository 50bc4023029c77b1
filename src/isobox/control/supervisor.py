"""Containers that outlive the process that started them (``isobox run -d``).

A container dies with its owner (container.py: PR_SET_PDEATHSIG), so a detached one gets
an owner that stays: the supervisor, ``python -m isobox.control.supervisor``.

- The caller (`run_detached`) checks the options (`ContainerConfig.from_options`: a bad one
  fails there), starts the supervisor with ``start_new_session``, writes one JSON request
  (the image, the config in its one JSON form, config.py, the store) to its stdin and
  reads one JSON line back from its
  stdout: ``{"ok": true, "id": ...}`` once the container runs and its control socket
  listens, or ``{"ok": false, "error": CLASS, ...}`` (the isobox exception that stopped
  the start).
- The supervisor forks once at start (its parent exits at once, so nobody has to reap
  it) and owns the `Container` as the isobox command owns a foreground one (owner.py:
  start, record, serve its control socket, finish), writing a tty container's output to
  stdout.log and stopping the container on SIGTERM. When the container has exited it is
  kept (unless ``--rm``: then removed), the waiters are answered, and the supervisor
  exits: an exited container is only state on disk, as with Docker, and no process is
  left behind.

Every other process controls it as any container: control.py's `ContainerHandle`.
"""

from __future__ import annotations

import json
import os
import signal as _signal
import sys
from typing import Any, List, Optional, Sequence, Union

from ..errors import ContainerError, IsoboxError
from ..images.image import Image
from ..images.store import Store
from ..runtime import tty
from ..runtime.config import ContainerConfig, config_from_json, config_to_json
from ..runtime.container import Container
from ..runtime.state import RunOptions
from .client import ContainerHandle, ContainerInfo, StoreArg, error_doc, raise_error
from .owner import Stopper, own
from .signals import NotedSignals


# -- starting one (the caller's side) --------------------------------------------------------------


def run_detached(
    image: str,
    command: Union[str, Sequence[str], None] = None,
    *,
    platform: Optional[str] = None,
    auto_remove: bool = False,
    stop_timeout: float = 10,
    store: StoreArg = None,
    stdin: bool = False,
    **options: Any,
) -> ContainerHandle:
    """Start a container from a stored image (pull it first) that outlives this process,
    owned by a supervisor process (`isobox run -d`). Options are `Container`'s, except
    ``stdin`` (True keeps an empty stdin open, as ``docker run -di``). A bad option raises
    here before anything starts; setup failures are raised here as the same isobox
    exceptions `Container.start` raises."""
    st = Store.open(store)
    config = ContainerConfig.from_options(command, **options)
    request = {
        "store": str(st.root),
        "image": image,
        "platform": platform,
        "config": config_to_json(config),
        "stdin": bool(stdin),
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


def _supervise(container: Container, signals: NotedSignals, stop_timeout: float) -> int:
    """Attend to the container until it exits: copy a terminal's output to stdout.log, stop
    it on SIGTERM/SIGINT, give up if the store disappears. Returns its exit status."""
    pidfd = os.pidfd_open(container.pid or 0)
    master = container.pty if container.pty is not None else -1
    log = container.log_writer() if master >= 0 else None  # a terminal's output: ours to log
    stopper = Stopper(container, stop_timeout)

    def each_round(idle: bool) -> None:
        if signals.take() and not stopper.stopping:
            stopper(_signal.SIGTERM)  # later signals change nothing: the timeout runs
        stopper.tick()
        if idle and not (container.dir / "lock").exists():
            container.kill(_signal.SIGKILL)  # the store was deleted under us

    try:
        tty.relay(master, pidfd, log.write if log is not None else (lambda data: None),
                  wake_fd=signals.wake_r, each_round=each_round, interval=1.0)
        return container.wait()
    finally:
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
    reported: List[bool] = []

    def fail(exc: BaseException) -> int:
        doc = error_doc(exc if isinstance(exc, IsoboxError) else ContainerError(f"supervisor: {exc!r}"))
        report.write(json.dumps(doc) + "\n")
        report.close()
        return 1

    try:
        store = Store.open(request["store"])
        image = Image.get(request["image"], platform=request.get("platform"), store=store)
        config = config_from_json(request["config"])
        container = Container.from_config(image, config, stdin=True if request.get("stdin") else None, store=store)
        stop_timeout = float(request.get("stop_timeout", 10))
        options = RunOptions(config=config_to_json(config), image=request["image"], platform=request.get("platform"),
                             stdin=bool(request.get("stdin")), auto_remove=bool(request.get("auto_remove")),
                             detached=True, stop_timeout=stop_timeout, supervisor_pid=os.getpid())
    except BaseException as exc:
        return fail(exc)

    def serving() -> None:
        if container.pty is not None:
            container.resize(24, 80)
        log = os.open(container.dir / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                      0o600)
        os.dup2(log, 2)
        os.close(log)
        os.dup2(devnull, 1)
        report.write(json.dumps({"ok": True, "id": container.id, "name": container.name}) + "\n")
        report.close()
        reported.append(True)

    # SIGTERM and SIGINT stop the container from before it starts (owner.py); SIGHUP is
    # not ours to take: the supervisor has no terminal (its own session)
    signals = NotedSignals((_signal.SIGTERM, _signal.SIGINT), ignored=(_signal.SIGHUP,))
    try:
        own(container, options, signals, lambda c: _supervise(c, signals, stop_timeout), serving=serving)
    except BaseException as exc:
        if not reported:
            return fail(exc)
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
