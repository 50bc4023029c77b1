"""The architecture as a test: arrows between the wings only go down (setup.cfg's
[importlinter] contracts), and each wing says what it is for."""

from __future__ import annotations

import importlib
import os
import pathlib
import subprocess
import sys

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
WINGS = ("isobox.host", "isobox.images", "isobox.net", "isobox.runtime", "isobox.control", "isobox.cli")


def _lint_imports() -> "subprocess.CompletedProcess[str]":
    exe = pathlib.Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        if os.environ.get("CI"):
            pytest.fail("import-linter is not installed (pip install 'isobox[test]')")
        pytest.skip("import-linter is not installed")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run([str(exe), "--config", str(SRC.parent / "setup.cfg"), "--no-cache"],
                          capture_output=True, text=True, env=env, cwd=SRC.parent, timeout=120)


def test_wings_import_only_downwards() -> None:
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_new_upward_arrow_fails(tmp_path: pathlib.Path) -> None:
    """The check itself can fail: a copy of the package where the image wing imports the
    runtime is refused."""
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(SRC / "isobox", copy / "isobox", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    reference = copy / "isobox" / "images" / "reference.py"
    reference.write_text(reference.read_text() + "\nfrom ..runtime import spelling  # an arrow up\n")
    exe = pathlib.Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed")
    result = subprocess.run([str(exe), "--config", str(SRC.parent / "setup.cfg"), "--no-cache"],
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(copy)),
                            cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert "isobox.images.reference -> isobox.runtime.spelling" in result.stdout


@pytest.mark.unit
@pytest.mark.parametrize("wing", WINGS)
def test_each_wing_says_its_job(wing: str) -> None:
    module = importlib.import_module(wing)
    assert module.__doc__ and len(module.__doc__.split()) > 20
