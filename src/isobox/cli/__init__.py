"""The ``isobox`` command (also ``python -m isobox``): a thin layer over the library.

This package holds the entry point (`entry`, `main`), the parser and the subcommand
table; each subcommand's work is in the module its handler names, imported only when
that subcommand runs, so that the parser (and ``--help``, ``--version``) costs no
container machinery and ``isobox run`` never imports the registry client (and requests):

- `images`: pull, images, rmi, tag, push, save, load, build, commit
- `run`: run, in the foreground (attached) or with -d (a supervisor owns it)
- `manage`: exec, ps, logs, stop, kill, rm (containers owned by another process)
- `inspect`: inspect, of containers and images
- `system`: prune, volume, doctor
- `attach`, `environment`, `format`: what run and exec share (our terminal and signals,
  -e/--env-file), and what the commands print (sizes, durations, tables, exit statuses)

Each ``_add_X(subparsers)`` in `SUBCOMMANDS` defines subcommand X's arguments and sets
``func`` to its handler, ``"module:function"`` in this package, a function
``(args) -> exit status``. To add a subcommand, write the handler in the module of its
job and its ``_add_X`` here, and add it to `SUBCOMMANDS`.

Exit statuses follow Docker's CLI: 0 on success, 125 when isobox itself fails (an
`IsoboxError`, a bad flag or argument), 130 on Ctrl-C. Commands that run a container
return the command's own status (and 126/127 as Docker does).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import sys
import threading
from typing import Any, Callable, Dict, NoReturn, Optional, Sequence

from .._version import __version__

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


# -- the subcommands: their arguments, and their handlers as "module:function" --------


def _add_pull(sub: Any) -> None:
    p = sub.add_parser("pull", help="pull an image from a registry",
                       description="Pull an image (or a repository's tag) from a registry.")
    p.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="the platform to pull from a multi-platform image (default: this host's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image's name")
    p.set_defaults(func="images:pull")


def _add_images(sub: Any) -> None:
    p = sub.add_parser("images", help="list the images in the store")
    p.add_argument("-q", "--quiet", action="store_true", help="print only image IDs")
    p.add_argument("--digests", action="store_true", help="show the digest each name points to")
    p.set_defaults(func="images:images")


def _add_rmi(sub: Any) -> None:
    p = sub.add_parser("rmi", help="remove images",
                       description="Remove tags (or, by image ID, images with all their "
                       "tags) and the layers nothing else uses.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="a name[:tag], name@digest or image ID")
    p.set_defaults(func="images:rmi")


def _add_build(sub: Any) -> None:
    p = sub.add_parser("build", help="build an image from a Dockerfile",
                       description="Build the image a Dockerfile describes, from a context "
                       "directory (docker build). Steps that have not changed are reused.")
    p.add_argument("context", metavar="CONTEXT")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]",
                   help="name the result (repeatable)")
    p.add_argument("-f", "--file", default="Dockerfile", metavar="FILE",
                   help="the Dockerfile (default CONTEXT/Dockerfile)")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="a build argument (repeatable; KEY alone takes it from the environment)")
    p.add_argument("--target", metavar="STAGE", help="the stage to build (default the last)")
    p.add_argument("--platform", metavar="OS/ARCH", help="the platform of the base images")
    p.add_argument("--network", default="none", choices=("none", "host"),
                   help="the RUN steps' network (default none)")
    p.add_argument("--no-cache", action="store_true", help="build every step again")
    p.add_argument("--pull", action="store_true", help="pull base images even when stored")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="a label of the result (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    p.set_defaults(func="images:build")


def _add_commit(sub: Any) -> None:
    p = sub.add_parser("commit", help="make an image of a container's changes",
                       description="Make an image of a container's writes and configuration "
                       "(docker commit). The container is not paused.")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("reference", nargs="?", metavar="NAME[:TAG]")
    p.add_argument("-c", "--change", action="append", default=[], metavar="INSTRUCTION",
                   help="a Dockerfile line: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, "
                   "VOLUME, WORKDIR (repeatable)")
    p.add_argument("-m", "--message", help="the commit message")
    p.add_argument("-a", "--author", help="the author")
    p.set_defaults(func="images:commit")


def _add_tag(sub: Any) -> None:
    p = sub.add_parser("tag", help="give an image another name",
                       description="Name the image SOURCE also TARGET (every platform stored "
                       "under SOURCE goes with it).")
    p.add_argument("source", metavar="SOURCE[:TAG]")
    p.add_argument("target", metavar="TARGET[:TAG]")
    p.set_defaults(func="images:tag")


def _add_push(sub: Any) -> None:
    p = sub.add_parser("push", help="upload an image to a registry",
                       description="Upload an image (every platform stored under its name) to "
                       "its registry, or to DESTINATION. Blobs the registry has are skipped; an "
                       "interrupted push, run again, uploads only what is missing.")
    p.add_argument("image", metavar="NAME[:TAG]")
    p.add_argument("destination", nargs="?", metavar="DESTINATION",
                   help="another name to push it as (default: NAME)")
    p.add_argument("--tls-verify", choices=("true", "false"), default="true",
                   help="false: allow plain HTTP and unverified TLS to this registry")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the digest")
    p.set_defaults(func="images:push")


def _add_save(sub: Any) -> None:
    p = sub.add_parser("save", help="write images to an archive",
                       description="Write images to an OCI archive (default), an OCI layout "
                       "directory or a docker save archive.")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write")
    p.add_argument("--format", default="oci", choices=("oci", "oci-archive", "oci-dir",
                                                       "docker-archive"),
                   help="oci (a tar of an OCI layout; also oci-archive), oci-dir, docker-archive")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func="images:save")


def _add_load(sub: Any) -> None:
    p = sub.add_parser("load", help="load images from an archive",
                       description="Load every image of an OCI archive or layout directory, or "
                       "of a docker save archive (gzip'd or not).")
    p.add_argument("-i", "--input", required=True, metavar="FILE", help="the archive or directory")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the names")
    p.set_defaults(func="images:load")


def _add_prune(sub: Any) -> None:
    p = sub.add_parser("prune", help="remove what no image or container uses",
                       description="Remove untagged images, unused layers and blobs, and "
                       "what interrupted pulls left behind. Waits for running pulls.")
    p.add_argument("-f", "--force", action="store_true", help="accepted for Docker compatibility")
    p.add_argument("--volumes", action="store_true", help="also remove named volumes no container uses")
    p.set_defaults(func="system:prune")


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
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:][HOST_PORT:]PORT[/PROTO]",
                   help="publish a container port on the host (default address 127.0.0.1; "
                   "no host port: a free one)")
    p.add_argument("-P", "--publish-all", action="store_true",
                   help="publish every port the image exposes, each on a free port of 127.0.0.1")
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
    p.set_defaults(func="run:run")


def _add_exec(sub: Any) -> None:
    p = sub.add_parser("exec", add_help=False, help="run a command in a running container",
                       description="Run a command in a running container (by name or id), "
                       "with its namespaces, root and user. Exits with the command's status.")
    _add_container_flags(p)
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")
    p.set_defaults(func="manage:exec_command")


def _add_ps(sub: Any) -> None:
    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="also containers that are not running")
    p.add_argument("-q", "--quiet", action="store_true", help="print only container IDs")
    p.set_defaults(func="manage:ps")


def _add_port(sub: Any) -> None:
    p = sub.add_parser("port", help="list a container's published ports",
                       description="Show where the container's ports are published on the host "
                       "(all of them, or the one given).")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("port", nargs="?", metavar="PORT[/PROTO]")
    p.set_defaults(func="manage:port")


def _add_logs(sub: Any) -> None:
    p = sub.add_parser("logs", help="print a container's output",
                       description="Print what a container wrote: its stdout to ours, its "
                       "stderr to ours.")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until it exits")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func="manage:logs")


def _add_stop(sub: Any) -> None:
    p = sub.add_parser("stop", help="stop running containers",
                       description="Send each container's stop signal (the image's StopSignal, "
                       "else SIGTERM), then SIGKILL after the timeout.")
    p.add_argument("-t", "--time", "--timeout", dest="timeout", type=float, default=10, metavar="N",
                   help="seconds to wait before SIGKILL (default 10)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func="manage:stop")


def _add_kill(sub: Any) -> None:
    p = sub.add_parser("kill", help="send a signal to running containers")
    p.add_argument("-s", "--signal", default="KILL", metavar="SIGNAL", help="name or number (default KILL)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func="manage:kill")


def _add_rm(sub: Any) -> None:
    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func="manage:rm")


def _add_inspect(sub: Any) -> None:
    p = sub.add_parser("inspect", help="show containers or images as JSON",
                       description="Print a JSON array describing each container (by name or "
                       "id) or image (by reference or id), with Docker's field names.")
    p.add_argument("objects", nargs="+", metavar="CONTAINER|IMAGE")
    p.set_defaults(func="inspect:inspect")


def _add_doctor(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check what this host lets isobox do",
                       description="Check the kernel, user namespaces, subordinate ids, "
                       "overlayfs, cgroups and pidfd. Exits with 1 when a check fails.")
    p.set_defaults(func="system:doctor")


def _add_volume(sub: Any) -> None:
    p = sub.add_parser("volume", help="manage named volumes")
    vsub = p.add_subparsers(dest="volume_command", metavar="COMMAND", parser_class=_Parser)
    ls = vsub.add_parser("ls", help="list volumes")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only names")
    ls.set_defaults(func="system:volume_ls")
    create = vsub.add_parser("create", help="create a volume")
    create.add_argument("name", nargs="?", metavar="NAME", help="default: a random name")
    create.set_defaults(func="system:volume_create")
    rm = vsub.add_parser("rm", help="remove volumes (not while a container uses them)")
    rm.add_argument("-f", "--force", action="store_true", help="also while containers use them")
    rm.add_argument("names", nargs="+", metavar="VOLUME")
    rm.set_defaults(func="system:volume_rm")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


SUBCOMMANDS: Dict[str, Callable[[Any], None]] = {
    "pull": _add_pull, "images": _add_images, "rmi": _add_rmi, "tag": _add_tag,
    "build": _add_build, "commit": _add_commit,
    "push": _add_push, "save": _add_save, "load": _add_load, "prune": _add_prune,
    "run": _add_run, "exec": _add_exec, "ps": _add_ps, "port": _add_port, "logs": _add_logs, "stop": _add_stop,
    "kill": _add_kill, "rm": _add_rm, "inspect": _add_inspect, "doctor": _add_doctor,
    "volume": _add_volume,
}


def _subcommand(argv: Sequence[str]) -> Optional[str]:
    """The subcommand ``argv`` names (after the global options), if it names one."""
    args = iter(argv)
    for arg in args:
        if arg == "--root":
            next(args, None)
        elif not arg.startswith("--root="):
            return arg if arg in SUBCOMMANDS else None
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
    # podman's and Docker's shape ("podman version 4.3.1"); the package metadata is built
    # from the same isobox.__version__ (setup.cfg), so the two cannot disagree
    parser.add_argument("--version", action="version", version=f"isobox version {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, add in SUBCOMMANDS.items():
        if only is None or name == only:
            add(sub)
    return parser


def _handler(func: Any) -> Callable[[argparse.Namespace], int]:
    """The handler a subparser names (``"module:function"``), its module imported now
    (by ``__import__``, which ``python -X importtime`` reports; importlib's is unseen)."""
    if callable(func):
        return func  # type: ignore[no-any-return]
    module, _, name = func.partition(":")
    return getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)  # type: ignore[no-any-return]


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_subcommand(argv))
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    # imported once the arguments parse: --help, --version and usage errors need none
    from ..errors import CommandNotExecutable, CommandNotFound, IsoboxError

    try:
        return int(_handler(func)(args))
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
    atexit._run_exitfuncs()
    os._exit(code)
