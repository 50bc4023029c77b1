"""What a release holds. The sdist is enough to build isobox and to run its tests, examples
and benchmarks; the wheel built from it is one cp39-abi3 wheel that serves every CPython
from 3.9 on (the core is compiled against the stable ABI); the version is written once.

Built offline and without build isolation, by setuptools' own PEP 517 hooks (what
``python -m build --no-isolation`` calls), from a copy of this tree."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from typing import Dict, Iterator, List, Set, Tuple

import pytest

import isobox

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Run by the PEP 517 backend in the tree: prints the archive's name, then whether reading
# the metadata (the version above all) imported isobox, which it must not need.
BUILD = """
import sys
import setuptools.build_meta as backend
name = getattr(backend, sys.argv[1])(sys.argv[2])
print(name)
print("isobox imported" if any(m == "isobox" or m.startswith("isobox.") for m in sys.modules) else "clean")
"""


def _build(tree: pathlib.Path, hook: str, out: pathlib.Path) -> pathlib.Path:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", BUILD, hook, str(out)], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    name, imported = done.stdout.strip().splitlines()[-2:]
    assert imported == "clean", "building read the version by importing isobox"
    return out / name


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[pathlib.Path, pathlib.Path]]:
    """(sdist, wheel): the sdist from a copy of this tree, the wheel from the unpacked sdist."""
    if os.geteuid() != 0:
        pytest.skip("checked once, in the root run (the result does not depend on the user)")
    base = tmp_path_factory.mktemp("dists")
    tree = base / "tree"
    # what a checkout holds, less what builds and test runs leave behind
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "*.so", "*.o", ".hypothesis",
        ".mypy_cache", ".pytest_cache", "_core.c"))
    out = base / "out"
    out.mkdir()
    sdist = _build(tree, "build_sdist", out)
    with tarfile.open(sdist) as tar:
        # (the "data" filter exists from Python 3.11.4 and 3.12 on)
        tar.extractall(base / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (unpacked,) = (base / "unpacked").iterdir()
    wheel = _build(unpacked, "build_wheel", out)
    yield sdist, wheel


def _sdist_members(sdist: pathlib.Path) -> Set[str]:
    with tarfile.open(sdist) as tar:
        top = f"isobox-{isobox.__version__}/"
        names = {m.name for m in tar.getmembers() if m.isfile()}
    assert all(n.startswith(top) for n in names), names
    return {n[len(top):] for n in names}


def _expected_in_sdist() -> List[str]:
    """Every file the tests, examples, benchmarks and the native build need, as this tree
    has them (globbed, so a new test or fixture is expected without editing this list)."""
    patterns = ["LICENSE", "README.md", "MANIFEST.in", "setup.py", "setup.cfg", "pyproject.toml",
                ".ci/run", "scripts/*.sh", "tests/conftest.py", "tests/test_*.py",
                "tests/fixtures/*.py", "tests/support/*.py", "examples/*.py", "benchmarks/*.py", "benchmarks/README.md",
                "src/isobox/*.py", "src/isobox/py.typed", "src/isobox/_native/*.py",
                "src/isobox/_native/*.c", "src/isobox/_native/*.h", "src/isobox/_native/*.cdef"]
    found = [str(p.relative_to(ROOT)) for pattern in patterns for p in ROOT.glob(pattern)]
    return sorted(f for f in found if not f.endswith("_native/_core.c"))


def test_the_sdist_holds_what_building_and_testing_need(dists):
    sdist, _ = dists
    members = _sdist_members(sdist)
    expected = _expected_in_sdist()
    assert {"tests/conftest.py", "tests/fixtures/registry.py", "tests/support/registry.py", "examples/quickstart.py",
            "src/isobox/_native/spawn.c", "LICENSE"} <= set(expected)  # the globs matched
    assert [f for f in expected if f not in members] == []
    # nothing built or generated: the archive must build from its sources alone
    assert [m for m in members if m.endswith((".so", ".o", ".pyc")) or m.endswith("_native/_core.c")
            or m.startswith(("build/", "dist/"))] == []


def test_one_abi3_wheel_serves_every_cpython_from_3_9(dists):
    _, wheel = dists
    name, version, python, abi, platform = wheel.name[:-len(".whl")].split("-")
    assert (name, version, python, abi) == ("isobox", isobox.__version__, "cp39", "abi3")
    assert platform.startswith("linux_")
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        info = f"isobox-{isobox.__version__}.dist-info"
        tags = [line.split(": ", 1)[1] for line in whl.read(f"{info}/WHEEL").decode().splitlines()
                if line.startswith("Tag: ")]
    assert tags == [f"cp39-abi3-{platform}"]
    assert {"isobox/_native/_core.abi3.so", "isobox/py.typed"} <= names
    # setuptools >= 77 writes license files below licenses/ (core metadata 2.4), older ones beside METADATA
    assert names & {f"{info}/licenses/LICENSE", f"{info}/LICENSE"}
    assert not any(n.startswith("tests/") for n in names)


def _metadata(wheel: pathlib.Path) -> Dict[str, str]:
    with zipfile.ZipFile(wheel) as whl:
        text = whl.read(f"isobox-{isobox.__version__}.dist-info/METADATA").decode()
    fields: Dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(": ")
        fields.setdefault(key, value)
    return fields


def test_the_installed_wheel_reports_one_version_everywhere(dists, tmp_path):
    """Installed as a user installs it (pip, from the wheel), the package's metadata,
    isobox.__version__ and `isobox --version` agree, and the abi3 core loads."""
    sdist, wheel = dists
    with tarfile.open(sdist) as tar:
        pkg_info = tar.extractfile(f"isobox-{isobox.__version__}/PKG-INFO")
        assert pkg_info is not None
        assert f"\nVersion: {isobox.__version__}\n" in pkg_info.read().decode()
    assert _metadata(wheel)["Version"] == isobox.__version__
    assert _metadata(wheel)["License"] == "Apache-2.0"
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                           "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = ("import importlib.metadata, isobox, isobox.host.native, isobox._native._core as core; "
             "assert isobox.__file__.startswith(%r) and core.__file__.endswith('.abi3.so'); "
             "print(isobox.__version__, importlib.metadata.version('isobox'))" % str(target))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [isobox.__version__, isobox.__version__]
    done = subprocess.run([sys.executable, "-m", "isobox", "--version"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stdout) == (0, f"isobox version {isobox.__version__}\n")
