"""`isobox run`: a new container from an image (pulled if it is not stored), owned by this
process in the foreground (its output streamed or its terminal attached, our signals
turned into its stop) or by a supervisor with -d."""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from typing import Any, Dict, List, Optional

from ..control.owner import Stopper, own
from ..control.signals import NotedSignals
from ..errors import InvalidOption
from ..images.image import Image
from ..images.reference import Reference
from ..images.store import Store
from ..runtime import logread, logs, tty
from ..runtime.config import config_to_json
from ..runtime.container import Container
from ..runtime.mounts import Tmpfs, parse_volume_spec
from ..runtime.state import RunOptions
from .attach import copy_thread, set_winsize, tty_loop, write_all
from .environment import environment
from .format import ProgressBar, exit_status


def parse_tmpfs(text: str) -> Tmpfs:
    """Docker's --tmpfs DST[:OPTIONS]: size=, mode= (octal), exec/noexec; nosuid, nodev,
    rw are what isobox always does."""
    target, _, opts = text.partition(":")
    size: Optional[str] = None
    mode = 0o1777
    exec_ = False
    for opt in filter(None, opts.split(",")):
        key, _, value = opt.partition("=")
        if key == "size" and value:
            size = value
        elif key == "mode" and value:
            try:
                mode = int(value, 8)
            except ValueError:
                raise InvalidOption(f"invalid tmpfs mode {value!r}") from None
        elif key in ("exec", "noexec") and not value:
            exec_ = key == "exec"
        elif key in ("nosuid", "nodev", "rw") and not value:
            continue
        else:
            raise InvalidOption(f"unsupported tmpfs option {opt!r} (isobox knows size=, mode=, exec, noexec)")
    return Tmpfs(target, size=size, mode=mode, exec=exec_)


