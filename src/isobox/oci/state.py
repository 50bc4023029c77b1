"""What isobox-runtime knows about a container, on disk under ``--root`` (default
/run/isobox-runtime as root, a tmpfs: nothing of it should outlive a reboot; see
`default_root`).

One directory per container, ``<root>/<id>/``:

- ``state.json``: `Record` (pid and its start time, bundle, creation time, annotations,
  the container's cgroup directories), written once by `create` (`write_record`) and
  read by every other command (`read_record`): one writer, one reader;
- ``exec.fifo``: the FIFO the container's first process waits on (spawn.c: the exec
  fifo); it exists from `create` until `start` has let the process go, so its presence
  is what "created" means;
- ``lock``: commands that change the container (create, start, delete) hold it (flock).

The status is never stored: it is read from the kernel each time (`status`), as runc
does — "stopped" when the recorded process is gone (or its pid now belongs to another
process: the start time tells), "created" while the fifo is there, else "running".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import re
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import attrs

from ..errors import ContainerError, ContainerNotFound, InvalidOption
from ..host.fs import write_json
from ..runtime.state import process_alive

ROOT_NAME = "isobox-runtime"
OCI_VERSION = "1.0.2"  # the runtime spec version isobox-runtime speaks
RECORD_NAME = "state.json"
FIFO_NAME = "exec.fifo"
LOCK_NAME = "lock"

# runc's rule for ids (libcontainer's idRegex): no path separators, no "." or "..".
ID_RE = re.compile(r"^[\w+\-.]+$")


def default_root() -> str:
    """``<runtime base>/isobox-runtime``: /run/isobox-runtime as root, else under
    $XDG_RUNTIME_DIR, as runc's $XDG_RUNTIME_DIR/runc (host/privilege.py decides the base)."""
    from ..host.privilege import Privilege

    base = Privilege.current().runtime_base
    if base is None:
        raise InvalidOption("no runtime directory for this user ($XDG_RUNTIME_DIR is not set): pass --root DIR")
    return str(base / ROOT_NAME)


def check_id(cid: str) -> str:
    if not cid or not ID_RE.match(cid) or cid in (".", ".."):
        raise InvalidOption(f"invalid container id {cid!r}: use letters, digits, _ + - and .")
    return cid


class AlreadyExists(ContainerError):
    """Raised when `create` is given an id that is in use."""


@attrs.frozen
class Record:
    """A container as `create` left it."""

    id: str
    pid: int
    start_time: Optional[int]
    bundle: str
    rootfs: str
    created: str  # RFC 3339, UTC
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    cgroup_dirs: Tuple[str, ...] = ()
    cgroup_v2: bool = False
    hooks: Mapping[str, Any] = attrs.field(factory=dict)  # poststart, poststop (hooks.to_json)

    def to_json(self) -> Dict[str, Any]:
        return {"id": self.id, "pid": self.pid, "start_time": self.start_time, "bundle": self.bundle,
                "rootfs": self.rootfs, "created": self.created, "annotations": dict(self.annotations),
                "cgroup_dirs": list(self.cgroup_dirs), "cgroup_v2": self.cgroup_v2,
                "hooks": dict(self.hooks)}

    @classmethod
    def from_json(cls, doc: Any) -> "Record":
        if not isinstance(doc, Mapping):
            raise ValueError("not an object")
        start = doc.get("start_time")
        return cls(str(doc["id"]), int(doc["pid"]), int(start) if start is not None else None,
                   str(doc["bundle"]), str(doc["rootfs"]), str(doc["created"]),
                   {str(k): str(v) for k, v in dict(doc.get("annotations") or {}).items()},
                   tuple(str(d) for d in doc.get("cgroup_dirs") or ()), bool(doc.get("cgroup_v2")),
                   dict(doc.get("hooks") or {}))


class StateDir:
    """``<root>/<id>``: the paths of one container's files, and the rules for them."""

    def __init__(self, root: str, cid: str) -> None:
        self.root = pathlib.Path(root)
        self.id = check_id(cid)
        self.path = self.root / cid

    @property
    def fifo(self) -> pathlib.Path:
        return self.path / FIFO_NAME

    def make(self) -> None:
        """Claim the id: AlreadyExists when another container has it."""
        # the root closed to everyone else; a container's directory searchable, so that a
        # container process of another uid can open the fifo by name below an fd of it
        # (spawn.c: openat on exec_fifo_dir), without listing it
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self.path.mkdir(mode=0o711)
        except FileExistsError:
            raise AlreadyExists(f"container {self.id} already exists (in {self.root})") from None

    def exists(self) -> bool:
        return self.path.is_dir()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        try:
            fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise ContainerNotFound(f"container {self.id} does not exist (in {self.root})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def write_record(self, record: Record) -> None:
        write_json(self.path / RECORD_NAME, record.to_json())

    def read_record(self) -> Record:
        """The record; ContainerNotFound when there is no container by this id, or when
        `create` has not written it yet (or failed before it)."""
        try:
            data = (self.path / RECORD_NAME).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise ContainerNotFound(f"container {self.id} does not exist (in {self.root})") from None
        try:
            return Record.from_json(json.loads(data))
        except (ValueError, KeyError, TypeError) as exc:
            raise ContainerError(f"the state of container {self.id} is unreadable "
                                 f"({self.path / RECORD_NAME}: {exc})") from exc

    def status(self, record: Record) -> str:
        """created, running or stopped: from the kernel and the fifo, now."""
        if not process_alive(record.pid, record.start_time):
            return "stopped"
        if os.path.lexists(self.fifo):
            return "created"
        return "running"


def all_ids(root: str) -> List[str]:
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [n for n in names if ID_RE.match(n) and os.path.isfile(os.path.join(root, n, RECORD_NAME))]


def spec_state(state: StateDir, record: Record, status: str, version: str) -> Dict[str, Any]:
    """The runtime spec's state (runtime.md, "State"), with runc's extra fields."""
    doc: Dict[str, Any] = {
        "ociVersion": version,
        "id": record.id,
        "status": status,
        "pid": record.pid if status != "stopped" else 0,
        "bundle": record.bundle,
        "rootfs": record.rootfs,
        "created": record.created,
        "owner": "",
    }
    if record.annotations:
        doc["annotations"] = dict(record.annotations)
    return doc
