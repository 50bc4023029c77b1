"""The isobox-runtime command: runc's command line (global options, then a subcommand with
its own), as containerd's runc shim, Podman's conmon and the OCI validation suite call it.

Errors go to stderr and, with ``--log FILE``, to that file as runc writes it (text, or one
JSON object a line with ``--log-format json``: ``{"level": "error", "msg": ..., "time":
...}``, which the shims read back); the exit status is then 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any, Dict, NoReturn, Optional, Sequence

from .._version import __version__
from ..errors import IsoboxError
from .state import OCI_VERSION



class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="isobox-runtime", description="isobox as an OCI runtime (runc's command line)")
    p.add_argument("--root", default=None,
                   help="state directory (default /run/isobox-runtime; rootless $XDG_RUNTIME_DIR/isobox-runtime)")
    p.add_argument("--log", default=None, help="log file (errors and, with --debug, more)")
    p.add_argument("--log-format", default="text", choices=("text", "json"))
    p.add_argument("--debug", action="store_true")
    p.add_argument("--systemd-cgroup", action="store_true")
    p.add_argument("--rootless", default="auto")
    p.add_argument("--criu", default=None)
    p.add_argument("-v", "--version", action="store_true")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    c = sub.add_parser("create")
    run = sub.add_parser("run")
    for q in (c, run):
        q.add_argument("--bundle", "-b", default=".")
        q.add_argument("--pid-file", default=None)
        q.add_argument("--console-socket", default=None)
        q.add_argument("--no-pivot", action="store_true")
        q.add_argument("--no-new-keyring", action="store_true")
        q.add_argument("--preserve-fds", type=int, default=0)
        q.add_argument("id", nargs="?")
    run.add_argument("--detach", "-d", action="store_true")
    run.add_argument("--keep", action="store_true")
    for name in ("start", "state"):
        sub.add_parser(name).add_argument("id", nargs="?")
    k = sub.add_parser("kill")
    k.add_argument("--all", "-a", action="store_true")
    k.add_argument("id", nargs="?")
    k.add_argument("signal", nargs="?", default="TERM")
    d = sub.add_parser("delete")
    d.add_argument("--force", "-f", action="store_true")
    d.add_argument("id", nargs="?")
    ls = sub.add_parser("list")
    ls.add_argument("--format", "-f", default="table", choices=("table", "json"))
    ls.add_argument("--quiet", "-q", action="store_true")
    sub.add_parser("features")
    for name in ("exec", "ps", "pause", "resume", "update", "checkpoint", "restore", "events", "spec"):
        q = sub.add_parser(name)
        q.add_argument("rest", nargs=argparse.REMAINDER)
    return p


class Log:
    """runc's --log: where errors (and debug lines) go besides stderr."""

    def __init__(self, path: Optional[str], fmt: str, debug: bool) -> None:
        self.path = path
        self.fmt = fmt
        self.debug_on = debug

    def write(self, level: str, msg: str) -> None:
        if not self.path:
            return
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if self.fmt == "json":
            line = json.dumps({"level": level, "msg": msg, "time": now})
        else:
            line = f'time="{now}" level={level} msg={json.dumps(msg)}'
        try:
            with open(self.path, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass

    def error(self, msg: str) -> None:
        print(f"isobox-runtime: {msg}", file=sys.stderr)
        self.write("error", msg)

    def warning(self, msg: str) -> None:
        """runc prints warnings too (logrus's default output is stderr)."""
        print(f"isobox-runtime: warning: {msg}", file=sys.stderr)
        self.write("warning", msg)

    def debug(self, msg: str) -> None:
        if self.debug_on:
            self.write("debug", msg)


def features() -> Dict[str, Any]:
    """The runtime spec's features.json (features.md): what this version accepts."""
    from .plan import FLAG_OPTIONS, PROPAGATION_OPTIONS
    from ..runtime.seccomp_data import CAPABILITIES

    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": sorted(set(FLAG_OPTIONS) | set(PROPAGATION_OPTIONS) | {"bind", "rbind"}),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": list(CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": True, "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"],
                        "operators": ["SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE",
                                      "SCMP_CMP_GT", "SCMP_CMP_GE", "SCMP_CMP_MASKED_EQ"],
                        "archs": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"]},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {"io.github.isobox.version": __version__},
    }


def _need_id(args: argparse.Namespace) -> str:
    if not args.id:
        raise UsageError(f"{args.command} needs a container id")
    return str(args.id)


def _run(args: argparse.Namespace, log: Log) -> int:
    from .state import StateDir, all_ids, default_root, spec_state

    root = args.root or default_root()
    cmd = args.command
    if cmd == "features":
        print(json.dumps(features(), indent=2))
        return 0
    if cmd == "list":
        rows = []
        for cid in all_ids(root):
            st = StateDir(root, cid)
            try:
                rec = st.read_record()
            except IsoboxError:
                continue
            rows.append(spec_state(st, rec, st.status(rec), OCI_VERSION))
        if args.quiet:
            for r in rows:
                print(r["id"])
        elif args.format == "json":
            print(json.dumps(rows))
        else:
            print(f"{'ID':<24} {'PID':<8} {'STATUS':<10} {'BUNDLE':<40} CREATED")
            for r in rows:
                print(f"{r['id']:<24} {r['pid']:<8} {r['status']:<10} {r['bundle']:<40} {r['created']}")
        return 0
    if cmd in ("exec", "ps", "pause", "resume", "update", "events", "spec"):
        raise UsageError(f"{cmd} is not implemented by isobox-runtime yet")
    if cmd in ("checkpoint", "restore"):
        raise UsageError(f"{cmd} is not supported by isobox-runtime (no CRIU)")
    state = StateDir(root, _need_id(args))
    if cmd == "state":  # the one a shim calls most: no container machinery imported
        rec = state.read_record()
        print(json.dumps(spec_state(state, rec, state.status(rec), OCI_VERSION), indent=2))
        return 0
    from . import lifecycle

    if cmd in ("create", "run"):
        if args.preserve_fds:
            raise UsageError("--preserve-fds is not supported by isobox-runtime yet")
        from .bundle import BundleConfig

        for note in BundleConfig.load(args.bundle).ignored:
            log.warning(f"not applied: {note}")
        record = lifecycle.create(state, args.bundle, args.pid_file, args.console_socket)
        if cmd == "create":
            return 0
        for warning in lifecycle.start(state):
            log.warning(warning)
        if args.detach:
            return 0
        code = lifecycle.wait(record)
        if not args.keep:
            for warning in lifecycle.delete(state, force=True):
                log.warning(warning)
        return code
    if cmd == "start":
        for warning in lifecycle.start(state):
            log.warning(warning)
        return 0
    if cmd == "kill":
        lifecycle.kill(state, lifecycle.parse_signal(args.signal), args.all)
        return 0
    if cmd == "delete":
        if not state.exists():
            if args.force:
                return 0  # runc: deleting what is not there is fine with --force
        for warning in lifecycle.delete(state, args.force):
            log.warning(warning)
        return 0
    raise UsageError("no command given (create, start, state, kill, delete, run, list, features)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    log = Log(None, "text", False)
    try:
        args = _parser().parse_args(argv)
        log = Log(args.log, args.log_format, args.debug)
        if args.version:
            print(f"isobox-runtime version {__version__}\nspec: {OCI_VERSION}")
            return 0
        if args.systemd_cgroup:
            raise UsageError("--systemd-cgroup is not supported: isobox-runtime manages cgroupfs directly")
        if args.command is None:
            raise UsageError("no command given (create, start, state, kill, delete, run, list, features)")
        log.debug(f"{args.command} {' '.join(argv)}")
        return _run(args, log)
    except UsageError as exc:
        log.error(str(exc))
        return 1
    except (IsoboxError, OSError) as exc:
        log.error(str(exc))
        return 1


def entry() -> NoReturn:
    sys.exit(main())
