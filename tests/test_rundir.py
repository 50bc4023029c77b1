"""A container's run-time files (/etc/hosts, /etc/hostname, /etc/resolv.conf) live in a runtime directory on a tmpfs where the host gives one
(runtime/rundir.py): /run/isobox as root, $XDG_RUNTIME_DIR/isobox rootless; otherwise in
the container's directory in the store. Nothing of it outlives the container."""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Iterator

import pytest

import isobox
from isobox.host import privilege
from isobox.runtime import rundir

from support.host import IS_ROOT

ETC = ("hostname", "hosts", "resolv.conf")


@pytest.fixture
def runtime_base(monkeypatch: pytest.MonkeyPatch) -> Iterator[pathlib.Path]:
    """Where this test's store keeps its runtime directories: a private directory on a
    tmpfs (/dev/shm) given as $ISOBOX_RUNTIME_DIR (this machine's /run may be on the
    disk, where no runtime directory is used: see below)."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="isobox-run-", dir="/dev/shm"))
    monkeypatch.setenv(privilege.RUNTIME_DIR_ENV, str(base))  # children of the test too
    yield base / "isobox"
    shutil.rmtree(base)


def store_key(store: pathlib.Path) -> str:
    return hashlib.sha256(os.fsencode(store)).hexdigest()[:16]


def test_run_time_files_live_in_the_runtime_dir_and_go_with_the_container(busybox_image, store_root, runtime_base):
    c = isobox.Container(busybox_image, ["sh", "-c", "cat /etc/hostname; sleep 30"], hostname="box")
    c.start()
    try:
        run = runtime_base / store_key(store_root) / c.id
        assert sorted(p.name for p in run.iterdir()) == sorted(ETC)
        assert (run / "hostname").read_text() == "box\n"
        assert not any((c.dir / name).exists() for name in ("rootfs", *ETC))  # none on the disk
        assert os.stat(run).st_mode & 0o777 == 0o700
        assert os.stat(run.parent).st_mode & 0o777 == 0o700
        c.wait_for_log("box")
    finally:
        c.remove(force=True)
    assert not run.exists()
    assert not run.parent.exists()  # the store's level goes with its last container


def test_a_killed_owners_runtime_dir_is_swept_by_the_next_start(busybox_image, store_root, runtime_base, tmp_path):
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, isobox; img = isobox.Image.from_directory(sys.argv[1]);"
         "c = isobox.Container(img, ['sleep', '60']).start(); print(c.id, flush=True); sys.stdin.read()",
         str(busybox_image.layers[0])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        cid = owner.stdout.readline().strip()  # type: ignore[union-attr]
        run = runtime_base / store_key(store_root) / cid
        assert run.is_dir()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    isobox.run(busybox_image, ["true"])  # the next start sweeps what the dead owner left
    assert not run.exists()
    assert not (store_root / "containers" / cid).exists()


@pytest.mark.parametrize("why", ["missing", "not private", "on the disk"])
def test_without_a_private_tmpfs_runtime_dir_the_files_stay_in_the_store(busybox_image, store_root, monkeypatch,
                                                                        tmp_path, why):
    base = tmp_path / "run"  # tmp_path: on the disk here (/tmp is not a tmpfs on this machine)
    if why == "not private":
        base = pathlib.Path(tempfile.mkdtemp(dir="/dev/shm"))
        os.chmod(base, 0o777)  # another user could plant isobox/ in it first: not used
    elif why == "on the disk":
        base.mkdir(mode=0o700)
        if rundir.on_tmpfs(str(base)):
            pytest.skip("this machine's /tmp is a tmpfs")
    try:
        monkeypatch.setenv(privilege.RUNTIME_DIR_ENV, str(base))
        with isobox.Container(busybox_image, ["sleep", "30"]) as c:
            assert all((c.dir / name).exists() for name in ETC)
            assert c.exec(["cat", "/etc/hosts"]).stdout.startswith(b"127.0.0.1")
        assert not (base / "isobox").exists() or list((base / "isobox").iterdir()) == []
    finally:
        if why == "not private":
            shutil.rmtree(base)


def _fstype_by_mountinfo(path: str) -> str:
    """The file system type of the longest mount point above ``path`` (as the mount table
    says: the oracle for statfs's answer)."""
    real, best, fstype = os.path.realpath(path), "", ""
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f.read().decode("utf-8", "surrogateescape").splitlines():
            left, _, right = line.partition(" - ")
            point = left.split()[4].replace("\\040", " ")
            if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best, fstype = point, right.split()[0]
    return fstype


@pytest.mark.unit
@pytest.mark.parametrize("where", ["/", "/dev/shm", "/proc", "/run", "tmp_path"])
def test_a_runtime_directory_base_is_on_a_tmpfs_as_the_mount_table_says(where: str, tmp_path: pathlib.Path):
    path = str(tmp_path) if where == "tmp_path" else where
    if not os.path.exists(path):
        pytest.skip(f"no {path} here")
    assert rundir.on_tmpfs(path) == (_fstype_by_mountinfo(path) in ("tmpfs", "ramfs"))
