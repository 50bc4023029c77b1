"""The ``isobox`` command (also ``python -m isobox``): a thin layer over the library.

Subcommands are argparse subparsers; each ``_add_X(subparsers)`` in `SUBCOMMANDS` defines
subcommand X (the name matters: `main` builds only the subparser argv names) and sets
``func`` to a handler ``(args) -> exit status``. To add a subcommand, write
such a function and append it to `SUBCOMMANDS`; import what the handler needs inside it,
so that ``isobox run`` never imports the registry client (and requests).

Exit statuses follow Docker's CLI: 0 on success, 125 when isobox itself fails (an
`IsoboxError`, a bad flag or argument), 130 on Ctrl-C. Commands that run a container
return the command's own status (and 126/127 as Docker does).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    NoReturn,
    Optional,
    Sequence,
    Tuple,
)

from .attach import RawTerminal, Signals, copy_thread, set_winsize, terminal_size, tty_loop, write_all
from .environment import environment
from .format import ProgressBar, exit_status, familiar, human_duration, human_size, table

if TYPE_CHECKING:
    from ..images.store import Store

EXIT_ERROR = 125  # Docker's "the tool failed", as opposed to the container's command
EXIT_CANNOT_EXECUTE = 126  # the container's command exists but cannot be executed
EXIT_NOT_FOUND = 127  # the container's command does not exist
EXIT_INTERRUPTED = 130


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, told the width: left to itself it imports shutil (and with
    it bz2 and lzma) on every add_argument, ~2 ms of each `isobox run`."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: Optional[int] = None) -> None:
        if width is None:
            try:
                columns = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size(sys.stdout.fileno()).columns
            except (ValueError, OSError, AttributeError):
                columns = 80
            width = columns - 2  # as argparse does with the size it finds
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """argparse with Docker's exit status for usage errors (125, not 2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _store(args: argparse.Namespace) -> "Store":
    from ..images.store import Store

    return Store.open(args.root)


# -- formatting ---------------------------------------------------------------------------


def _created(config: Any) -> str:
    """When the image was built, from its config's ``created`` (RFC 3339)."""
    import datetime

    text = config.get("created") if isinstance(config, dict) else None
    if not isinstance(text, str) or not text:
        return "N/A"
    text = text.strip().replace("Z", "+00:00")
    if "." in text:  # Go writes nanoseconds; Python takes at most microseconds
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        text = f"{head}.{digits[:6]}{tail[len(digits):]}"
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return "N/A"
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return human_duration(time.time() - when.timestamp()) + " ago"


# -- pull --------------------------------------------------------------------------------------


def _add_pull(sub: Any) -> None:
    p = sub.add_parser("pull", help="pull an image from a registry",
                       description="Pull an image (or a repository's tag) from a registry.")
    p.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="the platform to pull from a multi-platform image (default: this host's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image's name")
    p.set_defaults(func=_pull)


def _pull(args: argparse.Namespace) -> int:
    from ..errors import ImageNotFound
    from ..images.image import Image
    from ..images.reference import Reference

    store = _store(args)
    reference = Reference.parse(args.reference)
    try:
        before: Optional[str] = Image.get(reference, platform=args.platform, store=store).digest
    except ImageNotFound:
        before = None
    bar = None if args.quiet else ProgressBar(f"Pulling {reference.familiar}", sys.stderr)
    try:
        image = Image.pull(reference, platform=args.platform, progress=bar, store=store)
    finally:
        if bar is not None:
            bar.close()
    name = image.reference or str(reference)
    if not args.quiet:
        tag = store.read_tag(name)
        print(f"Digest: {tag.digest if tag else image.digest}")
        status = "Image is up to date for" if before == image.digest else "Downloaded newer image for"
        print(f"Status: {status} {reference.familiar}")
    print(name)
    return 0


# -- images ------------------------------------------------------------------------------------


def _add_images(sub: Any) -> None:
    p = sub.add_parser("images", help="list the images in the store")
    p.add_argument("-q", "--quiet", action="store_true", help="print only image IDs")
    p.add_argument("--digests", action="store_true", help="show the digest each name points to")
    p.set_defaults(func=_images)


