"""The fast/slow seam holds: a test marked ``unit`` that needs a registry, starts a process
or starts a container fails, naming what it did (tests/fixtures/seam.py); the same test
unmarked runs. Each case is a small test file run by pytest in this process (pytester)."""

from __future__ import annotations

import ast
import pathlib

import pytest

HERE = pathlib.Path(__file__).resolve().parent

CONFTEST = 'pytest_plugins = ["fixtures.host", "fixtures.registry", "fixtures.seam"]\n'
INI = "[pytest]\naddopts = --strict-markers -p no:cacheprovider\nmarkers =\n    unit: pure\n"


def run_inner(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest_inprocess("-q")


def test_a_unit_test_needing_a_registry_is_refused_before_it_starts(pytester):
    result = run_inner(pytester, """
import pytest

@pytest.mark.unit
def test_pulls(registry):
    raise AssertionError("never reached: the registry is refused first")
""")
    result.assert_outcomes(errors=1)
    assert "test_pulls is marked unit but needs registry, which start" in result.stdout.str()


def test_a_unit_test_starting_a_process_fails(pytester):
    result = run_inner(pytester, """
import subprocess
import pytest

@pytest.mark.unit
def test_runs_a_tool():
    subprocess.run(["true"], check=True)

def test_the_same_unmarked_runs():
    subprocess.run(["true"], check=True)
""")
    result.assert_outcomes(failed=1, passed=1)
    assert ("test_runs_a_tool is marked unit but starts a process (subprocess.Popen: ['true'])"
            in result.stdout.str())


def test_a_unit_module_starting_a_multiprocessing_child_fails(pytester):
    """multiprocessing's spawn start method raises no audit event of its own."""
    result = run_inner(pytester, """
import multiprocessing
import pytest

pytestmark = pytest.mark.unit

def test_spawns():
    process = multiprocessing.get_context("spawn").Process(target=print)
    process.start()
    process.join()
""")
    result.assert_outcomes(failed=1)
    assert ("test_spawns is marked unit but starts a process (_posixsubprocess.fork_exec)"
            in result.stdout.str())


def test_a_unit_test_starting_a_container_fails_even_if_it_swallows_the_refusal(pytester):
    result = run_inner(pytester, """
import isobox
import pytest

@pytest.mark.unit
def test_runs_a_container(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOBOX_ROOT", str(tmp_path / "store"))
    (tmp_path / "rootfs").mkdir()
    try:
        isobox.run(isobox.Image.from_directory(tmp_path / "rootfs"), ["/true"])
    except BaseException:
        pass  # the seam still fails the test
""")
    result.assert_outcomes(failed=1)
    assert "test_runs_a_container is marked unit but starts a container" in result.stdout.str()


@pytest.mark.unit
def test_support_imports_no_pytest_and_no_fixtures():
    """Benchmarks import tests/support/ as plain scripts: it may not reach into pytest or
    into the fixtures (which wrap it)."""
    reached = {}
    for path in sorted((HERE / "support").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            bad = [n for n in names
                   if n.split(".")[0] in ("pytest", "_pytest", "fixtures", "hypothesis")]
            if bad:
                reached[path.name] = bad
    assert reached == {}
