"""A layer from a directory of changes (isobox.images.layerdiff): the tar's entries, order
and OCI whiteouts; determinism; hostile trees; and the round trip through isobox's own
unpacker (apply_layer), by hand and as a property; GNU tar reads what it writes."""

from __future__ import annotations

import io
import os
import socket
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.host import IS_ROOT
from support.trees import tree
from isobox.errors import LayerError
from isobox.host.fs import remove_tree
from isobox.images.layerdiff import OPAQUE_MARKER, write_layer
from isobox.images.unpack import apply_layer

NS = "trusted" if IS_ROOT else "user"


def layer_of(upper: Path, **kw: object) -> bytes:
    out = io.BytesIO()
    write_layer(upper, out, **kw)  # type: ignore[arg-type]
    return out.getvalue()


def members(data: bytes) -> List[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return t.getmembers()


def whiteout(parent: Path, name: str) -> None:
    os.mknod(parent / name, stat.S_IFCHR | 0o600, 0)  # what overlayfs makes (Linux >= 5.8 unprivileged)


@pytest.fixture
def upper(tmp_path: Path) -> Path:
    u = tmp_path / "upper"
    (u / "etc").mkdir(parents=True)
    (u / "etc" / "motd").write_bytes(b"hello\n")
    os.chmod(u / "etc" / "motd", 0o640)
    (u / "bin").mkdir()
    whiteout(u / "bin", "ls")
    (u / "srv").mkdir()
    os.setxattr(u / "srv", f"{NS}.overlay.opaque", b"y")
    (u / "srv" / "new").write_bytes(b"n")
    os.link(u / "srv" / "new", u / "etc" / "new-link")
    os.symlink("/etc/shadow", u / "etc" / "shadow-link")
    os.mkfifo(u / "etc" / "fifo")
    os.setxattr(u / "etc" / "motd", "user.note", b"kept")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(u / "etc" / "sock"))
    return u


@pytest.mark.unit
def test_entries_order_and_whiteouts(upper: Path) -> None:
    data = layer_of(upper)
    names = [m.name for m in members(data)]
    # depth first, each directory before its content, byte order
    assert names == ["bin", "bin/.wh.ls", "etc", "etc/fifo", "etc/motd", "etc/new-link",
                     "etc/shadow-link", "srv", f"srv/{OPAQUE_MARKER}", "srv/new"]
    by = {m.name: m for m in members(data)}
    assert by["etc/motd"].mode == 0o640 and by["etc/motd"].pax_headers["SCHILY.xattr.user.note"] == "kept"
    assert by["etc/fifo"].isfifo()
    assert by["etc/shadow-link"].issym() and by["etc/shadow-link"].linkname == "/etc/shadow"
    # the first name of the inode in the tar's order holds the content, the other links to it
    assert by["etc/new-link"].isfile() and by["srv/new"].islnk() and by["srv/new"].linkname == "etc/new-link"
    assert by["bin/.wh.ls"].isfile() and by["bin/.wh.ls"].size == 0
    assert not any(k.startswith("SCHILY.xattr.") and ".overlay." in k for m in members(data) for k in m.pax_headers)
    assert all(m.uname == "" and m.gname == "" for m in members(data))


@pytest.mark.unit
def test_the_same_tree_makes_the_same_bytes(upper: Path) -> None:
    assert layer_of(upper) == layer_of(upper)


@pytest.mark.unit
def test_times_are_clamped_never_raised(upper: Path) -> None:
    os.utime(upper / "etc" / "motd", (100, 100))
    by = {m.name: m for m in members(layer_of(upper, mtime=1000))}
    assert by["etc/motd"].mtime == 100
    assert by["etc"].mtime == 1000


@pytest.mark.unit
def test_excluded_names_are_left_out_with_what_is_below(upper: Path) -> None:
    names = [m.name for m in members(layer_of(upper, exclude=["etc", "srv/new"]))]
    assert names == ["bin", "bin/.wh.ls", "srv", f"srv/{OPAQUE_MARKER}"]


def test_gnu_tar_reads_it(upper: Path, tmp_path: Path) -> None:
    path = tmp_path / "layer.tar"
    path.write_bytes(layer_of(upper))
    listing = subprocess.run(["tar", "-tvf", str(path)], capture_output=True, text=True, check=True).stdout
    assert "etc/new-link" in listing and "srv/.wh..wh..opq" in listing


@pytest.mark.unit
def test_round_trip_through_the_unpacker(upper: Path, tmp_path: Path) -> None:
    dest = tmp_path / "applied"
    dest.mkdir()
    apply_layer([layer_of(upper)], dest, userxattr=not IS_ROOT)
    got = tree(dest)
    assert got["etc/motd"].content == tree(upper)["etc/motd"].content
    assert os.stat(dest / "bin" / "ls", follow_symlinks=False).st_rdev == 0  # a whiteout again
    assert os.getxattr(dest / "srv", f"{NS}.overlay.opaque") == b"y"
    assert os.stat(dest / "srv" / "new").st_ino == os.stat(dest / "etc" / "new-link").st_ino
    remove_tree(dest)


