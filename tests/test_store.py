"""The on-disk store: content addressing, atomic commits, records, locks, prune.

These tests drive the store directly; tests/test_pull.py drives it through real pulls.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import threading
import time
from pathlib import Path
from typing import List, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

import isobox
from isobox.errors import DigestMismatch, StoreError
from isobox.host.fs import remove_tree
from isobox.images.digest import compute, is_digest
from isobox.images.store import (
    ImageRecord,
    LayerRecord,
    Store,
)


def digest_of(text: str) -> str:
    return compute(text.encode())


def make_layer(store: Store, name: str, files: Tuple[str, ...] = ("f",)) -> str:
    """A committed layer holding ``files``; its diff_id is derived from ``name``."""
    path = store.new_layer_dir()
    for f in files:
        (path / f).parent.mkdir(parents=True, exist_ok=True)
        (path / f).write_text(name)
    diff_id = digest_of(name)
    store.commit_layer(path, diff_id, size=100, entries=len(files))
    return diff_id


def make_image(store: Store, name: str, layer_names: List[str],
               reference: str | None = None, platform: str = "linux/amd64") -> ImageRecord:
    diff_ids = [make_layer(store, n) for n in layer_names]
    config = {"config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_digest = store.write_blob(json.dumps(config).encode())
    manifest_digest = store.write_blob(f"manifest of {name}".encode())
    record = ImageRecord(
        digest=manifest_digest, media_type="application/vnd.oci.image.manifest.v1+json",
        config_digest=config_digest, config=config,
        layers=[LayerRecord(digest=digest_of("blob " + n), diff_id=d, size=1)
                for n, d in zip(layer_names, diff_ids)],
        platform=platform, size=100 * len(diff_ids),
    )
    store.write_image(record)
    if reference is not None:
        store.tag_image(reference, manifest_digest, (platform,), manifest_digest)
    return record


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


@pytest.mark.unit
def test_open_creates_every_directory(tmp_path):
    s = Store.open(tmp_path / "root")
    for sub in ("blobs", "layers", "images", "containers", "volumes", "tmp", "locks"):
        assert (s.root / sub).is_dir()
    assert Store.open(s) is s


@pytest.mark.unit
def test_open_reports_an_unusable_root(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError, match="cannot create the store"):
        Store.open(tmp_path / "file" / "store")


@pytest.mark.unit
def test_blobs_are_content_addressed_and_verified(store):
    digest = store.write_blob(b"config bytes")
    assert digest == compute(b"config bytes")
    assert store.read_blob(digest) == b"config bytes"
    assert store.blob_path(digest) == store.blobs / "sha256" / digest[7:]


@pytest.mark.unit
def test_blob_with_wrong_digest_is_refused_and_not_written(store):
    wrong = digest_of("something else")
    with pytest.raises(DigestMismatch):
        store.write_blob(b"config bytes", wrong)
    assert not store.has_blob(wrong)
    assert list(store.tmp.iterdir()) == []


@pytest.mark.unit
def test_blob_corrupted_on_disk_reads_as_absent(store):
    digest = store.write_blob(b"original")
    store.blob_path(digest).write_bytes(b"rotten")
    assert store.read_blob(digest) is None


@pytest.mark.unit
@pytest.mark.parametrize("bad", [
    "sha256:../../../etc/passwd", "sha256:" + "A" * 64, "md5:" + "0" * 32, "sha256:" + "0" * 63,
    "sha256:" + "0" * 64 + "/x", "", "sha256", None, 42,
])
def test_malformed_digests_never_become_paths(store, bad):
    with pytest.raises(DigestMismatch):
        store.blob_path(bad)
    with pytest.raises(DigestMismatch):
        store.layer_path(bad)


@pytest.mark.unit
@given(st.text(max_size=140))
def test_any_text_is_a_digest_under_the_store_or_refused(text):
    root = Store(Path("/store-root"))
    try:
        path = root.layer_path(text)
    except DigestMismatch:
        return
    assert is_digest(text)
    assert path.parent.parent == root.layers and ".." not in path.parts


@pytest.mark.unit
def test_layer_is_invisible_until_committed(store):
    path = store.new_layer_dir()
    (path / "file").write_text("content")
    diff_id = digest_of("layer")
    assert not store.has_layer(diff_id)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755  # an image root without a ./ entry
    final = store.commit_layer(path, diff_id, size=7, entries=1)
    assert final == store.layer_path(diff_id) and (final / "file").read_text() == "content"
    info = store.layer_info(diff_id)
    assert info is not None and (info.size, info.entries) == (7, 1)
    assert list(store.tmp.iterdir()) == []


@pytest.mark.unit
def test_second_commit_of_a_layer_keeps_the_first(store):
    first = make_layer(store, "same", ("a",))
    path = store.new_layer_dir()
    (path / "b").write_text("late copy")
    store.commit_layer(path, first, size=1, entries=1)
    assert sorted(os.listdir(store.layer_path(first))) == ["a"]
    assert list(store.tmp.iterdir()) == []


@pytest.mark.unit
def test_discard_refuses_paths_outside_tmp(store, tmp_path):
    with pytest.raises(StoreError):
        store.discard(tmp_path)


def _locked_tree(root: Path) -> None:
    (root / "ro/sub").mkdir(parents=True)
    (root / "ro/sub/file").write_text("x")
    (root / "none").mkdir()
    (root / "none/inner").mkdir()
    (root / "none/inner/file").write_text("y")
    os.chmod(root / "none/inner", 0)
    os.chmod(root / "none", 0)
    os.chmod(root / "ro/sub", 0o555)
    os.chmod(root / "ro", 0o555)


@pytest.mark.unit
def test_remove_tree_removes_read_only_and_mode_000_directories(tmp_path):
    _locked_tree(tmp_path / "t")
    remove_tree(tmp_path / "t")
    assert not (tmp_path / "t").exists()
    remove_tree(tmp_path / "t")  # already gone: fine


@pytest.mark.unit
def test_remove_tree_never_follows_symlinks_and_handles_deep_trees(tmp_path):
    """The C walk (fsops.c: ib_remove_tree) unlinks a link, never what it points at, and
    hands trees deeper than its stack allows to the Python walk."""
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    os.chmod(outside, 0o750)
    t = tmp_path / "t"
    (t / "sticky").mkdir(parents=True)
    os.symlink(outside, t / "sticky" / "link")
    os.symlink(outside / "keep", t / "dirlink")
    os.chmod(t / "sticky", 0o1777)
    deep = t / "deep"
    for _ in range(100):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    remove_tree(t)
    assert not t.exists()
    assert (outside / "keep").is_dir()
    assert stat.S_IMODE(os.stat(outside).st_mode) == 0o750


@pytest.mark.unit
def test_tag_records_follow_the_tag_and_forget_a_moved_tag(store):
    a, b, c = digest_of("index a"), digest_of("manifest amd64"), digest_of("manifest arm64")
    store.tag_image("docker.io/library/x:1", a, ("linux/amd64/v4", "linux/amd64"), b)
    tag = store.tag_image("docker.io/library/x:1", a, ("linux/arm64",), c)
    assert tag.manifests == {"linux/amd64/v4": b, "linux/amd64": b, "linux/arm64": c}
    assert tag.last == "linux/arm64"
    moved = store.tag_image("docker.io/library/x:1", digest_of("index b"), ("linux/amd64",), b)
    assert moved.manifests == {"linux/amd64": b}
    assert store.read_tag("docker.io/library/x:1") == moved
    assert store.read_tag("docker.io/library/x:2") is None


@pytest.mark.unit
def test_images_lists_tagged_then_untagged(store):
    tagged = make_image(store, "one", ["l1", "l2"], reference="example.com/one:latest")
    untagged = make_image(store, "two", ["l2", "l3"])
    listed = store.list_images()
    assert [(i.reference, i.digest) for i in listed] == [
        ("example.com/one:latest", tagged.digest), (None, untagged.digest)]
    assert listed[0].layers == (store.layer_path(digest_of("l1")), store.layer_path(digest_of("l2")))
    assert listed[0].config.cmd == ("sh",)


@pytest.mark.unit
def test_prune_removes_what_no_tag_uses_and_crash_garbage(store):
    kept = make_image(store, "kept", ["base", "app"], reference="example.com/kept:1")
    gone = make_image(store, "gone", ["base", "old"])  # untagged: nothing uses it
    garbage = store.temp_dir()
    _locked_tree(garbage)  # a crashed extraction, with directories we cannot enter
    (store.tmp / "w-123-half-written").write_bytes(b"half")

    report = store.prune()

    assert report.images == (gone.digest,)
    assert report.layers == (digest_of("old"),)
    assert report.temporaries == 2
    assert store.read_image(gone.digest) is None and not store.has_blob(gone.digest)
    assert not store.has_blob(gone.config_digest)
    assert not store.layer_path(digest_of("old")).exists()
    assert not store.layer_path(digest_of("old")).with_suffix(".json").exists()
    for diff_id in kept.diff_ids:
        assert store.has_layer(diff_id)
    assert store.has_blob(kept.config_digest) and store.has_blob(kept.digest)
    assert list(store.tmp.iterdir()) == []
    assert store.prune().layers == ()  # nothing left to do


def _nest(top: Path, depth: int) -> None:
    """``depth`` directories, one in another, below ``top`` (by fd: no path gets long)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(b"x" * 8192)
    finally:
        os.close(fd)


