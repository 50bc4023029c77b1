"""The public API is typed (py.typed): mypy --strict (setup.cfg's [mypy]) is clean on src/."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_mypy_strict_is_clean_on_src(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("checked once, in the root run (the result does not depend on the user)")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "setup.cfg"),
         "--cache-dir", str(tmp_path / "cache"), str(ROOT / "src" / "isobox")],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
