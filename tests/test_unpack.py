"""Applying layer streams: tar semantics, OCI whiteouts as overlayfs reads them, streams.

Producers are independent of isobox: GNU tar (extracting with GNU tar is the oracle for
its archives) and Python's tarfile.  Whiteouts and opaque directories are proven with a
real overlay mount (root: plain mount in a private mount namespace; otherwise inside
``unshare -Urm`` with ``-o userxattr``).  Hostile archives live in test_unpack_hostile.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import stat
import struct
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import pytest
import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fixtures.host import require, require_tool
from support.host import IS_ROOT
from isobox.errors import DigestMismatch, InvalidOption, LayerError
from isobox.host.fs import remove_tree
from isobox.images.unpack import LayerStats, Limits, apply_layer

@pytest.fixture(autouse=True)
def _tidy(tmp_path: Path) -> Iterator[None]:
    """Layers hold directories their owner cannot enter (0644, 0000): remove them with
    remove_tree, or pytest's own clean-up of old runs fails without root."""
    yield
    for child in tmp_path.iterdir():
        remove_tree(child)


# ----------------------------------------------------------------------------- helpers

MTIME = 1_600_000_000


def member(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    *,
    mode: Optional[int] = None,
    link: str = "",
    uid: int = 0,
    gid: int = 0,
    mtime: float = MTIME,
    pax: Optional[Dict[str, str]] = None,
    devmajor: int = 0,
    devminor: int = 0,
) -> Tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    if mode is None:  # as real archives: searchable directories
        mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    ti.type, ti.mode, ti.linkname, ti.uid, ti.gid, ti.mtime = kind, mode, link, uid, gid, mtime
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    ti.devmajor, ti.devminor = devmajor, devminor
    if pax:
        ti.pax_headers = dict(pax)
    return ti, data


