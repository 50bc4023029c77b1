"""The suite's rule for what the host lacks (fixtures/host.py): a `MissingPrerequisite`
that a helper of tests/support/ raises, in a fixture or in a test, is a skip naming it;
in CI it is a failure, so a green CI never hides an untested feature."""

from __future__ import annotations

import pytest

INNER = """
import pytest
from support.host import MissingPrerequisite

@pytest.fixture
def frobnicator():
    raise MissingPrerequisite("frobnicator is not installed")

def test_in_a_fixture(frobnicator):
    pass

def test_in_the_test():
    raise MissingPrerequisite("widget is not installed")
"""


def run_inner(pytester: pytest.Pytester) -> pytest.RunResult:
    pytester.makeconftest('pytest_plugins = ["fixtures.host"]\n')
    pytester.makepyfile(test_inner=INNER)
    return pytester.runpytest_inprocess("-q", "-rs", "-p", "no:cacheprovider")


@pytest.mark.unit
def test_a_missing_prerequisite_is_a_skip_naming_it(pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr("fixtures.host.IN_CI", False)
    result = run_inner(pytester)
    result.assert_outcomes(skipped=2)
    assert "frobnicator is not installed" in result.stdout.str()
    assert "widget is not installed" in result.stdout.str()


@pytest.mark.unit
def test_in_ci_a_missing_prerequisite_fails(pytester, monkeypatch):
    monkeypatch.setattr("fixtures.host.IN_CI", True)
    result = run_inner(pytester)
    result.assert_outcomes(errors=1, failed=1)
    assert "missing prerequisite in CI: frobnicator is not installed" in result.stdout.str()
    assert "missing prerequisite in CI: widget is not installed" in result.stdout.str()
