"""Hostile and broken layers: the image author is the attacker.

Every test keeps a sentinel directory beside the layer directory and checks afterwards
that nothing outside the layer was created, changed or hard-linked, whatever the archive
did, and that the failure (if any) is a LayerError.
"""

from __future__ import annotations

import gzip
import io
import os
import random
import stat
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.host import IS_ROOT
from isobox.errors import LayerError
from isobox.host.fs import remove_tree
from isobox.images.unpack import Limits, apply_layer

MTIME = 1_600_000_000


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", *, link: str = "",
           mode: Optional[int] = None, pax: Optional[Dict[str, str]] = None) -> Tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    if mode is None:  # as real archives: searchable directories
        mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    ti.type, ti.mode, ti.linkname, ti.mtime = kind, mode, link, MTIME
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    if pax:
        ti.pax_headers = dict(pax)
    return ti, data


def make_tar(members: List[Tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for ti, data in members:
            tar.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


class Box:
    """tmp/box/{dest, sentinel/file}: the layer goes into dest; nothing else may change."""

    def __init__(self, base: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="box-", dir=base))
        self.dest = self.root / "dest"
        self.dest.mkdir()
        self.sentinel = self.root / "sentinel"
        self.sentinel.mkdir()
        (self.sentinel / "file").write_bytes(b"sentinel")
        self._before = self._state()

    def _state(self) -> tuple:
        f = os.lstat(self.sentinel / "file")
        return (
            sorted(os.listdir(self.root)),
            sorted(os.listdir(self.sentinel)),
            (self.sentinel / "file").read_bytes(),
            (f.st_ino, f.st_nlink, f.st_mode, f.st_mtime_ns, f.st_uid),
            os.lstat(self.sentinel).st_mtime_ns,
            os.stat("/etc/passwd").st_nlink,
        )

    def apply(self, data: bytes, **kwargs: object) -> Optional[LayerError]:
        try:
            apply_layer([data[i : i + 777] for i in range(0, len(data), 777)], self.dest, **kwargs)  # type: ignore[arg-type]
            return None
        except LayerError as exc:
            return exc
        finally:
            self.check()

    def check(self) -> None:
        assert self._state() == self._before, "something outside the layer changed"
        assert stat.S_ISDIR(os.lstat(self.dest).st_mode), "the layer root was replaced"
        if not IS_ROOT:  # the image's modes may lock its owner out: open the tree to look
            stack = [os.fspath(self.dest)]
            while stack:
                d = stack.pop()
                mode = stat.S_IMODE(os.lstat(d).st_mode)
                if mode & 0o700 != 0o700:
                    os.chmod(d, mode | 0o700)  # lstat said: a directory, not a symlink
                for n in os.listdir(d):
                    if stat.S_ISDIR(os.lstat(os.path.join(d, n)).st_mode):
                        stack.append(os.path.join(d, n))
        real_dest = os.path.realpath(self.dest)
        for dirpath, dirnames, filenames in os.walk(self.dest):
            assert os.path.realpath(dirpath).startswith(real_dest)
            for name in filenames:
                st_ = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISREG(st_.st_mode) and st_.st_nlink > 1:
                    assert st_.st_ino != os.lstat(self.sentinel / "file").st_ino

    def close(self) -> None:
        remove_tree(self.root)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    b = Box(tmp_path)
    yield b
    b.close()


@pytest.fixture(autouse=True)
def _tidy(tmp_path: Path) -> Iterator[None]:
    """Layers hold directories their owner cannot enter (0644, 0000): remove them with
    remove_tree, or pytest's own clean-up of old runs fails without root."""
    yield
    for child in tmp_path.iterdir():
        remove_tree(child)


# ----------------------------------------------------------------------------- named cases


@pytest.mark.unit
@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "./../escape", "a/b/../../../x"])
def test_member_names_with_dotdot_are_refused(box: Box, name: str) -> None:
    err = box.apply(make_tar([member(name, data=b"evil")]))
    assert err is not None and ".." in str(err)


@pytest.mark.unit
def test_absolute_member_names_land_inside_the_layer(box: Box) -> None:
    box.apply(make_tar([member(str(box.sentinel / "file"), data=b"evil"), member("/etc/passwd", data=b"x")]))
    assert (box.dest / str(box.sentinel / "file").lstrip("/")).read_bytes() == b"evil"
    assert (box.dest / "etc" / "passwd").read_bytes() == b"x"


