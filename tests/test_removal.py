"""A removed container is gone at once (its directory renamed out of containers/), and
its writable layer is removed by the store's remover thread (Store.remove_later): on a
disk that removal is most of a container's end. Nothing is left: the process waits for
its removals at exit, and a killed process's are swept by the next start."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import isobox
from isobox.host.remover import wait_for_removals


def test_a_removed_container_is_gone_at_once_and_its_layer_soon(busybox_image, store_root):
    c = isobox.Container(busybox_image, ["sh", "-c", "dd if=/dev/zero of=/big bs=1M count=8 2>/dev/null"])
    c.start()
    assert c.wait() == 0
    assert (c.dir / "upper" / "big").stat().st_size == 8 << 20
    c.remove()
    assert not c.dir.exists()
    assert isobox.containers(all=True) == []
    wait_for_removals()
    assert list((store_root / "tmp").iterdir()) == []


def test_a_process_waits_for_its_removals_at_exit(busybox_image, store_root):
    code = ("import sys, isobox; img = isobox.Image.from_directory(sys.argv[1]);"
            "[isobox.run(img, ['sh', '-c', 'echo x > /f']) for _ in range(20)]")
    subprocess.run([sys.executable, "-c", code, str(busybox_image.layers[0])], check=True, timeout=120)
    assert [p for p in (store_root / "containers").iterdir() if not p.name.startswith(".")] == []
    assert list((store_root / "tmp").iterdir()) == []


def test_a_killed_processs_pending_removals_are_swept_by_the_next_start(busybox_image, store_root):
    """A removal that a killed process had left to its thread is garbage under tmp/: no
    one holds it, and the next start's sweep takes it."""
    store = isobox.Store.open(store_root)
    garbage = store.tmp / "rm-1-0123456789abcdef"  # as a killed process leaves it
    (garbage / "upper" / "etc").mkdir(parents=True)
    (garbage / "upper" / "etc" / "file").write_text("x\n")
    code = ("import sys, isobox; img = isobox.Image.from_directory(sys.argv[1]);"
            "isobox.run(img, ['true'])")
    subprocess.run([sys.executable, "-c", code, str(busybox_image.layers[0])], check=True, timeout=60)
    assert not garbage.exists()


def test_containers_share_one_mount_point_that_stays_empty(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sleep", "30"]) as a, \
            isobox.Container(busybox_image, ["sleep", "30"]) as b:
        assert a.exec(["cat", "/etc/hostname"]).stdout != b.exec(["cat", "/etc/hostname"]).stdout
        mount_point = store_root / "containers" / ".rootfs"
        assert mount_point.is_dir() and list(mount_point.iterdir()) == []
    assert list(mount_point.iterdir()) == []


def test_the_writable_layer_is_mounted_volatile(busybox_image, store_root):
    """A container is never mounted again after it stops (isobox has no restart), so its
    upper directory need not be synced: overlay's ``volatile`` (CRI-O's choice for every
    container, podman's for ``--rm``) drops the syncfs at unmount that cost ~0.5 ms of
    every start on a disk store."""
    out = isobox.run(busybox_image, ["cat", "/proc/self/mountinfo"], timeout=30).stdout.decode()
    root = next(line for line in out.splitlines() if line.split()[4] == "/")
    assert " overlay " in root and "volatile" in root.split(" - ")[1], root
