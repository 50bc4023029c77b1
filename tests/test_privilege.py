"""Rootful or rootless is decided once (host/privilege.py): by the store when it is opened,
and everything done with that store follows its `Privilege`, not the process's euid.

As root, these tests open stores that decide "rootless" and check that what they make is
what a rootless user's store would make; as a rootless user, that an explicit id map is
the one used, not the caller's subordinate ids."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isobox.errors import InvalidOption
from isobox.host.idmap import IdMap, IdRange
from isobox.host.privilege import Privilege
from isobox.images.image import Image
from isobox.images.store import Store


def only_the_caller() -> IdMap:
    """A one-id map (the caller as root): rootless, nobody's files are given away."""
    return IdMap(uids=(IdRange(0, os.geteuid(), 1),), gids=(IdRange(0, os.getegid(), 1),), helpers=False)


@pytest.mark.unit
def test_the_process_decides_once_by_its_euid():
    assert Privilege.current().rootful == (os.geteuid() == 0)


@pytest.mark.unit
def test_a_rootful_privilege_has_no_id_map():
    assert Privilege(rootful=True).id_map() is None
    assert Privilege(rootful=True).with_id_map() == Privilege(rootful=True)
    with pytest.raises(InvalidOption, match="no id map"):
        Privilege(rootful=True, ids=only_the_caller())


@pytest.mark.unit
def test_a_rootless_privilege_keeps_the_map_it_was_given():
    ids = only_the_caller()
    privilege = Privilege(rootful=False, ids=ids)
    assert privilege.id_map() is ids
    assert privilege.with_id_map() is privilege
    assert (privilege.overlay_xattrs, privilege.user_namespace) == ("user", True)
    assert not (privilege.can_chown or privilege.can_mknod or privilege.device_program)
    rootful = Privilege(rootful=True)
    assert (rootful.overlay_xattrs, rootful.user_namespace) == ("trusted", False)
    assert rootful.can_chown and rootful.can_mknod and rootful.device_program


@pytest.mark.unit
def test_a_store_opened_with_a_privilege_takes_its_default_root_from_it(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("ISOBOX_ROOT", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    privilege = Privilege(rootful=False)
    store = Store.open(privilege=privilege)
    assert store.privilege is privilege
    assert store.root == tmp_path / "data" / "isobox"  # not /var/lib/isobox, even as root
    assert store.tmp.is_dir()
    assert Privilege(rootful=True).default_store_root() == Path("/var/lib/isobox")
    monkeypatch.setenv("ISOBOX_ROOT", str(tmp_path / "mine"))
    assert Store.open(privilege=privilege).root == tmp_path / "mine"
    assert Store.open(store) is store  # a store keeps what it decided


def test_a_pull_follows_the_stores_privilege_not_the_euid(images, tmp_path: Path):
    """The image's top layer has an opaque directory and files of uid 1000. A store that
    decided "rootless, with only the caller mapped" leaves them the caller's and marks the
    directory in user.* xattrs, whoever runs the pull (as root: no chown, no trusted.*)."""
    store = Store.open(tmp_path / "store", privilege=Privilege(rootful=False, ids=only_the_caller()))
    img = Image.pull(images.layered.reference, store=store)
    top = img.layers[3]
    assert os.getxattr(top / "opt/app", "user.overlay.opaque") == b"y"
    profile = os.lstat(top / "home/app/.profile")
    assert (profile.st_uid, profile.st_gid) == (os.geteuid(), os.getegid())

