"""The background remover: the one thread of a process that removes what was moved out of
the way (`isobox.images.store.Store.remove_later` renames a container's directory into
the store's ``tmp/`` and queues its removal here). On a disk, removing a container's
writable layer is most of the cost of ending it; the caller need not wait for it.

A fact about this process, not about any store: one thread, started on first use. Each
job holds its directory's flock (so no sweep takes it meanwhile) and the store's shared
gc lock (so a prune waits). The process waits for the queue at exit (atexit), so a normal
exit leaves nothing behind; a killed process leaves unheld directories under ``tmp/``,
which the next sweep removes. In a forked child there is no thread and jobs run in the
caller: children of fork commonly end with os._exit (multiprocessing's workers do), which
runs no atexit handler.
"""

from __future__ import annotations

import atexit
import collections
import os
import threading
from typing import Callable, Optional


class _Remover:
    """The thread: started on first use; in a forked child there is none (`synchronous`)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.jobs: "collections.deque[Callable[[], None]]" = collections.deque()
        self.running = 0
        self.thread: Optional[threading.Thread] = None
        # In a forked child, removals run in the caller: children of fork commonly end
        # with os._exit (multiprocessing's workers do), which runs no atexit handler.
        self.synchronous = False

    def submit(self, job: Callable[[], None]) -> None:
        if self.synchronous:
            job()
            return
        with self.cond:
            self.jobs.append(job)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="isobox-remover", daemon=True)
                self.thread.start()
            self.cond.notify_all()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.jobs:
                    self.cond.wait()
                job = self.jobs.popleft()
                self.running += 1
            try:
                job()
            except BaseException:  # pragma: no cover - the job swallows what it expects
                pass
            finally:
                with self.cond:
                    self.running -= 1
                    self.cond.notify_all()

    def drain(self) -> None:
        """Wait until every submitted removal is done."""
        with self.cond:
            while self.jobs or self.running:
                self.cond.wait()

    def forget_in_child(self) -> None:
        # a forked copy has no remover thread; its parent removes what it queued
        self.cond = threading.Condition()
        self.jobs = collections.deque()
        self.running = 0
        self.thread = None
        self.synchronous = True


_remover = _Remover()
atexit.register(_remover.drain)
os.register_at_fork(after_in_child=_remover.forget_in_child)


def submit(job: Callable[[], None]) -> None:
    """Run ``job`` (a removal that catches what it expects) on the remover thread; in a
    forked child, at once."""
    _remover.submit(job)


def wait_for_removals() -> None:
    """Wait until the removals started in this process (`Store.remove_later`) are done."""
    _remover.drain()