def make_tar(members: Iterable[Tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for ti, data in members:
            tar.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


def pieces(data: bytes, size: int = 4096) -> List[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def new_dir(base: Path, name: str = "layer") -> Path:
    path = base / name
    path.mkdir()
    return path


def apply(data: bytes, dest: Path, **kwargs: object) -> LayerStats:
    return apply_layer(pieces(data), dest, **kwargs)  # type: ignore[arg-type]


def snapshot(root: Path, times: bool = True) -> Dict[str, tuple]:
    """Everything tar semantics promise about a tree, comparable between extractions:
    type, mode, owner, content or link target, mtime, hard-link groups."""
    out: Dict[str, tuple] = {}
    inodes: Dict[int, List[str]] = {}
    broot = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(broot):
        for name in [b""] if dirpath == broot else []:
            st_ = os.lstat(dirpath)
            out["."] = ("d", stat.S_IMODE(st_.st_mode), st_.st_uid, st_.st_gid,
                        st_.st_mtime_ns if times else 0)
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.fsdecode(os.path.relpath(path, broot))
            st_ = os.lstat(path)
            mode = stat.S_IMODE(st_.st_mode)
            common = (st_.st_uid, st_.st_gid, st_.st_mtime_ns if times else 0)
            if stat.S_ISREG(st_.st_mode):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[rel] = ("f", mode, *common, digest)
                inodes.setdefault(st_.st_ino, []).append(rel)
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("d", mode, *common)
            elif stat.S_ISLNK(st_.st_mode):
                out[rel] = ("l", os.readlink(path), st_.st_uid, st_.st_gid)
            elif stat.S_ISFIFO(st_.st_mode):
                out[rel] = ("p", mode, *common)
            elif stat.S_ISCHR(st_.st_mode) or stat.S_ISBLK(st_.st_mode):
                out[rel] = ("c" if stat.S_ISCHR(st_.st_mode) else "b", mode, *common, st_.st_rdev)
    for group in inodes.values():
        if len(group) > 1:
            for rel in group:
                out[rel] = out[rel] + (tuple(sorted(group)),)
    return out


def gnu_tar(*args: str, cwd: Optional[Path] = None) -> None:
    subprocess.run([require_tool("tar"), *args], check=True, cwd=cwd, capture_output=True)


def xattr_ok(path: Path, name: str = "user.isobox.probe") -> bool:
    try:
        os.setxattr(path, name, b"1")
        os.removexattr(path, name)
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- producers


def build_sample_tree(root: Path) -> None:
    """Files, dirs, symlinks, hard links, a fifo, special modes, long and odd names."""
    (root / "etc" / "deep" / ("long" * 40)).mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "etc" / "empty").write_bytes(b"")
    (root / "bin").mkdir()
    big = random.Random(7).randbytes(300_000)
    (root / "bin" / "tool").write_bytes(big)
    os.chmod(root / "bin" / "tool", 0o4755)
    (root / "bin" / "group-tool").write_bytes(b"x")
    os.chmod(root / "bin" / "group-tool", 0o2711)
    os.link(root / "bin" / "tool", root / "bin" / "tool-link")
    os.symlink("../etc/passwd", root / "bin" / "rel-link")
    os.symlink("/etc/" + "target" * 30, root / "bin" / "long-target-link")
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    os.mkfifo(root / "etc" / "fifo")
    (root / "etc" / "deep" / ("long" * 40) / ("file-" + "n" * 150)).write_text("deep")
    os.link(
        root / "etc" / "deep" / ("long" * 40) / ("file-" + "n" * 150),
        root / "etc" / ("hard-" + "h" * 120),
    )
    (root / os.fsdecode(b"latin1-\xe9t\xe9")).write_text("not utf-8")
    (root / "ro").mkdir()
    (root / "ro" / "inside").write_text("kept")
    os.chmod(root / "ro", 0o555)
    if IS_ROOT:  # GNU tar cannot archive an unreadable directory without root
        (root / "locked").mkdir()
        os.chmod(root / "locked", 0o000)
    for i, path in enumerate(sorted(root.rglob("*"))):
        os.utime(path, ns=(MTIME * 10**9 + i, MTIME * 10**9 + i * 1001), follow_symlinks=False)


@pytest.mark.parametrize("fmt", ["gnu", "posix", "oldgnu"])
@pytest.mark.parametrize("compress", ["gzip", "zstd", "none"])
def test_gnu_tar_archive_extracts_as_gnu_tar_does(tmp_path: Path, fmt: str, compress: str) -> None:
    src = new_dir(tmp_path, "src")
    build_sample_tree(src)
    archive = tmp_path / "layer.tar"
    gnu_tar("--format", fmt, "--sort=name", "-cf", str(archive), "-C", str(src), ".")
    data = archive.read_bytes()
    want_diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    if compress == "gzip":
        data = gzip.compress(data)
    elif compress == "zstd":
        data = zstandard.ZstdCompressor().compress(data)

    oracle = new_dir(tmp_path, "oracle")
    gnu_tar("-xpf", str(archive), "-C", str(oracle), *(["--same-owner"] if IS_ROOT else []))
    ours = new_dir(tmp_path, "ours")
    stats = apply(data, ours)

    try:
        assert stats.diff_id == want_diff_id
        assert stats.size == archive.stat().st_size
        assert snapshot(ours) == snapshot(oracle)
    finally:
        remove_tree(oracle)
        remove_tree(ours)
        remove_tree(src)


@pytest.mark.unit
@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_python_tarfile_archive_matches_the_members(tmp_path: Path, fmt: int) -> None:
    long_dir = "d" * 60 + "/" + "e" * 60  # needs the ustar prefix field
    name_len = 90 if fmt == tarfile.USTAR_FORMAT else 250
    members = [
        member("./", tarfile.DIRTYPE, mode=0o755, mtime=MTIME + 1),
        member(long_dir + "/", tarfile.DIRTYPE, mode=0o750, mtime=MTIME + 2),
        member(long_dir + "/" + "f" * name_len, data=b"payload", mode=0o640, mtime=MTIME + 3),
        member("sym", tarfile.SYMTYPE, link="x" * (90 if fmt == tarfile.USTAR_FORMAT else 300)),
        member("short", data=b"s"),
        member("hard", tarfile.LNKTYPE, link="short" if fmt == tarfile.USTAR_FORMAT else long_dir + "/" + "f" * name_len),
        member("fifo", tarfile.FIFOTYPE, mode=0o620),
        member("exe", data=b"#!", mode=0o6755, mtime=MTIME + 4.5 if fmt == tarfile.PAX_FORMAT else MTIME),
    ]
    dest = new_dir(tmp_path)
    stats = apply(make_tar(members, fmt), dest)
    assert stats.entries == len(members)
    f = dest / long_dir / ("f" * name_len)
    assert f.read_bytes() == b"payload"
    assert stat.S_IMODE(f.stat().st_mode) == 0o640
    assert f.stat().st_mtime_ns == (MTIME + 3) * 10**9
    assert os.readlink(dest / "sym") == "x" * (90 if fmt == tarfile.USTAR_FORMAT else 300)
    linked = dest / "short" if fmt == tarfile.USTAR_FORMAT else f
    assert (dest / "hard").stat().st_ino == linked.stat().st_ino
    assert stat.S_ISFIFO((dest / "fifo").lstat().st_mode)
    assert stat.S_IMODE((dest / "fifo").lstat().st_mode) == 0o620
    exe = (dest / "exe").stat()
    assert stat.S_IMODE(exe.st_mode) & 0o4755 == 0o4755  # setgid may drop without root
    if fmt == tarfile.PAX_FORMAT:
        assert exe.st_mtime_ns == (MTIME + 4) * 10**9 + 500_000_000
    assert stat.S_IMODE((dest / long_dir).stat().st_mode) == 0o750
    assert (dest / long_dir).stat().st_mtime_ns == (MTIME + 2) * 10**9  # after its content
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


# ----------------------------------------------------------------------------- property

NAMES = st.sampled_from(["a", "b", "c", "dir", "x.y", "é", "-", " sp"])


@st.composite
def trees(draw: st.DrawFn) -> List[Tuple[str, str, object]]:
    """A consistent tree as (kind, path, payload) in walk order: parents before children,
    hard links after their target; some directories left implicit."""
    entries: List[Tuple[str, str, object]] = []
    files: List[str] = []

    def fill(prefix: str, depth: int) -> None:
        names = draw(st.lists(NAMES, unique=True, max_size=4))
        for name in names:
            path = f"{prefix}{name}"
            kind = draw(st.sampled_from(["file", "file", "dir", "symlink", "hardlink"]))
            if kind == "dir" and depth < 3:
                implicit = draw(st.booleans())
                mode = draw(st.sampled_from([0o755, 0o700, 0o555, 0o1777, 0o2755]))
                entries.append(("dir" if not implicit else "implicit", path, mode))
                mark = len(entries)
                fill(path + "/", depth + 1)
                if implicit and len(entries) == mark:
                    entries[mark - 1] = ("dir", path, mode)  # an implicit dir needs content
            elif kind == "symlink":
                entries.append(("symlink", path, draw(st.sampled_from(
                    ["a", "../../etc", "/abs/target", "./x", "dangling/y", "é"]))))
            elif kind == "hardlink" and files:
                entries.append(("hardlink", path, draw(st.sampled_from(files))))
            else:
                data = draw(st.binary(max_size=2000))
                mode = draw(st.sampled_from([0o644, 0o600, 0o755, 0o4755, 0o444, 0o000]))
                entries.append(("file", path, (data, mode)))
                files.append(path)

    fill("", 0)
    return entries


@given(tree=trees(), chunk=st.integers(1, 5000), fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
       compress=st.sampled_from(["gzip", "zstd", "none"]))
@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_generated_tree_extracts_to_the_same_tree(
    tmp_path: Path, tree: List[Tuple[str, str, object]], chunk: int, fmt: int, compress: str
) -> None:
    members = []
    for i, (kind, path, payload) in enumerate(tree):
        mtime = MTIME + i
        if kind == "file":
            data, mode = payload  # type: ignore[misc]
            members.append(member(path, data=data, mode=mode, mtime=mtime))
        elif kind == "dir":
            members.append(member(path + "/", tarfile.DIRTYPE, mode=payload, mtime=mtime))  # type: ignore[arg-type]
        elif kind == "symlink":
            members.append(member(path, tarfile.SYMTYPE, link=payload, mtime=mtime))  # type: ignore[arg-type]
        elif kind == "hardlink":
            members.append(member(path, tarfile.LNKTYPE, link=payload))  # type: ignore[arg-type]
    raw = make_tar(members, fmt)
    data = {"gzip": lambda b: gzip.compress(b, 1), "zstd": zstandard.ZstdCompressor().compress,
            "none": lambda b: b}[compress](raw)
    import tempfile

    dest = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        stats = apply_layer(pieces(data, chunk), dest)
        assert stats.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert stats.entries == len(members)
        targets = {p: os.lstat(dest / p).st_ino for k, p, _ in tree if k == "file"}
        for i, (kind, path, payload) in enumerate(tree):
            got = os.lstat(dest / path)
            if kind == "file":
                data_, mode = payload  # type: ignore[misc]
                assert stat.S_ISREG(got.st_mode)
                if IS_ROOT or mode & 0o400:
                    assert (dest / path).read_bytes() == data_
                assert stat.S_IMODE(got.st_mode) == mode
                assert got.st_mtime_ns == (MTIME + i) * 10**9
            elif kind in ("dir", "implicit"):
                assert stat.S_ISDIR(got.st_mode)
                if kind == "dir":
                    assert stat.S_IMODE(got.st_mode) == payload
                    assert got.st_mtime_ns == (MTIME + i) * 10**9
                else:
                    assert stat.S_IMODE(got.st_mode) == 0o755
            elif kind == "symlink":
                assert os.readlink(dest / path) == payload
            elif kind == "hardlink":
                assert got.st_ino == targets[payload]  # type: ignore[index]
        listed = {os.path.relpath(os.path.join(d, n), dest) for d, ds, fs in os.walk(dest) for n in ds + fs}
        assert listed == {p for _, p, _ in tree}
    finally:
        remove_tree(dest)


# Replacement semantics (tar, Docker's applier): model the tree as a dict.

REPLACE_PATHS = st.sampled_from(["a", "b", "a/x", "a/y", "b/z"])


@pytest.mark.unit
@given(ops=st.lists(st.tuples(st.sampled_from(["file", "dir", "hardlink"]), REPLACE_PATHS,
                              REPLACE_PATHS, st.binary(max_size=8)), max_size=8))
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(ops=[("file", "b/z", "a", b""), ("hardlink", "b", "b/z", b"")])  # found by hypothesis
def test_later_entries_replace_earlier_ones_as_tar_does(
    tmp_path: Path, ops: List[Tuple[str, str, str, bytes]]
) -> None:
    """A file or link replaces whatever was there (a directory with its content); a
    directory over a directory keeps the content; a path under a file is an error."""
    model: Dict[str, object] = {}  # path -> bytes (file) or None (dir)
    members = []
    error = False
    for kind, path, target, data in ops:
        parents = [path.rsplit("/", 1)[0]] if "/" in path else []
        if any(p in model and model[p] is not None for p in parents):
            error = True
        if kind == "hardlink" and not isinstance(model.get(target), bytes):
            error = True
        if error:
            members.append(member(path, {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE,
                                         "hardlink": tarfile.LNKTYPE}[kind], data, link=target))
            break
        for p in parents:
            model[p] = None
        if kind == "dir":
            if model.get(path, b"") is not None:
                for k in [k for k in model if k == path or k.startswith(path + "/")]:
                    del model[k]
            model[path] = None
            members.append(member(path, tarfile.DIRTYPE, mode=0o755))
            continue
        content = data if kind == "file" else model[target]
        if kind == "hardlink" and target == path:
            members.append(member(path, tarfile.LNKTYPE, link=target))
            continue
        for k in [k for k in model if k == path or k.startswith(path + "/")]:
            del model[k]
        model[path] = content
        if kind == "file":
            members.append(member(path, data=data))
        else:
            members.append(member(path, tarfile.LNKTYPE, link=target))
    import tempfile

    dest = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        if error:
            with pytest.raises(LayerError):
                apply(make_tar(members), dest)
            return
        apply(make_tar(members), dest)
        got: Dict[str, object] = {}
        for d, ds, fs in os.walk(dest):
            for n in ds:
                got[os.path.relpath(os.path.join(d, n), dest)] = None
            for n in fs:
                got[os.path.relpath(os.path.join(d, n), dest)] = Path(d, n).read_bytes()
        assert got == model
    finally:
        remove_tree(dest)


# ----------------------------------------------------------------------------- metadata


@pytest.mark.unit
def test_ownership_is_kept_as_root_and_collapsed_to_the_caller_without(tmp_path: Path) -> None:
    members = [
        member("d/", tarfile.DIRTYPE, uid=1234, gid=5678, mode=0o750),
        member("d/setuid", data=b"x", uid=1234, gid=5678, mode=0o6755),
        member("sym", tarfile.SYMTYPE, link="d", uid=2222, gid=3333),
        member("fifo", tarfile.FIFOTYPE, uid=4444, gid=4444),
    ]
    dest = new_dir(tmp_path)
    apply(make_tar(members), dest)
    me = (os.geteuid(), os.getegid())
    want = {"d": (1234, 5678), "d/setuid": (1234, 5678), "sym": (2222, 3333), "fifo": (4444, 4444)}
    for path, ids in want.items():
        st_ = os.lstat(dest / path)
        assert (st_.st_uid, st_.st_gid) == (ids if IS_ROOT else me)
    # chown comes before chmod, so the set-id bits survive it
    assert stat.S_IMODE((dest / "d" / "setuid").stat().st_mode) == 0o6755


@pytest.mark.unit
def test_device_nodes_are_made_as_root_and_skipped_with_a_note_without(tmp_path: Path) -> None:
    members = [
        member("dev/", tarfile.DIRTYPE),
        member("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
        member("dev/loop9", tarfile.BLKTYPE, mode=0o660, devmajor=7, devminor=9),
        member("dev/null-link", tarfile.LNKTYPE, link="dev/null"),
    ]
    dest = new_dir(tmp_path)
    stats = apply(make_tar(members), dest)
    if IS_ROOT:
        st_ = os.lstat(dest / "dev" / "null")
        assert stat.S_ISCHR(st_.st_mode) and st_.st_rdev == os.makedev(1, 3)
        assert stat.S_IMODE(st_.st_mode) == 0o666
        assert stat.S_ISBLK(os.lstat(dest / "dev" / "loop9").st_mode)
        assert os.lstat(dest / "dev" / "null-link").st_ino == st_.st_ino
        assert stats.skipped == ()
    else:
        assert sorted(os.listdir(dest / "dev")) == []
        assert [s.split(":")[0] for s in stats.skipped] == ["dev/null", "dev/loop9", "dev/null-link"]


@pytest.mark.unit
def test_xattrs_from_pax_records_are_applied_and_overlay_ones_refused(tmp_path: Path) -> None:
    require(xattr_ok(tmp_path), "the test file system has no user xattrs")
    cap = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)  # cap_net_raw+ep, VFS_CAP_REVISION_2
    pax = {
        "SCHILY.xattr.user.note": "hello",
        "SCHILY.xattr.trusted.overlay.opaque": "y",
        "SCHILY.xattr.user.overlay.whiteout": "y",
        "SCHILY.xattr.security.capability": cap.decode("latin-1"),
    }
    members = [
        member("dir/", tarfile.DIRTYPE, pax={"SCHILY.xattr.user.dirnote": "d"}, mode=0o555),
        member("dir/ping", data=b"\x7fELF", uid=1000, mode=0o4755, pax=pax),
    ]
    raw = make_tar(members)
    # tarfile writes PAX values as UTF-8: put the raw capability bytes back.
    raw = raw.replace(cap.decode("latin-1").encode("utf-8"), cap)
    raw = fix_pax_lengths(raw)
    dest = new_dir(tmp_path)
    stats = apply(raw, dest)
    ping = dest / "dir" / "ping"
    assert os.getxattr(ping, "user.note") == b"hello"
    assert os.getxattr(dest / "dir", "user.dirnote") == b"d"
    for forged in ("user.overlay.whiteout", "trusted.overlay.opaque"):
        assert forged not in os.listxattr(ping)
        assert any(forged in s for s in stats.skipped)
    if IS_ROOT:
        assert os.getxattr(ping, "security.capability") == cap  # survives the chown to 1000
        assert stat.S_IMODE(ping.stat().st_mode) == 0o4755
    else:
        assert any("security.capability" in s for s in stats.skipped)


def fix_pax_lengths(raw: bytes) -> bytes:
    """Re-encode a tar whose PAX record values were edited (record lengths, checksums)."""
    out = io.BytesIO()
    src = tarfile.open(fileobj=io.BytesIO(raw), mode="r:", encoding="latin-1")
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, encoding="latin-1") as dst:
        for ti in src:
            dst.addfile(ti, src.extractfile(ti) if ti.isreg() else None)
    return out.getvalue()


def test_xattrs_written_by_gnu_tar_are_applied(tmp_path: Path) -> None:
    src = new_dir(tmp_path, "src")
    (src / "f").write_text("x")
    require(xattr_ok(src / "f"), "the test file system has no user xattrs")
    os.setxattr(src / "f", "user.mime_type", b"text/plain")
    archive = tmp_path / "x.tar"
    gnu_tar("--xattrs", "--xattrs-include=user.*", "-cf", str(archive), "-C", str(src), ".")
    dest = new_dir(tmp_path)
    apply(archive.read_bytes(), dest)
    assert os.getxattr(dest / "f", "user.mime_type") == b"text/plain"


@pytest.mark.unit
def test_long_names_from_gnu_and_pax_headers_are_used(tmp_path: Path) -> None:
    deep = "/".join(["segment" * 5] * 20)  # ~720 bytes
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        dest = new_dir(tmp_path, f"l{fmt}")
        apply(make_tar([member(deep + "/f", data=b"1"),
                        member("l", tarfile.SYMTYPE, link="/" + deep),
                        member("h", tarfile.LNKTYPE, link=deep + "/f")], fmt), dest)
        assert (dest / deep / "f").read_bytes() == b"1"
        assert os.readlink(dest / "l") == "/" + deep
        assert (dest / "h").stat().st_ino == (dest / deep / "f").stat().st_ino


@pytest.mark.unit
def test_pax_global_header_records_are_ignored_as_containerd_ignores_them(tmp_path: Path) -> None:
    """Go's reader returns a global header as an entry of its own, and containerd and Docker
    skip it ("PAX Global Extended Headers found and ignored"); GNU tar would apply it to
    every later entry, even a path or a size, so a layer would read differently to isobox
    than to the runtimes and image scanners built on Go."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"mtime": "1234567890.25", "path": "same", "uid": "7"}) as tar:
        for name in ("a", "b"):
            ti, _ = member(name, data=name.encode())
            tar.addfile(ti, io.BytesIO(name.encode()))
    dest = new_dir(tmp_path)
    stats = apply(buf.getvalue(), dest)
    assert sorted(os.listdir(dest)) == ["a", "b"]
    assert stats.entries == 2
    for name in ("a", "b"):
        assert (dest / name).read_bytes() == name.encode()
        assert (dest / name).stat().st_mtime_ns == MTIME * 10**9
    assert stats.owners == ()


@pytest.mark.unit
def test_directory_times_are_set_after_their_content(tmp_path: Path) -> None:
    members = [member("d/", tarfile.DIRTYPE, mtime=1000, mode=0o500)]
    members += [member(f"d/f{i}", data=b"x") for i in range(50)]
    members += [member("d/sub/", tarfile.DIRTYPE, mtime=2000, mode=0o000), member("d/sub/g", data=b"")]
    dest = new_dir(tmp_path)
    apply(make_tar(members), dest)
    assert os.stat(dest / "d").st_mtime == 1000
    assert os.stat(dest / "d" / "sub").st_mtime == 2000
    assert stat.S_IMODE(os.stat(dest / "d").st_mode) == 0o500
    remove_tree(dest)  # read-only and 000 directories go too, without root
    assert not dest.exists()


@pytest.mark.unit
def test_directory_over_directory_keeps_content_and_takes_new_metadata(tmp_path: Path) -> None:
    dest = new_dir(tmp_path)
    apply(make_tar([member("d/", tarfile.DIRTYPE, mode=0o700), member("d/keep", data=b"k"),
                    member("d/", tarfile.DIRTYPE, mode=0o751, mtime=5)]), dest)
    assert (dest / "d" / "keep").read_bytes() == b"k"
    assert stat.S_IMODE((dest / "d").stat().st_mode) == 0o751
    assert (dest / "d").stat().st_mtime == 5


@pytest.mark.unit
def test_root_entry_sets_the_layer_root_metadata(tmp_path: Path) -> None:
    dest = new_dir(tmp_path)
    apply(make_tar([member("./", tarfile.DIRTYPE, mode=0o711, mtime=77), member("./f", data=b"")]), dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o711
    assert dest.stat().st_mtime == 77


@pytest.mark.unit
def test_layer_root_is_0755_when_the_archive_does_not_say(tmp_path: Path) -> None:
    dest = new_dir(tmp_path)
    os.chmod(dest, 0o700)
    apply(make_tar([member("f", data=b"")]), dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


# ----------------------------------------------------------------------------- streams


@pytest.mark.unit
def test_multi_member_gzip_and_trailing_zeros_are_one_stream(tmp_path: Path) -> None:
    raw = make_tar([member(f"f{i}", data=os.urandom(3000)) for i in range(20)])
    cut = len(raw) // 3
    data = gzip.compress(raw[:cut]) + gzip.compress(raw[cut : 2 * cut]) + gzip.compress(raw[2 * cut :])
    dest = new_dir(tmp_path)
    stats = apply(data + bytes(1000), dest)
    assert stats.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert len(os.listdir(dest)) == 20


@pytest.mark.unit
def test_multi_frame_zstd_with_a_skippable_frame_is_one_stream(tmp_path: Path) -> None:
    raw = make_tar([member(f"f{i}", data=os.urandom(3000)) for i in range(20)])
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    skippable = struct.pack("<II", 0x184D2A50, 5) + b"hello"
    data = skippable + cctx.compress(raw[:5000]) + cctx.compress(raw[5000:])
    dest = new_dir(tmp_path)
    stats = apply(data, dest)
    assert stats.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert len(os.listdir(dest)) == 20


def test_concatenated_zstd_cli_frames_apply(tmp_path: Path) -> None:
    raw = make_tar([member(f"f{i}", data=os.urandom(100_000)) for i in range(30)])
    zstd = require_tool("zstd")
    frames = []
    for i, (part, flags) in enumerate([(raw[:1_000_000], ["--no-check"]), (raw[1_000_000:], ["-19"])]):
        (tmp_path / f"p{i}").write_bytes(part)
        subprocess.run([zstd, "-q", *flags, str(tmp_path / f"p{i}")], check=True)
        frames.append((tmp_path / f"p{i}.zst").read_bytes())
    dest = new_dir(tmp_path)
    stats = apply(b"".join(frames), dest)
    assert stats.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert len(os.listdir(dest)) == 30


@pytest.mark.unit
def test_magic_bytes_win_over_the_media_type(tmp_path: Path) -> None:
    raw = make_tar([member("f", data=b"x")])
    dest = new_dir(tmp_path)
    apply(raw, dest, media_type="application/vnd.oci.image.layer.v1.tar+gzip")
    assert (dest / "f").read_bytes() == b"x"


@pytest.mark.unit
def test_non_layer_media_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="media type"):
        apply(b"", new_dir(tmp_path), media_type="application/vnd.oci.image.config.v1+json")


@pytest.mark.unit
def test_empty_stream_is_an_empty_layer(tmp_path: Path) -> None:
    stats = apply_layer([], new_dir(tmp_path))
    assert stats == LayerStats(diff_id="sha256:" + hashlib.sha256(b"").hexdigest(), size=0, entries=0)


@pytest.mark.unit
def test_stream_is_read_to_its_end_after_the_archive_ends(tmp_path: Path) -> None:
    raw = make_tar([member("f", data=b"x")]) + bytes(50_000)  # record padding after the end
    finished = []

    def blob() -> Iterator[bytes]:
        yield from pieces(gzip.compress(raw), 100)
        finished.append(True)  # the registry verifies the digest here

    stats = apply_layer(blob(), new_dir(tmp_path))
    assert finished == [True]
    assert stats.size == len(raw)
    assert stats.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()


@pytest.mark.unit
@pytest.mark.parametrize("compress", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("error", [DigestMismatch("blob does not match"), ConnectionResetError(104, "reset")])
def test_errors_of_the_chunk_iterator_reach_the_caller_unchanged(
    tmp_path: Path, compress: str, error: Exception
) -> None:
    closed = []
    raw = make_tar([member("f", data=os.urandom(100_000))])
    data = {"gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress, "none": bytes}[compress](raw)

    def blob() -> Iterator[bytes]:
        try:
            yield data[:5000]
            raise error
        finally:
            closed.append(True)

    with pytest.raises(type(error)) as caught:
        apply_layer(blob(), new_dir(tmp_path))
    assert caught.value is error
    assert closed == [True]


@pytest.mark.unit
def test_failures_leak_no_thread_and_no_descriptor(tmp_path: Path) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    good = gzip.compress(make_tar([member(f"d{i}/f", data=b"x") for i in range(300)]))
    bad = good[: len(good) // 2]
    before = (threading.active_count(), fds())
    apply(good, new_dir(tmp_path, "ok"))
    for i in range(3):
        with pytest.raises(LayerError):
            apply(bad, new_dir(tmp_path, f"bad{i}"))
    with pytest.raises(LayerError):
        apply_layer(iter([good[:100]]), new_dir(tmp_path, "bad9"))
    assert (threading.active_count(), fds()) == before


@pytest.mark.unit
def test_dest_must_be_empty(tmp_path: Path) -> None:
    dest = new_dir(tmp_path)
    (dest / "x").write_text("")
    with pytest.raises(LayerError, match="not empty"):
        apply(make_tar([member("f")]), dest)
    with pytest.raises(LayerError):
        apply(make_tar([member("f")]), tmp_path / "missing")


@pytest.mark.unit
def test_options_are_checked_before_anything_happens(tmp_path: Path) -> None:
    with pytest.raises(InvalidOption):
        apply(b"", new_dir(tmp_path), whiteout_format="aufs")
    with pytest.raises(InvalidOption):
        Limits(max_entries=0)
    if not IS_ROOT:
        with pytest.raises(InvalidOption):
            apply(b"", tmp_path, userxattr=False)


# ----------------------------------------------------------------------------- overlayfs


def overlay_view(lowers: Sequence[Path], userxattr: bool) -> Dict[str, str]:
    """Mounts the layers (highest last in ``lowers``) with a real overlayfs in a private
    mount namespace and lists what a container would see: path -> type and content."""
    unshare = require_tool("unshare")
    require_tool("mount")
    merged = lowers[0].parent / "merged"
    merged.mkdir(exist_ok=True)
    opts = "lowerdir=" + ":".join(str(p) for p in reversed(lowers)) + (",userxattr" if userxattr else "")
    script = (
        'mount -t overlay overlay -o "$1" "$2" && cd "$2" && '
        "find . -mindepth 1 -printf '%y %P\\n' && "
        "find . -type f -exec sh -c 'for f; do printf \"= %s %s\\n\" \"${f#./}\" \"$(cat \"$f\")\"; done' sh {} +"
    )
    cmd = [unshare, "-m"] + (["-U", "-r"] if userxattr else []) + ["sh", "-c", script, "sh", opts, str(merged)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    require(proc.returncode == 0 or "mount" not in proc.stderr,
            f"overlay mount refused here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    view: Dict[str, str] = {}
    for line in proc.stdout.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "=":
            path, _, content = rest.partition(" ")
            view[path] = "f:" + content
        elif rest not in view:
            view[rest] = kind
    return view


OVERLAY_MODES = [("device", False), ("xattr", False), ("device", True), ("xattr", True)]


@pytest.mark.parametrize("fmt,userxattr", OVERLAY_MODES)
def test_whiteouts_and_opaque_dirs_hide_lower_content_in_a_real_overlay(
    tmp_path: Path, fmt: str, userxattr: bool
) -> None:
    if not userxattr and not IS_ROOT:
        pytest.skip("trusted.overlay.* needs root; the rootless run covers userxattr")
    lower = new_dir(tmp_path, "l1")
    apply(make_tar([
        member("a", data=b"1"), member("b", data=b"1"),
        member("d/", tarfile.DIRTYPE), member("d/x", data=b"1"), member("d/y", data=b"1"),
        member("o/", tarfile.DIRTYPE), member("o/z", data=b"1"),
        member("gone/", tarfile.DIRTYPE), member("gone/deep", data=b"1"),
        member("re/", tarfile.DIRTYPE), member("re/old", data=b"1"),
        member("same", data=b"1"),
    ]), lower, whiteout_format=fmt, userxattr=userxattr)
    upper = new_dir(tmp_path, "l2")
    stats = apply(make_tar([
        member(".wh.a"),
        member("d/.wh.x"),
        member("o/new", data=b"2"),
        member("o/.wh..wh..opq"),  # after its sibling: still applies only below
        member(".wh.gone"),
        member("re/", tarfile.DIRTYPE), member("re/new", data=b"2"),
        member(".wh.re"),  # removed below, recreated in this layer
        member("same", data=b"2"), member(".wh.same"),
    ]), upper, whiteout_format=fmt, userxattr=userxattr)
    assert stats.entries == 10
    view = overlay_view([lower, upper], userxattr)
    assert view == {
        "b": "f:1",
        "d": "d", "d/y": "f:1",
        "o": "d", "o/new": "f:2",
        "re": "d", "re/new": "f:2",
        "same": "f:2",
    }


@pytest.mark.parametrize("fmt,userxattr", OVERLAY_MODES)
def test_opaque_marker_at_the_root_hides_all_lower_layers(
    tmp_path: Path, fmt: str, userxattr: bool
) -> None:
    if not userxattr and not IS_ROOT:
        pytest.skip("trusted.overlay.* needs root; the rootless run covers userxattr")
    l1, l2, l3 = (new_dir(tmp_path, n) for n in ("l1", "l2", "l3"))
    kw = dict(whiteout_format=fmt, userxattr=userxattr)
    apply(make_tar([member("bin/", tarfile.DIRTYPE), member("bin/sh", data=b"1"), member("x", data=b"1")]), l1, **kw)
    apply(make_tar([member("y", data=b"2")]), l2, lower_dirs=[l1], **kw)
    stats = apply(make_tar([member("bin/", tarfile.DIRTYPE), member("bin/new", data=b"3"),
                            member(".wh..wh..opq")]), l3, lower_dirs=[l1, l2], **kw)
    assert stats.depends_on_lower
    assert overlay_view([l1, l2, l3], userxattr) == {"bin": "d", "bin/new": "f:3"}


@pytest.mark.parametrize("fmt,userxattr", OVERLAY_MODES)
def test_hard_link_to_a_lower_layer_file_is_copied_up(tmp_path: Path, fmt: str, userxattr: bool) -> None:
    if not userxattr and not IS_ROOT:
        pytest.skip("trusted.overlay.* needs root; the rootless run covers userxattr")
    l1, l2, l3 = (new_dir(tmp_path, n) for n in ("l1", "l2", "l3"))
    kw = dict(whiteout_format=fmt, userxattr=userxattr)
    apply(make_tar([member("usr/", tarfile.DIRTYPE), member("usr/lib", data=b"old", mode=0o640),
                    member("hidden", data=b"no")]), l1, **kw)
    apply(make_tar([member("usr/lib", data=b"new", mode=0o600), member(".wh.hidden")]), l2, lower_dirs=[l1], **kw)
    stats = apply(make_tar([member("copy", tarfile.LNKTYPE, link="usr/lib"),
                            member("copy2", tarfile.LNKTYPE, link="usr/lib")]), l3, lower_dirs=[l1, l2], **kw)
    assert stats.depends_on_lower
    assert (l3 / "copy").read_bytes() == b"new"  # the highest layer's version
    assert stat.S_IMODE((l3 / "copy").stat().st_mode) == 0o600
    assert (l3 / "copy").stat().st_ino == (l3 / "copy2").stat().st_ino
    with pytest.raises(LayerError, match="missing"):  # whited out below: not there
        apply(make_tar([member("h", tarfile.LNKTYPE, link="hidden")]), new_dir(tmp_path, "l4"),
              lower_dirs=[l1, l2], **kw)
    view = overlay_view([l1, l2, l3], userxattr)
    assert view["copy"] == view["copy2"] == view["usr/lib"] == "f:new"


@pytest.mark.unit
@pytest.mark.parametrize("hider", [[member(".wh.usr")], [member("usr/.wh..wh..opq")], [member("usr", data=b"f")],
                                    [member("usr/.wh.lib")]])
def test_hard_link_to_a_lower_file_hidden_by_a_higher_layer_is_missing(
    tmp_path: Path, hider: List[Tuple[tarfile.TarInfo, bytes]]
) -> None:
    l1, l2 = new_dir(tmp_path, "l1"), new_dir(tmp_path, "l2")
    apply(make_tar([member("usr/", tarfile.DIRTYPE), member("usr/lib", data=b"old")]), l1)
    apply(make_tar(hider), l2, lower_dirs=[l1])
    with pytest.raises(LayerError, match="missing"):
        apply(make_tar([member("h", tarfile.LNKTYPE, link="usr/lib")]), new_dir(tmp_path, "l3"),
              lower_dirs=[l1, l2])
    # without the hiding layer the same link is copied
    apply(make_tar([member("h", tarfile.LNKTYPE, link="usr/lib")]), new_dir(tmp_path, "l4"), lower_dirs=[l1])


@pytest.mark.unit
def test_hard_link_to_a_missing_file_without_lower_layers_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="missing"):
        apply(make_tar([member("h", tarfile.LNKTYPE, link="usr/lib/libc.so")]), new_dir(tmp_path))


@pytest.mark.unit
def test_default_whiteouts_are_character_devices_for_everyone(tmp_path: Path) -> None:
    dest = new_dir(tmp_path)
    apply(make_tar([member("d/.wh.f")]), dest)
    st_ = os.lstat(dest / "d" / "f")
    assert stat.S_ISCHR(st_.st_mode) and st_.st_rdev == 0  # Linux >= 5.8 lets anyone


@pytest.mark.unit
def test_xattr_whiteouts_mark_their_directory(tmp_path: Path) -> None:
    dest = new_dir(tmp_path)
    apply(make_tar([member("d/.wh.f"), member(".wh.g")]), dest, whiteout_format="xattr", userxattr=True)
    assert os.getxattr(dest / "d" / "f", "user.overlay.whiteout") == b"y"
    assert os.getxattr(dest / "d", "user.overlay.opaque") == b"x"
    assert os.getxattr(dest, "user.overlay.opaque") == b"x"
    assert (dest / "d" / "f").stat().st_size == 0


@pytest.mark.unit
def test_whiteouts_inside_an_opaque_directory_are_dropped(tmp_path: Path) -> None:
    dest = new_dir(tmp_path)
    apply(make_tar([member("o/.wh.x"), member("o/.wh..wh..opq")]), dest, userxattr=True)
    assert os.listdir(dest / "o") == []
    assert os.getxattr(dest / "o", "user.overlay.opaque") == b"y"


@pytest.mark.unit
@pytest.mark.parametrize("name", [".wh.", ".wh..", ".wh...", "d/.wh.", "d/.wh..", "d/.wh.../x"])
def test_malformed_whiteout_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(LayerError):
        apply(make_tar([member(name)]), new_dir(tmp_path))


@pytest.mark.unit
def test_whiteout_used_as_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="whiteout"):
        apply(make_tar([member(".wh.d/x", data=b"1")]), new_dir(tmp_path))


@pytest.mark.unit
@pytest.mark.parametrize("marker", [".wh.x", ".wh..wh..opq"])
@pytest.mark.parametrize("blocker", [member("f", data=b"1"), member("f", tarfile.SYMTYPE, link="/nowhere"),
                                     member("f", tarfile.SYMTYPE, link="g")])
def test_whiteouts_below_a_non_directory_of_the_layer_are_dropped(
    tmp_path: Path, marker: str, blocker: Tuple[tarfile.TarInfo, bytes]
) -> None:
    # umoci writes a directory replaced by a file as "f" then "f/.wh.x"
    dest = new_dir(tmp_path)
    stats = apply(make_tar([member("g", data=b"2"), blocker, member("f/" + marker)]), dest)
    assert stats.entries == 3
    assert sorted(os.listdir(dest)) == ["f", "g"]
    assert stat.S_ISDIR(os.lstat(dest / "f").st_mode) is False


@pytest.mark.unit
def test_aufs_metadata_entries_are_skipped(tmp_path: Path) -> None:
    dest = new_dir(tmp_path)
    apply(make_tar([member(".wh..wh.plnk/", tarfile.DIRTYPE), member(".wh..wh.plnk/123.456", data=b"x"),
                    member(".wh..wh.aufs"), member("f", data=b"1")]), dest)
    assert os.listdir(dest) == ["f"]