def _split_name(reference: Optional[str]) -> Tuple[str, str]:
    from ..errors import InvalidReference
    from ..images.reference import Reference

    if reference is None:
        return "<none>", "<none>"
    try:
        ref = Reference.parse(reference)
    except InvalidReference:
        return reference, "<none>"
    bare = Reference(domain=ref.domain, path=ref.path).familiar
    return bare, ref.tag if ref.tag and not ref.digest else "<none>"


def _short_id(digest: str) -> str:
    """An image ID as Docker prints it: 12 hex digits, no algorithm."""
    return digest.partition(":")[2][:12]


def _images(args: argparse.Namespace) -> int:
    store = _store(args)
    records = {r.digest: r for r in store.records()}
    tags = {t.reference: t for t in store.tags()}
    rows: List[List[str]] = []
    seen: List[str] = []
    for image in store.list_images():
        assert image.digest is not None
        record = records[image.digest]
        repo, tag = _split_name(image.reference)
        row = [repo, tag]
        if args.digests:
            pointed = tags[image.reference].digest if image.reference in tags else image.digest
            row.append(pointed)
        # IMAGE ID is the config's digest, as Docker, podman and `isobox inspect` show it
        # (the manifest digest is the DIGEST column): variants of one image that differ
        # only in layer compression share it.
        image_id = record.config_digest
        row += [_short_id(image_id), image.platform or "", _created(record.config),
                human_size(image.size)]
        rows.append(row)
        if image_id not in seen:
            seen.append(image_id)
    if args.quiet:
        for image_id in seen:
            print(_short_id(image_id))
        return 0
    header = ["REPOSITORY", "TAG"] + (["DIGEST"] if args.digests else []) + [
        "IMAGE ID", "PLATFORM", "CREATED", "SIZE"]
    table([header] + rows, sys.stdout)
    return 0


# -- rmi -----------------------------------------------------------------------------------------