@pytest.mark.unit
def test_a_file_swapped_for_a_fifo_does_not_hang_and_symlinks_are_not_followed(tmp_path: Path) -> None:
    u = tmp_path / "u"
    u.mkdir()
    os.mkfifo(u / "f")
    os.symlink("/etc/passwd", u / "p")
    by = {m.name: m for m in members(layer_of(u))}
    assert by["f"].isfifo() and by["p"].issym() and by["p"].size == 0


@pytest.mark.unit
def test_too_deep_a_tree_is_refused(tmp_path: Path) -> None:
    u = tmp_path / "u"
    fd = os.open(tmp_path, os.O_RDONLY)
    os.mkdir("u", dir_fd=fd)
    d = os.open("u", os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    for _ in range(600):
        os.mkdir("d", dir_fd=d)
        nd = os.open("d", os.O_RDONLY, dir_fd=d)
        os.close(d)
        d = nd
    os.close(d)
    with pytest.raises(LayerError, match="nested more than"):
        layer_of(u)
    remove_tree(u)


@pytest.mark.unit
@pytest.mark.parametrize("what", ["redirect", "metacopy"])
def test_overlay_redirects_and_metacopy_are_refused(tmp_path: Path, what: str) -> None:
    u = tmp_path / "u"
    (u / "d").mkdir(parents=True)
    (u / "d" / "f").write_bytes(b"")
    target = u / "d" if what == "redirect" else u / "d" / "f"
    os.setxattr(target, f"{NS}.overlay.{what}", b"/elsewhere" if what == "redirect" else b"")
    with pytest.raises(LayerError, match=what):
        layer_of(u)


@pytest.mark.unit
def test_owners_are_mapped_back_through_the_id_map(tmp_path: Path) -> None:
    from isobox.host.idmap import IdMap, IdRange
    u = tmp_path / "u"
    u.mkdir()
    (u / "f").write_bytes(b"")
    me_u, me_g = os.getuid(), os.getgid()
    ids = IdMap(uids=(IdRange(container=0, host=me_u, size=1),),
                gids=(IdRange(container=0, host=me_g, size=1),), helpers=False)
    (m,) = members(layer_of(u, ids=ids))
    assert (m.uid, m.gid) == (0, 0)
    other = IdMap(uids=(IdRange(container=0, host=me_u + 1, size=1),), gids=ids.gids, helpers=False)
    with pytest.raises(LayerError, match="not mapped"):
        layer_of(u, ids=other)


# -- the property: what write_layer writes, apply_layer makes again -------------------------

NAMES = st.text(alphabet="abcxyz.-_ é", min_size=1, max_size=6).filter(
    lambda n: n not in (".", "..") and not n.startswith(".wh."))


@st.composite
def trees(draw: st.DrawFn) -> Dict[str, object]:
    """A small tree as {relative path: bytes | "dir" | ("sym", target) | ("link", path)}."""
    spec: Dict[str, object] = {}
    dirs = [""]
    for _ in range(draw(st.integers(0, 14))):
        parent = draw(st.sampled_from(dirs))
        path = f"{parent}/{draw(NAMES)}".lstrip("/")
        if path in spec or any(path.startswith(p + "/") for p, v in spec.items() if v != "dir"):
            continue
        kind = draw(st.sampled_from(["file", "dir", "sym", "link"]))
        files = [p for p, v in spec.items() if isinstance(v, bytes)]
        if kind == "dir":
            spec[path] = "dir"
            dirs.append(path)
        elif kind == "sym":
            spec[path] = ("sym", draw(st.sampled_from(["/etc", "../x", "a"])))
        elif kind == "link" and files:
            spec[path] = ("link", draw(st.sampled_from(files)))
        else:
            spec[path] = draw(st.binary(max_size=300))
    return spec


def build(root: Path, spec: Dict[str, object]) -> None:
    root.mkdir()
    for path, v in spec.items():
        p = root / path
        if v == "dir":
            p.mkdir()
        elif isinstance(v, bytes):
            p.write_bytes(v)
            os.chmod(p, 0o644)
        elif isinstance(v, tuple) and v[0] == "sym":
            os.symlink(v[1], p)
        elif isinstance(v, tuple):
            os.link(root / str(v[1]), p)


@pytest.mark.unit
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=trees())
@pytest.mark.unit
def test_property_written_then_applied_is_the_same_tree(tmp_path_factory: pytest.TempPathFactory,
                                                         spec: Dict[str, object]) -> None:
    base = tmp_path_factory.mktemp("prop")
    src, dest = base / "src", base / "dest"
    build(src, spec)
    data = layer_of(src)
    assert data == layer_of(src)
    dest.mkdir()
    apply_layer([data], dest, userxattr=not IS_ROOT)
    want, got = tree(src), tree(dest)
    want.pop("."), got.pop(".")
    assert got == want
    for path, v in spec.items():
        if isinstance(v, tuple) and v[0] == "link":
            assert os.stat(dest / path).st_ino == os.stat(dest / str(v[1])).st_ino
    remove_tree(dest)
