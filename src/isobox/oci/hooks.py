"""A bundle's hooks (config.md, "POSIX-platform Hooks"): programs isobox-runtime runs in
its own namespaces, each with the container's state (runtime.md, "State") on its stdin.

- ``prestart`` (deprecated by the spec) and ``createRuntime``: during `create`, once the
  container's namespaces exist and before its filesystem is set up (the child waits for
  its go byte then); a failure fails `create`, and the container is gone;
- ``poststart``: by `start`, once the process was let go; a failure is a warning;
- ``poststop``: by `delete`, once the container is gone; a failure is a warning.

``createContainer`` and ``startContainer`` run inside the container's namespaces; they
are refused (bundle.py) until isobox can run them there.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs

from ..errors import ContainerError, InvalidOption

KINDS = ("prestart", "createRuntime", "poststart", "poststop")
IN_CONTAINER = ("createContainer", "startContainer")


class HookFailed(ContainerError):
    """Raised when a prestart or createRuntime hook fails (exit status, timeout, no such program)."""


@attrs.frozen
class Hook:
    path: str
    args: Tuple[str, ...]
    env: Tuple[str, ...]
    timeout: Optional[int]

    @classmethod
    def from_oci(cls, doc: Any, where: str) -> "Hook":
        if not isinstance(doc, Mapping):
            raise InvalidOption(f"config.json: {where} must be an object")
        path = doc.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidOption(f"config.json: {where}.path must be an absolute path, got {path!r}")
        args = doc.get("args") or []
        env = doc.get("env") or []
        if not all(isinstance(a, str) for a in args) or not all(isinstance(e, str) for e in env):
            raise InvalidOption(f"config.json: {where}.args and .env must be arrays of strings")
        timeout = doc.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0):
            raise InvalidOption(f"config.json: {where}.timeout must be a positive number of seconds")
        return cls(path, tuple(args), tuple(env), timeout)

    def to_json(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"path": self.path, "args": list(self.args), "env": list(self.env)}
        if self.timeout is not None:
            doc["timeout"] = self.timeout
        return doc

    def run(self, state: Mapping[str, Any]) -> None:
        """Run with ``state`` on stdin; HookFailed says how it failed."""
        argv = list(self.args) or [self.path]
        env = dict(e.split("=", 1) for e in self.env if "=" in e)
        try:
            done = subprocess.run(argv, executable=self.path, input=json.dumps(state).encode(), env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=self.timeout,
                                  close_fds=True, cwd=state.get("bundle") or "/")
        except subprocess.TimeoutExpired:
            raise HookFailed(f"hook {self.path} did not finish within {self.timeout} s") from None
        except OSError as exc:
            raise HookFailed(f"hook {self.path}: {os.strerror(exc.errno or 0)}") from exc
        if done.returncode != 0:
            output = done.stdout.decode(errors="replace").strip()
            raise HookFailed(f"hook {self.path} exited with status {done.returncode}"
                             + (f": {output}" if output else ""))


def parse(doc: Any) -> Dict[str, Tuple[Hook, ...]]:
    """The ``hooks`` object: the kinds isobox runs, checked; the in-container ones refused."""
    from .bundle import Unsupported

    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise InvalidOption("config.json: hooks must be an object")
    for kind in IN_CONTAINER:
        if doc.get(kind):
            raise Unsupported(f"config.json: hooks.{kind} (run inside the container) are not supported yet")
    out: Dict[str, Tuple[Hook, ...]] = {}
    for kind in KINDS:
        entries = doc.get(kind) or []
        if not isinstance(entries, list):
            raise InvalidOption(f"config.json: hooks.{kind} must be an array")
        if entries:
            out[kind] = tuple(Hook.from_oci(h, f"hooks.{kind}[{i}]") for i, h in enumerate(entries))
    return out


def to_json(hooks: Mapping[str, Sequence[Hook]]) -> Dict[str, List[Dict[str, Any]]]:
    return {kind: [h.to_json() for h in entries] for kind, entries in hooks.items()}


def from_json(doc: Any) -> Dict[str, Tuple[Hook, ...]]:
    return parse(doc)


def run_all(hooks: Sequence[Hook], state: Mapping[str, Any]) -> None:
    """In order; the first failure stops them (prestart, createRuntime)."""
    for hook in hooks:
        hook.run(state)


def run_warning(hooks: Sequence[Hook], state: Mapping[str, Any]) -> List[str]:
    """Every one, whatever the others did (poststart, poststop); the failures as warnings."""
    warnings = []
    for hook in hooks:
        try:
            hook.run(state)
        except HookFailed as exc:
            warnings.append(str(exc))
    return warnings
