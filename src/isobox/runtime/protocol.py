"""One face for a container, wherever it is owned: `ContainerProtocol`.

A `Container` is owned by the process that made it (container.py); a `ContainerHandle`
(control/client.py) is one owned by another process (``isobox run -d``, a foreground
``isobox run``), reached through its owner's control socket. Code that uses a container
should not care which it holds, as docker-py has a single ``Container`` model over its
API layer: both answer the methods below with the same names, defaults and results
(mypy checks that both satisfy this protocol, tests/test_protocol.py that their
signatures are one).

The choices, where the two used to differ:

- ``ports``, ``host_port(port)``, ``address(port)``: the published ports as bound
  (docker-py's ``container.ports`` shape; testcontainers' ``get_exposed_port``), from
  the container's state on a handle (the owner records them, state.py).
- ``kill(signal="KILL")``: a name, as ``docker kill`` and docker-py default to SIGKILL
  and a name reads the same in code, in the control protocol's JSON and on the command
  line (a number works too). A container that is no longer running is left alone, as
  `subprocess.Popen.send_signal` leaves a finished process: a kill that races the exit
  is not an error.
- ``stop(timeout=10) -> int`` and ``wait(timeout=None) -> int``: the exit status, -N for
  a death by signal N (as subprocess reports it); `ExitStatusLost` when nobody could
  collect it (its owner was killed first), never None.
- ``logs(stream, follow=False)``: bytes, or with ``follow=True`` an iterator of bytes as
  they come (docker-py's ``logs(stream=True, follow=True)``); ``follow_logs(stream)``
  yields ``(stream name, bytes)``, for a caller that writes stdout and stderr apart.
- readiness (``wait_for_port``, ``wait_for_log``), copies (``copy_to``, ``copy_from``,
  ``put_archive``, ``get_archive``) and ``resize`` on both: a handle asks the owner for
  what only it holds (the container's root, its terminal) over the control socket.

Readiness waits (wait.py) need less than all of this: `WaitTarget`, testcontainers'
``WaitStrategyTarget``.
"""

from __future__ import annotations

import os
import re
from typing import IO, Any, Dict, Iterable, Iterator, List, Literal, Optional, Protocol, Tuple, Union, overload

from ..result import RunResult
from .spelling import Command, Env

PathArg = Union[str, "os.PathLike[str]"]
Stdin = Union[None, bytes, int, IO[Any]]


class WaitTarget(Protocol):
    """What a readiness wait looks at: the container's pid 1 (its network namespace),
    whether it still runs, and its output."""

    @property
    def name(self) -> str: ...

    @property
    def pid(self) -> Optional[int]: ...

    @property
    def status(self) -> str: ...

    @property
    def exit_code(self) -> Optional[int]: ...

    @overload
    def logs(self, stream: str = ..., follow: Literal[False] = ...) -> bytes: ...

    @overload
    def logs(self, stream: str = ..., *, follow: Literal[True]) -> Iterator[bytes]: ...


class ContainerProtocol(WaitTarget, Protocol):
    """A container, owned here (`Container`) or by another process (`ContainerHandle`).
    ``status`` is "created", "running", "exited" or "removed"."""

    @property
    def id(self) -> str: ...

    def wait(self, timeout: Optional[float] = None) -> int: ...

    def kill(self, signal: Union[int, str] = "KILL") -> None: ...

    def stop(self, timeout: float = 10) -> int: ...

    def remove(self, force: bool = False) -> None: ...

    def follow_logs(self, stream: str = "both") -> Iterator[Tuple[str, bytes]]: ...

    def exec(
        self,
        command: Command,
        *,
        env: Env = None,
        workdir: Optional[str] = None,
        user: Optional[str] = None,
        tty: bool = False,
        tty_size: Optional[Tuple[int, int]] = None,
        stdin: Stdin = None,
        timeout: Optional[float] = None,
    ) -> RunResult: ...

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None: ...

    @property
    def ports(self) -> Dict[str, List[Dict[str, str]]]: ...

    def host_port(self, port: Union[int, str]) -> int: ...

    def address(self, port: Union[int, str]) -> Tuple[str, int]: ...

    def wait_for_log(self, pattern: Union[str, bytes, "re.Pattern[bytes]"], timeout: float = 30.0) -> None: ...

    def copy_to(self, host_path: PathArg, path: str) -> None: ...

    def copy_from(self, path: str, host_path: PathArg) -> None: ...

    def put_archive(self, path: str, data: Union[bytes, Iterable[bytes]]) -> None: ...

    def get_archive(self, path: str) -> bytes: ...

    def resize(self, rows: int, cols: int) -> None: ...