def test_prune_copes_with_trees_deeper_than_the_recursion_limit(store):
    """A container can nest directories in a volume (and a crashed extraction in tmp/)
    deeper than Python recurses: prune measures and removes them all the same."""
    (store.tmp / "crashed").mkdir()
    _nest(store.tmp / "crashed", 2500)
    (store.volumes / "deep" / "_data").mkdir(parents=True)
    _nest(store.volumes / "deep" / "_data", 2500)

    def allocated(top: Path, levels: int = 1000) -> int:
        """Bytes allocated to the first ``levels`` directories below ``top``, by fd: well
        within PATH_MAX, which is as deep as prune measures. Directories on a tmpfs take no
        blocks (Debian 13's /tmp, and many distributions'): there this is 0."""
        total = 0
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(levels):
                total += os.stat("d", dir_fd=fd, follow_symlinks=False).st_blocks * 512
                inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = inner
        finally:
            os.close(fd)
        return total

    on_disk = allocated(store.tmp / "crashed") + allocated(store.volumes / "deep" / "_data")
    report = isobox.prune(store, volumes=True)
    assert report.temporaries == 1 and report.volumes == ("deep",)
    assert list(store.tmp.iterdir()) == [] and list(store.volumes.iterdir()) == []
    assert report.reclaimed >= on_disk  # every level within PATH_MAX is counted