@pytest.mark.unit
@pytest.mark.parametrize("target", ["/", "..", "../..", "SENTINEL", "../sentinel", "/../../SENTINEL"])
def test_writes_through_a_symlinked_parent_stay_inside_the_layer(box: Box, target: str) -> None:
    target = target.replace("SENTINEL", str(box.sentinel))
    err = box.apply(make_tar([member("link", tarfile.SYMTYPE, link=target),
                              member("link/file", data=b"evil"),
                              member("link/new/deeper", data=b"evil")]))
    assert os.readlink(box.dest / "link") == target
    # the kernel clamps the symlink to the layer root, as the container will see it
    inside = box.dest / os.path.normpath("/" + target).lstrip("/")
    if target in ("/", "..", "../.."):
        assert err is None
        assert (inside / "file").read_bytes() == b"evil"
    else:  # dangling inside the layer: an error, as Docker's MkdirAll in a chroot
        assert err is not None and "link" in str(err)


@pytest.mark.unit
def test_a_file_entry_replaces_a_symlink_instead_of_writing_through_it(box: Box) -> None:
    box.apply(make_tar([member("f", tarfile.SYMTYPE, link=str(box.sentinel / "file")),
                        member("f", data=b"evil")]))
    assert not os.path.islink(box.dest / "f")
    assert (box.dest / "f").read_bytes() == b"evil"


@pytest.mark.unit
def test_a_directory_entry_replaces_a_symlink_to_a_directory(box: Box) -> None:
    box.apply(make_tar([member("d", tarfile.SYMTYPE, link=str(box.sentinel)),
                        member("d/", tarfile.DIRTYPE, mode=0o700),
                        member("d/x", data=b"evil")]))
    assert stat.S_ISDIR(os.lstat(box.dest / "d").st_mode)
    assert os.listdir(box.dest / "d") == ["x"]


@pytest.mark.unit
@pytest.mark.parametrize("link", ["../sentinel/file", "/../sentinel/file", "SENTINEL/file", "/etc/passwd"])
def test_hard_links_cannot_reach_outside_the_layer(box: Box, link: str) -> None:
    link = link.replace("SENTINEL", str(box.sentinel))
    err = box.apply(make_tar([member("h", tarfile.LNKTYPE, link=link)]))
    assert err is not None  # ".." refused; absolute names are looked up inside the layer
    assert not os.path.lexists(box.dest / "h")


@pytest.mark.unit
def test_hard_link_through_a_symlinked_directory_stays_inside(box: Box) -> None:
    err = box.apply(make_tar([member("s", tarfile.SYMTYPE, link=str(box.sentinel)),
                              member("h", tarfile.LNKTYPE, link="s/file")]))
    assert err is not None and "missing" in str(err)


@pytest.mark.unit
def test_hard_link_to_a_symlink_links_the_symlink_itself(box: Box) -> None:
    box.apply(make_tar([member("s", tarfile.SYMTYPE, link=str(box.sentinel / "file")),
                        member("h", tarfile.LNKTYPE, link="s")]))
    assert os.path.islink(box.dest / "h")
    assert os.lstat(box.dest / "h").st_ino == os.lstat(box.dest / "s").st_ino


@pytest.mark.unit
@pytest.mark.parametrize("name", [".", "./", "/", "", "./."])
@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.REGTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE])
def test_the_layer_root_is_never_replaced(box: Box, name: str, kind: bytes) -> None:
    err = box.apply(make_tar([member("f", data=b"x"), member(name or ".", kind, link=str(box.sentinel))]))
    assert err is not None and "root" in str(err)


@pytest.mark.unit
def test_member_name_with_a_nul_byte_is_refused(box: Box) -> None:
    err = box.apply(make_tar([member("a", pax={"path": "a\x00b"})]))
    assert err is not None


@pytest.mark.unit
@pytest.mark.parametrize("name", ["n" * 256, "/".join(["d" * 200] * 30) + "/f"])
def test_names_the_kernel_cannot_hold_are_layer_errors(box: Box, name: str) -> None:
    err = box.apply(make_tar([member(name, data=b"x")]))
    assert err is not None and isinstance(err.__cause__, OSError)


