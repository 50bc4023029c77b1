"""isobox.host.fs: the one tree remover and whole-file replacement (the remover's
walks themselves are tested in test_store.py: read-only, mode-000, sticky, deep trees)."""

from __future__ import annotations

import os
import pathlib
import re
import stat

import pytest

from isobox.host.fs import remove_tree, replace_file

pytestmark = pytest.mark.unit  # every test here is pure (tests/fixtures/seam.py)

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "isobox"


def _read_only_tree(top: pathlib.Path) -> None:
    (top / "a/b").mkdir(parents=True)
    (top / "a/b/f").write_text("x")
    (top / "a/g").write_text("y")
    os.chmod(top / "a/b", 0o555)
    os.chmod(top / "a", 0)


def test_remove_tree_relative_to_a_directory_fd(tmp_path: pathlib.Path) -> None:
    _read_only_tree(tmp_path / "t")
    (tmp_path / "file").write_text("z")
    os.symlink(tmp_path / "t", tmp_path / "link")
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        remove_tree(b"link", dir_fd=fd)  # the link goes, never what it points at
        assert not os.path.lexists(tmp_path / "link") and (tmp_path / "t").is_dir()
        remove_tree("t", dir_fd=fd)
        remove_tree("file", dir_fd=fd)
        remove_tree("missing", dir_fd=fd)
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == []


def test_remove_tree_takes_a_top_directory_it_cannot_read(tmp_path: pathlib.Path) -> None:
    """Without root the C walk cannot open a mode-000 top directory; the Python walk
    makes it its own and goes on."""
    _read_only_tree(tmp_path / "t")
    os.chmod(tmp_path / "t", 0)
    remove_tree(tmp_path / "t")
    assert not os.path.lexists(tmp_path / "t")


def test_remove_tree_keeps_a_directory_it_was_given_a_link_to(tmp_path: pathlib.Path) -> None:
    (tmp_path / "real/sub").mkdir(parents=True)
    os.symlink("real", tmp_path / "link")
    remove_tree(tmp_path / "link")
    assert (tmp_path / "real/sub").is_dir() and not os.path.lexists(tmp_path / "link")


def test_replace_file_gives_the_mode_and_leaves_no_temporary(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old")
    replace_file(path, b"new", tmp_path / "state.json.tmp", durable=True, mode=0o600)
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["state.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_library_has_one_tree_remover() -> None:
    """Every removal goes through host.fs.remove_tree: no other module defines a remover
    or calls the C walk."""
    definers, callers = [], []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if re.search(r"^\s*def\s+(\w*remove_tree\w*|_?rmtree\w*)\(", text, re.M):
            definers.append(path.relative_to(SRC).as_posix())
        if "ib_remove_tree" in text or "shutil.rmtree" in text:
            callers.append(path.relative_to(SRC).as_posix())
    assert definers == ["host/fs.py"] and callers == ["host/fs.py"]
