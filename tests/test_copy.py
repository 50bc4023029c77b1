"""Copies into and out of a running container (`docker cp`): they see the container's
own mounts, and no symlink in the container can lead a copy to the host."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

import pytest

import isobox
from isobox import Tmpfs


def test_copy_a_file_into_and_out_of_a_container(busybox_image, store_root, tmp_path):
    src = tmp_path / "hello.txt"
    src.write_text("hello\n")
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        c.copy_to(src, "/tmp")                      # into an existing directory
        c.copy_to(src, "/etc/renamed.txt")          # to a new name
        assert c.exec(["cat", "/tmp/hello.txt", "/etc/renamed.txt"]).stdout == b"hello\nhello\n"
        c.exec(["sh", "-c", "mkdir -p /data/sub && echo made > /data/sub/f && ln -s /etc/passwd /data/link"])
        out = tmp_path / "out"
        out.mkdir()
        c.copy_from("/data", out)
        assert (out / "data" / "sub" / "f").read_text() == "made\n"
        assert os.readlink(out / "data" / "link") == "/etc/passwd"  # kept as a symlink
        c.copy_from("/data/sub/f", tmp_path / "single.txt")
        assert (tmp_path / "single.txt").read_text() == "made\n"


def test_copies_see_the_containers_own_mounts(busybox_image, store_root, tmp_path):
    with isobox.Container(busybox_image, ["sleep", "30"], mounts=[Tmpfs("/scratch")]) as c:
        c.put_archive("/scratch", _tar({"note": b"in tmpfs"}))
        assert c.exec(["cat", "/scratch/note"]).stdout == b"in tmpfs"
        names = tarfile.open(fileobj=io.BytesIO(c.get_archive("/scratch"))).getnames()
        assert names == ["scratch", "scratch/note"]


def test_symlinks_in_the_container_cannot_lead_a_copy_to_the_host(busybox_image, store_root, tmp_path):
    secret = tmp_path / "host-secret"
    secret.write_text("host only")
    target = tmp_path / "host-dir"
    target.mkdir()
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        c.exec(["sh", "-c", f"ln -s {secret} /leak; ln -s {target} /escape; ln -s ../../../../../../{target} /dotdot"])
        # reading through a symlink resolves inside the container: no host file comes out
        with pytest.raises(isobox.ContainerError):
            c.copy_from("/escape/anything", tmp_path / "x")
        data = c.get_archive("/leak")
        member = tarfile.open(fileobj=io.BytesIO(data)).getmembers()[0]
        assert member.issym() and member.linkname == str(secret)
        # writing through a symlink lands inside the container, never on the host
        for dest in ("/escape", "/dotdot"):
            try:
                c.put_archive(dest, _tar({"planted": b"x"}))
            except isobox.IsoboxError:
                pass
        assert list(target.iterdir()) == []


def test_copy_needs_a_running_container(busybox_image, store_root, tmp_path):
    c = isobox.Container(busybox_image, ["true"]).start()
    try:
        c.wait(5)
        with pytest.raises(isobox.ContainerError, match="not running"):
            c.copy_from("/etc/passwd", tmp_path / "p")
    finally:
        c.remove()


def _tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_deep_trees_copy_out_up_to_a_limit_and_fail_clearly_beyond(busybox_image, store_root, tmp_path):
    """A container can nest directories deeper than Python recurses: get_archive walks
    iteratively, and past copy.MAX_DEPTH levels says so with an isobox error."""
    from isobox.copy import MAX_DEPTH

    nest = 'd=$1; i=0; while [ $i -lt $2 ]; do d=$d/d; i=$((i+1)); done; mkdir -p $d && echo end > $d/f'
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        c.exec(["sh", "-c", nest, "sh", "/ok", str(MAX_DEPTH)])
        c.exec(["sh", "-c", nest, "sh", "/deep", str(MAX_DEPTH + 1)])
        names = tarfile.open(fileobj=io.BytesIO(c.get_archive("/ok"))).getnames()
        assert len(names) == MAX_DEPTH + 2 and names[-1] == "ok" + "/d" * MAX_DEPTH + "/f"
        fds = sorted(os.listdir("/proc/self/fd"))
        with pytest.raises(isobox.ContainerError, match="levels deep"):
            c.get_archive("/deep")
        assert sorted(os.listdir("/proc/self/fd")) == fds  # every level's fd closed


COPY_IN_A_FRESH_PROCESS = """
import os, resource, sys
import isobox
image = isobox.Image.from_directory(sys.argv[1], isobox.ImageConfig(env=["PATH=/bin"]))
with isobox.Container(image, ["sleep", "30"]) as c:
    c.exec(["dd", "if=/dev/zero", "of=/big", "bs=1048576", "count=128"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c.copy_from("/big", sys.argv[2])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(os.path.getsize(sys.argv[2]), (after - before) // 1024)
"""


def test_a_large_copy_out_is_spooled_to_disk_not_held_in_memory(busybox_rootfs, store_root, tmp_path):
    """A container can make a file as large as it likes: copy_from streams it through a
    file in the container's state directory, not through memory."""
    done = subprocess.run([sys.executable, "-c", COPY_IN_A_FRESH_PROCESS, str(busybox_rootfs),
                           str(tmp_path / "big")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    size, grown_mib = map(int, done.stdout.split())
    assert size == 128 << 20
    assert grown_mib < 48  # at most the 16 MiB spool; held in memory, the 128 MiB tar would show
