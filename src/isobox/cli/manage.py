"""`isobox ps`, `logs`, `exec`, `stop`, `kill` and `rm`: containers that run (or ran) in
another process, reached through `isobox.control.client` (their state on disk and their
control sockets). None of these commands imports the container machinery: `exec` is timed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any, Callable

from ..control.client import ContainerHandle, containers, get_container
from ..errors import ContainerError, InvalidOption, IsoboxError
from ..images.store import Store
from . import EXIT_ERROR
from ..control.signals import NotedSignals
from ..runtime.spelling import signal_number
from .attach import set_winsize, tty_loop, write_all
from .environment import environment
from .format import exit_status, familiar, human_duration, table


def _status_text(info: Any, now: float) -> str:
    if info.status == "running":
        return "Up " + human_duration(now - info.created)
    if info.status == "exited":
        code = exit_status(info.exit_code) if info.exit_code is not None else "?"
        return f"Exited ({code}) {human_duration(now - (info.finished or now))} ago"
    return str(info.status).capitalize()


def ps(args: argparse.Namespace) -> int:
    found = containers(all=args.all, store=Store.open(args.root))
    if args.quiet:
        for info in found:
            print(info.id[:12])
        return 0
    now = time.time()
    rows = [["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]]
    for info in found:
        command = " ".join(info.command)
        if len(command) > 20:
            utf8 = (sys.stdout.encoding or "").lower().replace("-", "") == "utf8"
            command = command[:19] + "…" if utf8 else command[:17] + "..."
        image = (info.options.image if info.options else None) or familiar(info.image, info.image_digest)
        rows.append([info.id[:12], image, f'"{command}"',
                     human_duration(now - info.created) + " ago", _status_text(info, now),
                     info.ports.show() if info.ports and info.running else "", info.name])
    table(rows, sys.stdout)
    return 0


def port(args: argparse.Namespace) -> int:
    """`docker port`: "6379/tcp -> 127.0.0.1:32768" per published port, or with PORT
    the host addresses of that one."""
    handle = get_container(args.container, Store.open(args.root))
    info = handle.info()
    bindings = info.ports.bindings if info.ports and info.running else ()
    if args.port is not None:
        from ..net.ports import split_container_port

        first, _, proto = split_container_port(args.port)
        bindings = tuple(b for b in bindings if (b.container_port, b.protocol) == (first, proto))
        if not bindings:
            raise InvalidOption(f"no public port '{first}/{proto}' published for {handle.name}")
    for b in bindings:
        host = f"[{b.host_ip}]" if b.family_v6 else b.host_ip
        print(f"{host}:{b.host_port}" if args.port is not None else f"{b.key} -> {host}:{b.host_port}")
    return 0


def logs(args: argparse.Namespace) -> int:
    handle = get_container(args.container, Store.open(args.root))
    if args.follow:
        for name, chunk in handle.follow_logs():
            write_all(1 if name == "stdout" else 2, chunk)
        return 0
    write_all(1, handle.logs("stdout"))
    write_all(2, handle.logs("stderr"))
    return 0


def _each(args: argparse.Namespace, act: Callable[[Any], None]) -> int:
    """Do ``act`` to each named container, printing its name; report failures, go on."""
    store = Store.open(args.root)
    status = 0
    for ref in args.containers:
        try:
            act(get_container(ref, store))
        except IsoboxError as exc:
            print(f"isobox: {exc}", file=sys.stderr)
            status = EXIT_ERROR
            continue
        print(ref)
    return status


def stop(args: argparse.Namespace) -> int:
    return _each(args, lambda h: h.stop(args.timeout))


def kill(args: argparse.Namespace) -> int:
    def act(handle: ContainerHandle) -> None:
        signal_number(args.signal)
        # the library leaves a container that is not running alone; `docker kill` says so
        if handle.status != "running":
            raise ContainerError(f"container {handle.name} is not running")
        handle.kill(args.signal)

    return _each(args, act)


def rm(args: argparse.Namespace) -> int:
    return _each(args, lambda h: h.remove(force=args.force))


def exec_command(args: argparse.Namespace) -> int:
    if not args.command:
        raise InvalidOption("exec needs a command")
    if args.interactive and args.tty and not os.isatty(0):
        raise InvalidOption("the input device is not a TTY (-it needs a terminal on stdin)")
    handle = get_container(args.container, Store.open(args.root))
    env = environment(argparse.Namespace(env=args.env, env_file=[]))
    if args.tty:
        from ..runtime import tty  # termios & co.: only an exec with a terminal needs them

        proc = handle.exec_start(args.command, env=env, workdir=args.workdir, user=args.user, tty=True,
                                 tty_size=tty.terminal_size())
        signals = NotedSignals((signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH))
        with proc, signals:
            set_winsize(proc.master, tty.terminal_size())
            with tty.RawMode(0, args.interactive and os.isatty(0)):
                # signals to us end only us: the process loses its terminal (SIGHUP)
                def leave(signum: int) -> None:
                    raise KeyboardInterrupt

                tty_loop(proc.master, args.interactive, proc.fileno(), signals, leave)
            return exit_status(proc.wait())
    # none of our fds is handed over, terminal or file: the container could read what is
    # typed after it ends, or reopen our file through /proc/self/fd and truncate it;
    # exec_start gives it pipes and copies between them and ours
    proc = handle.exec_start(args.command, env=env, workdir=args.workdir, user=args.user,
                             stdio=(0 if args.interactive else -1, 1, 2))
    with proc:
        code = proc.wait()
    return exit_status(code)
