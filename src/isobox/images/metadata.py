"""The Dockerfile instructions that change only an image's configuration (CMD, ENTRYPOINT,
ENV, LABEL, EXPOSE, VOLUME, USER, WORKDIR, STOPSIGNAL, HEALTHCHECK, SHELL, ONBUILD,
MAINTAINER), applied to the ``config`` object of an OCI image configuration as Docker's
builder dispatches them. `Image.build` runs them for each stage; ``commit(changes=)``
(``docker commit --change``) accepts the subset Docker's commit accepts (`COMMIT_CHANGES`).

`Metadata` carries a stage's state across instructions: the config being built and
whether CMD was set in this stage (setting ENTRYPOINT clears an inherited CMD, the
reference's rule). Values are expanded (dockerfile.expand) with the config's Env plus the
build arguments in scope, for the instructions the reference lists.
"""

from __future__ import annotations

import copy
import posixpath
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .dockerfile import DockerfileError, Instruction, expand, name_values, parse_line, split_words
from .ociconfig import parse_signal

__all__ = ["Metadata", "COMMIT_CHANGES", "METADATA_KEYWORDS", "apply_changes"]

METADATA_KEYWORDS = frozenset({"CMD", "ENTRYPOINT", "ENV", "LABEL", "EXPOSE", "VOLUME", "USER",
                               "WORKDIR", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "ONBUILD",
                               "MAINTAINER"})
# what `docker commit --change` accepts (its reference)
COMMIT_CHANGES = frozenset({"CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER",
                            "VOLUME", "WORKDIR"})

DEFAULT_SHELL = ("/bin/sh", "-c")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_PORT = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?(?:/([a-zA-Z]+))?$")


def parse_duration(text: str, what: str) -> int:
    """Go's time.ParseDuration for the positive values HEALTHCHECK takes: nanoseconds."""
    if not _DURATION.match(text):
        raise DockerfileError(f"{what}: {text!r} is not a duration (e.g. 30s, 1m30s)")
    return int(sum(float(n) * _UNIT_NS[u] for n, u in _DURATION_PART.findall(text)))