def _add_rmi(sub: Any) -> None:
    p = sub.add_parser("rmi", help="remove images",
                       description="Remove tags (or, by image ID, images with all their "
                       "tags) and the layers nothing else uses.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="a name[:tag], name@digest or image ID")
    p.set_defaults(func=_rmi)


def _rmi(args: argparse.Namespace) -> int:
    from ..errors import IsoboxError
    from ..images.image import Image

    store = _store(args)
    status = 0
    for name in args.images:
        try:
            removed = Image.remove(name, store=store)
        except IsoboxError as exc:
            print(f"isobox: {exc}", file=sys.stderr)
            status = EXIT_ERROR
            continue
        for item in removed:
            print(f"Deleted: {item}" if item.startswith("sha256:") else f"Untagged: {item}")
    return status


# -- prune -----------------------------------------------------------------------------------------


def _add_prune(sub: Any) -> None:
    p = sub.add_parser("prune", help="remove what no image or container uses",
                       description="Remove untagged images, unused layers and blobs, and "
                       "what interrupted pulls left behind. Waits for running pulls.")
    p.add_argument("-f", "--force", action="store_true", help="accepted for Docker compatibility")
    p.add_argument("--volumes", action="store_true", help="also remove named volumes no container uses")
    p.set_defaults(func=_prune)


def _prune(args: argparse.Namespace) -> int:
    from ..gc import prune

    report = prune(_store(args), volumes=args.volumes)
    if report.images or report.layers:
        print("Deleted:")
        for digest in report.images:
            print(f"  image {digest}")
        for diff_id in report.layers:
            print(f"  layer {diff_id}")
    if report.volumes:
        print("Deleted Volumes:")
        for name in report.volumes:
            print(f"  {name}")
    for warning in report.warnings:
        print(f"isobox: warning: {warning}", file=sys.stderr)
    print(f"Total reclaimed space: {human_size(report.reclaimed)}")
    return 0


# -- running containers: shared helpers -------------------------------------------------------------


def parse_tmpfs(text: str) -> Any:
    """Docker's --tmpfs DST[:OPTIONS]: size=, mode= (octal), exec/noexec; nosuid, nodev,
    rw are what isobox always does."""
    from ..errors import InvalidOption
    from ..runtime.mounts import Tmpfs

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
    from ..errors import InvalidOption
    from ..runtime.mounts import parse_volume_spec

    if args.network not in ("none", "host"):
        raise InvalidOption(f"--network {args.network}: isobox offers 'none' (loopback only) and 'host'")
    options: Dict[str, Any] = {
        "env": environment(args),
        "mounts": [parse_volume_spec(v) for v in args.volume] + [parse_tmpfs(t) for t in args.tmpfs],
        "network": args.network,
        "init": args.init,
        "read_only": args.read_only,
    }
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
        from ..runtime.logs import LogPolicy

        pairs = {}
        for opt in args.log_opt:
            key, sep, value = opt.partition("=")
            if not sep:
                raise InvalidOption(f"--log-opt {opt}: expected KEY=VALUE")
            pairs[key] = value
        policy = LogPolicy.from_options(pairs)
        options["log_max_size"] = policy.max_size
        options["log_max_files"] = policy.max_files
    for opt in args.security_opt:
        if opt in ("seccomp=unconfined", "seccomp:unconfined"):
            options["seccomp"] = False
        else:
            raise InvalidOption(f"--security-opt {opt}: isobox supports seccomp=unconfined only")
    return options


def _image_for_run(reference: str, platform: Optional[str], store: "Store") -> Any:
    """The stored image, else pulled with progress on stderr as `docker run` does. The
    registry client (and requests) is imported only when a pull is needed."""
    from ..errors import ImageNotFound
    from ..images.image import Image

    try:
        return Image.get(reference, platform=platform, store=store)
    except ImageNotFound:
        pass
    from ..images.reference import Reference

    familiar = Reference.parse(reference).familiar
    print(f"Unable to find image '{familiar}' locally", file=sys.stderr)
    bar = ProgressBar(f"Pulling {familiar}", sys.stderr)
    try:
        image = Image.pull(reference, platform=platform, progress=bar, store=store)
    finally:
        bar.close()
    print(f"Digest: {image.digest}", file=sys.stderr)
    print(f"Status: Downloaded newer image for {familiar}", file=sys.stderr)
    return image


class _Stopper:
    """Ctrl-C (SIGINT), SIGTERM or SIGHUP to the isobox command stop the container: its
    stop signal first, SIGKILL after --stop-timeout or at the second signal."""

    def __init__(self, container: Any, timeout: float) -> None:
        self.container = container
        self.timeout = timeout
        self.kill_at: Optional[float] = None

    def __call__(self, signum: int) -> None:
        import signal

        if self.kill_at is None:
            self.container.kill(self.container.stop_signal)
            self.kill_at = time.monotonic() + self.timeout
        else:
            self.container.kill(signal.SIGKILL)

    def tick(self) -> None:
        if self.kill_at is not None and time.monotonic() >= self.kill_at:
            import signal

            self.container.kill(signal.SIGKILL)


def _follow_logs(container: Any, pidfd: int, signals: Signals, stopper: _Stopper) -> None:
    """Stream the container's stdout and stderr logs to our stdout and stderr while it
    runs (each stream in order; between them, order is not kept, as with Docker), across
    the logs' rotations (logs.follow)."""
    import select
    import signal

    from ..runtime import logs

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
    for stream, data in logs.follow(container.dir, ("stdout", "stderr"), done, 0.02, wait):
        ok[stream] = ok[stream] and write_all(out[stream], data)


# -- run -----------------------------------------------------------------------------------------------


def _add_container_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set an environment variable (KEY alone: take ours)")
    p.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
    p.add_argument("-u", "--user", metavar="USER[:GROUP]", help="user name or uid (and group)")
    p.add_argument("-i", "--interactive", action="store_true", help="pass our stdin")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", add_help=False, help="run a command in a new container",
                       description="Run a command in a new container from IMAGE (pulled if it "
                       "is not stored). Exits with the command's status, 128+N when signal N "
                       "killed it, 125 when isobox fails, 126/127 when the command cannot be "
                       "run / is not found.")
    _add_container_flags(p)
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("-d", "--detach", action="store_true",
                   help="run in the background (owned by a supervisor process); print its id")
    p.add_argument("--name", help="the container's name (default: isobox_<id>)")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="read KEY=VALUE lines from FILE")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]",
                   help="bind a host path (absolute) or a named volume")
    p.add_argument("--tmpfs", action="append", default=[], metavar="DST[:size=..]", help="mount a tmpfs")
    p.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    p.add_argument("--entrypoint", metavar="CMD", help="replace the image's entrypoint (\"\": none)")
    p.add_argument("--init", action="store_true", help="run a minimal init as pid 1")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="the image platform")
    p.add_argument("-h", "--hostname", metavar="NAME", help="the container's hostname")
    p.add_argument("--network", "--net", default="none", metavar="none|host",
                   help="none: loopback only (default); host: share the host's")
    p.add_argument("--stop-timeout", type=float, default=10, metavar="SECONDS",
                   help="after the stop signal, SIGKILL after this long (default 10)")
    p.add_argument("-m", "--memory", metavar="BYTES", help="memory limit (e.g. 256m, 1g)")
    p.add_argument("--pids-limit", type=int, metavar="N",
                   help="at most N processes (default 2048 where cgroups allow; -1: no limit)")
    p.add_argument("--device", action="append", default=[], metavar="HOST[:CONTAINER[:PERMS]]",
                   help="add a host device (under /dev in the container)")
    p.add_argument("--log-opt", action="append", default=[], metavar="max-size=20m|max-file=5",
                   help="log rotation, as Docker's local driver (default 20m x 5 per stream)")
    p.add_argument("--cpus", type=float, metavar="N", help="CPU quota in CPUs (e.g. 0.5)")
    p.add_argument("--security-opt", action="append", default=[], metavar="seccomp=unconfined",
                   help="seccomp=unconfined runs without isobox's seccomp filter")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..errors import InvalidOption

    store = _store(args)
    options = _container_options(args)
    command = args.command or None
    if args.interactive and args.tty and not os.isatty(0):
        raise InvalidOption("the input device is not a TTY (-it needs a terminal on stdin)")
    if args.detach:
        return _run_detached(args, store, options, command)
    from ..runtime.container import Container
    from ..control.server import Server
    from ..runtime.state import write_options

    image = _image_for_run(args.image, args.platform, store)
    stdin: Any = None
    if args.interactive and not args.tty:
        # a terminal is never handed to the container (it could read what is typed after
        # it ends): we copy from it into a pipe; a pipe or file is passed as it is
        stdin = True if os.isatty(0) else 0
    container = Container(image, command, tty=args.tty, tty_size=terminal_size() if args.tty else None,
                          stdin=stdin, store=store, **options)
    # Ctrl-C, SIGTERM and SIGHUP take the stop path from the moment the container can be
    # seen (`ps` lists it once it starts): noted from before the start, acted on in _attach
    with Signals() as signals:
        with store.in_use():
            container.start()
        server = Server(container, auto_remove=args.rm)
        try:
            write_options(container.dir, {"command": command, "tty": args.tty, "stdin": bool(args.interactive),
                                      **options},
                          image=args.image, platform=args.platform, auto_remove=args.rm, detached=False,
                          stop_timeout=args.stop_timeout)
            server.start()
            code = _attach(container, args, signals)
        except BaseException:
            server.removed = True
            container.remove(force=True)
            server.close()
            raise
    server.finish(code)
    return exit_status(code)


