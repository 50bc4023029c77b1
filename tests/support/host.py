"""Facts about the host the tests and benchmarks run on, and finding the tools they use."""

from __future__ import annotations

import os
import shutil
from typing import Optional

IN_CI = os.environ.get("CI") == "true"
IS_ROOT = os.geteuid() == 0


class MissingPrerequisite(Exception):
    """Raised when the host lacks a tool or a feature a helper needs; the message names it.
    In the test suite it becomes a skip (a failure in CI, see fixtures/host.py)."""


def find_tool(name: str) -> Optional[str]:
    """``name``'s path on PATH or in the system directories (sbin is often off a user's
    PATH), or None."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def need_tool(name: str) -> str:
    """``name``'s path; raises MissingPrerequisite when it is not installed."""
    path = find_tool(name)
    if path is None:
        raise MissingPrerequisite(f"{name} is not installed")
    return path
