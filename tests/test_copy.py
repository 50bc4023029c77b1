"""Copies into and out of a running container (`docker cp`): they see the container's
own mounts, and no symlink in the container can lead a copy to the host."""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time

import pytest

import isobox
from isobox import Tmpfs

from test_users import flipper  # noqa: F401 (fixture: a static program that swaps two names)


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
    from isobox.runtime.copy import MAX_DEPTH

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


# -- a container that swaps files while they are copied out ----------------------------------------


def test_copy_from_never_blocks_on_a_fifo_swapped_in_after_the_stat(busybox_image, store_root, tmp_path, flipper):
    """The container exchanges a file with a FIFO as fast as it can while we copy it out:
    each copy gets the file or the FIFO (as a FIFO entry), and never opens the FIFO (a
    reader would block in open(2) until the container chose to write)."""
    import threading

    with isobox.Container(busybox_image, ["sleep", "60"]) as c:
        c.copy_to(flipper, "/flip")
        c.exec(["sh", "-c", "mkdir /data && echo content > /data/f && mkfifo /data/p && "
                "(/flip /data/f /data/p >/dev/null 2>&1 &)"])
        kinds: set = set()
        errors: list = []

        def copy_many() -> None:
            deadline = time.monotonic() + 4
            n = 0
            while time.monotonic() < deadline:
                out = tmp_path / f"out{n}"
                n += 1
                try:
                    c.copy_from("/data/f", out)
                except isobox.ContainerError as exc:  # between the two names of one exchange
                    errors.append(str(exc))
                    continue
                kinds.add("fifo" if stat.S_ISFIFO(os.lstat(out).st_mode) else out.read_text())

        t = threading.Thread(target=copy_many, daemon=True)
        t.start()
        t.join(30)
        blocked = t.is_alive()
        if blocked:  # let the stuck reader go: stop the exchanges, write to both names
            c.exec(["sh", "-c", "killall flip; for f in /data/f /data/p; do "
                    "[ -p $f ] && (echo x > $f &); done; true"])
            t.join(10)
        assert not blocked, "copy_from blocked on a FIFO the container swapped in"
        assert kinds <= {"content\n", "fifo"} and "content\n" in kinds, (kinds, errors[:3])


# -- where copies out land, and who owns them -------------------------------------------------------