def _attach(container: Any, args: argparse.Namespace, signals: Signals) -> int:
    stopper = _Stopper(container, args.stop_timeout)
    pidfd = os.pidfd_open(container.pid)
    try:
        if container.stdin is not None:
            copy_thread(0, container.stdin.fileno(), close_dst=False)
        if args.tty:
            assert container.pty is not None
            set_winsize(container.pty, terminal_size())
            with container.log_writer() as log, RawTerminal(0, args.interactive and os.isatty(0)):
                tty_loop(container.pty, args.interactive, pidfd, signals, stopper, log.write)
        else:
            _follow_logs(container, pidfd, signals, stopper)
        code = int(container.wait())
        for loss in container.log_lost:
            print(f"isobox: {loss}", file=sys.stderr)
        return code
    finally:
        os.close(pidfd)


def _run_detached(args: argparse.Namespace, store: "Store", options: Dict[str, Any],
                  command: Optional[List[str]]) -> int:
    from ..control.supervisor import run_detached

    _image_for_run(args.image, args.platform, store)  # pull here, with progress
    handle = run_detached(args.image, command,
                          platform=args.platform, auto_remove=args.rm,
                          stop_timeout=args.stop_timeout, store=store, tty=args.tty,
                          stdin=bool(args.interactive), **options)
    print(handle.id)
    return 0


