"""A container's run-time files (/etc/hosts, /etc/hostname, /etc/resolv.conf) live in a runtime directory on a tmpfs where the host gives one
(runtime/rundir.py): /run/isobox as root, $XDG_RUNTIME_DIR/isobox rootless; otherwise in
the container's directory in the store. Nothing of it outlives the container."""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

import isobox
from isobox.runtime import rundir

from support.host import IS_ROOT

ETC = ("hostname", "hosts", "resolv.conf")


@pytest.fixture
def runtime_base(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """Where this test's store keeps its runtime directories."""
    if IS_ROOT:
        base = pathlib.Path(rundir.ROOT_RUNTIME_DIR)
    else:
        base = tmp_path / "xdg-runtime"
        base.mkdir(mode=0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    return base / "isobox"


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


def test_without_a_private_runtime_dir_the_files_stay_in_the_store(busybox_image, store_root, monkeypatch, tmp_path):
    if IS_ROOT:
        monkeypatch.setattr(rundir, "ROOT_RUNTIME_DIR", str(tmp_path / "no-such-dir"))
    else:
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o755)  # another user could enter it: not used
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        assert all((c.dir / name).exists() for name in ETC)
        assert c.exec(["cat", "/etc/hosts"]).stdout.startswith(b"127.0.0.1")
