"""Mounts a container asks for: host directories (`Bind`), named volumes (`Volume`) and
`Tmpfs`, plus the files Docker provides (/etc/hosts, /etc/hostname, /etc/resolv.conf).

Safety: a destination is resolved *after* pivot_root, inside the container, so a symlink
in the image (`/data -> /etc` or `-> ../../..`) can only ever point at a container path,
never at the host. Host sources are captured before pivot_root as detached mount trees
(open_tree(2)) and attached after it (spawn.c: IB_OP_OPEN_TREE / IB_OP_ATTACH).
"""

from __future__ import annotations

import os
import pathlib
import posixpath
import re
from typing import List, Optional, Sequence, Union

import attrs

from ..host import native
from ..errors import InvalidOption
from ..host.native import Op, lib
from .spelling import NAME


def _container_path(inst: object, attr: "attrs.Attribute[str]", value: str) -> None:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise InvalidOption(f"mount destination must be an absolute path, got {value!r}")
    norm = posixpath.normpath(value)
    if norm == "/" or norm == "/proc" or norm.startswith("/proc/"):
        raise InvalidOption(f"cannot mount over {norm}")


def _host_path(value: Union[str, "os.PathLike[str]"]) -> str:
    text = os.fspath(value)
    if not os.path.isabs(text) or "\0" in text:
        raise InvalidOption(f"bind source must be an absolute host path, got {text!r}")
    return text


@attrs.frozen
class Bind:
    """A host path mounted into the container (`docker run -v /src:/dst[:ro]`)."""

    source: str = attrs.field(converter=_host_path)
    target: str = attrs.field(validator=_container_path)
    read_only: bool = False


def _volume_name(inst: object, attr: "attrs.Attribute[str]", value: str) -> None:
    if not NAME.match(value):
        raise InvalidOption(f"invalid volume name {value!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")


@attrs.frozen
class Volume:
    """A named volume: a directory under the store that outlives containers and is shared
    by every container that mounts the same name (`docker run -v NAME:/dst`)."""

    name: str = attrs.field(validator=_volume_name)
    target: str = attrs.field(validator=_container_path)
    read_only: bool = False


def _size(value: Optional[Union[int, str]]) -> Optional[str]:
    if value is None:
        return None
    text = str(value)
    if not re.match(r"^[0-9]+[kmgKMG%]?$", text):
        raise InvalidOption(f"invalid tmpfs size {value!r}")
    return text


@attrs.frozen
class Tmpfs:
    """A tmpfs (`docker run --tmpfs /dst`): noexec, nosuid, nodev, mode 1777 by default."""

    target: str = attrs.field(validator=_container_path)
    size: Optional[str] = attrs.field(default=None, converter=_size)
    mode: int = 0o1777
    exec: bool = False


Mount = Union[Bind, Volume, Tmpfs]


def parse_volume_spec(text: str) -> Mount:
    """`-v` syntax: /host:/ctr[:ro|rw] or name:/ctr[:ro|rw]."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise InvalidOption(f"invalid volume specification {text!r}")
    ro = len(parts) == 3 and parts[2] == "ro"
    if parts[0].startswith("/"):
        return Bind(parts[0], parts[1], read_only=ro)
    return Volume(parts[0], parts[1], read_only=ro)


def volume_dir(volumes_root: pathlib.Path, name: str) -> pathlib.Path:
    return volumes_root / name / "_data"


@attrs.frozen(eq=False)  # see native.Op
class MountPlan:
    """Ops before and after pivot_root for the requested mounts and Docker's /etc files."""

    before: List[Op]
    after: List[Op]


def plan_mounts(
    mounts: Sequence[Mount],
    etc_files: Sequence[tuple[str, str]],  # (host file, container path)
    volumes_root: pathlib.Path,
    first_index: int,
) -> MountPlan:
    """``first_index`` is the plan index the first "before" op will have (ATTACH ops refer
    to their OPEN_TREE op by index)."""
    before: List[Op] = []
    after: List[Op] = []
    def attach(source: str, target: str, read_only: bool, is_file: bool) -> None:
        index = first_index + len(before)
        before.append(Op(lib.IB_OP_OPEN_TREE, f"open {source} for {target}", target, source=source))
        if is_file:
            parent = posixpath.dirname(target) or "/"
            after.append(Op(lib.IB_OP_MKDIR_P, f"create {parent}", parent, mode=0o755))
            after.append(Op(lib.IB_OP_TOUCH, f"create {target}", target, mode=0o644))
        else:
            after.append(Op(lib.IB_OP_MKDIR_P, f"create {target}", target, mode=0o755))
        # nodev: no device node the container makes here can be opened (rootfs.py)
        after.append(Op(lib.IB_OP_ATTACH, f"mount {source} on {target}", target, ref=index,
                        flags=native.MS_NODEV | (native.MS_RDONLY if read_only else 0)))

    for host, path in etc_files:
        attach(host, path, False, True)
    for m in mounts:
        if isinstance(m, Bind):
            if not os.path.exists(m.source):
                raise InvalidOption(f"bind source path does not exist: {m.source}")
            attach(m.source, posixpath.normpath(m.target), m.read_only, not os.path.isdir(m.source))
        elif isinstance(m, Volume):
            data = volume_dir(volumes_root, m.name)
            data.mkdir(parents=True, exist_ok=True)
            attach(str(data), posixpath.normpath(m.target), m.read_only, False)
        else:
            target = posixpath.normpath(m.target)
            options = f"mode={m.mode:o}" + (f",size={m.size}" if m.size else "")
            flags = native.MS_NOSUID | native.MS_NODEV | (0 if m.exec else native.MS_NOEXEC)
            after.append(Op(lib.IB_OP_MKDIR_P, f"create {target}", target, mode=0o755))
            after.append(Op(lib.IB_OP_MOUNT, f"mount tmpfs on {target}", target, source="tmpfs",
                            fstype="tmpfs", flags=flags, data=options))
    return MountPlan(before, after)