@pytest.mark.unit
def test_symlink_loop_in_a_parent_is_an_error_not_a_hang(box: Box) -> None:
    err = box.apply(make_tar([member("a", tarfile.SYMTYPE, link="b"), member("b", tarfile.SYMTYPE, link="a"),
                              member("a/x", data=b"")]))
    assert err is not None


@pytest.mark.unit
def test_file_used_as_a_directory_is_an_error(box: Box) -> None:
    err = box.apply(make_tar([member("f", data=b""), member("f/x", data=b"")]))
    assert err is not None


@pytest.mark.unit
def test_dangling_symlink_used_as_a_directory_is_an_error(box: Box) -> None:
    err = box.apply(make_tar([member("d", tarfile.SYMTYPE, link="/nowhere"), member("d/x", data=b"")]))
    assert err is not None


@pytest.mark.unit
def test_forged_overlay_xattrs_cannot_make_whiteouts_or_redirects(box: Box) -> None:
    pax = {"SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.user.overlay.opaque": "y",
           "SCHILY.xattr.trusted.overlay.whiteout": "y", "SCHILY.xattr.user.overlay.whiteout": "y"}
    box.apply(make_tar([member("d/", tarfile.DIRTYPE, pax=pax), member("f", pax=pax)]))
    for path in (box.dest / "d", box.dest / "f"):
        assert not [x for x in os.listxattr(path) if ".overlay." in x]


@pytest.mark.unit
def test_whiteout_names_cannot_leave_their_directory(tmp_path: Path) -> None:
    for name in ("d/.wh..", ".wh...", "d/.wh./x"):
        err = Box(tmp_path).apply(make_tar([member(name)]))
        assert err is not None


@pytest.mark.unit
def test_device_nodes_are_not_a_way_out(box: Box) -> None:
    # a block device of the host's disk, then a write to it: as root, the node is made (it is
    # the image's right) but apply_layer never opens it; without root it is skipped.
    box.apply(make_tar([member("disk", tarfile.BLKTYPE), member("disk", data=b"overwrite")]))
    assert (box.dest / "disk").read_bytes() == b"overwrite"
    assert stat.S_ISREG(os.lstat(box.dest / "disk").st_mode)


# ----------------------------------------------------------------------------- property

COMPONENTS = st.sampled_from(["..", ".", "", "a", "b", "sentinel", "dest", "file", ".wh.a", ".wh..wh..opq", "..."])


@st.composite
def hostile_paths(draw: st.DrawFn) -> str:
    parts = draw(st.lists(COMPONENTS, min_size=1, max_size=5))
    lead = draw(st.sampled_from(["", "/", "./", "../", "//"]))
    return lead + "/".join(parts)


@given(entries=st.lists(st.tuples(
    st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE]),
    hostile_paths(),
    st.one_of(hostile_paths(), st.sampled_from(["SENTINEL", "SENTINEL/file", "/", "..", "../sentinel/file"])),
), max_size=10), fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_hostile_archives_never_touch_anything_outside_the_layer(
    tmp_path: Path, entries: List[Tuple[bytes, str, str]], fmt: int
) -> None:
    box = Box(tmp_path)
    try:
        members = []
        for kind, name, link in entries:
            link = link.replace("SENTINEL", str(box.sentinel))
            members.append(member(name or ".", kind, b"evil" if kind == tarfile.REGTYPE else b"", link=link))
        try:
            raw = make_tar(members, fmt)
        except ValueError:
            return  # tarfile refuses to write it
        box.apply(raw)
    finally:
        box.close()


# ----------------------------------------------------------------------------- broken


def sample(n: int = 40) -> bytes:
    rng = random.Random(3)
    return make_tar([member(f"d{i % 5}/f{i}", data=rng.randbytes(rng.randrange(0, 5000))) for i in range(n)])


