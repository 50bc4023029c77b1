"""Pulled images run: layers that unpack.py applied (whiteouts, opaque directories, hard
links) stack in overlayfs exactly as the image says, as root and rootless."""

from __future__ import annotations

import pytest

import isobox

from support.host import IS_ROOT

MERGED_VIEW = """
ls /data/remove-me.txt /data/gone 2>&1 | grep -c 'No such file'
ls /opt/app
cat /data/keep.txt
[ "$(stat -c %i /data/hard-original)" = "$(stat -c %i /data/hard-link)" ] && echo same-inode
cat /data/will-be-dir/inner
readlink /data/link-rel
stat -c %a /data/private
"""


@pytest.mark.parametrize("variant", ["layered", "layered_zstd", "layered_plain", "layered_mixed"])
def test_pulled_layers_stack_as_the_image_says(images, store_root, variant):
    image = isobox.Image.pull(getattr(images, variant).reference)
    out = isobox.run(image, ["sh", "-c", MERGED_VIEW]).stdout.decode().split("\n")
    assert out[:8] == ["2", "new", "kept, and changed", "same-inode", "now a dir", "exec.sh", "640", ""]


def test_run_pulls_a_hub_name_once_then_uses_the_cache(hub_mirror, store_root):
    assert isobox.run("busybox", ["echo", "hi"]).stdout == b"hi\n"
    cached = isobox.Image.get("busybox")
    assert isobox.run(cached, ["echo", "again"]).stdout == b"again\n"
    assert cached.config.cmd == ("sh",)


def test_pytest_fixture_pulls_a_reference_it_is_given(hub_mirror, store_root, isobox_container):
    c = isobox_container("busybox", ["echo", "from the fixture"])
    assert c.wait(30) == 0 and c.logs("stdout") == b"from the fixture\n"
    assert isobox.Image.get("busybox").digest == hub_mirror.hub_busybox.digest


def test_file_ownership_from_the_image_is_kept(images, store_root):
    image = isobox.Image.pull(images.layered.reference)
    owner = isobox.run(image, ["stat", "-c", "%u:%g", "/home/app/.profile"]).stdout.strip()
    from isobox.host import idmap

    if IS_ROOT or not idmap.for_caller().single:
        assert owner == b"1000:1000"
    else:
        assert owner == b"0:0"  # only root exists: ownership collapses to the caller


def test_the_same_image_runs_twice_at_once_sharing_layers(images, store_root):
    image = isobox.Image.pull(images.busybox.reference)
    with isobox.Container(image, ["sleep", "30"], name="one") as a, \
            isobox.Container(image, ["sleep", "30"], name="two") as b:
        a.exec(["sh", "-c", "echo a > /tmp/who"])
        assert b.exec(["sh", "-c", "cat /tmp/who 2>/dev/null || echo nothing"]).stdout == b"nothing\n"


def test_a_containers_layers_outlive_its_image_until_the_container_goes(images, store_root):
    image = isobox.Image.pull(images.busybox.reference)
    with isobox.Container(image, ["sleep", "30"]) as c:
        isobox.Image.remove(images.busybox.reference)
        assert isobox.prune().layers == ()
        assert all(p.is_dir() for p in image.layers)
        assert c.exec(["echo", "still here"]).stdout == b"still here\n"
    assert set(isobox.prune().layers) == set(images.busybox.diff_ids)
    assert not any(p.exists() for p in image.layers)
