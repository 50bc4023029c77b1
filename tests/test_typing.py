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


PUBLIC_NAMES_AFTER_EVERY_IMPORT = """
import importlib, pkgutil, sys, types
import isobox
for info in pkgutil.iter_modules(isobox.__path__):
    if info.name not in ("__main__", "pytest_plugin"):
        importlib.import_module("isobox." + info.name)
clobbered = [n for n in isobox.__all__ if isinstance(getattr(isobox, n), types.ModuleType)]
print(clobbered)
"""


def test_no_submodule_shadows_a_public_name():
    """Importing isobox.X sets the package's attribute X to the module: a submodule named
    like a public name (isobox.volumes) would replace it, depending on import order."""
    done = subprocess.run([sys.executable, "-c", PUBLIC_NAMES_AFTER_EVERY_IMPORT],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