# -- exec ------------------------------------------------------------------------------------------------


def _add_exec(sub: Any) -> None:
    p = sub.add_parser("exec", add_help=False, help="run a command in a running container",
                       description="Run a command in a running container (by name or id), "
                       "with its namespaces, root and user. Exits with the command's status.")
    _add_container_flags(p)
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")
    p.set_defaults(func=_exec)


def _exec(args: argparse.Namespace) -> int:
    from ..errors import InvalidOption
    from ..control.client import get_container

    if not args.command:
        raise InvalidOption("exec needs a command")
    if args.interactive and args.tty and not os.isatty(0):
        raise InvalidOption("the input device is not a TTY (-it needs a terminal on stdin)")
    handle = get_container(args.container, _store(args))
    env = environment(argparse.Namespace(env=args.env, env_file=[]))
    if args.tty:
        proc = handle.exec_start(args.command, env=env, workdir=args.workdir, user=args.user, tty=True,
                                 tty_size=terminal_size())
        with proc, Signals() as signals:
            set_winsize(proc.master, terminal_size())
            with RawTerminal(0, args.interactive and os.isatty(0)):
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


# -- ps, logs, stop, kill, rm ------------------------------------------------------------------------------


def _add_ps(sub: Any) -> None:
    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="also containers that are not running")
    p.add_argument("-q", "--quiet", action="store_true", help="print only container IDs")
    p.set_defaults(func=_ps)


def _status_text(info: Any, now: float) -> str:
    if info.status == "running":
        return "Up " + human_duration(now - info.created)
    if info.status == "exited":
        code = exit_status(info.exit_code) if info.exit_code is not None else "?"
        return f"Exited ({code}) {human_duration(now - (info.finished or now))} ago"
    return str(info.status).capitalize()


def _ps(args: argparse.Namespace) -> int:
    from ..control.client import containers

    found = containers(all=args.all, store=_store(args))
    if args.quiet:
        for info in found:
            print(info.id[:12])
        return 0
    now = time.time()
    rows = [["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"]]
    for info in found:
        command = " ".join(info.command)
        if len(command) > 20:
            utf8 = (sys.stdout.encoding or "").lower().replace("-", "") == "utf8"
            command = command[:19] + "…" if utf8 else command[:17] + "..."
        image = str(info.options.get("image") or familiar(info.image, info.image_digest))
        rows.append([info.id[:12], image, f'"{command}"',
                     human_duration(now - info.created) + " ago", _status_text(info, now), info.name])
    table(rows, sys.stdout)
    return 0


def _add_logs(sub: Any) -> None:
    p = sub.add_parser("logs", help="print a container's output",
                       description="Print what a container wrote: its stdout to ours, its "
                       "stderr to ours.")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until it exits")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=_logs)


