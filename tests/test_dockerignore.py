"""The build context's .dockerignore (isobox.build.context): the reference's examples,
laws as hypothesis properties, and the same trees and patterns through `podman build`
(Buildah shares moby's matcher) as the oracle."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import List

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.podman import Podman
from isobox.builder.context import IgnoreRules, ignore_file_for, included
from isobox.errors import BuildError


def rules(text: str) -> IgnoreRules:
    return IgnoreRules.parse(text)


@pytest.mark.unit
@pytest.mark.parametrize("patterns,path,out", [
    ("*/temp*", "somedir/temporary.txt", True), ("*/temp*", "somedir/temp", True),
    ("*/temp*", "temp", False), ("*/temp*", "a/b/temp", False),
    ("*/*/temp*", "somedir/subdir/temporary.txt", True), ("*/*/temp*", "somedir/temp", False),
    ("temp?", "tempa", True), ("temp?", "temp", False), ("temp?", "tempab", False),
    ("**/*.go", "a/b/c.go", True), ("**/*.go", "c.go", True), ("**/*.go", "c.gox", False),
    ("*.md\n!README.md", "README.md", False), ("*.md\n!README.md", "x.md", True),
    ("*.md\n!README*.md\nREADME-secret.md", "README-secret.md", True),
    ("*.md\n!README*.md\nREADME-secret.md", "README-x.md", False),
    ("*.md\nREADME-secret.md\n!README*.md", "README-secret.md", False),
    # a pattern matches below what it names; an exception re-includes below an excluded dir
    ("a", "a/b/c", True), ("a\n!a/b/x", "a/b/x", False), ("a\n!a/b/x", "a/b/y", True),
    # cleaned: ./, //, a leading /, ..; comments only at the start of a line
    ("./a//b/", "a/b/c", True), ("/a", "a", True), ("a/../b", "b", True),
    ("# a", "# a", False), (" # a", "# a", True), ("  x  ", "x", True),
    ("[a-c]?", "bz", True), ("[^a-c]", "d", True), ("[^a-c]", "a", False), ("\\*", "*", True),
    ("\\*", "x", False), ("a/**", "a/b/c", True), ("a/**/z", "a/z", True), ("a/**/z", "a/b/c/z", True),
    ("x.(y)", "x.(y)", True), ("x.y", "xzy", False),
])
def test_patterns(patterns: str, path: str, out: bool) -> None:
    assert rules(patterns).excluded(path) is out


@pytest.mark.unit
def test_bad_patterns_name_their_line() -> None:
    with pytest.raises(BuildError, match=r"\.dockerignore:2: syntax error.*unclosed"):
        rules("ok\n[abc\n")
    with pytest.raises(BuildError, match=r"\.dockerignore:3: illegal exclusion pattern"):
        rules("a\n\n !  \n")


@pytest.mark.unit
def test_the_dockerfiles_own_ignore_file_wins(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    assert ignore_file_for(tmp_path, "sub/Dockerfile") is None
    (tmp_path / ".dockerignore").write_text("a\n")
    assert ignore_file_for(tmp_path, "sub/Dockerfile") == str(tmp_path / ".dockerignore")
    (tmp_path / "sub" / "Dockerfile.dockerignore").write_text("b\n")
    assert ignore_file_for(tmp_path, "sub/Dockerfile") == str(tmp_path / "sub" / "Dockerfile.dockerignore")


NAME = st.text(alphabet="abcxyz._-", min_size=1, max_size=5).filter(lambda n: n not in (".", ".."))
PATH = st.lists(NAME, min_size=1, max_size=4).map("/".join)


@pytest.mark.unit
@given(PATH)
def test_a_literal_pattern_excludes_itself_and_what_is_below(path: str) -> None:
    r = rules(path)
    assert r.excluded(path) and r.excluded(path + "/below")


@pytest.mark.unit
@given(PATH, PATH)
def test_the_last_matching_pattern_decides(a: str, b: str) -> None:
    assert not rules(f"{a}\n!{a}").excluded(a)
    assert rules(f"!{a}\n{a}").excluded(a)
    assert rules(f"{a}\n!{b}").excluded(a) == (not IgnoreRules.parse(b).excluded(a))


@pytest.mark.unit
@given(st.lists(PATH, max_size=5))
def test_no_pattern_matches_outside_its_literal_text(paths: List[str]) -> None:
    r = rules("\n".join(p + ".never" for p in paths))
    for p in paths:
        assert not r.excluded(p)


# -- podman build as the oracle ------------------------------------------------------------

TREE = ["a/b/x.txt", "a/y.md", "a/temp1", "README.md", "README-secret.md", "docs/x.md", "c/z.txt",
        "c/d/e/f.go", "g.go", "tempa", "temp", "empty/", "src/app/main.go", "src/app/temp/x"]

PATTERN_SETS = [
    "a\n!a/b/x.txt\n*.md\n",
    "*/temp*\n",
    "**/*.go\n!c/d/e/f.go\n",
    "*.md\n!README*.md\nREADME-secret.md\n",
    "*\n!src\nsrc/app/temp\n",
    "temp?\n/c\n./docs/\n",
    "**\n!**/*.md\n",
    "# comment\n  a/b  \n",
    "a\n!a/b\n!**/*.md\n",
]


def podman_build_files(ctx: Path, work: Path) -> List[str]:
    """What `podman build` copies of ``ctx`` with ``COPY . /`` (support/podman.py's podman:
    private configuration and storage, its mounts removed at the end)."""
    podman = Podman(work, "localhost:1")  # no registry: FROM scratch
    out = work / "out"
    try:
        podman("build", "-q", "-f", str(work / "Dockerfile"), "--output", f"type=local,dest={out}", str(ctx))
    finally:
        podman.close()
    found = []
    for dirpath, dirnames, filenames in os.walk(out):
        for name in dirnames + filenames:
            found.append(os.path.relpath(os.path.join(dirpath, name), out))
    return sorted(found)


@pytest.mark.parametrize("patterns", PATTERN_SETS)
def test_the_same_files_as_podman_build(tmp_path: Path, patterns: str) -> None:
    ctx, work = tmp_path / "ctx", Path(tempfile.mkdtemp(prefix="ibdi-", dir="/tmp"))
    try:
        for path in TREE:
            p = ctx / path
            if path.endswith("/"):
                p.mkdir(parents=True, exist_ok=True)
            else:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(path)
        (ctx / ".dockerignore").write_text(patterns)
        (work / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
        ours = [p for p in included(ctx, IgnoreRules.parse(patterns)) if p != ".dockerignore"]
        theirs = [p for p in podman_build_files(ctx, work) if p != ".dockerignore"]
        assert ours == theirs
    finally:
        subprocess.run(["rm", "-rf", str(work)])
