"""Named volumes: directories under the store's ``volumes/`` that outlive containers and
are shared by every container that mounts the same name (`mounts.Volume`), managed as
``docker volume`` manages them.

A volume is in use while any live or kept container of the store lists it in its
state.json (kept exited containers still use their volumes, as with Docker). The owner
writes the names when the container starts, holding `Store.using_volumes`, and removal
decides under its exclusive counterpart, so a container that is starting cannot lose
its volume between the check and the mount.
"""

from __future__ import annotations

import os
import pathlib
from typing import Dict, List, Optional, Tuple, Union

import attrs

from ..errors import InvalidOption, StoreError
from .mounts import volume_dir
from .state import STATE_NAME, owner_alive, read_state
from ..host.fs import remove_tree
from ..images.store import PathLike, Store, tree_size
from .spelling import NAME

StoreArg = Union[Store, PathLike, None]


@attrs.frozen
class VolumeInfo:
    name: str
    path: pathlib.Path  # the data directory, as mounted


def volumes(store: StoreArg = None) -> List[VolumeInfo]:
    """The named volumes in the store (`docker volume ls`)."""
    root = Store.open(store).volumes
    return sorted(
        (VolumeInfo(p.name, volume_dir(root, p.name)) for p in root.iterdir() if (p / "_data").is_dir()),
        key=lambda v: v.name,
    )


def volume_users(store: Store) -> Tuple[Optional[Dict[str, List[str]]], List[str]]:
    """Volume name -> ids of the containers that list it, and warnings; None (keep every
    volume) when a container's state cannot be read. What an owner that died left does
    not count: the next start sweeps it."""
    users: Dict[str, List[str]] = {}
    folder = store.containers
    for path in sorted(folder.glob(f"*/{STATE_NAME}")) if folder.is_dir() else []:
        cdir = path.parent
        if not owner_alive(cdir):
            continue
        try:
            names = read_state(cdir).volumes
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            return None, [f"cannot read {path} ({exc}): keeping every volume"]
        for name in names:
            users.setdefault(name, []).append(cdir.name)
    return users, []


def remove_volume(name: str, store: StoreArg = None, *, force: bool = False) -> None:
    """Delete a named volume and its data (`docker volume rm`). A volume that containers
    use is kept (StoreError) unless ``force``."""
    if not NAME.match(name):
        raise InvalidOption(f"invalid volume name {name!r}")
    st = Store.open(store)
    with st.removing_volumes():
        if not force:
            users, warnings = volume_users(st)
            if users is None:
                raise StoreError(f"cannot tell whether volume {name} is in use: {warnings[0]}")
            if users.get(name):
                raise StoreError(f"volume {name} is in use by container(s) "
                                 f"{', '.join(cid[:12] for cid in users[name])}")
        remove_tree(st.volumes / name, st.privilege)


def prune_volumes(store: Store) -> Tuple[Tuple[str, ...], int, List[str]]:
    """Remove the volumes no container uses: their names, the bytes they took, warnings.
    The caller holds `Store.removing_volumes`."""
    users, warnings = volume_users(store)
    if users is None:
        return (), 0, warnings
    removed: List[str] = []
    reclaimed = 0
    try:
        entries = sorted(os.scandir(store.volumes), key=lambda e: e.name)
    except FileNotFoundError:
        return (), 0, warnings
    for entry in entries:
        if entry.name not in users and entry.is_dir(follow_symlinks=False):
            reclaimed += tree_size(pathlib.Path(entry.path))
            remove_tree(entry.path, store.privilege)
            removed.append(entry.name)
    return tuple(removed), reclaimed, warnings