def _container_options(args: argparse.Namespace) -> Dict[str, Any]:
    """`Container` keyword arguments from run's flags (validated by Container itself)."""
    if args.network not in ("none", "host"):
        raise InvalidOption(f"--network {args.network}: isobox offers 'none' (loopback only) and 'host'")
    options: Dict[str, Any] = {
        "env": environment(args),
        "mounts": [parse_volume_spec(v) for v in args.volume] + [parse_tmpfs(t) for t in args.tmpfs],
        "network": args.network,
        "init": args.init,
        "read_only": args.read_only,
    }
    if args.publish:
        from ..net.ports import parse_publish

        options["ports"] = [b for spec in args.publish for b in parse_publish(spec)]
    if args.publish_all:
        options["publish_all"] = True
    for key in ("name", "workdir", "user", "hostname"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.entrypoint is not None:
        # Docker's --entrypoint is one executable, never split; "" clears the image's
        options["entrypoint"] = [args.entrypoint] if args.entrypoint else []
    for key in ("memory", "pids_limit", "cpus"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.device:
        options["devices"] = list(args.device)
    if args.log_opt:
        pairs = {}
        for opt in args.log_opt:
            key, sep, value = opt.partition("=")
            if not sep:
                raise InvalidOption(f"--log-opt {opt}: expected KEY=VALUE")
            pairs[key] = value
        policy = logs.LogPolicy.from_options(pairs)
        options["log_max_size"] = policy.max_size
        options["log_max_files"] = policy.max_files
    for opt in args.security_opt:
        if opt in ("seccomp=unconfined", "seccomp:unconfined"):
            options["seccomp"] = False
        else:
            raise InvalidOption(f"--security-opt {opt}: isobox supports seccomp=unconfined only")
    return options


def _image_for_run(reference: str, platform: Optional[str], store: Store) -> Image:
    """The stored image, else pulled with progress on stderr as `docker run` does. The
    registry client (and requests) is imported only when a pull is needed."""
    familiar = Reference.parse(reference).familiar
    pulling: List[bool] = []

    def missing() -> None:
        pulling.append(True)
        print(f"Unable to find image '{familiar}' locally", file=sys.stderr)

    bar = ProgressBar(f"Pulling {familiar}", sys.stderr)
    try:
        image = Image.pull(reference, if_missing=True, platform=platform, progress=bar,
                           on_pull=missing, store=store)
    finally:
        bar.close()
    if pulling:
        print(f"Digest: {image.digest}", file=sys.stderr)
        print(f"Status: Downloaded newer image for {familiar}", file=sys.stderr)
    return image


def _follow_logs(container: Container, pidfd: int, signals: NotedSignals, stopper: Stopper) -> None:
    """Stream the container's stdout and stderr logs to our stdout and stderr while it
    runs (each stream in order; between them, order is not kept, as with Docker), across
    the logs' rotations (logread.follow)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(signals.wake_r, select.POLLIN)

    def done() -> bool:
        for sig in signals.take():
            if sig != signal.SIGWINCH:
                stopper(sig)
        stopper.tick()
        # reaping also waits for the log pump to write the last bytes (Container._reap)
        return bool(container.status != "running")

    def wait(seconds: float) -> None:  # until new output is likely, or the exit, or a signal
        poller.poll(seconds * 1000)

    ok = {"stdout": True, "stderr": True}
    out = {"stdout": 1, "stderr": 2}
    for stream, data in logread.follow(container.dir, ("stdout", "stderr"), done, 0.02, wait):
        ok[stream] = ok[stream] and write_all(out[stream], data)


def run(args: argparse.Namespace) -> int:
    store = Store.open(args.root)
    options = _container_options(args)
    command = args.command or None
    if args.interactive and args.tty and not os.isatty(0):
        raise InvalidOption("the input device is not a TTY (-it needs a terminal on stdin)")
    if args.detach:
        return _run_detached(args, store, options, command)
    image = _image_for_run(args.image, args.platform, store)
    stdin: Any = None
    if args.interactive and not args.tty:
        # a terminal is never handed to the container (it could read what is typed after
        # it ends): we copy from it into a pipe; a pipe or file is passed as it is
        stdin = True if os.isatty(0) else 0
    container = Container(image, command, tty=args.tty, tty_size=tty.terminal_size() if args.tty else None,
                          stdin=stdin, store=store, **options)
    record = RunOptions(config=config_to_json(container.config), image=args.image, platform=args.platform,
                        stdin=bool(args.interactive), auto_remove=args.rm, detached=False,
                        stop_timeout=args.stop_timeout)
    # Ctrl-C, SIGTERM and SIGHUP take the stop path from the moment the container can be
    # seen (`ps` lists it once it starts): noted from before the start (owner.py), acted
    # on in _attach; SIGWINCH resizes its terminal
    signals = NotedSignals((signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH))
    code = own(container, record, signals, lambda c: _attach(c, args, signals))
    return exit_status(code)


def _attach(container: Container, args: argparse.Namespace, signals: NotedSignals) -> int:
    stopper = Stopper(container, args.stop_timeout)
    assert container.pid is not None
    pidfd = os.pidfd_open(container.pid)
    try:
        if container.stdin is not None:
            copy_thread(0, container.stdin.fileno(), close_dst=False)
        if args.tty:
            assert container.pty is not None
            set_winsize(container.pty, tty.terminal_size())
            with container.log_writer() as log, tty.RawMode(0, args.interactive and os.isatty(0)):
                tty_loop(container.pty, args.interactive, pidfd, signals, stopper, log.write)
        else:
            _follow_logs(container, pidfd, signals, stopper)
        code = int(container.wait())
        for loss in container.log_lost:
            print(f"isobox: {loss}", file=sys.stderr)
        return code
    finally:
        os.close(pidfd)


def _run_detached(args: argparse.Namespace, store: Store, options: Dict[str, Any],
                  command: Optional[List[str]]) -> int:
    # imported here: the supervisor's module brings the control socket's client (and
    # socket), which a foreground run never needs
    from ..control.supervisor import run_detached

    _image_for_run(args.image, args.platform, store)  # pull here, with progress
    handle = run_detached(args.image, command,
                          platform=args.platform, auto_remove=args.rm,
                          stop_timeout=args.stop_timeout, store=store, tty=args.tty,
                          stdin=bool(args.interactive), **options)
    print(handle.id)
    return 0