def _logs(args: argparse.Namespace) -> int:
    from ..control.client import get_container

    handle = get_container(args.container, _store(args))
    if args.follow:
        for name, chunk in handle.follow_logs():
            write_all(1 if name == "stdout" else 2, chunk)
        return 0
    write_all(1, handle.logs("stdout"))
    write_all(2, handle.logs("stderr"))
    return 0


def _each(args: argparse.Namespace, act: Callable[[Any], None]) -> int:
    """Do ``act`` to each named container, printing its name; report failures, go on."""
    from ..errors import IsoboxError
    from ..control.client import get_container

    store = _store(args)
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


def _add_stop(sub: Any) -> None:
    p = sub.add_parser("stop", help="stop running containers",
                       description="Send each container's stop signal (the image's StopSignal, "
                       "else SIGTERM), then SIGKILL after the timeout.")
    p.add_argument("-t", "--time", "--timeout", dest="timeout", type=float, default=10, metavar="N",
                   help="seconds to wait before SIGKILL (default 10)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=lambda args: _each(args, lambda h: h.stop(args.timeout)))


def _add_kill(sub: Any) -> None:
    p = sub.add_parser("kill", help="send a signal to running containers")
    p.add_argument("-s", "--signal", default="KILL", metavar="SIGNAL", help="name or number (default KILL)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=lambda args: _each(args, lambda h: h.kill(args.signal)))


def _add_rm(sub: Any) -> None:
    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=lambda args: _each(args, lambda h: h.remove(force=args.force)))


# -- inspect ----------------------------------------------------------------------------------------------


def _add_inspect(sub: Any) -> None:
    p = sub.add_parser("inspect", help="show containers or images as JSON",
                       description="Print a JSON array describing each container (by name or "
                       "id) or image (by reference or id), with Docker's field names.")
    p.add_argument("objects", nargs="+", metavar="CONTAINER|IMAGE")
    p.set_defaults(func=_inspect)


def _iso(t: Optional[float]) -> str:
    import datetime

    if t is None:
        return "0001-01-01T00:00:00Z"
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def inspect_container(info: Any) -> Dict[str, Any]:
    """Docker's `inspect` document for a container, the fields isobox has."""
    recorded = info.options or {}
    opts = recorded.get("options") or {}
    mounts = opts.get("mounts") or []
    state = {
        "Status": info.status, "Running": info.running, "Paused": False, "Restarting": False,
        "OOMKilled": False, "Dead": False, "Pid": info.pid if info.running else 0,
        "ExitCode": exit_status(info.exit_code) if info.exit_code is not None else 0, "Error": "",
        "StartedAt": _iso(info.created), "FinishedAt": _iso(info.finished),
    }
    env = list(opts.get("env") or [])
    command = list(info.command)
    return {
        "Id": info.id,
        "Created": _iso(info.created),
        "Path": command[0] if command else "",
        "Args": command[1:],
        "State": state,
        "Image": info.image_digest or "",
        "LogPath": str(info.path / "stdout.log"),
        "Name": "/" + info.name,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": {
            "Binds": [f"{m.get('source', m.get('name'))}:{m['target']}" + (":ro" if m.get("read_only") else "")
                      for m in mounts if m.get("type") in ("bind", "volume")],
            "NetworkMode": opts.get("network", "none"),
            "AutoRemove": bool(recorded.get("auto_remove")),
            "ReadonlyRootfs": bool(opts.get("read_only")),
            "Tmpfs": {m["target"]: ",".join(filter(None, [f"size={m['size']}" if m.get("size") else "",
                                                           f"mode={int(m.get('mode', 0o1777)):o}"]))
                      for m in mounts if m.get("type") == "tmpfs"},
            "Init": bool(opts.get("init")),
        },
        "Mounts": [{"Type": m["type"], "Name": m.get("name", ""), "Source": m.get("source", ""),
                    "Destination": m["target"], "RW": not m.get("read_only"),
                    "Mode": "ro" if m.get("read_only") else ""}
                   for m in mounts if m.get("type") in ("bind", "volume")],
        "Config": {
            "Hostname": opts.get("hostname") or info.id[:12],
            "User": opts.get("user") or "",
            "Env": env,
            "Cmd": opts.get("command"),
            "Entrypoint": opts.get("entrypoint"),
            "Image": recorded.get("image") or familiar(info.image, info.image_digest),
            "WorkingDir": opts.get("workdir") or "",
            "Tty": bool(opts.get("tty")),
            "OpenStdin": bool(opts.get("stdin")),
        },
        "GraphDriver": {"Name": "overlay", "Data": {
            "UpperDir": str(info.path / "upper"), "WorkDir": str(info.path / "work")}},
    }