@pytest.mark.unit
def test_prune_keeps_layers_a_container_holds_until_it_lets_go(store):
    record = make_image(store, "img", ["c-base", "c-top"])  # untagged
    (store.containers / "abc123").mkdir()
    store.hold_layers("abc123", [store.layer_path(d) for d in record.diff_ids])
    report = store.prune()
    assert report.images == (record.digest,)  # the record goes, the container's layers stay
    assert report.layers == ()
    assert all(store.has_layer(d) for d in record.diff_ids)
    store.release_layers("abc123")
    assert set(store.prune().layers) == set(record.diff_ids)


@pytest.mark.unit
def test_prune_keeps_every_layer_when_a_containers_layer_record_is_unreadable(store):
    record = make_image(store, "img", ["u-layer"])
    cdir = store.containers / "broken"
    cdir.mkdir()
    (cdir / "layers.json").write_text("{half a json")
    report = store.prune()
    assert report.layers == () and store.has_layer(record.diff_ids[0])
    assert report.warnings and "broken" in report.warnings[0]


@pytest.mark.unit
def test_remove_untags_and_collects_unshared_layers(store):
    a = make_image(store, "a", ["shared", "only-a"], reference="example.com/a:1")
    b = make_image(store, "b", ["shared", "only-b"], reference="example.com/b:1")
    assert store.remove(reference="example.com/a:1") == ("example.com/a:1",)
    assert store.read_image(a.digest) is None
    assert not store.has_layer(digest_of("only-a"))
    assert store.has_layer(digest_of("shared")) and store.has_layer(digest_of("only-b"))
    assert store.remove(reference="example.com/a:1") == ()
    assert store.remove(digest=b.digest) == ("example.com/b:1", b.digest)
    assert not store.has_layer(digest_of("shared"))


def _host_uid(ids, uid):
    """The host uid that container uid ``uid`` is under the map ``ids``."""
    for r in ids.uids:
        if r.container <= uid < r.container + r.size:
            return r.host + uid - r.container
    return None


