"""What a finished process left: `RunResult`, like subprocess.CompletedProcess."""

from __future__ import annotations

from typing import Sequence

import attrs

from .errors import ContainerError


@attrs.frozen
class RunResult:
    """``exit_code`` is the status, or -N when signal N killed the process (as
    subprocess reports it); the CLI turns that into Docker's 128+N."""

    args: Sequence[str]
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def returncode(self) -> int:
        return self.exit_code

    def check_returncode(self) -> None:
        if self.exit_code != 0:
            raise ExitStatusError(self)


STDERR_TAIL_BYTES = 2048
STDERR_TAIL_LINES = 10


def stderr_tail(stderr: bytes) -> str:
    """The end of ``stderr`` for a message: at most the last `STDERR_TAIL_LINES` lines of
    the last `STDERR_TAIL_BYTES` bytes, decoded with errors="replace", control characters
    shown as escapes (a container's output must not drive the caller's terminal)."""
    tail = stderr[-STDERR_TAIL_BYTES:].decode("utf-8", errors="replace")
    if len(stderr) > STDERR_TAIL_BYTES:
        tail = tail.partition("\n")[2] or tail  # start at a line boundary when there is one
    lines = tail.rstrip().splitlines()[-STDERR_TAIL_LINES:]
    return "\n".join(
        "".join(c if c.isprintable() or c == "\t" else c.encode("unicode_escape").decode("ascii")
                for c in line)
        for line in lines
    )


class ExitStatusError(ContainerError):
    """Raised by ``run(check=True)`` when the container's command did not exit with 0.

    The message ends with the last lines of the command's stderr (bounded), since that is
    where a failing command says why; ``result`` holds all of it."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        how = (f"was killed by signal {-result.exit_code}" if result.exit_code < 0
               else f"exited with status {result.exit_code}")
        text = f"command {list(result.args)!r} {how}"
        tail = stderr_tail(result.stderr or b"")
        if tail:
            text += ":\n  " + tail.replace("\n", "\n  ")
        super().__init__(text)