def inspect_image(image: Any, store: "Store") -> Dict[str, Any]:
    """Docker's `inspect` document for an image, the fields isobox has."""
    record = next((r for r in store.records() if r.digest == image.digest), None)
    config: Dict[str, Any] = dict(record.config) if record is not None else {}
    tags = [t.reference for t in store.tags() if image.digest in t.manifests.values()]
    os_name, _, arch = (image.platform or "/").partition("/")
    arch, _, variant = arch.partition("/")
    doc: Dict[str, Any] = {
        "Id": record.config_digest if record is not None else image.digest,
        "RepoTags": [familiar(t, None) for t in tags],
        "RepoDigests": [t.split(":")[0].rsplit("@", 1)[0] + "@" + str(image.digest) for t in tags],
        "Created": config.get("created", ""),
        "Architecture": config.get("architecture", arch),
        "Os": config.get("os", os_name),
        "Size": image.size,
        "Config": dict(image.config.to_oci()),
        "RootFS": {"Type": "layers", "Layers": list(record.diff_ids) if record is not None else []},
        "Metadata": {"LastTagTime": _iso(record.pulled) if record is not None and record.pulled else ""},
    }
    if variant or config.get("variant"):
        doc["Variant"] = config.get("variant", variant)
    return doc


def _inspect(args: argparse.Namespace) -> int:
    import json

    from ..errors import ContainerNotFound, ImageNotFound, InvalidReference
    from ..images.image import Image
    from ..control.client import find

    store = _store(args)
    docs: List[Dict[str, Any]] = []
    status = 0
    for ref in args.objects:
        try:
            docs.append(inspect_container(find(ref, store)))
            continue
        except ContainerNotFound:
            pass
        try:
            docs.append(inspect_image(Image.get(ref, store=store), store))
        except (ImageNotFound, InvalidReference):
            print(f"isobox: no such container or image: {ref}", file=sys.stderr)
            status = EXIT_ERROR
    print(json.dumps(docs, indent=4))
    return status


# -- doctor, volume -----------------------------------------------------------------------------------------


def _add_doctor(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check what this host lets isobox do",
                       description="Check the kernel, user namespaces, subordinate ids, "
                       "overlayfs, cgroups and pidfd. Exits with 1 when a check fails.")
    p.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from ..runtime.doctor import doctor

    report = doctor()
    print(report)
    return 0 if report.ok else 1


def _add_volume(sub: Any) -> None:
    p = sub.add_parser("volume", help="manage named volumes")
    vsub = p.add_subparsers(dest="volume_command", metavar="COMMAND", parser_class=_Parser)
    ls = vsub.add_parser("ls", help="list volumes")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only names")
    ls.set_defaults(func=_volume_ls)
    create = vsub.add_parser("create", help="create a volume")
    create.add_argument("name", nargs="?", metavar="NAME", help="default: a random name")
    create.set_defaults(func=_volume_create)
    rm = vsub.add_parser("rm", help="remove volumes (not while a container uses them)")
    rm.add_argument("-f", "--force", action="store_true", help="also while containers use them")
    rm.add_argument("names", nargs="+", metavar="VOLUME")
    rm.set_defaults(func=_volume_rm)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _volume_ls(args: argparse.Namespace) -> int:
    from ..runtime.named_volumes import volumes

    found = volumes(_store(args))
    if args.quiet:
        for v in found:
            print(v.name)
        return 0
    table([["DRIVER", "VOLUME NAME"]] + [["local", v.name] for v in found], sys.stdout)
    return 0


