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
from typing import Optional, Union

from ..images.store import Store


def _safe_base(path: pathlib.Path) -> bool:
    """A base directory that exists, is no symlink, belongs to us or root, and that no
    other user can write into (so nobody can plant our ``isobox`` directory first)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid in (0, os.geteuid())
            and not st.st_mode & 0o022)


def on_tmpfs(path: Union[str, pathlib.Path]) -> bool:
    """Whether ``path`` lies on a tmpfs (or ramfs), by statfs(2): where /run is on the disk
    (some VMs and containers), a runtime directory there would only add files to the
    disk, and the store's container directory is used instead."""
    from ..host.native import lib

    return int(lib.ib_fs_type(os.fsencode(path))) in (lib.IB_TMPFS_MAGIC, lib.IB_RAMFS_MAGIC)


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


def make_container_dir(store: Store, cid: str) -> Optional[pathlib.Path]:
    """Make the runtime directory of container ``cid`` (0700), or None where the host gives
    none (see store_runtime_dir). The store's level is made again if the last container
    of another process removed it meanwhile (release_container_dir)."""
    base = store_runtime_dir(store)
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


def store_runtime_dir(store: Store) -> Optional[pathlib.Path]:
    """The runtime directory of ``store``, made if needed and checked to be ours and
    private; None when this host gives the caller none (the base is the store's
    `Privilege.runtime_base`: missing, never made here, as that is logind's; one others
    could write in; one not on a tmpfs), and then run-time files stay in the store."""
    base = store.privilege.runtime_base
    if base is None or not _safe_base(base) or not on_tmpfs(base):
        return None
    top = base / "isobox"
    path = top / hashlib.sha256(os.fsencode(store.root)).hexdigest()[:16]
    if _own_private_dir(top) and _own_private_dir(path):
        return path
    return None