class Metadata:
    """One stage's configuration as instructions change it (a copy of ``config``)."""

    def __init__(self, config: Optional[Mapping[str, Any]] = None,
                 args: Optional[Mapping[str, str]] = None, escape: str = "\\") -> None:
        self.config: Dict[str, Any] = copy.deepcopy(dict(config or {}))
        self.args: Dict[str, str] = dict(args or {})
        self.escape = escape
        self.cmd_set = False
        self.author: Optional[str] = None  # MAINTAINER: the OCI config's top-level author

    # -- the environment -----------------------------------------------------------------

    def env(self) -> Dict[str, str]:
        """Build args in scope, then the config's Env over them (ENV wins, as Docker)."""
        out = dict(self.args)
        for item in self.config.get("Env") or []:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def expand(self, word: str, i: Instruction) -> str:
        return expand(word, self.env(), self.escape, f"{i.where}: ")

    def set_env(self, key: str, value: str) -> None:
        env: List[str] = list(self.config.get("Env") or [])
        item = f"{key}={value}"
        for n, existing in enumerate(env):
            if existing.partition("=")[0] == key:
                env[n] = item
                break
        else:
            env.append(item)
        self.config["Env"] = env

    def _command(self, i: Instruction) -> List[str]:
        form = i.exec_form()
        if form is not None:
            return form
        shell = self.config.get("Shell") or list(DEFAULT_SHELL)
        return [*shell, i.args]

    # -- dispatch ------------------------------------------------------------------------

    def apply(self, i: Instruction) -> None:
        handler = getattr(self, "_" + i.keyword.lower(), None)
        if i.keyword not in METADATA_KEYWORDS or handler is None:
            raise i.error("is not an instruction that changes only the configuration")
        handler(i)

    def _cmd(self, i: Instruction) -> None:
        i.check_flags([])
        self.config["Cmd"] = self._command(i)
        self.cmd_set = True

    def _entrypoint(self, i: Instruction) -> None:
        i.check_flags([])
        form = i.exec_form()
        if form is None and not i.args:
            self.config["Entrypoint"] = None
        else:
            self.config["Entrypoint"] = self._command(i)
        if not self.cmd_set:
            self.config["Cmd"] = None  # an inherited CMD does not outlive a new ENTRYPOINT

    def _env(self, i: Instruction) -> None:
        i.check_flags([])
        # every pair is expanded against the environment before the instruction: after
        # "ENV abc=hello", "ENV abc=bye def=$abc" sets def to hello (the reference's example)
        env = self.env()
        for key, raw in name_values(i, self.escape):
            name = expand(key, env, self.escape, f"{i.where}: ")
            value = expand(raw, env, self.escape, f"{i.where}: ")
            self.set_env(name, value)

    def _label(self, i: Instruction) -> None:
        i.check_flags([])
        labels = dict(self.config.get("Labels") or {})
        env = self.env()
        for key, raw in name_values(i, self.escape):
            labels[expand(key, env, self.escape, f"{i.where}: ")] = expand(raw, env, self.escape, f"{i.where}: ")
        self.config["Labels"] = labels

    def _maintainer(self, i: Instruction) -> None:
        i.check_flags([])
        self.author = i.args

    def _expose(self, i: Instruction) -> None:
        i.check_flags([])
        ports = dict(self.config.get("ExposedPorts") or {})
        words = [self.expand(w, i) for w in split_words(i.args, self.escape)]
        if not words:
            raise i.error("requires at least one argument")
        for word in words:
            m = _PORT.match(word)
            if not m:
                raise i.error(f"invalid port {word!r} (a port, a range a-b, /tcp, /udp or /sctp)")
            low, high = int(m.group(1)), int(m.group(2) or m.group(1))
            proto = (m.group(3) or "tcp").lower()
            if proto not in ("tcp", "udp", "sctp") or not 0 < low <= high <= 65535:
                raise i.error(f"invalid port {word!r}")
            for port in range(low, high + 1):
                ports[f"{port}/{proto}"] = {}
        self.config["ExposedPorts"] = ports

    def _volume(self, i: Instruction) -> None:
        i.check_flags([])
        form = i.exec_form()
        paths = form if form is not None else [self.expand(w, i) for w in split_words(i.args, self.escape)]
        if not paths or any(not p.strip() for p in paths):
            raise i.error("requires at least one non-empty path")
        volumes = dict(self.config.get("Volumes") or {})
        for p in paths:
            volumes[p.strip()] = {}
        self.config["Volumes"] = volumes

    def _user(self, i: Instruction) -> None:
        i.check_flags([])
        user = self.expand(i.args, i)
        if not user:
            raise i.error("requires a user")
        self.config["User"] = user

    def _workdir(self, i: Instruction) -> None:
        i.check_flags([])
        path = self.expand(i.args, i)
        if not path:
            raise i.error("requires a path")
        current = self.config.get("WorkingDir") or "/"
        self.config["WorkingDir"] = posixpath.normpath(posixpath.join(current, path))

    def _stopsignal(self, i: Instruction) -> None:
        i.check_flags([])
        text = self.expand(i.args, i)
        if parse_signal(text) is None:
            raise i.error(f"{text!r} is not a signal")
        self.config["StopSignal"] = text

    def _shell(self, i: Instruction) -> None:
        i.check_flags([])
        form = i.exec_form()
        if not form:
            raise i.error('requires the JSON form, e.g. SHELL ["/bin/bash", "-c"]')
        self.config["Shell"] = form

    def _healthcheck(self, i: Instruction) -> None:
        i.check_flags(["interval", "timeout", "start-period", "start-interval", "retries"])
        words = i.args.split(None, 1)
        kind = words[0].upper() if words else ""
        if kind == "NONE":
            if i.flags or len(words) > 1:
                raise i.error("HEALTHCHECK NONE takes no flags or arguments")
            self.config["Healthcheck"] = {"Test": ["NONE"]}
            return
        if kind != "CMD" or len(words) < 2:
            raise i.error("must be HEALTHCHECK [flags] CMD command, or HEALTHCHECK NONE")
        rest = words[1]
        form = parse_line("CMD " + rest, i.source).exec_form()
        check: Dict[str, Any] = {"Test": ["CMD", *form] if form is not None else ["CMD-SHELL", rest]}
        for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                          ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):
            value = i.flag(flag)
            if value is not None:
                check[key] = parse_duration(value, f"{i.where}: --{flag}")
        retries = i.flag("retries")
        if retries is not None:
            if not retries.isdigit() or int(retries) < 1:
                raise i.error(f"--retries must be a positive integer, not {retries!r}")
            check["Retries"] = int(retries)
        self.config["Healthcheck"] = check

    def _onbuild(self, i: Instruction) -> None:
        i.check_flags([])
        inner = i.args.split(None, 1)
        keyword = inner[0].upper() if inner else ""
        if keyword in ("ONBUILD", "FROM", "MAINTAINER"):
            raise i.error(f"{keyword} isn't allowed as an ONBUILD trigger")
        if not keyword:
            raise i.error("requires an instruction")
        parse_line(i.args, i.source)  # a trigger must itself be a valid instruction
        self.config["OnBuild"] = [*(self.config.get("OnBuild") or []), i.args]


def apply_changes(config: Mapping[str, Any], changes: Sequence[str],
                  allowed: "frozenset[str]" = COMMIT_CHANGES) -> Dict[str, Any]:
    """``config`` (an OCI config's ``config`` object) with ``changes`` (Dockerfile lines,
    ``docker commit --change``'s) applied; DockerfileError for a line Docker's commit
    refuses or cannot read."""
    meta = Metadata(config)
    for n, text in enumerate(changes, 1):
        i = parse_line(text, f"change {n}")
        if i.keyword not in allowed:
            raise DockerfileError(f"change {n}: {i.keyword} cannot be changed by commit "
                                  f"(allowed: {', '.join(sorted(allowed))})")
        meta.apply(i)
    return meta.config
