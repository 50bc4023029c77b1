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


USER_SCRIPT = '''
"""What a user writes: every public name imported from the package, used as documented."""
from __future__ import annotations

import pathlib
from typing import Iterator, List, Optional, Tuple

import isobox
from isobox import (
    Bind, Container, ContainerHandle, ContainerInfo, Credentials, Image, ImageNotFound,
    IsoboxError, PruneReport, Reference, RegistryError, RunResult, SetupError, Timeout, Tmpfs,
    Volume, containers, get_container, prune, run, run_detached,
)
from isobox import {every_public_name}


def build(scratch: pathlib.Path) -> Tuple[int, bytes]:
    try:
        image = Image.get("busybox")
    except ImageNotFound:
        image = Image.pull("busybox", auth=Credentials("me", "secret"))
    result: RunResult = run(image, ["echo", "hi"], timeout=10.0)
    code: int = result.exit_code
    with Container(image, ["sleep", "30"], name="worker",
                   mounts=[Bind(str(scratch), "/out"), Tmpfs("/scratch"), Volume("cache", "/cache")]) as c:
        c.wait_for_port(80, timeout=5.0)
        out: bytes = c.exec(["cat", "/etc/hostname"]).stdout
        lines: Iterator[bytes] = c.logs("stdout", follow=True)
        whole: bytes = c.logs()
        status: str = c.status
        exit_code: Optional[int] = c.exit_code
    return code, out + whole + b"".join(lines) + status.encode() + str(exit_code).encode()


def manage() -> List[str]:
    handle: ContainerHandle = run_detached("busybox", ["sleep", "60"], name="svc")
    same: ContainerHandle = get_container("svc")
    infos: List[ContainerInfo] = containers(all=True)
    report: PruneReport = prune(volumes=True)
    digest: Optional[str] = Reference.parse("busybox:1.36").digest
    handle.stop()
    return [same.id, *[i.id for i in infos], str(report.reclaimed), str(digest), isobox.__version__]


def handle_errors() -> str:
    try:
        isobox.run("busybox", "true", check=True)
    except isobox.ExitStatusError as exc:
        return str(exc.result.exit_code)
    except SetupError as exc:
        return f"{{exc.step}}: {{exc.errno}}"
    except (RegistryError, Timeout, isobox.HostNotSupported) as exc:
        return str(exc)
    except IsoboxError:
        raise
    return isobox.doctor().__class__.__name__
'''


def test_a_user_script_passes_mypy_strict_against_the_installed_package(tmp_path):
    """`mypy --strict` on user code finds isobox as it finds any installed package (on
    sys.path, by its py.typed marker; not through mypy_path) and sees every public name as
    exported: imports under TYPE_CHECKING are private to mypy unless re-exported with
    ``as`` or listed in a literal ``__all__`` (PEP 484's stub rules, --no-implicit-reexport)."""
    if os.geteuid() != 0:
        pytest.skip("checked once, in the root run (the result does not depend on the user)")
    import isobox

    (tmp_path / "user_script.py").write_text(
        USER_SCRIPT.format(every_public_name=", ".join(isobox.__all__)))
    (tmp_path / "mypy.ini").write_text("[mypy]\n")  # no config of this project's
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    # sys.path as the tests see it: this tree's src first (an editable install puts it
    # there through a .pth file; PYTHONPATH does the same for this run)
    env["PYTHONPATH"] = str(ROOT / "src")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "mypy.ini",
         "--cache-dir", str(tmp_path / "cache"), "--python-executable", sys.executable,
         "user_script.py"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