def _foreign_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A sticky, world-writable directory the caller does not own (as /tmp)."""
    if os.geteuid() == 0:
        d = tmp_path / "shared"
        d.mkdir()
        os.chown(d, 65534, 65534)
        os.chmod(d, 0o1777)
        return d
    d = pathlib.Path(tempfile.gettempdir())
    st = d.stat()
    if st.st_uid == os.geteuid() or not st.st_mode & stat.S_ISVTX:
        pytest.skip(f"{d} is this user's own: no directory of another user to copy into")
    return d


def test_copy_from_into_a_directory_the_caller_does_not_own(busybox_image, store_root, tmp_path):
    """As `docker cp` does: files and directories land owned by the caller, with their
    modes, in any directory the caller can write (here a sticky one such as /tmp)."""
    dest = _foreign_dir(tmp_path)
    tag = f"isobox-cp-{os.getpid()}-{time.monotonic_ns()}"
    made = [dest / f"{tag}-f", dest / f"{tag}-d", dest / f"{tag}-renamed"]
    try:
        with isobox.Container(busybox_image, ["sleep", "30"]) as c:
            c.exec(["sh", "-c", f"echo hi > /tmp/{tag}-f && chmod 640 /tmp/{tag}-f && "
                    f"mkdir -p /tmp/{tag}-d/sub && echo x > /tmp/{tag}-d/sub/y"])
            if os.geteuid() == 0:  # owned by a user of the container: ours once out
                c.exec(["chown", "-R", "1000:1000", f"/tmp/{tag}-d", f"/tmp/{tag}-f"])
            c.copy_from(f"/tmp/{tag}-f", dest)                   # a file into the directory
            c.copy_from(f"/tmp/{tag}-d", dest)                   # a tree into the directory
            c.copy_from(f"/tmp/{tag}-f", dest / f"{tag}-renamed")  # a file to a new name
            c.copy_from(f"/tmp/{tag}-f", dest / f"{tag}-renamed")  # and over it again
        assert (dest / f"{tag}-f").read_text() == "hi\n"
        assert stat.S_IMODE((dest / f"{tag}-f").stat().st_mode) == 0o640
        assert (dest / f"{tag}-d" / "sub" / "y").read_text() == "x\n"
        assert (dest / f"{tag}-renamed").read_text() == "hi\n"
        for path in (made[0], made[1], made[1] / "sub", made[1] / "sub" / "y", made[2]):
            st = path.lstat()
            assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid()), path
        assert [p.name for p in dest.iterdir() if p.name.startswith(".isobox")] == []  # nothing staged left
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def test_copy_from_merges_a_tree_into_an_existing_one(busybox_image, store_root, tmp_path):
    out = tmp_path / "out"
    (out / "data" / "keep").mkdir(parents=True)
    (out / "data" / "keep" / "mine").write_text("mine")
    (out / "data" / "f").write_text("old")
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        c.exec(["sh", "-c", "mkdir -p /data/keep /data/new && echo new > /data/f && echo n > /data/new/g"])
        c.copy_from("/data", out)
    assert (out / "data" / "keep" / "mine").read_text() == "mine"
    assert (out / "data" / "f").read_text() == "new\n"
    assert (out / "data" / "new" / "g").read_text() == "n\n"


def test_copy_from_errors_name_the_path_and_the_step(busybox_image, store_root, tmp_path):
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        with pytest.raises(isobox.ContainerError) as info:
            c.copy_from("/etc/passwd", tmp_path / "missing" / "dir" / "passwd")
        message = str(info.value)
        assert "/etc/passwd" in message and str(tmp_path / "missing" / "dir") in message, message
        assert "No such file or directory" in message, message
        (tmp_path / "afile").write_text("")
        with pytest.raises(isobox.ContainerError, match="cannot overwrite"):
            c.copy_from("/etc", tmp_path / "afile")
        if os.geteuid() != 0:
            locked = tmp_path / "locked"
            locked.mkdir(mode=0o555)
            with pytest.raises(isobox.ContainerError) as info:
                c.copy_from("/etc/passwd", locked)
            assert str(locked) in str(info.value) and "Permission denied" in str(info.value)


def test_what_is_copied_in_belongs_to_the_containers_root(busybox_image, store_root, tmp_path):
    """As `docker cp` into a container: created with the root user's uid and gid."""
    src = tmp_path / "owned"
    src.mkdir()
    (src / "f").write_text("x")
    if os.geteuid() == 0:
        os.chown(src, 1000, 1000)
        os.chown(src / "f", 1000, 1000)
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        c.copy_to(src, "/tmp")
        assert c.exec(["stat", "-c", "%u:%g", "/tmp/owned", "/tmp/owned/f"]).stdout == b"0:0\n0:0\n"


def test_a_file_that_cannot_be_read_is_named(busybox_image, store_root, tmp_path):
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        c.exec(["sh", "-c", "mkdir -p /d/sub && echo s > /d/sub/secret && chmod 000 /d/sub/secret && "
                            "chown 1000 /d/sub/secret 2>/dev/null; true"])
        if os.geteuid() == 0:
            c.copy_from("/d", tmp_path)  # root reads it
            assert (tmp_path / "d" / "sub" / "secret").read_text() == "s\n"
            return
        out = tmp_path / "out"
        out.mkdir()
        fds = sorted(os.listdir("/proc/self/fd"))
        with pytest.raises(isobox.ContainerError, match=r"/d/sub/secret: cannot copy it out.*Permission denied"):
            c.copy_from("/d", out)
        assert sorted(os.listdir("/proc/self/fd")) == fds
        assert list(out.iterdir()) == []
