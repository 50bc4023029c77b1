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


class ExitStatusError(ContainerError):
    """Raised by ``run(check=True)`` when the container's command did not exit with 0."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        how = (f"was killed by signal {-result.exit_code}" if result.exit_code < 0
               else f"exited with status {result.exit_code}")
        super().__init__(f"command {list(result.args)!r} {how}")