@pytest.mark.skipif(os.geteuid() == 0, reason="root removes any file; this is the rootless case")
def test_prune_removes_a_layer_with_files_of_subordinate_uids(store):
    from fixtures.host import require

    from isobox.host import idmap

    ids = idmap.for_caller()
    require(ids.helpers, "the caller has no /etc/subuid range (or no newuidmap)")
    path = store.new_layer_dir()
    (path / "etc").mkdir()
    (path / "etc/owned").write_text("by uid 1000 of the container")
    idmap.chown_in_userns(str(path), [("etc/owned", 1000, 1000, None), ("etc", 1000, 1000, 0o755)],
                          ids)
    assert (path / "etc/owned").stat().st_uid == _host_uid(ids, 1000) != os.getuid()
    diff_id = digest_of("subuids")
    store.commit_layer(path, diff_id, size=1, entries=2)
    assert store.prune().layers == (diff_id,)
    assert not store.layer_path(diff_id).exists()


@pytest.mark.unit
def test_removing_a_layer_with_mode_000_directories_works(store):
    path = store.new_layer_dir()
    _locked_tree(path)
    diff_id = digest_of("locked")
    store.commit_layer(path, diff_id, size=1, entries=5)
    assert store.prune().layers == (diff_id,)
    assert not store.layer_path(diff_id).exists()


# -- locks across processes -------------------------------------------------------------


def _count_under_lock(root: str, rounds: int) -> None:
    s = Store(Path(root))
    counter = Path(root) / "counter"
    for _ in range(rounds):
        with s.lock("blob-counter"):
            value = int(counter.read_text())
            os.sched_yield()
            counter.write_text(str(value + 1))


def test_lock_serialises_processes(store):
    (store.root / "counter").write_text("0")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_count_under_lock, args=(str(store.root), 200)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert (store.root / "counter").read_text() == "600"


def _hold_in_use(root: str, holding: "multiprocessing.synchronize.Event",
                 release: "multiprocessing.synchronize.Event") -> None:
    s = Store(Path(root))
    with s.in_use():
        holding.set()
        release.wait(60)


def test_prune_waits_while_a_pull_holds_the_store(store):
    garbage = store.temp_dir()  # a running pull's temporary
    ctx = multiprocessing.get_context("spawn")
    holding, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_in_use, args=(str(store.root), holding, release))
    proc.start()
    try:
        assert holding.wait(30)
        done = threading.Event()
        worker = threading.Thread(target=lambda: (store.prune(), done.set()))
        worker.start()
        assert not done.wait(0.5)  # blocked behind the pull
        assert garbage.exists()
        release.set()
        assert done.wait(30)
        worker.join()
        assert not garbage.exists()
    finally:
        release.set()
        proc.join(30)


@pytest.mark.unit
def test_bad_lock_names_are_refused(store):
    with pytest.raises(StoreError):
        with store.lock("../escape"):
            pass


def test_sweep_removes_only_temporaries_no_live_process_holds(tmp_path):
    import subprocess
    import sys

    store = Store.open(tmp_path / "store")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, isobox; s = isobox.Store.open(sys.argv[1]);"
         "print(s.temp_dir('layer-'), flush=True); sys.stdin.read()", str(store.root)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        held = Path(holder.stdout.readline().strip())  # type: ignore[union-attr]
        (held / "partial").write_text("half a layer")
        dead = store.tmp / "layer-1-dead"  # what a killed pull left: nobody holds it
        (dead / "rootfs").mkdir(parents=True)
        mine = store.temp_dir("layer-")
        assert store.sweep_temporaries() == 1
        assert held.is_dir() and mine.is_dir() and not dead.exists()
    finally:
        holder.kill()
        holder.wait()
    assert store.sweep_temporaries() == 1  # the holder died
    assert not held.exists() and mine.is_dir()
    store.discard(mine)
    assert list(store.tmp.iterdir()) == []


def test_a_sweep_never_takes_a_temporary_being_made(tmp_path):
    """A thread sweeping in a loop while another makes temporaries (as concurrent pulls
    from threads do: each sweeps at its first pull): each temporary is held from the
    moment it can be seen, so none is taken between its mkdir and its lock."""
    store = Store.open(tmp_path / "store")
    end = time.monotonic() + 1.5
    swept = []

    def sweep() -> None:
        while time.monotonic() < end:
            swept.append(store.sweep_temporaries())

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    made = 0
    try:
        while sweeper.is_alive():
            path = store.temp_dir("layer-")
            (path / "rootfs").mkdir()  # FileNotFoundError if a sweep took it
            store.discard(path)  # (each held temporary holds an fd)
            made += 1
    finally:
        end = 0
        sweeper.join()
    assert made > 100
