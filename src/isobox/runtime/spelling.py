"""How users spell commands, environment entries, signals and container names (Docker's rules),
parsed in one place for the API, the command and the control socket's clients, which
import this without the container machinery."""

from __future__ import annotations

import os
import re
import signal as _signal
from typing import List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import InvalidOption

NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")  # container and volume names

Env = Union[Mapping[str, str], Sequence[str], None]
Command = Union[str, Sequence[str], None]


def parse_command(value: Command) -> Optional[Tuple[str, ...]]:
    """A command as a container runs it. A string is split like a command line (shlex, as
    docker-py does), never by a shell."""
    if value is None:
        return None
    if isinstance(value, str):
        import shlex  # only string commands need it

        return tuple(shlex.split(value))
    if isinstance(value, bytes):
        raise InvalidOption("command must be a string or a list of strings, not bytes")
    out = tuple(value)
    if not all(isinstance(a, str) for a in out):
        raise InvalidOption(f"command arguments must be strings: {out!r}")
    return out


def parse_env(value: Env) -> Tuple[Tuple[str, str], ...]:
    """A mapping, or ``["NAME=value", "NAME"]`` entries, as (name, value) pairs. "NAME"
    alone takes the caller's value, or is left out when the caller has none (``docker
    run -e NAME``)."""
    if value is None:
        return ()
    items: List[Tuple[str, str]] = []
    pairs = value.items() if isinstance(value, Mapping) else (
        (e.split("=", 1) + [""])[:2] if "=" in e else (e, None) for e in value
    )
    for key, val in pairs:
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise InvalidOption(f"invalid environment variable name {key!r}")
        if val is None:
            val = os.environ.get(key)
            if val is None:
                continue
        if "\0" in str(val):
            raise InvalidOption(f"environment variable {key} contains a NUL byte")
        items.append((key, str(val)))
    return tuple(items)


def log_streams(stream: str) -> Tuple[str, ...]:
    """``logs(stream=...)``: "stdout", "stderr" or "both" (stdout, then stderr)."""
    if stream not in ("both", "stdout", "stderr"):
        raise InvalidOption(f"stream must be 'stdout', 'stderr' or 'both', got {stream!r}")
    return ("stdout", "stderr") if stream == "both" else (stream,)


def signal_number(sig: Union[int, str]) -> int:
    """9, "9", "KILL" or "SIGKILL" (any case), as ``docker kill -s`` takes them."""
    if isinstance(sig, int):
        return int(sig)
    name = sig.upper()
    if name.isdigit():
        return int(name)
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(getattr(_signal.Signals, name))
    except AttributeError:
        raise InvalidOption(f"unknown signal {sig!r}") from None
