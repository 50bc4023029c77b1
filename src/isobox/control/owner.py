"""Owning a container for other processes to see, as one sequence: the isobox command's
foreground run (cli/run.py) and the supervisor of a detached one (supervisor.py) both
own theirs through `own`.

1. SIGINT and SIGTERM (the command also takes SIGHUP, and SIGWINCH for its terminal)
   are noted instead of raised (signals.py), from before the start: from the moment
   ``ps`` lists the container, a stop asked for is a stop (`Stopper`), never an owner
   interrupted with the container's status unknown.
2. `Container.start` (which takes the image's layers into use, Store.hold_layers, and
   records the container's state).
3. How it was made is recorded: ``options.json``, `RunOptions` (state.py).
4. Its control socket is served (server.py), so ``isobox exec``, ``stop``, ``logs`` and a
   `ContainerHandle` reach it.
5. The owner attends to it until it exits (streams its output or copies its terminal,
   turns noted signals into its stop): its exit status.
6. The end: it is kept as an exited container (or removed, with ``auto_remove``), the
   clients waiting for it are answered, and the socket closes.

A failure anywhere from 2 to 5 removes the container before it is raised.
"""

from __future__ import annotations

import signal as _signal
import time
from typing import Callable, Optional

from ..runtime.container import Container
from ..runtime.state import RunOptions, write_options
from .server import Server
from .signals import NotedSignals


class Stopper:
    """A noted SIGINT, SIGTERM or SIGHUP becomes the container's stop: its stop signal
    (the image's StopSignal, else SIGTERM) first, then SIGKILL after ``timeout`` seconds
    (`tick`), or at once on the next signal, as ``docker run`` takes a second Ctrl-C."""

    def __init__(self, container: Container, timeout: float) -> None:
        self.container = container
        self.timeout = timeout
        self.kill_at: Optional[float] = None

    @property
    def stopping(self) -> bool:
        return self.kill_at is not None

    def __call__(self, signum: int) -> None:
        if self.kill_at is None:
            self.container.kill(self.container.stop_signal)
            self.kill_at = time.monotonic() + self.timeout
        else:
            self.container.kill(_signal.SIGKILL)

    def tick(self) -> None:
        """Call now and then: SIGKILL once the timeout has passed."""
        if self.kill_at is not None and time.monotonic() >= self.kill_at:
            self.container.kill(_signal.SIGKILL)


def own(
    container: Container,
    options: RunOptions,
    signals: NotedSignals,
    attend: Callable[[Container], int],
    *,
    serving: Optional[Callable[[], None]] = None,
) -> int:
    """Own ``container`` (not started yet) from its start to its end, the sequence above:
    ``signals`` are noted throughout (and restored at the end); ``serving`` is called
    once it runs, is recorded and is served (the supervisor reports to its caller then);
    ``attend`` returns its exit status once it exited. Returns that status."""
    with signals:
        container.start()
        server = Server(container, auto_remove=options.auto_remove)
        try:
            write_options(container.dir, options)
            server.start()
            if serving is not None:
                serving()
            code = attend(container)
        except BaseException:
            server.removed = True
            container.remove(force=True)
            server.close()
            raise
        server.finish(code)
    return code
