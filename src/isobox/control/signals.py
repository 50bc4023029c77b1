"""Signals noted instead of raised, for a process that attends a container: its owner
(the isobox command's foreground run, the supervisor), or a client attached to an exec.

A handler that raises (KeyboardInterrupt) can land anywhere, between a container's start
and the record of it, say, and leave it owned by nobody with its status unknown. Noted
signals are handled where the attending loop looks at them: each is appended to
``pending`` and wakes the loop through a pipe (signal.set_wakeup_fd), which the loop
polls beside what it waits for (tty.relay's ``wake_fd``, logread.follow's wait). Installed
before the container starts, so that a stop asked for from the moment the container can
be seen (``ps`` lists it) is a stop (control/owner.py).
"""

from __future__ import annotations

import os
import signal as _signal
from typing import Any, Dict, List, Sequence


class NotedSignals:
    """While entered: the ``noted`` signals are appended to ``pending`` and wake the loop
    through ``wake_r``; the ``ignored`` ones are ignored. Everything is restored on exit."""

    def __init__(self, noted: Sequence[int], ignored: Sequence[int] = ()) -> None:
        self.noted = tuple(noted)
        self.ignored = tuple(ignored)
        self.pending: List[int] = []
        self.wake_r = self.wake_w = -1
        self._old: Dict[int, Any] = {}
        self._old_wakeup = -1

    def __enter__(self) -> "NotedSignals":
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_wakeup = _signal.set_wakeup_fd(self.wake_w)
        for num in self.noted:
            self._old[num] = _signal.signal(num, lambda signum, frame: self.pending.append(signum))
        for num in self.ignored:
            self._old[num] = _signal.signal(num, _signal.SIG_IGN)
        return self

    def take(self) -> List[int]:
        """The signals noted since the last take, oldest first; empties the wake-up pipe."""
        try:
            os.read(self.wake_r, 256)
        except BlockingIOError:
            pass
        taken, self.pending[:] = list(self.pending), []
        return taken

    def __exit__(self, *exc: Any) -> None:
        for num, handler in self._old.items():
            _signal.signal(num, handler)
        self._old.clear()
        _signal.set_wakeup_fd(self._old_wakeup)
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.wake_r = self.wake_w = -1
