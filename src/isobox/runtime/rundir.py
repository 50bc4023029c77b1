"""Where a container's run-time files live: a directory on a tmpfs, as runc keeps
/run/runc and Podman its runroot (/run/containers/storage).

The store is on the disk (/var/lib/isobox, ~/.local/share/isobox), where every file made
and removed costs a journal entry and, on a disk mounted with ``discard``, a discard of
its block: a container's short-lived files there cost more than the rest of its start.
What lives only as long as the container runs and need not survive a reboot goes here
instead: /etc/hosts, /etc/hostname and /etc/resolv.conf (bound into the container, as
Podman keeps them in its runroot). What must stay on the disk stays in the store's
``containers/<id>/``: the upper and work directories (the container's writes can be
large), the logs, the state, the lock. (The root's mount point is one directory all the
store's containers share, ``containers/.rootfs``: see container.py.)

The directory, per store (two stores never share one) and per container:

- ``$ISOBOX_RUNTIME_DIR/isobox/<store key>/<id>/`` when that variable is set (a machine
  whose /run is on the disk can name a directory of its own on a tmpfs);
- as root: ``/run/isobox/<store key>/<id>/``;
- rootless: ``$XDG_RUNTIME_DIR/isobox/<store key>/<id>/`` (what systemd-logind makes);
- otherwise (no such directory, one that another user could write into, or one that is
  not on a tmpfs — on some machines /run is on the disk): the container's directory in
  the store.

Each level is made 0700 and checked to be the caller's own, not a symlink, and closed to
others, so another local user can neither read a container's files nor plant them.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import stat
from typing import Dict, Optional

ROOT_RUNTIME_DIR = "/run"
RUNTIME_DIR_ENV = "ISOBOX_RUNTIME_DIR"  # overrides the base (/run, $XDG_RUNTIME_DIR) for all

# store root -> its runtime directory (None: none usable); a fact about this process's
# environment, decided once
_decided: Dict[pathlib.Path, Optional[pathlib.Path]] = {}


def _own_private_dir(path: pathlib.Path) -> bool:
    """Make ``path`` (mode 0700) if missing; True if it is then a directory of ours that
    no other user can enter."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def _safe_base(path: str) -> bool:
    """A base directory that exists, is no symlink, belongs to us or root, and that no
    other user can write into (so nobody can plant our ``isobox`` directory first)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid in (0, os.geteuid())
            and not st.st_mode & 0o022)


def make_container_dir(store_root: pathlib.Path, cid: str) -> Optional[pathlib.Path]:
    """Make the runtime directory of container ``cid`` (0700), or None where the host gives
    none (see store_runtime_dir). The store's level is made again if the last container
    of another process removed it meanwhile (release_container_dir)."""
    base = store_runtime_dir(store_root)
    if base is None:
        return None
    path = base / cid
    try:
        path.mkdir(mode=0o700)
    except FileNotFoundError:
        if not _own_private_dir(base):
            raise
        path.mkdir(mode=0o700)
    return path


def release_container_dir(path: pathlib.Path) -> None:
    """After a container's runtime directory is removed: remove the store's level too if
    it is now empty, so that stores come and go (tests make thousands) without leaving
    directories behind in /run."""
    try:
        os.rmdir(path.parent)
    except OSError:
        pass  # other containers of the store, or gone already


def on_tmpfs(path: str) -> bool:
    """Whether ``path`` lies on a tmpfs (or ramfs), by the mount table: where /run is on
    the disk (some VMs and containers), a runtime directory there would only add files
    to the disk, and the store's container directory is used instead."""
    real = os.path.realpath(path)
    best, fstype = "", ""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().decode("utf-8", "surrogateescape").splitlines()
    except OSError:
        return False
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right:
            continue
        point = fields[4].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, right.split()[0]
    return fstype in ("tmpfs", "ramfs")


def store_runtime_dir(store_root: pathlib.Path) -> Optional[pathlib.Path]:
    """The runtime directory of the store at ``store_root``, made if needed; None when
    this host gives the caller none (then run-time files stay in the store)."""
    if store_root in _decided:
        return _decided[store_root]
    base = os.environ.get(RUNTIME_DIR_ENV) or (
        ROOT_RUNTIME_DIR if os.geteuid() == 0 else os.environ.get("XDG_RUNTIME_DIR")) or None
    if base is not None and not _safe_base(base):
        base = None  # missing (never made here: that is logind's), or others could write in it
    found: Optional[pathlib.Path] = None
    if base is not None and os.path.isabs(base) and on_tmpfs(base):
        top = pathlib.Path(base) / "isobox"
        key = hashlib.sha256(os.fsencode(store_root)).hexdigest()[:16]
        if _own_private_dir(top) and _own_private_dir(top / key):
            found = top / key
    _decided[store_root] = found
    return found