@pytest.mark.unit
def test_truncated_gzip_is_a_layer_error_with_its_cause(box: Box) -> None:
    data = gzip.compress(sample())
    err = box.apply(data[:-10])
    assert err is not None and "truncated" in str(err)
    err2 = Box(box.root).apply(data[: len(data) // 2])
    assert err2 is not None


@pytest.mark.unit
def test_corrupt_gzip_is_a_layer_error_caused_by_zlib(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(sample()))
    data[len(data) // 2] ^= 0xFF
    err = Box(tmp_path).apply(bytes(data))
    assert err is not None and isinstance(err.__cause__, zlib.error)
    data = bytearray(gzip.compress(sample()))
    data[-6] ^= 0x01  # the CRC-32 trailer
    err = Box(tmp_path).apply(bytes(data))
    assert err is not None and isinstance(err.__cause__, zlib.error)


@pytest.mark.unit
def test_garbage_after_gzip_is_refused(box: Box) -> None:
    err = box.apply(gzip.compress(sample()) + b"garbage")
    assert err is not None and "garbage" in str(err)


@pytest.mark.unit
def test_truncated_zstd_is_a_layer_error(tmp_path: Path) -> None:
    data = zstandard.ZstdCompressor().compress(sample())
    for cut in (len(data) - 1, len(data) // 2, 6):
        err = Box(tmp_path).apply(data[:cut])
        assert err is not None, cut


@pytest.mark.unit
def test_corrupt_zstd_is_a_layer_error_caused_by_zstandard(tmp_path: Path) -> None:
    data = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(sample()))
    data[-2] ^= 0xFF  # the content checksum
    err = Box(tmp_path).apply(bytes(data))
    assert err is not None and isinstance(err.__cause__, zstandard.ZstdError)


@pytest.mark.unit
def test_bzip2_and_xz_are_not_layer_formats(box: Box) -> None:
    import bz2
    import lzma

    assert box.apply(bz2.compress(sample())) is not None
    assert Box(box.root).apply(lzma.compress(sample())) is not None


@pytest.mark.unit
def test_bad_tar_checksum_and_garbage_are_layer_errors(tmp_path: Path) -> None:
    raw = bytearray(sample())
    raw[0] ^= 0x01
    err = Box(tmp_path).apply(bytes(raw))
    assert err is not None and "checksum" in str(err)
    err = Box(tmp_path).apply(os.urandom(10_000))
    assert err is not None


@pytest.mark.unit
def test_truncated_tar_is_a_layer_error(tmp_path: Path) -> None:
    raw = sample()
    for cut in (700, 512 + 100, len(raw) // 2 + 3):
        assert Box(tmp_path).apply(raw[:cut]) is not None, cut


@pytest.mark.unit
def test_malformed_pax_records_are_layer_errors(tmp_path: Path) -> None:
    def with_pax(record: bytes) -> bytes:
        header = tarfile.TarInfo("././@PaxHeader")
        header.type, header.size = tarfile.XHDTYPE, len(record)
        body = record + bytes(-len(record) % 512)
        ti, _ = member("f")
        return header.tobuf(tarfile.USTAR_FORMAT) + body + ti.tobuf(tarfile.USTAR_FORMAT) + bytes(1024)

    for record in (b"99 path=x\n", b"x path=y\n", b"9 pathy\n", b"10 mtime=z\n", b"11 uid=-5\n",
                   b"12 size=1e3\n", b"8 path=a", b"6 =ab\n"):
        assert Box(tmp_path).apply(with_pax(record)) is not None, record


@pytest.mark.unit
def test_invalid_octal_fields_are_layer_errors(tmp_path: Path) -> None:
    ti, _ = member("f")
    block = bytearray(ti.tobuf(tarfile.USTAR_FORMAT))
    block[108:116] = b"0o17\0\0\0\0"  # uid that Python's int() would accept
    block[148:156] = b"        "
    block[148:155] = b"%06o\0" % sum(block)
    assert Box(tmp_path).apply(bytes(block) + bytes(1024)) is not None


@pytest.mark.unit
def test_a_sparse_1_0_file_without_its_map_is_refused(tmp_path: Path) -> None:
    # sparse files themselves, and hostile maps: test_unpack_formats.py
    raw = make_tar([member("s", pax={"GNU.sparse.major": "1", "GNU.sparse.minor": "0"})])
    err = Box(tmp_path).apply(raw)
    assert err is not None and "map runs past its data" in str(err)


@pytest.mark.unit
def test_base256_numbers_from_gnu_tar_are_read(tmp_path: Path) -> None:
    ti, _ = member("big", data=b"x")
    ti.uid, ti.gid = 3_000_000, 3_000_001  # beyond 7 octal digits: GNU writes base-256
    b = Box(tmp_path)
    assert b.apply(make_tar([(ti, b"x")], tarfile.GNU_FORMAT)) is None
    if IS_ROOT:
        st_ = os.lstat(b.dest / "big")
        assert (st_.st_uid, st_.st_gid) == (3_000_000, 3_000_001)


@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 10**6)),
       compress=st.sampled_from(["gzip", "zstd", "none"]))
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_corrupted_layers_fail_cleanly(tmp_path: Path, flips: List[Tuple[int, int]], cut: Optional[int],
                                       compress: str) -> None:
    raw = make_tar([member("d/", tarfile.DIRTYPE, mode=0o755), member("d/f", data=b"x" * 3000),
                    member("l", tarfile.SYMTYPE, link="d/f"), member("h", tarfile.LNKTYPE, link="d/f"),
                    member("p" * 150, data=b"long", pax={"SCHILY.xattr.user.a": "b"})])
    data = bytearray({"gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress,
                      "none": bytes}[compress](raw))
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    if cut is not None:
        del data[cut % len(data):]
    box = Box(tmp_path)
    try:
        box.apply(bytes(data))  # succeeds or raises LayerError; anything else fails the test
    finally:
        box.close()


# ----------------------------------------------------------------------------- bombs


def test_gzip_bomb_stops_at_the_size_limit(box: Box) -> None:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    ti, _ = member("zeros")
    ti.size = 1 << 30
    head = ti.tobuf(tarfile.PAX_FORMAT)
    bomb = comp.compress(head) + b"".join(comp.compress(bytes(1 << 20)) for _ in range(1024)) + comp.flush()
    assert len(bomb) < 2 << 20
    err = box.apply(bomb, limits=Limits(max_total_size=64 << 20))
    assert err is not None and "max_total_size" in str(err)
    assert os.lstat(box.dest / "zeros").st_size <= 64 << 20


def test_zstd_bomb_stops_at_the_size_limit_without_holding_it_in_memory(box: Box) -> None:
    import resource

    ti, _ = member("zeros")
    ti.size = 2 << 30
    cctx = zstandard.ZstdCompressor(level=19)
    writer = io.BytesIO()
    with cctx.stream_writer(writer, closefd=False) as w:
        w.write(ti.tobuf(tarfile.PAX_FORMAT))
        for _ in range(2048):
            w.write(bytes(1 << 20))
    bomb = writer.getvalue()
    assert len(bomb) < 1 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    err = box.apply(bomb, limits=Limits(max_total_size=256 << 20))
    assert err is not None and "max_total_size" in str(err)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200 * 1024  # bounded chunks, not the whole output


@pytest.mark.unit
def test_entry_count_limit(box: Box) -> None:
    err = box.apply(make_tar([member(f"f{i}") for i in range(101)]), limits=Limits(max_entries=100))
    assert err is not None and "max_entries" in str(err)


@pytest.mark.unit
@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_huge_extended_headers_are_refused_before_being_read(tmp_path: Path, fmt: int) -> None:
    name = "n/" * 600_000  # 1.2 MB long name
    err = Box(tmp_path).apply(make_tar([member(name + "f")], fmt))
    assert err is not None and "max_header_size" in str(err)
    # a header that claims more than it has is refused without waiting for the bytes
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, 1 << 40
    err = Box(tmp_path).apply(header.tobuf(tarfile.GNU_FORMAT))
    assert err is not None and "max_header_size" in str(err)


@pytest.mark.unit
def test_many_hard_links_to_a_big_lower_file_are_bounded(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    (lower / "big").write_bytes(bytes(1 << 20))
    raw = make_tar([member(f"h{i}", tarfile.LNKTYPE, link="big") for i in range(3)])
    # the first link copies; the next ones link to that copy, so only one copy counts
    b = Box(tmp_path)
    assert b.apply(raw, lower_dirs=[lower], limits=Limits(max_total_size=(1 << 20) + 100_000)) is None
    assert os.lstat(b.dest / "h2").st_nlink == 3
    (lower / "big2").write_bytes(bytes(1 << 20))
    raw = make_tar([member("h", tarfile.LNKTYPE, link="big"), member("i", tarfile.LNKTYPE, link="big2")])
    err = Box(tmp_path).apply(raw, lower_dirs=[lower], limits=Limits(max_total_size=(1 << 20) + 100_000))
    assert err is not None and "max_total_size" in str(err)
