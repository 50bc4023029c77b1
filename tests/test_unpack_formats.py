"""Layers as GNU tar and Go's archive/tar (containerd's and Docker's reader) read them:
sparse files in every GNU form, extended headers in a row, PAX records and numeric fields
checked as strictly as those two check them.

The oracle is GNU tar: an archive is extracted with it and with apply_layer and the trees
are compared.  Where GNU tar and Go read the same bytes differently (each case below was
run through GNU tar 1.34 and Go 1.27's archive/tar while writing it, and says what each
reads), isobox refuses the layer: a layer that means one thing to isobox and another to
the runtimes and image scanners built on Go is a way to hide files.

Python's tarfile cannot write sparse members: they come from GNU tar (``--sparse``) or
are built here by hand, in the layouts GNU tar's manual ("Storing Sparse Files") gives.
"""

from __future__ import annotations

import io
import os
import random
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fixtures.host import require, require_tool
from support.host import IS_ROOT
from isobox.errors import LayerError
from isobox.host.fs import remove_tree
from isobox.images.unpack import LayerStats, Limits, apply_layer
from test_unpack_hostile import Box

MTIME = 1_600_000_000
END = bytes(1024)
Regions = List[Tuple[int, bytes]]  # (offset, data) of a sparse file


@pytest.fixture(autouse=True)
def _tidy(tmp_path: Path) -> Iterator[None]:
    yield
    for child in tmp_path.iterdir():
        remove_tree(child)


# ----------------------------------------------------------------------------- builders


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def checksum(block: bytearray) -> bytes:
    block[148:156] = b"        "
    block[148:155] = b"%06o\0" % sum(block)
    return bytes(block)


def header(name: str, kind: bytes = b"0", size: int = 0, *, link: str = "", mode: int = 0o644,
           fmt: int = tarfile.USTAR_FORMAT, fields: Sequence[Tuple[int, bytes]] = ()) -> bytes:
    """One header block, with raw fields patched in (offset, bytes) and the checksum redone."""
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mode, ti.mtime = kind, link, mode, MTIME
    block = bytearray(ti.tobuf(fmt)[-512:])  # tobuf may put long-name headers first
    block[124:136] = b"%011o\0" % size
    for offset, raw in fields:
        block[offset : offset + len(raw)] = raw
    return checksum(block)


def member(name: str, data: bytes = b"", kind: bytes = b"0", **kw: object) -> bytes:
    return header(name, kind, len(data), **kw) + pad(data)  # type: ignore[arg-type]


def record(key: bytes, value: bytes) -> bytes:
    n = len(key) + len(value) + 3
    n += len(str(n))
    if len(str(n)) + len(key) + len(value) + 3 != n:
        n += 1
    return b"%d %s=%s\n" % (n, key, value)


def xheader(*records: Tuple[bytes, bytes], raw: bytes = b"", kind: bytes = b"x") -> bytes:
    body = b"".join(record(k, v) for k, v in records) + raw
    return header("PaxHeaders/x", kind, len(body)) + pad(body)


def long_header(kind: bytes, text: str) -> bytes:
    data = text.encode() + b"\0"
    return header("././@LongLink", kind, len(data), fmt=tarfile.GNU_FORMAT,
                  fields=[(257, b"ustar  \0")]) + pad(data)


def sparse_data(regions: Regions) -> bytes:
    return b"".join(data for _, data in regions)


