"""isobox's archives read by independent tools, and theirs read by isobox: skopeo (copy and
inspect of the OCI archive, the OCI layout and the docker archive), umoci (unpack of the
OCI layout), podman (load of both archives; its save loaded by isobox). Nothing here is
mocked: each tool runs with its state private to the test's directory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import pytest

from isobox.images.image import Image, save_images
from isobox.images.store import Store
from support.host import IS_ROOT
from support.images import TestImages, Tools
from support.podman import Podman
from support.trees import tree
from test_pull import assert_same_tree


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


@pytest.fixture
def tools(tmp_path: Path) -> Tools:
    return Tools(tmp_path / "tools")


@pytest.fixture(scope="module")
def podman(images: TestImages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    tool = Podman(tmp_path_factory.mktemp("podman"), images.registry.host)
    try:
        yield tool
    finally:
        tool.close()


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_skopeo_inspects_and_copies_each_archive_isobox_writes(images, store, tools, tmp_path):
    img = Image.pull(images.layered.reference, store=store)
    img.save(tmp_path / "oci.tar", "oci")
    img.save(tmp_path / "layout", "oci-dir")
    img.save(tmp_path / "docker.tar", "docker-archive")
    sources = {
        "oci-archive": f"oci-archive:{tmp_path / 'oci.tar'}:{img.reference}",
        "oci": f"oci:{tmp_path / 'layout'}:{img.reference}",
        "docker-archive": f"docker-archive:{tmp_path / 'docker.tar'}",
    }
    for kind, source in sources.items():
        info = json.loads(tools.skopeo_cmd("inspect", source))
        assert len(info["Layers"]) == len(images.layered.layer_digests), kind
        config = json.loads(tools.skopeo_cmd("inspect", "--config", source))
        assert config["rootfs"]["diff_ids"] == list(images.layered.diff_ids), kind
        dest = tmp_path / f"copy-{kind}"
        tools.skopeo_cmd("copy", "-q", "--preserve-digests" if kind != "docker-archive" else "-q",
                         source, f"dir:{dest}")
        if kind != "docker-archive":  # the manifest as isobox stored it, byte for byte
            assert info["Digest"] == img.digest
            assert sha256(dest / "manifest.json") == img.digest
        else:  # the config survives a docker archive: the image ID
            assert sha256(dest / img.id.partition(":")[2]) == img.id  # type: ignore[union-attr]


def test_umoci_unpacks_the_oci_layout_isobox_writes(images, store, tools, tmp_path):
    img = Image.pull(images.layered.reference, store=store)
    img.tag("example.com/isobox/layered:1")
    save_images([img, Image.get("example.com/isobox/layered:1", store=store)],
                tmp_path / "layout", "oci-dir")
    bundle = tmp_path / "bundle"
    flags = [] if IS_ROOT else ["--rootless"]
    tools.umoci_cmd("unpack", *flags, "--image", f"{tmp_path / 'layout'}:example.com/isobox/layered:1",
                    str(bundle))
    assert tree(bundle / "rootfs") == tree(images.layered.expected)


def test_isobox_loads_what_skopeo_copies_out_of_a_registry(images, store, tools, tmp_path):
    layout = tmp_path / "layout"
    tools.skopeo_cmd("copy", "-q", "--src-tls-verify=false", f"docker://{images.layered.reference}",
                     f"oci:{layout}:latest")
    [untagged] = Image.load(layout, store=store)
    assert untagged.reference is None and untagged.digest == images.layered.digest
    assert_same_tree(untagged, images.layered.expected)
    archive = tmp_path / "docker.tar"
    tools.skopeo_cmd("copy", "-q", "--src-tls-verify=false", f"docker://{images.busybox.reference}",
                     f"docker-archive:{archive}:example.com/from/skopeo:2")
    [named] = Image.load(archive, store=store)
    assert named.reference == "example.com/from/skopeo:2" and named.id == images.busybox.config_digest
    assert_same_tree(named, images.busybox.expected)


@pytest.mark.parametrize("fmt", ["docker-archive", "oci"])
def test_podman_loads_what_isobox_saves(images, store, podman, tmp_path, fmt):
    img = Image.pull(images.layered.reference, store=store)
    name = f"example.com/isobox/{fmt}:saved"
    tagged = img.tag(name)
    tagged.save(tmp_path / "archive.tar", fmt)
    proc = podman("load", "-i", str(tmp_path / "archive.tar"))
    assert name in proc.stdout
    [info] = json.loads(podman("image", "inspect", name).stdout)
    assert "sha256:" + info["Id"] == img.id
    podman("rmi", name)


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_isobox_loads_what_podman_saves(images, store, podman, tmp_path, fmt):
    podman("pull", "-q", "--tls-verify=false", images.layered.reference)
    archive = tmp_path / "podman.tar"
    podman("save", "--format", fmt, "-o", str(archive), images.layered.reference)
    [loaded] = Image.load(archive, store=store)
    assert loaded.reference == images.layered.reference
    assert loaded.id == images.layered.config_digest
    assert_same_tree(loaded, images.layered.expected)


def test_podman_pulls_and_runs_what_isobox_pushes(images, store, podman):
    import isobox
    import uuid

    img = Image.pull(images.layered.reference, store=store)
    target = f"{images.registry.host}/pushed/podman-{uuid.uuid4().hex[:8]}:1"
    assert img.push(target) == img.digest
    podman("pull", "-q", "--tls-verify=false", target)
    [info] = json.loads(podman("image", "inspect", target).stdout)
    assert info["Digest"] == img.digest
    command = ["sh", "-c", "cat /data/keep.txt /opt/app/new/file; ls /data | sort"]
    status, out, err = podman.run(target, command, options=["--user", "0"])
    assert status == 0, err
    assert out == isobox.run(img, command, user="0", store=store).stdout.decode()
    podman("rmi", target)


def test_podman_pulls_and_runs_an_image_isobox_built_and_pushed(images, store, podman, tmp_path):
    """Issue 12's proof: an image built by isobox (RUN, COPY, whiteouts, a user), pushed
    to the registry, is pulled and run by podman with isobox's output."""
    import isobox
    import uuid

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "msg.txt").write_text("copied\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {images.layered.reference}\n"
        "USER root\n"  # the image's own user is not root
        "COPY --chown=1000:1000 msg.txt /srv/msg.txt\n"
        "RUN rm -f /data/keep.txt && echo ran > /srv/ran\n"
        'CMD ["sh", "-c", "cat /srv/msg.txt /srv/ran; ls -n /srv | cut -c1-30; '
        'test -e /data/keep.txt || echo gone"]\n')
    img = Image.build(ctx, store=store)
    target = f"{images.registry.host}/pushed/built-{uuid.uuid4().hex[:8]}:1"
    assert img.push(target, store=store) == img.digest
    podman("pull", "-q", "--tls-verify=false", target)
    [info] = json.loads(podman("image", "inspect", target).stdout)
    assert info["Digest"] == img.digest
    status, out, err = podman.run(target)
    assert status == 0, err
    assert out == isobox.run(img, store=store).stdout.decode()
    assert "copied" in out and "ran" in out and "gone" in out
    podman("rmi", target)
