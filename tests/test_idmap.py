"""Who the caller becomes in a rootless container (idmap.for_caller): the subordinate
ranges when they are usable, else only root, and then a warning that says why not when
something was there (a malformed line, a missing helper) rather than nothing at all."""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import warnings
from typing import List

import pytest

import isobox
from isobox.host import idmap

from fixtures.host import require_tool
from support.host import IS_ROOT


def _me() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture
def subids(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    """Point idmap at our own /etc/subuid and /etc/subgid, with newuidmap found."""
    uidmap = require_tool("newuidmap")
    require_tool("newgidmap")
    monkeypatch.setattr(idmap, "SUBUID_FILE", str(tmp_path / "subuid"))
    monkeypatch.setattr(idmap, "SUBGID_FILE", str(tmp_path / "subgid"))
    monkeypatch.setenv("PATH", os.path.dirname(uidmap))

    def write(subuid: str, subgid: str) -> None:
        (tmp_path / "subuid").write_text(subuid)
        (tmp_path / "subgid").write_text(subgid)

    return write


def _caught(fn) -> "tuple[idmap.IdMap, List[str]]":
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        ids = fn()
    return ids, [str(w.message) for w in got if issubclass(w.category, idmap.SubordinateIdWarning)]


@pytest.mark.unit
def test_a_valid_range_is_used_without_a_warning(subids):
    subids(f"someone:1:2\n{_me()}:200000:65536\n", f"{os.geteuid()}:300000:65536\n")
    ids, said = _caught(idmap.for_caller)
    assert ids.helpers and ids.uids[1] == idmap.IdRange(1, 200000, 65536)
    assert ids.gids[1] == idmap.IdRange(1, 300000, 65536)
    assert said == [] and ids.fallback_reason is None


@pytest.mark.unit
def test_no_entry_for_the_user_falls_back_quietly_but_doctor_knows(subids):
    subids("someone:100000:65536\n", "someone:100000:65536\n")
    ids, said = _caught(idmap.for_caller)
    assert ids.single and said == []
    assert ids.fallback_reason is not None and "no range for" in ids.fallback_reason


@pytest.mark.unit
@pytest.mark.parametrize("line, why", [
    ("{me}:100000", "3 fields"),
    ("{me}:100000:lots", "not a number"),
    ("{me}:100000:0", "count must be positive"),
    ("{me}:-5:65536", "not a number"),
])
def test_a_malformed_line_for_the_user_is_named_with_its_file_and_line(subids, tmp_path, line, why):
    subids("someone:1:2\n" + line.format(me=_me()) + "\n", f"{_me()}:100000:65536\n")
    ids, said = _caught(idmap.for_caller)
    assert ids.single
    assert len(said) == 1 and f"{tmp_path / 'subuid'}:2" in said[0] and why in said[0], said
    assert ids.fallback_reason == said[0]


@pytest.mark.unit
def test_a_range_in_subuid_only_is_said(subids, tmp_path):
    subids(f"{_me()}:100000:65536\n", "")
    ids, said = _caught(idmap.for_caller)
    assert ids.single and len(said) == 1
    assert str(tmp_path / "subgid") in said[0] and "no range for" in said[0]


@pytest.mark.unit
def test_a_missing_newuidmap_is_named_with_its_package(subids, tmp_path, monkeypatch):
    subids(f"{_me()}:100000:65536\n", f"{_me()}:100000:65536\n")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(idmap, "HELPER_DIRS", str(empty))
    ids, said = _caught(idmap.for_caller)
    assert ids.single and len(said) == 1
    assert "newuidmap" in said[0] and "uidmap" in said[0] and "package" in said[0], said


@pytest.mark.unit
def test_an_unreadable_subuid_file_is_said(subids, tmp_path):
    if IS_ROOT:
        pytest.skip("root reads a file whatever its mode")
    subids(f"{_me()}:100000:65536\n", f"{_me()}:100000:65536\n")
    os.chmod(tmp_path / "subuid", 0)
    ids, said = _caught(idmap.for_caller)
    assert ids.single and len(said) == 1 and "Permission denied" in said[0]


@pytest.mark.skipif(IS_ROOT, reason="doctor checks subordinate ids only without root")
def test_doctor_names_why_the_ranges_are_not_used(subids, tmp_path):
    subids(f"{_me()}:100000:lots\n", f"{_me()}:100000:65536\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", idmap.SubordinateIdWarning)
        check = isobox.doctor()["subordinate ids"]
    assert not check.ok and f"{tmp_path / 'subuid'}:1" in check.detail and "not a number" in check.detail
