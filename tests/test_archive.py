"""`Image.save` / `Image.load` and ``isobox save``/``load``: the OCI image layout (a tar or
a directory) and ``docker save``'s tar, both directions, several images per archive; and
loading as hostile input (every blob verified; traversal, links, oversized documents
refused, naming the archive and entry; nothing half-written in the store).

What other tools make of isobox's archives (and isobox of theirs) is test_archive_interop.py.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from isobox.errors import InvalidArchive
from isobox.images.image import Image, save_images
from isobox.images.store import Store
from test_cli_pull import isobox
from test_pull import assert_same_tree


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


@pytest.fixture
def fresh(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "fresh")


def only_records(store: Store) -> list:
    return [r.digest for r in store.records()]


@pytest.mark.parametrize("fmt", ["oci", "oci-dir"])
def test_an_oci_layout_round_trip_keeps_digests_name_and_tree(images, store, fresh, tmp_path, fmt):
    img = Image.pull(images.layered.reference, store=store)
    out = tmp_path / "out"
    img.save(out, fmt)
    assert out.is_dir() == (fmt == "oci-dir")
    [loaded] = Image.load(out, store=fresh)
    assert (loaded.reference, loaded.digest, loaded.id) == (img.reference, img.digest, img.id)
    assert_same_tree(loaded, images.layered.expected)
    assert fresh.read_blob(images.layered.layer_digests[0]) is not None


def test_a_docker_archive_round_trip_keeps_the_image_id_and_tree(images, store, fresh, tmp_path):
    img = Image.pull(images.layered_zstd.reference, store=store)
    img.save(tmp_path / "d.tar", "docker-archive")
    with tarfile.open(tmp_path / "d.tar") as t:
        manifest = json.loads(t.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert "repositories" in t.getnames()
        layer = t.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    assert manifest[0]["RepoTags"] == [images.layered_zstd.reference]
    assert layer[257:262] == b"ustar"  # uncompressed, as docker save writes layers
    [loaded] = Image.load(tmp_path / "d.tar", store=fresh)
    assert loaded.id == img.id and loaded.reference == img.reference
    assert_same_tree(loaded, images.layered.expected)


def test_several_images_in_one_archive(images, store, fresh, tmp_path):
    a = Image.pull(images.busybox.reference, store=store)
    b = Image.pull(images.replaced.reference, store=store)
    for fmt in ("oci", "docker-archive"):
        save_images([a, b], tmp_path / fmt, fmt)
        loaded = Image.load(tmp_path / fmt, store=fresh)
        assert sorted(i.reference for i in loaded) == sorted([a.reference, b.reference])  # type: ignore[type-var]


def test_a_multi_platform_image_is_saved_with_its_index(images, store, fresh, tmp_path):
    Image.pull(images.multiarch.reference, platform="linux/arm64", store=store)
    amd = Image.pull(images.multiarch.reference, platform="linux/amd64", store=store)
    amd.save(tmp_path / "multi", "oci-dir")
    index = json.loads((tmp_path / "multi/index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [images.multiarch.digest]
    loaded = Image.load(tmp_path / "multi", store=fresh)
    assert sorted(i.platform for i in loaded) == ["linux/amd64", "linux/arm64"]  # type: ignore[type-var]
    assert fresh.read_tag(images.multiarch.reference).digest == images.multiarch.digest


def test_one_platform_of_an_index_is_saved_as_its_manifest(images, store, tmp_path):
    amd = Image.pull(images.multiarch.reference, platform="linux/amd64", store=store)
    amd.save(tmp_path / "one", "oci-dir")
    index = json.loads((tmp_path / "one/index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [amd.digest]


def test_a_layer_blob_the_store_lacks_is_fetched_from_where_the_image_came_from(
        images, store, tmp_path, registry_proxy):
    Image.pull(images.layered.reference, store=store)
    zstd = Image.pull(registry_proxy.reference(images.layered_zstd), store=store)
    assert not any(store.has_blob(d) for d in images.layered_zstd.layer_digests)  # layers shared
    registry_proxy.clear()
    zstd.save(tmp_path / "z", "oci-dir")
    fetched = [p for m, p in registry_proxy.requests("blobs") if m == "GET"]
    assert len(fetched) == len(images.layered_zstd.layer_digests)
    assert all(store.has_blob(d) for d in images.layered_zstd.layer_digests)
    registry_proxy.clear()
    zstd.save(tmp_path / "z2", "oci-dir")
    assert registry_proxy.requests("blobs") == []


def test_save_refuses_a_non_empty_directory_and_leaves_no_temporary(images, store, tmp_path):
    img = Image.pull(images.busybox.reference, store=store)
    (tmp_path / "full").mkdir()
    (tmp_path / "full/x").write_text("x")
    with pytest.raises(Exception, match="not an empty directory"):
        img.save(tmp_path / "full", "oci-dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "store"]


def test_cli_save_and_load(images, tmp_path):
    root, other = tmp_path / "a", tmp_path / "b"
    assert isobox("pull", "-q", images.busybox.reference, root=root).returncode == 0
    assert isobox("pull", "-q", images.replaced.reference, root=root).returncode == 0
    for fmt in ("oci", "oci-dir", "docker-archive"):
        out = tmp_path / f"out-{fmt}"
        proc = isobox("save", "-o", str(out), "--format", fmt, images.busybox.reference,
                      images.replaced.reference, root=root)
        assert proc.returncode == 0, proc.stderr
        proc = isobox("load", "-i", str(out), root=other)
        assert proc.returncode == 0, proc.stderr
        assert sorted(proc.stdout.splitlines()) == sorted(
            f"Loaded image: {i.reference}" for i in (images.busybox, images.replaced))
    proc = isobox("load", "-i", str(tmp_path / "nothing"), root=other)
    assert proc.returncode == 125 and "No such file" in proc.stderr


def test_a_gzipped_docker_archive_loads(images, store, fresh, tmp_path):
    Image.pull(images.busybox.reference, store=store).save(tmp_path / "d.tar", "docker-archive")
    (tmp_path / "d.tar.gz").write_bytes(gzip.compress((tmp_path / "d.tar").read_bytes(), 1))
    [loaded] = Image.load(tmp_path / "d.tar.gz", store=fresh)
    assert loaded.reference == images.busybox.reference
    assert list(fresh.tmp.iterdir()) == []


# -- hostile archives ------------------------------------------------------------------------


@pytest.fixture
def layout(images, store, tmp_path) -> Path:
    """busybox saved as an OCI layout directory."""
    Image.pull(images.busybox.reference, store=store).save(tmp_path / "layout", "oci-dir")
    return tmp_path / "layout"


def retar(src: Path, dest: Path, extra=()) -> Path:
    """``src`` (a directory) as a tar, plus ``extra`` members (TarInfo, data)."""
    with tarfile.open(dest, "w") as t:
        for path in sorted(src.rglob("*")):
            t.add(path, path.relative_to(src).as_posix(), recursive=False)
        for info, data in extra:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return dest


def assert_nothing_stored(store: Store) -> None:
    assert only_records(store) == [] and store.tags() == []


def test_a_tampered_blob_is_refused_and_nothing_is_stored(images, layout, fresh):
    blob = layout / "blobs/sha256" / images.busybox.layer_digests[0].partition(":")[2]
    data = bytearray(blob.read_bytes())
    data[-100] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(InvalidArchive, match=rf"{layout}: blobs/sha256/.*hashes to"):
        Image.load(layout, store=fresh)
    assert_nothing_stored(fresh)


def test_a_blob_of_the_wrong_size_is_refused_before_any_layer_is_read(images, layout, fresh):
    blob = layout / "blobs/sha256" / images.busybox.layer_digests[0].partition(":")[2]
    with open(blob, "ab") as f:
        f.write(b"more")
    with pytest.raises(InvalidArchive, match="bytes, not the"):
        Image.load(layout, store=fresh)
    assert_nothing_stored(fresh)
    assert fresh.layers.is_dir() and list(fresh.layers.rglob("*")) == []


def test_a_symlink_in_a_layout_directory_is_not_followed(images, layout, fresh, tmp_path):
    manifest = layout / "blobs/sha256" / images.busybox.digest.partition(":")[2]
    shutil.move(manifest, tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", manifest)
    with pytest.raises(InvalidArchive, match=r"blobs/sha256/.*a link"):
        Image.load(layout, store=fresh)
    assert_nothing_stored(fresh)


def test_a_tar_entry_leaving_the_archive_is_refused(layout, fresh, tmp_path):
    evil = tarfile.TarInfo("../../etc/evil")
    evil.size = 1
    archive = retar(layout, tmp_path / "a.tar", [(evil, b"x")])
    with pytest.raises(InvalidArchive, match=r"a\.tar: entry '../../etc/evil' leaves the archive"):
        Image.load(archive, store=fresh)
    absolute = tarfile.TarInfo("/etc/evil")
    absolute.size = 1
    archive = retar(layout, tmp_path / "b.tar", [(absolute, b"x")])
    with pytest.raises(InvalidArchive, match="absolute path"):
        Image.load(archive, store=fresh)
    assert_nothing_stored(fresh)


def test_a_tar_link_out_of_the_archive_is_refused(images, layout, fresh, tmp_path):
    name = "blobs/sha256/" + images.busybox.digest.partition(":")[2]
    (layout / name).unlink()
    link = tarfile.TarInfo(name)
    link.type = tarfile.SYMTYPE
    link.linkname = "../../../../etc/passwd"
    archive = retar(layout, tmp_path / "a.tar", [(link, None)])
    with pytest.raises(InvalidArchive, match=rf"a\.tar: {name} is a link to .*outside the archive"):
        Image.load(archive, store=fresh)
    assert_nothing_stored(fresh)


def test_a_device_entry_is_refused(images, layout, fresh, tmp_path):
    name = "blobs/sha256/" + images.busybox.digest.partition(":")[2]
    (layout / name).unlink()
    dev = tarfile.TarInfo(name)
    dev.type = tarfile.CHRTYPE
    archive = retar(layout, tmp_path / "a.tar", [(dev, None)])
    with pytest.raises(InvalidArchive, match=rf"{name} is not a regular file"):
        Image.load(archive, store=fresh)


def test_an_oversized_index_is_refused(layout, fresh):
    doc = json.loads((layout / "index.json").read_text())
    doc["padding"] = "x" * (5 << 20)
    (layout / "index.json").write_text(json.dumps(doc))
    with pytest.raises(InvalidArchive, match="index.json is .* more than the"):
        Image.load(layout, store=fresh)


def test_a_docker_manifest_naming_a_path_outside_is_refused(images, store, fresh, tmp_path):
    Image.pull(images.busybox.reference, store=store).save(tmp_path / "d.tar", "docker-archive")
    with tarfile.open(tmp_path / "d.tar") as t:
        t.extractall(tmp_path / "d")  # our own archive
    manifest = json.loads((tmp_path / "d/manifest.json").read_text())
    manifest[0]["Layers"] = ["../../../etc/passwd"]
    (tmp_path / "d/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidArchive, match=r"manifest.json\[0\]: entry '../../../etc/passwd' leaves"):
        Image.load(retar(tmp_path / "d", tmp_path / "e.tar"), store=fresh)


def test_something_that_is_no_archive_is_refused(fresh, tmp_path):
    (tmp_path / "x").write_bytes(b"not a tar" * 100)
    with pytest.raises(InvalidArchive, match=f"{tmp_path / 'x'}"):
        Image.load(tmp_path / "x", store=fresh)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArchive, match="neither an OCI layout"):
        Image.load(tmp_path / "empty", store=fresh)
