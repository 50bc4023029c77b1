"""What the command prints, as Docker prints it: sizes, durations, tables, image names,
exit statuses, and pull progress. Light on purpose (no container machinery, no registry
client, not even the reference grammar until an image is named): most subcommands import it."""

from __future__ import annotations

import sys
import threading
import time
from typing import Dict, Optional, Sequence, Set, TextIO, Tuple


def exit_status(code: int) -> int:
    """A container's status as a shell reports it: N, or 128+N for a death by signal N."""
    return 128 - code if code < 0 else code & 0xFF


def human_size(n: float) -> str:
    """Docker's HumanSize: decimal units, three significant digits ("4.26MB")."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g}{unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def human_duration(seconds: float) -> str:
    """Docker's HumanDuration, roughly ("2 weeks", "About an hour")."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def familiar(reference: Optional[str], digest: Optional[str]) -> str:
    """An image's name as Docker shows it ("busybox:latest"), else its short digest."""
    if reference:
        # imported here: the reference grammar costs ~2 ms, and `exec` (timed) imports
        # this module but never names an image
        from ..errors import InvalidReference
        from ..images.reference import Reference

        try:
            return Reference.parse(reference).familiar
        except InvalidReference:
            return reference
    return digest[7:19] if digest else "<none>"


def table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")


class ProgressBar:
    """Pull progress on stderr: one redrawn line on a terminal, a line per finished layer
    otherwise. Callable as `isobox.images.image.ProgressCallback` (from the pulling threads)."""

    def __init__(self, label: str, stream: TextIO = sys.stderr, interval: float = 0.1) -> None:
        self.label = label
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval
        self._layers: Dict[str, Tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._last = 0.0
        self._drawn = False
        self._finished: Set[str] = set()

    def __call__(self, digest: str, done: int, total: int) -> None:
        with self._lock:
            self._layers[digest] = (done, total)
            if not self.tty:
                if done >= total and digest not in self._finished:
                    self._finished.add(digest)
                    self.stream.write(f"{digest[7:19]}: Pull complete ({human_size(total)})\n")
                    self.stream.flush()
                return
            now = time.monotonic()
            if now - self._last >= self.interval or done >= total:
                self._last = now
                self._draw()

    def _draw(self) -> None:
        done = sum(d for d, _ in self._layers.values())
        total = sum(t for _, t in self._layers.values())
        complete = sum(1 for d, t in self._layers.values() if d >= t)
        width = 30
        filled = width if total == 0 else min(width, width * done // total)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {human_size(done)}/{human_size(total)} "
            f"{complete}/{len(self._layers)} layers\x1b[K"
        )
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        with self._lock:
            if self.tty and self._layers:
                self._draw()
            if self._drawn:
                self.stream.write("\n")
                self.stream.flush()