def _volume_create(args: argparse.Namespace) -> int:
    import secrets

    from ..runtime.mounts import Volume, volume_dir

    name = args.name or secrets.token_hex(32)
    Volume(name, "/data")  # validates the name
    volume_dir(_store(args).volumes, name).mkdir(parents=True, exist_ok=True)
    print(name)
    return 0


def _volume_rm(args: argparse.Namespace) -> int:
    from ..errors import IsoboxError
    from ..runtime.mounts import volume_dir
    from ..runtime.named_volumes import remove_volume

    store = _store(args)
    status = 0
    for name in args.names:
        try:
            if not volume_dir(store.volumes, name).is_dir():
                raise IsoboxError(f"no such volume: {name}")
            remove_volume(name, store, force=args.force)
        except IsoboxError as exc:
            print(f"isobox: {exc}", file=sys.stderr)
            status = EXIT_ERROR
            continue
        print(name)
    return status


# -- main --------------------------------------------------------------------------------------------

SUBCOMMANDS: List[Callable[[Any], None]] = [
    _add_pull, _add_images, _add_rmi, _add_prune, _add_run, _add_exec, _add_ps, _add_logs,
    _add_stop, _add_kill, _add_rm, _add_inspect, _add_doctor, _add_volume,
]


def _subcommand(argv: Sequence[str]) -> Optional[str]:
    """The subcommand ``argv`` names (after the global options), if it names one."""
    args = iter(argv)
    for arg in args:
        if arg == "--root":
            next(args, None)
        elif not arg.startswith("--root="):
            known = {add.__name__[len("_add_"):] for add in SUBCOMMANDS}
            return arg if arg in known else None
    return None


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``only`` just that subcommand's: each subparser costs
    about half a millisecond (argparse looks up translations), and `run` is timed."""
    parser = _Parser(
        prog="isobox",
        description="Pull OCI images and run them as sandboxed processes, without a daemon.",
    )
    parser.add_argument(
        "--root", metavar="DIR", default=None,
        help="the store (default: $ISOBOX_ROOT, else /var/lib/isobox as root, else "
        "$XDG_DATA_HOME/isobox)",
    )
    from .._version import __version__

    # podman's and Docker's shape ("podman version 4.3.1"); the package metadata is built
    # from the same isobox.__version__ (setup.cfg), so the two cannot disagree
    parser.add_argument("--version", action="version", version=f"isobox version {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in SUBCOMMANDS:
        if only is None or add.__name__ == f"_add_{only}":
            add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_subcommand(argv))
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    from ..errors import CommandNotExecutable, CommandNotFound, IsoboxError

    try:
        return int(func(args))
    except CommandNotFound as exc:
        print(f"isobox: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except CommandNotExecutable as exc:
        print(f"isobox: {exc}", file=sys.stderr)
        return EXIT_CANNOT_EXECUTE
    except IsoboxError as exc:
        print(f"isobox: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `isobox images | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


# A command allocates ~25k objects as it imports and sets up, and nearly all of them live
# until it exits. At the collector's default pace (every 700 allocations) that is ~30
# collections traversing them, ~5 ms of each `isobox run`. Every 50k allocations, short
# commands see no collection at all, and long ones (a foreground service, logs -f) are
# still collected.
GC_THRESHOLD = 50_000


def entry() -> NoReturn:
    """The `isobox` command (console script and ``python -m isobox``): `main` with the
    collector's pace set for a command (`GC_THRESHOLD`), then a quick exit.

    Tearing the interpreter down, every module and object freed one by one, costs ~5 ms
    of each command after its work is done. What an exit owes is done here (stdout and
    stderr flushed, atexit handlers run), then os._exit. A non-daemon thread still
    running gets the ordinary exit, which waits for it."""
    import gc

    gc.set_threshold(GC_THRESHOLD)
    code = main()
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if any(not t.daemon for t in others):
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)  # let the interpreter report it as it would
    import atexit

    atexit._run_exitfuncs()
    os._exit(code)
