"""The store is its owner's alone: another local user reaches neither a container's files
(a setuid-root binary a container wrote, a device node from a layer) nor the store's
lock files (flock works on a read-only fd: holding gc.lock would hang every isobox run).
Docker keeps /var/lib/docker 0710, Podman its storage 0700."""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest

import isobox

from support.host import IS_ROOT

NOBODY = 65534


@pytest.fixture
def open_store(monkeypatch):
    """A store under a directory everyone may traverse (as /var/lib is), unlike pytest's
    own 0700 temp directories, which would hide everything below them anyway."""
    parent = pathlib.Path(tempfile.mkdtemp(prefix="isobox-access-", dir="/tmp"))
    os.chmod(parent, 0o755)
    root = parent / "store"
    monkeypatch.setenv("ISOBOX_ROOT", str(root))
    yield root
    shutil.rmtree(parent, ignore_errors=True)


def as_nobody(code: str) -> str:
    """Run Python code as another local user; its stdout."""
    proc = subprocess.run([sys.executable, "-c", code], user=NOBODY, group=NOBODY,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.unit
def test_the_store_root_is_private_and_old_stores_are_made_so(tmp_path):
    root = tmp_path / "store"
    store = isobox.Store.open(root)
    assert stat.S_IMODE(os.stat(store.root).st_mode) == 0o700
    for sub in ("containers", "layers", "locks", "tmp", "volumes"):
        assert stat.S_IMODE(os.stat(root / sub).st_mode) == 0o700, sub
    os.chmod(root, 0o755)  # as every store was before
    isobox.Store.open(root)
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700


@pytest.mark.unit
def test_lock_files_are_the_owners_alone(tmp_path):
    store = isobox.Store.open(tmp_path / "store")
    with store.in_use():
        pass
    assert stat.S_IMODE(os.stat(store.locks / "gc.lock").st_mode) == 0o600


@pytest.mark.skipif(not IS_ROOT, reason="acting as another local user needs root")
def test_another_user_cannot_reach_a_containers_setuid_file(busybox_image, open_store):
    with isobox.Container(busybox_image, ["sh", "-c", "cp /bin/busybox /suid && chmod 4755 /suid && sleep 30"]) as c:
        upper = c.dir / "upper"
        for _ in range(600):  # until cp and chmod are done
            if (upper / "suid").exists() and (upper / "suid").stat().st_mode & stat.S_ISUID:
                break
            time.sleep(0.05)
        assert (upper / "suid").stat().st_mode & stat.S_ISUID
        verdict = as_nobody(f"""
import os
try:
    os.stat({str(upper / "suid")!r})
    print("reached")
except PermissionError:
    print("refused")
""")
    assert verdict == "refused"


@pytest.mark.skipif(not IS_ROOT, reason="acting as another local user needs root")
def test_another_user_cannot_hold_the_stores_locks(busybox_image, open_store):
    isobox.run(busybox_image, ["true"])  # makes locks/gc.lock
    lock = open_store / "locks" / "gc.lock"
    assert lock.exists()
    verdict = as_nobody(f"""
import fcntl, os
try:
    fd = os.open({str(lock)!r}, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    print("held")
except PermissionError:
    print("refused")
""")
    assert verdict == "refused"