def sparse_member(name: str, size: int, regions: Regions, version: str) -> bytes:
    """A sparse file in one of GNU's forms: "0.0", "0.1", "1.0" (PAX) or "S" (old GNU).
    Like GNU tar, ends the map with an empty region at the size when the file ends in a
    hole (GNU tar sizes the file by its map)."""
    if not regions or regions[-1][0] + len(regions[-1][1]) < size:
        regions = regions + [(size, b"")]
    data = sparse_data(regions)
    flat = [(b"%d" % off, b"%d" % len(d)) for off, d in regions]
    if version == "0.0":
        pairs = [r for off, n in flat for r in ((b"GNU.sparse.offset", off), (b"GNU.sparse.numbytes", n))]
        x = xheader((b"GNU.sparse.size", b"%d" % size), (b"GNU.sparse.numblocks", b"%d" % len(flat)), *pairs)
        return x + member(name, data)
    if version == "0.1":
        x = xheader((b"GNU.sparse.size", b"%d" % size), (b"GNU.sparse.numblocks", b"%d" % len(flat)),
                    (b"GNU.sparse.map", b",".join(v for pair in flat for v in pair)),
                    (b"GNU.sparse.name", name.encode()))
        return x + member("GNUSparseFile.0/" + name, data)
    if version == "1.0":
        x = xheader((b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"),
                    (b"GNU.sparse.name", name.encode()), (b"GNU.sparse.realsize", b"%d" % size))
        text = b"%d\n" % len(flat) + b"".join(b"%s\n%s\n" % pair for pair in flat)
        return x + member("GNUSparseFile.0/" + name, pad(text) + data)
    return old_gnu_sparse(name, size, [(off, len(d)) for off, d in regions], data)


def octal12(n: int) -> bytes:
    return b"%011o\0" % n if n < 8**11 else b"\x80" + n.to_bytes(11, "big")


def old_gnu_sparse(name: str, size: int, regions: List[Tuple[int, int]], data: bytes,
                   fields: Sequence[Tuple[int, bytes]] = ()) -> bytes:
    """Type 'S': four regions in the header, 21 in each extension block."""
    entries = [octal12(off) + octal12(n) for off, n in regions]
    head, rest = entries[:4], entries[4:]
    blocks = [rest[i : i + 21] for i in range(0, len(rest), 21)]
    out = header(name, b"S", len(data), fmt=tarfile.GNU_FORMAT, fields=[
        (257, b"ustar  \0"), (386, b"".join(head)), (482, b"\1" if blocks else b"\0"),
        (483, octal12(size)), *fields])
    for i, chunk in enumerate(blocks):
        ext = bytearray(512)
        ext[: 24 * len(chunk)] = b"".join(chunk)
        ext[504] = 1 if i < len(blocks) - 1 else 0
        out += bytes(ext)
    return out + pad(data)


def make_sparse_file(path: Path, size: int, regions: Regions) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in regions:
            f.seek(off)
            f.write(data)


# ----------------------------------------------------------------------------- oracles


def gnu_tar(*args: str, data: Optional[bytes] = None) -> bytes:
    done = subprocess.run([require_tool("tar"), *args], input=data, capture_output=True, check=True)
    return done.stdout


def gnu_extract(data: bytes, dest: Path) -> None:
    gnu_tar("-xf", "-", "-C", str(dest), *(["--same-owner"] if IS_ROOT else []), data=data)


def apply(data: bytes, dest: Path, **kwargs: object) -> LayerStats:
    return apply_layer([data[i : i + 7000] for i in range(0, len(data), 7000)] or [b""], dest, **kwargs)  # type: ignore[arg-type]


def content(path: Path) -> Tuple[int, Tuple[Tuple[int, bytes], ...]]:
    """A file's size and non-zero 64 KiB chunks, read only where it has data
    (SEEK_DATA/SEEK_HOLE): files with the same content compare equal, however their
    holes lie, and a 60 GB sparse file is read in a moment."""
    chunk = 1 << 16
    chunks: Dict[int, bytearray] = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            data = os.pread(fd, end - start, start)
            i = start
            while i < end:
                base = i - i % chunk
                stop = min(end, base + chunk)
                buf = chunks.setdefault(base, bytearray(chunk))
                buf[i - base : stop - base] = data[i - start : stop - start]
                i = stop
            pos = end
    finally:
        os.close(fd)
    return size, tuple((k, bytes(v)) for k, v in sorted(chunks.items()) if any(v))


def tree(root: Path) -> Dict[str, tuple]:
    out: Dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st_ = os.lstat(path)
            mode = stat.S_IMODE(st_.st_mode)
            if stat.S_ISREG(st_.st_mode):
                out[rel] = ("f", mode, st_.st_nlink, content(path))
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("d", mode)
            elif stat.S_ISLNK(st_.st_mode):
                out[rel] = ("l", os.readlink(path))
            else:
                out[rel] = ("other", st_.st_mode)
    return out


def same_as_gnu_tar(tmp_path: Path, data: bytes) -> Path:
    """Extracts data with GNU tar and with apply_layer and asserts the same tree."""
    oracle = Path(tempfile.mkdtemp(dir=tmp_path))
    gnu_extract(data, oracle)
    ours = Path(tempfile.mkdtemp(dir=tmp_path))
    apply(data, ours)
    assert tree(ours) == tree(oracle)
    return ours


def assert_holes(path: Path, data_bytes: int, regions: int) -> None:
    st_ = os.stat(path)
    # data, rounded to blocks at both ends of each region, and a little metadata
    assert st_.st_blocks * 512 <= data_bytes + (regions + 2) * 8192, (st_.st_blocks, data_bytes)


# ----------------------------------------------------------------------------- sparse

REGIONS_60G: Regions = [(0, b"head" * 20), (5_000_000, b"five"), (30 * 10**9, b"middle" * 30),
                        (60 * 10**9 - 100, b"tail" * 25)]


@pytest.mark.parametrize("args", [["--format=gnu"], ["--format=oldgnu"],
                                  ["--format=posix", "--sparse-version=0.0"],
                                  ["--format=posix", "--sparse-version=0.1"],
                                  ["--format=posix", "--sparse-version=1.0"]],
                         ids=["gnu", "oldgnu", "pax0.0", "pax0.1", "pax1.0"])
def test_sparse_files_from_gnu_tar_extract_with_holes(tmp_path: Path, args: List[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_sparse_file(src / "big", 60 * 10**9, REGIONS_60G)
    make_sparse_file(src / "small", 3 * 4096 + 7, [(4096, b"x" * 4096)])
    make_sparse_file(src / "empty-holes", 10**6, [])
    data = gnu_tar("--sparse", *args, "-cf", "-", "-C", str(src), ".")
    assert len(data) < 1 << 20
    ours = same_as_gnu_tar(tmp_path, data)
    big = ours / "big"
    assert big.stat().st_size == 60 * 10**9
    assert_holes(big, 4 * 4096, 4)  # GNU tar stores whole 4 KiB blocks around the data
    with open(big, "rb") as f:
        for off, chunk in REGIONS_60G:
            f.seek(off)
            assert f.read(len(chunk)) == chunk
    assert (ours / "small").read_bytes() == bytes(4096) + b"x" * 4096 + bytes(4096 + 7)
    assert (ours / "empty-holes").stat().st_size == 10**6
    assert_holes(ours / "empty-holes", 0, 0)


@pytest.mark.parametrize("version", ["0.0", "0.1", "1.0", "S"])
def test_sparse_maps_of_every_form_extract_as_gnu_tar_does(tmp_path: Path, version: str) -> None:
    # every region but the last fills whole 512-byte blocks, as GNU tar reads them
    regions = [(3, b"abc" * 512), (10_000, b"d" * 1024), (70_000, b""), (2 * 10**9, b"f" * 5120)]
    regions += [(3 * 10**9 + i * 1000, b"g%03d" % i * 128) for i in range(30)]  # extension blocks
    regions += [(3 * 10**9 + 10**6, b"last, ragged")]
    size = 4 * 10**9 + 1
    data = sparse_member("dir/sparse", size, regions, version) + END
    ours = same_as_gnu_tar(tmp_path, data)
    assert (ours / "dir" / "sparse").stat().st_size == size
    assert_holes(ours / "dir" / "sparse", len(sparse_data(regions)), len(regions))


@st.composite
def sparse_maps(draw: st.DrawFn) -> Tuple[int, Regions]:
    regions: Regions = []
    pos = 0
    count = draw(st.integers(0, 30))
    for i in range(count):
        pos += draw(st.one_of(st.integers(0, 5000), st.integers(0, 10**12)))
        # whole 512-byte blocks but in the last region: GNU tar reads each region from
        # blocks of its own (a ragged one is refused: test_unpack_hostile)
        if i == count - 1:
            data = draw(st.binary(max_size=700))
        else:
            data = draw(st.sampled_from([b"", b"\0" * 512, b"x" * 512, os.urandom(1024)]))
        regions.append((pos, data))
        pos += len(data)
    return pos + draw(st.one_of(st.just(0), st.integers(0, 10**10))), regions


NAMES = st.sampled_from(["a", "b", "dir/c", "dir/sub/" + "long" * 30, "é", "n" * 99])


@given(files=st.lists(st.tuples(NAMES, st.binary(max_size=3000)), max_size=5),
       sparse=st.lists(st.tuples(sparse_maps(), st.sampled_from(["0.0", "0.1", "1.0", "S"])), max_size=4),
       links=st.lists(st.tuples(st.sampled_from(["sym", "hard"]), st.integers(0, 8)), max_size=3),
       fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_tarfile_archives_with_sparse_members_extract_as_gnu_tar_does(
    tmp_path: Path, files: List[Tuple[str, bytes]], sparse: List[Tuple[Tuple[int, Regions], str]],
    links: List[Tuple[str, int]], fmt: int,
) -> None:
    out = b""
    names: List[str] = []
    for name, data in files:
        if fmt == tarfile.USTAR_FORMAT and len(name) > 99 and "/" not in name[-100:]:
            continue
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime, ti.mode = len(data), MTIME, 0o640
        out += ti.tobuf(fmt, "utf-8", "surrogateescape") + pad(data)
        names.append(name)
    for i, ((size, regions), version) in enumerate(sparse):
        name = f"sparse{i}-{version}"
        out += sparse_member(name, size, regions, version)
        names.append(name)
    for i, (kind, target) in enumerate(links):
        if not names:
            break
        ti = tarfile.TarInfo(f"link{i}-" + "l" * (60 if fmt == tarfile.USTAR_FORMAT else 120))
        ti.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
        ti.linkname, ti.mtime = names[target % len(names)], MTIME
        if fmt == tarfile.USTAR_FORMAT and len(ti.linkname) > 100:
            continue
        out += ti.tobuf(fmt, "utf-8", "surrogateescape")
    ours = same_as_gnu_tar(tmp_path, out + END)
    for i, ((size, regions), version) in enumerate(sparse):
        path = ours / f"sparse{i}-{version}"
        if os.stat(path).st_nlink == 1:  # not replaced by a hard link's name
            assert path.stat().st_size == size
            assert_holes(path, len(sparse_data(regions)), len(regions))


# ----------------------------------------------------------------------------- extended headers


def test_of_several_pax_headers_in_a_row_only_the_last_describes_the_entry(tmp_path: Path) -> None:
    # GNU tar and Go both name this entry "good", with the second header's mtime.
    data = (xheader((b"path", b"PAX2/PAX2/" + b"first" * 30)) + xheader((b"mtime", b"1234567890"))
            + member("good", b"x") + END)
    ours = same_as_gnu_tar(tmp_path, data)
    assert os.listdir(ours) == ["good"]
    assert (ours / "good").stat().st_mtime_ns == 1234567890 * 10**9


def test_gnu_long_names_in_a_row_and_with_an_agreeing_pax_path(tmp_path: Path) -> None:
    data = (long_header(b"L", "first") + long_header(b"L", "second" * 30) + member("a", b"1")
            + long_header(b"L", "same") + xheader((b"path", b"same"), (b"mtime", b"7")) + member("b", b"2")
            + xheader((b"mtime", b"8")) + long_header(b"K", "t" * 200) + member("c", kind=b"2", link="x")
            + END)
    ours = same_as_gnu_tar(tmp_path, data)
    assert sorted(os.listdir(ours)) == sorted(["second" * 30, "same", "c"])
    assert os.readlink(ours / "c") == "t" * 200


@pytest.mark.unit
@pytest.mark.parametrize("data, why", [
    # Go: "fromL" (the long name wins); GNU tar: "fromx" (the PAX path wins)
    (long_header(b"L", "fromL") + xheader((b"path", b"fromx")) + member("a"), "disagree"),
    (xheader((b"path", b"fromx")) + long_header(b"L", "fromL") + member("a"), "disagree"),
    (long_header(b"K", "fromK") + xheader((b"linkpath", b"fromx")) + member("s", kind=b"2", link="h"),
     "disagree"),
    # Go ends the entry at the global header ("a"), GNU tar keeps the PAX path ("fromx")
    (xheader((b"path", b"fromx")) + xheader((b"comment", b"c"), kind=b"g") + member("a"), "global"),
    (long_header(b"L", "fromL") + xheader((b"comment", b"c"), kind=b"g") + member("a"), "global"),
    # Go gives the PAX path to the volume label, GNU tar to the file
    (xheader((b"path", b"fromx")) + header("label", b"V") + member("a"), "volume label"),
], ids=["L-then-x", "x-then-L", "K-then-x", "x-then-g", "L-then-g", "x-then-V"])
def test_extended_headers_that_go_and_gnu_tar_read_differently_are_refused(
    tmp_path: Path, data: bytes, why: str
) -> None:
    err = Box(tmp_path).apply(data + END)
    assert err is not None and why in str(err)


# ----------------------------------------------------------------------------- PAX records


@pytest.mark.unit
@pytest.mark.parametrize("body, why", [
    (record(b"SCHILY.xattr.user.a\0b", b"v"), "NUL"),  # both refuse
    (record(b"mtime", b"7") + b"\0" * 10, "length"),  # Go refuses, GNU tar stops there
    (b"12  path=ab\n", "blank"),  # Go: key " path"; GNU tar: path "ab"
    (b"11\tpath=ab\n", "length"),  # Go refuses, GNU tar skips the tab
    (b"+12 path=ab\n", "length"),  # GNU tar refuses, Go takes it
    (b"99 path=ab\n", "length"),
    (b"10 path=ab", "length"),
    (b"9 pathab\n", "key=value"),
    (b"6 =ab\n", "key=value"),
    (record(b"path", b"a\0b"), "NUL"),  # Go refuses, GNU tar cuts at the NUL
    (record(b"uname", b"a\0b"), "NUL"),
    (record(b"mtime", b"+5"), "mtime"),  # GNU tar refuses, Go takes it
    (record(b"mtime", b"1.5e3"), "mtime"),  # Go refuses, GNU tar reads 1.5
    (record(b"mtime", b"99999999999999999999"), "mtime"),  # both refuse
    (record(b"atime", b"x"), "atime"),
    (record(b"ctime", b"x"), "ctime"),  # not applied, but both refuse it
    (record(b"uid", b"+7"), "uid"),
    (record(b"uid", b"-7"), "uid"),
    (record(b"uid", b"99999999999999999999"), "uid"),
    (record(b"size", b"9223372036854775808"), "size"),
    (record(b"size", b"1e3"), "size"),
    (record(b"SCHILY.xattr.", b"v"), "xattr"),
    (record(b"SCHILY.xattr.user.a%3Db", b"v"), "xattr"),  # GNU tar: "user.a=b"; Go: as is
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_pax_records_are_refused_naming_the_entry(tmp_path: Path, body: bytes, why: str) -> None:
    data = xheader(raw=body) + member("the-entry", b"x") + END
    err = Box(tmp_path).apply(data)
    assert err is not None and why in str(err) and "the-entry" in str(err), err


@pytest.mark.parametrize("body, check", [
    (b"012 path=ab\n", lambda d: (d / "ab").exists()),  # leading zeros in the length
    (record(b"mtime", b"5."), lambda d: (d / "f").stat().st_mtime_ns == 5 * 10**9),
    (record(b"mtime", b"5." + b"1" * 100), lambda d: (d / "f").stat().st_mtime_ns == 5_111_111_111),
    (record(b"mtime", b"-1.5"), lambda d: (d / "f").stat().st_mtime_ns == -1_500_000_000),
    (record(b"comment", b"a\0b\nc=d"), lambda d: (d / "f").exists()),
    (record(b"foo.bar", b"x") + record(b"a", b""), lambda d: (d / "f").exists()),
    (record(b"path", b"caf\xe9"), lambda d: (d / os.fsdecode(b"caf\xe9")).exists()),
])
def test_pax_records_both_readers_take_are_read_as_gnu_tar_reads_them(
    tmp_path: Path, body: bytes, check: object
) -> None:
    data = xheader(raw=body) + member("f", b"x") + END
    ours = same_as_gnu_tar(tmp_path, data)
    assert check(ours)  # type: ignore[operator]


@pytest.mark.unit
def test_xattr_records_go_and_gnu_tar_ignore_are_ignored(tmp_path: Path) -> None:
    # LIBARCHIVE.xattr.* (bsdtar writes SCHILY.xattr.* beside it) and SCHILY.devmajor are
    # unknown keywords to GNU tar 1.34 and unread by Go: they must not make a difference.
    devices = [xheader((b"SCHILY.devmajor", b"8"), (b"SCHILY.devminor", b"0"))
               + header("null", b"3", fields=[(329, b"0000001\0"), (337, b"0000003\0")])] if IS_ROOT else []
    data = xheader((b"LIBARCHIVE.xattr.user.foo", b"YmFy")) + member("f", b"x") + b"".join(devices) + END
    dest = tmp_path / "d"
    dest.mkdir()
    apply(data, dest)
    assert "user.foo" not in os.listxattr(dest / "f")
    if IS_ROOT:
        assert os.lstat(dest / "null").st_rdev == os.makedev(1, 3)


@pytest.mark.unit
def test_empty_xattr_values_are_applied(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    try:
        os.setxattr(dest, "user.probe", b"")
        probed = True
    except OSError:
        probed = False
    require(probed, "the test file system has no user xattrs")
    apply(xheader((b"SCHILY.xattr.user.empty", b"")) + member("f", b"x") + END, dest)
    assert os.getxattr(dest / "f", "user.empty") == b""


# ----------------------------------------------------------------------------- header fields


def test_a_numeric_field_after_one_nul_is_read_as_go_and_gnu_tar_read_it(tmp_path: Path) -> None:
    # Both read the size as 1024: the member "inner" is this file's data, not an entry.
    inner = member("inner", b"I")
    data = header("f", size=0, fields=[(124, b"\0%010o\0" % len(inner))]) + inner + END
    ours = same_as_gnu_tar(tmp_path, data)
    assert os.listdir(ours) == ["f"] and (ours / "f").stat().st_size == 1024


@pytest.mark.unit
@pytest.mark.parametrize("field", [
    b"\0\0%09o\0" % 1024,  # GNU tar: 0, Go: 1024
    b"%09o \0x" % 1024,  # GNU tar: 1024, Go: invalid
    b"\x81" + bytes(9) + (1024).to_bytes(2, "big"),  # base-256 that only Go takes
], ids=["two-nuls", "space-nul-garbage", "base256-0x81"])
def test_numeric_fields_go_and_gnu_tar_read_differently_are_refused(tmp_path: Path, field: bytes) -> None:
    inner = member("inner", b"I")
    err = Box(tmp_path).apply(header("f", fields=[(124, field)]) + inner + END)
    assert err is not None and "'f': invalid tar header: size field" in str(err)


@pytest.mark.parametrize("kind", [b"5", b"1"], ids=["directory", "hard-link"])
def test_directories_and_hard_links_carry_no_data_whatever_their_size(tmp_path: Path, kind: bytes) -> None:
    # Go (isHeaderOnlyType) and GNU tar both read the next header right after these.
    data = (member("a", b"A") + header("d", kind, 1536, link="a" if kind == b"1" else "")
            + member("smuggled", b"S") + END)
    ours = same_as_gnu_tar(tmp_path, data)
    assert (ours / "smuggled").read_bytes() == b"S"


@pytest.mark.unit
@pytest.mark.parametrize("kind, name", [(b"2", "s"), (b"3", "c"), (b"4", "b"), (b"6", "p"), (b"\0", "olddir/")])
def test_special_files_with_data_are_refused(tmp_path: Path, kind: bytes, name: str) -> None:
    # Go reads no data after these, GNU tar reads their size: "smuggled" is a file to Go only.
    data = header(name, kind, 1536, link="a" if kind == b"2" else "") + member("smuggled", b"S") + END
    err = Box(tmp_path).apply(data)
    assert err is not None and "GNU tar reads them, Go does not" in str(err)


@pytest.mark.unit
def test_a_header_after_a_lone_zero_block_is_refused(tmp_path: Path) -> None:
    # GNU tar stops at the zero block; Go refuses the header after it.
    err = Box(tmp_path).apply(member("a", b"1") + bytes(512) + member("b", b"2") + END)
    assert err is not None and "zero block" in str(err)
    box = Box(tmp_path)  # one zero block at the very end is an end, to both
    assert box.apply(member("a", b"1") + bytes(512)) is None
    assert (box.dest / "a").read_bytes() == b"1"


@pytest.mark.unit
def test_star_headers_use_their_shorter_prefix(tmp_path: Path) -> None:
    # star: a 131-byte prefix, then atime and ctime, and "tar\0" at the end (Go: formatSTAR)
    data = header("name", fields=[(257, b"ustar\0"), (345, b"p" * 131), (476, b"%011o\0" % 5),
                                  (488, b"%011o\0" % 6), (508, b"tar\0")]) + END
    dest = tmp_path / "d"
    dest.mkdir()
    apply(data, dest)
    assert os.listdir(dest / ("p" * 131)) == ["name"]


# ----------------------------------------------------------------------------- hostile sparse maps


def raw_sparse(name: str, size: int, pairs: List[Tuple[int, int]], data: bytes, version: str,
               extra: Sequence[Tuple[bytes, bytes]] = ()) -> bytes:
    """A sparse member with whatever map and data it is given, right or wrong."""
    flat = [(b"%d" % off, b"%d" % n) for off, n in pairs]
    if version == "0.0":
        recs = [r for off, n in flat for r in ((b"GNU.sparse.offset", off), (b"GNU.sparse.numbytes", n))]
        return xheader((b"GNU.sparse.size", b"%d" % size), (b"GNU.sparse.numblocks", b"%d" % len(flat)),
                       *recs, *extra) + member(name, data)
    if version == "0.1":
        return xheader((b"GNU.sparse.size", b"%d" % size), (b"GNU.sparse.numblocks", b"%d" % len(flat)),
                       (b"GNU.sparse.map", b",".join(v for pair in flat for v in pair)),
                       (b"GNU.sparse.name", name.encode()), *extra) + member("GNUSparseFile.0/" + name, data)
    if version == "1.0":
        text = b"%d\n" % len(flat) + b"".join(b"%s\n%s\n" % pair for pair in flat)
        return xheader((b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"),
                       (b"GNU.sparse.name", name.encode()), (b"GNU.sparse.realsize", b"%d" % size),
                       *extra) + member("GNUSparseFile.0/" + name, pad(text) + data)
    return old_gnu_sparse(name, size, pairs, data)


def refused(tmp_path: Path, data: bytes, why: str, **kwargs: object) -> Box:
    box = Box(tmp_path)
    err = box.apply(data + END, **kwargs)
    assert err is not None and why in str(err), err
    for dirpath, _, files in os.walk(box.dest):
        for f in files:  # nothing was written for the refused file
            assert os.lstat(os.path.join(dirpath, f)).st_blocks == 0
    return box


ALL = ["0.0", "0.1", "1.0", "S"]


@pytest.mark.unit
@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("pairs, size, data, why", [
    ([(0, 1024), (512, 512), (4096, 0)], 4096, 1536, "overlap"),
    ([(2048, 512), (0, 512), (4096, 0)], 4096, 1024, "out of order"),
    ([(0, 512), (4096, 512)], 4096, 1024, "past its size"),
    ([(0, 512), (1024, 512), (4096, 0)], 4096, 512, "holds 1024 bytes"),  # map longer than the data
    ([(0, 512), (4096, 0)], 4096, 2048, "holds 512 bytes"),  # data the map does not place
    ([(0, 100), (1024, 512), (4096, 0)], 4096, 612, "multiple of 512"),  # GNU: own blocks, Go: packed
    ([(0, 512)], 4096, 512, "not at its size"),  # GNU tar would make the file 512 bytes long
    ([(2**63 - 1, 1)], 2**63 - 1, 1, "past its size"),
], ids=["overlap", "order", "beyond", "map>data", "data>map", "ragged", "short", "overflow"])
def test_hostile_sparse_maps_are_refused_before_anything_is_written(
    tmp_path: Path, version: str, pairs: List[Tuple[int, int]], size: int, data: int, why: str
) -> None:
    refused(tmp_path, raw_sparse("s", size, pairs, b"x" * data, version), why)


@pytest.mark.unit
@pytest.mark.parametrize("data, why", [
    (raw_sparse("s", 1, [(1, 0)], b"", "0.1", [(b"GNU.sparse.numblocks", b"99999999999999")]), "max_entries"),
    (raw_sparse("s", 1, [(1, 0)], b"", "0.1", [(b"GNU.sparse.numblocks", b"9" * 30)]), "numblocks"),
    (raw_sparse("s", 10**30, [(0, 0)], b"", "0.1"), "GNU.sparse.size"),
    (raw_sparse("s", 1, [(10**30, 0)], b"", "0.1"), "GNU.sparse.offset"),
    (raw_sparse("s", 1, [(0, 0)], b"", "0.1", [(b"GNU.sparse.numblocks", b"2")]), "2 regions"),
    (xheader((b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"), (b"GNU.sparse.realsize", b"9"))
     + member("s", pad(b"99999999999\n")), "max_entries"),  # a count, then nothing: no reading on
    (xheader((b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"), (b"GNU.sparse.realsize", b"9"))
     + member("s", pad(b"2\n0\n")), "past its data"),
    (xheader((b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"), (b"GNU.sparse.realsize", b"9"))
     + member("s", pad(b"1\n0\nnine\n") + b"x" * 9), "sparse map entry"),
    (xheader((b"GNU.sparse.major", b"2"), (b"GNU.sparse.minor", b"0")) + member("s"), "unknown"),
    (xheader((b"GNU.sparse.size", b"5")) + member("s"), "without a map"),
    (xheader((b"GNU.sparse.size", b"5"), (b"GNU.sparse.realsize", b"6"), (b"GNU.sparse.numblocks", b"1"),
             (b"GNU.sparse.map", b"0,0")) + member("s"), "disagree"),
    (xheader((b"GNU.sparse.numblocks", b"1"), (b"GNU.sparse.map", b"0,0")) + member("l", kind=b"2", link="t"),
     "no file"),
    (xheader((b"GNU.sparse.numblocks", b"1"), (b"GNU.sparse.map", b"5,0"))
     + old_gnu_sparse("s", 5, [(5, 0)], b""), "both"),
    (xheader((b"GNU.sparse.numblocks", b"1"), (b"GNU.sparse.map", b"0,0"),
             raw=record(b"GNU.sparse.numbytes", b"0") + record(b"GNU.sparse.offset", b"0")) + member("s"),
     "out of order"),
    (old_gnu_sparse("s", 5, [(5, 0)], b"", fields=[(257, b"ustar\0")]), "non-GNU"),
    (old_gnu_sparse("s", 5, [(5, 0)], b"", fields=[(386 + 24, b"0" * 11)]), "half-empty"),
    (old_gnu_sparse("s", 5, [(5, 0)], b"", fields=[(482, b"\1")]) + bytes(512), "after the end"),
    (old_gnu_sparse("s", 5, [(5, 0)], b"", fields=[(386, b"\xff" * 12)]), "negative"),
], ids=["numblocks-huge", "numblocks-overflow", "size-overflow", "offset-overflow", "numblocks-wrong",
        "1.0-count-huge", "1.0-past-data", "1.0-garbage", "version", "no-map", "two-sizes", "symlink",
        "S-and-pax", "0.0-order", "S-star", "S-half", "S-ext-after-end", "S-negative"])
def test_malformed_sparse_headers_are_refused(tmp_path: Path, data: bytes, why: str) -> None:
    refused(tmp_path, data, why)


@pytest.mark.unit
def test_sparse_regions_count_against_max_entries_and_maps_against_max_header_size(tmp_path: Path) -> None:
    regions: Regions = [(i * 1024, b"r" * 512) for i in range(20)]
    for version in ALL:
        data = sparse_member("s", 40_000, regions, version)
        refused(tmp_path, data, "max_entries", limits=Limits(max_entries=10))
        assert Box(tmp_path).apply(data + END, limits=Limits(max_entries=22)) is None
    big: Regions = [(i * 1024, b"r" * 512) for i in range(3000)]  # a 37 KiB map
    for version in ALL:
        refused(tmp_path, sparse_member("s", 4_000_000, big, version), "max_header_size",
                limits=Limits(max_header_size=16 * 1024))


@pytest.mark.unit
def test_endless_old_gnu_extension_blocks_stop_at_the_header_limit(tmp_path: Path) -> None:
    ext = bytearray(512)
    ext[: 21 * 24] = (octal12(0) + octal12(0)) * 21
    ext[504] = 1
    data = old_gnu_sparse("s", 5, [(0, 0)] * 4, b"", fields=[(482, b"\1")]) + bytes(ext) * 5000
    refused(tmp_path, data, "max_header_size", limits=Limits(max_header_size=64 * 1024))


@given(size=st.one_of(st.integers(0, 10**6), st.integers(0, 2**64)),
       pairs=st.lists(st.tuples(st.one_of(st.integers(0, 10**6), st.integers(0, 2**66)),
                                st.one_of(st.integers(0, 3000), st.integers(0, 2**66))), max_size=8),
       data=st.integers(0, 5000), version=st.sampled_from(ALL))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(size=1024, pairs=[(0, 512), (512, 512)], data=1024, version="S")
def test_random_sparse_maps_are_refused_or_written_within_their_size(
    tmp_path: Path, size: int, pairs: List[Tuple[int, int]], data: int, version: str
) -> None:
    box = Box(tmp_path)
    try:
        err = box.apply(raw_sparse("s", size, pairs, os.urandom(data), version) + END)
        if err is None:
            st_ = os.lstat(box.dest / "s")
            assert st_.st_size == size
            assert st_.st_blocks * 512 <= data + (len(pairs) + 2) * 8192
    finally:
        box.close()


@pytest.mark.unit
def test_a_hard_link_to_a_sparse_lower_file_is_copied_with_its_holes(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    regions: Regions = [(4096, b"data" * 1024), (10**9, b"end")]
    make_sparse_file(lower / "sparse", 10**9 + 3, regions)
    dest = tmp_path / "d"
    dest.mkdir()
    stats = apply(member("h", kind=b"1", link="sparse") + END, dest, lower_dirs=[lower])
    assert stats.depends_on_lower
    assert content(dest / "h") == content(lower / "sparse")
    assert_holes(dest / "h", 4096 + 3, 2)
