"""`Image.tag`, `Image.remove` of one name among several, and ``isobox tag``/``rmi``:
a name is a pointer; content stays while any name (or container) points to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from isobox.errors import ImageNotFound, InvalidOption
from isobox.images.image import Image
from isobox.images.store import Store
from test_cli_pull import isobox


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


def test_tag_names_the_same_image_and_keeps_the_old_name(images, store):
    img = Image.pull(images.busybox.reference, store=store)
    tagged = img.tag("registry:5000/team/app:1.2")
    assert tagged.reference == "registry:5000/team/app:1.2"
    assert (tagged.digest, tagged.id, tagged.layers) == (img.digest, img.id, img.layers)
    assert Image.get("registry:5000/team/app:1.2", store=store).digest == img.digest
    assert Image.get(images.busybox.reference, store=store).digest == img.digest


def test_a_name_without_tag_gets_latest_and_a_digest_is_refused(images, store):
    img = Image.pull(images.busybox.reference, store=store)
    assert img.tag("team/app").reference == "docker.io/team/app:latest"
    with pytest.raises(InvalidOption, match="digest"):
        img.tag(f"team/app@{images.busybox.digest}")


def test_removing_one_name_keeps_the_others_and_the_content(images, store):
    img = Image.pull(images.busybox.reference, store=store)
    img.tag("registry:5000/team/app:1.2")
    assert Image.remove(images.busybox.reference, store=store) == (images.busybox.reference,)
    kept = Image.get("registry:5000/team/app:1.2", store=store)
    assert all(layer.is_dir() for layer in kept.layers)
    assert store.read_image(img.digest) is not None
    with pytest.raises(ImageNotFound):
        Image.get(images.busybox.reference, store=store)
    Image.remove("registry:5000/team/app:1.2", store=store)
    assert store.read_image(img.digest) is None
    assert not any(layer.exists() for layer in img.layers)


def test_a_tag_carries_every_platform_of_a_multi_platform_image(images, store):
    amd = Image.pull(images.multiarch.reference, platform="linux/amd64", store=store)
    arm = Image.pull(images.multiarch.reference, platform="linux/arm64", store=store)
    amd.tag("example.com/multi:1")
    assert Image.get("example.com/multi:1", platform="linux/arm64", store=store).digest == arm.digest
    assert Image.get("example.com/multi:1", platform="linux/amd64", store=store).digest == amd.digest
    assert store.read_tag("example.com/multi:1").digest == images.multiarch.digest


def test_a_pull_keeps_each_layer_blob_for_push_and_save(images, store):
    img = Image.pull(images.layered.reference, store=store)
    for digest in images.layered.layer_digests:
        assert store.read_blob(digest) is not None
    Image.remove(images.layered.reference, store=store)
    assert not any(store.has_blob(d) for d in images.layered.layer_digests)
    assert img.digest is not None and not store.has_blob(img.digest)


def test_cli_tag_and_rmi(images, tmp_path):
    root = tmp_path / "root"
    assert isobox("pull", "-q", images.busybox.reference, root=root).returncode == 0
    proc = isobox("tag", images.busybox.reference, "example.com/a/b:v1", root=root)
    assert proc.returncode == 0, proc.stderr
    listing = isobox("images", root=root).stdout
    assert "example.com/a/b" in listing and images.busybox.repository in listing
    proc = isobox("rmi", "example.com/a/b:v1", root=root)
    assert proc.returncode == 0 and "Untagged: example.com/a/b:v1" in proc.stdout
    assert "Deleted" not in proc.stdout
    assert images.busybox.repository in isobox("images", root=root).stdout
    missing = isobox("tag", "example.com/none:1", "x:1", root=root)
    assert missing.returncode == 125 and "not in the store" in missing.stderr
