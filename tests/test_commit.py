"""docker commit (Container.commit): the container's writes as an ordinary OCI image —
files added, changed and deleted (whiteouts, opaque directories), the container's
configuration with --change lines over it, history — that runs again in isobox and that
umoci and skopeo read from an isobox save; from a pulled image and from a directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import isobox
from isobox.images.image import Image, save_images
from support.host import IS_ROOT
from support.images import Tools

SCRIPT = ("echo hi > /new.txt && rm /bin/ls && mkdir -p /srv/a && echo x > /srv/a/f && "
          "rm -rf /home && mkdir /home && echo fresh > /home/only && echo changed >> /etc/passwd")


def check_changes(img: Image) -> None:
    out = isobox.run(img, ["sh", "-c", "cat /new.txt /srv/a/f /home/only; ls /home; "
                           "test -e /bin/ls || echo no-ls; tail -1 /etc/passwd"], timeout=30).stdout
    assert out.decode().split("\n") == ["hi", "x", "fresh", "only", "no-ls", "changed", ""]


def test_commit_a_directory_images_container(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sh", "-c", SCRIPT], env={"A": "1"}) as c:
        assert c.wait(30) == 0
        img = c.commit("localhost/committed:1", changes=['CMD ["cat", "/new.txt"]', "ENV B=2"],
                       message="by a test", author="tester")
    assert img.reference == "localhost/committed:1" and img.id and img.digest
    assert Image.get("localhost/committed:1").id == img.id
    check_changes(img)
    assert isobox.run(img, timeout=30).stdout == b"hi\n"  # CMD from --change
    env = isobox.run(img, ["env"], timeout=30).stdout.decode().split("\n")
    assert "A=1" in env and "B=2" in env  # the container's -e, then --change
    record = isobox.Store.open().read_image(img.digest)
    assert record is not None
    assert record.config["history"][-1]["comment"] == "by a test"
    assert record.config["author"] == "tester"
    assert len(record.config["rootfs"]["diff_ids"]) == 2  # the directory, then the commit


def test_commit_leaves_out_what_isobox_makes_for_every_container(busybox_image, store_root, tmp_path):
    with isobox.Container(busybox_image, ["true"]) as c:
        c.wait(30)
        img = c.commit()
    save_images([img], tmp_path / "layout", "oci-dir")
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    manifest = json.loads((tmp_path / "layout" / "blobs" / "sha256" /
                           index["manifests"][0]["digest"].split(":")[1]).read_text())
    top = manifest["layers"][-1]["digest"].split(":")[1]
    import tarfile
    with tarfile.open(tmp_path / "layout" / "blobs" / "sha256" / top) as t:
        names = t.getnames()
    assert not [n for n in names if n.split("/")[0] in ("dev", "proc", "sys")
                or n in ("etc/hosts", "etc/hostname", "etc/resolv.conf")], names


def test_commit_of_a_pulled_image_reuses_its_layers_and_others_read_it(images, store_root, tmp_path):
    base = isobox.Image.pull(images.layered.reference)
    with isobox.Container(base, ["sh", "-c", "echo added > /tmp/added.txt"]) as c:
        assert c.wait(30) == 0, c.logs()
        img = c.commit("localhost/derived:1", compression="zstd")
    record = isobox.Store.open().read_image(img.digest)
    parent = isobox.Store.open().read_image(base.digest)
    assert record is not None and parent is not None
    assert [l.digest for l in record.layers[:-1]] == [l.digest for l in parent.layers]
    assert record.layers[-1].media_type.endswith("+zstd")
    assert isobox.run(img, ["cat", "/tmp/added.txt"], timeout=30).stdout == b"added\n"
    # independent tools read what isobox saves of it
    save_images([img], tmp_path / "layout", "oci-dir")
    tools = Tools(tmp_path / "tools")
    info = json.loads(tools.skopeo_cmd("inspect", f"oci:{tmp_path / 'layout'}:localhost/derived:1"))
    assert len(info["Layers"]) == len(record.layers)


def test_umoci_unpacks_a_committed_image(busybox_image, store_root, tmp_path):
    with isobox.Container(busybox_image, ["sh", "-c", SCRIPT]) as c:
        assert c.wait(30) == 0
        img = c.commit("localhost/committed:2")
    save_images([img], tmp_path / "layout", "oci-dir")
    bundle = tmp_path / "bundle"
    Tools(tmp_path / "tools").umoci_cmd("unpack", *([] if IS_ROOT else ["--rootless"]), "--image",
                                        f"{tmp_path / 'layout'}:localhost/committed:2", str(bundle))
    root = bundle / "rootfs"
    assert (root / "new.txt").read_text() == "hi\n" and not (root / "bin" / "ls").exists()
    assert sorted(p.name for p in (root / "home").iterdir()) == ["only"]  # opaque: app/ is gone
    assert (root / "bin" / "busybox").exists()


def test_bad_changes_are_refused_before_anything_is_written(busybox_image, store_root):
    with isobox.Container(busybox_image, ["true"]) as c:
        c.wait(30)
        with pytest.raises(isobox.DockerfileError, match="RUN cannot be changed by commit"):
            c.commit("localhost/x:1", changes=["RUN true"])
    assert not any(t.reference == "localhost/x:1" for t in isobox.Store.open().tags())
