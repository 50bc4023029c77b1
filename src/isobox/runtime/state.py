"""A container's directory: the files its owner writes and every other process reads
(control/client.py), and the few rules for reading them.

The files, under the store's ``containers/<id>/``:

- ``lock``: the owner holds it (flock) as long as it owns the container;
- ``state.json``: `ContainerState` (id, name, image, argv, status, pid, exit code),
  rewritten whole by its owner with `write_state` and read by everyone with
  `read_state`: one record, one writer, one reader, as crun's status.c keeps a
  container's status;
- ``layers.json``: the image layers it uses, the store's own record (`Store.hold_layers`),
  which prune and image removal read;
- ``options.json``: `RunOptions`, how it was made and is owned, for inspect (written by
  the isobox command and the supervisor, control/owner.py; mode 0600, as the environment
  may hold secrets), with `write_options` and `read_options`;
- ``kept``: an exited container its owner let go of and that stays until removed;
- ``control.sock``: the owner's control socket (control.py, server.py);
- ``containers/.names/<name>``: a symlink to the id, the name's claim.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import time
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

import attrs

from ..host.fs import replace_file, write_json

if TYPE_CHECKING:
    from ..net.ports import PortMap

STATE_NAME = "state.json"
OPTIONS_NAME = "options.json"
KEPT_NAME = "kept"
SOCKET_NAME = "control.sock"


def socket_path(dfd: int) -> str:
    """The control socket's address through an fd of the container's directory: an
    address holds at most 107 bytes, and the store can be deep (a test's tmp dir)."""
    return f"/proc/self/fd/{dfd}/{SOCKET_NAME}"


# -- the state record (state.json) -----------------------------------------------------------

STATUSES = ("created", "running", "exited")


def _optional_int(value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _optional_str(value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _strings(value: Any) -> Tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return tuple(value)


@attrs.frozen
class ContainerState:
    """What a container's owner records about it, for every other process: ``status`` is
    "created", "running" or "exited"; ``pid`` its pid 1 as the host sees it, with
    ``pid_start`` (its start time, see `process_alive`); ``exit_code`` as `Container.wait`
    reports it; ``volumes`` the named volumes it mounts (named_volumes.py: in use);
    ``log_lost`` what its log files could not take; ``ports`` its published ports as
    bound (net/ports.py: `PortMap`; None when it has none). ``recorded`` is when it was written
    (the file's mtime: an exited record's is the container's end), not part of the JSON.

    Written only by its owner (`write_state`), read only through `read_state`."""

    id: str
    name: str
    status: str = attrs.field(validator=attrs.validators.in_(STATUSES))
    image: Optional[str] = None
    image_digest: Optional[str] = None
    argv: Tuple[str, ...] = ()
    volumes: Tuple[str, ...] = ()
    pid: Optional[int] = None
    pid_start: Optional[int] = None
    owner_pid: Optional[int] = None
    created: Optional[float] = None
    exit_code: Optional[int] = None
    log_lost: Tuple[str, ...] = ()
    #: the options it was made with (`config.config_to_json`'s form): what a commit by
    #: another process starts from; None in records of an older isobox
    config: Optional[Mapping[str, Any]] = attrs.field(default=None, eq=False)
    ports: Optional["PortMap"] = None
    recorded: float = attrs.field(default=0.0, eq=False)

    @classmethod
    def from_json(cls, doc: Any, *, fallback_id: str = "", recorded: float = 0.0) -> "ContainerState":
        """The record from its JSON; ValueError names what does not fit. Missing fields take
        their defaults (``id`` the directory's name), so a record of an older isobox reads."""
        if not isinstance(doc, dict):
            raise ValueError(f"a state record is a JSON object, got {type(doc).__name__}")
        created = doc.get("created")
        if created is not None and (isinstance(created, bool) or not isinstance(created, (int, float))):
            raise ValueError(f"'created' must be a time, got {created!r}")
        status = doc.get("status") or "created"
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        return cls(
            id=_optional_str(doc.get("id")) or fallback_id,
            name=_optional_str(doc.get("name")) or "",
            status=status,
            image=_optional_str(doc.get("image")),
            image_digest=_optional_str(doc.get("image_digest")),
            argv=_strings(doc.get("argv")),
            volumes=_strings(doc.get("volumes")),
            pid=_optional_int(doc.get("pid")),
            pid_start=_optional_int(doc.get("pid_start")),
            owner_pid=_optional_int(doc.get("owner_pid")),
            created=None if created is None else float(created),
            exit_code=_optional_int(doc.get("exit_code")),
            log_lost=_strings(doc.get("log_lost")),
            config=doc["config"] if isinstance(doc.get("config"), dict) else None,
            ports=_port_map(doc.get("ports")),
            recorded=recorded,
        )

    def to_json(self) -> Dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "status": self.status, "image": self.image,
            "image_digest": self.image_digest, "argv": list(self.argv), "volumes": list(self.volumes),
            "pid": self.pid, "pid_start": self.pid_start, "owner_pid": self.owner_pid,
            "created": self.created, "exit_code": self.exit_code, "log_lost": list(self.log_lost),
            "config": dict(self.config) if self.config is not None else None,
            "ports": self.ports.to_json() if self.ports else [],
        }


def _port_map(docs: Any) -> Optional["PortMap"]:
    if not docs:
        return None  # net/ports.py is imported only where ports are published
    from ..net.ports import PortMap

    return PortMap.from_json(docs)


def write_state(cdir: pathlib.Path, state: ContainerState) -> None:
    """The one writer of ``state.json``: the container's owner (`Container`). The first
    record is written straight into a new file (a reader meanwhile finds none, or half of
    one: a ValueError, "being created"); later ones replace it whole (write_json), so a
    reader never sees a running container's record torn."""
    path = cdir / STATE_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        write_json(path, state.to_json())
        return
    try:
        view = memoryview(json.dumps(state.to_json()).encode())
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def read_state(cdir: pathlib.Path) -> ContainerState:
    """The one reader of ``state.json``. Raises OSError (FileNotFoundError: none yet, or
    removed) or ValueError (not a state record: half of one an owner on a full disk is
    rewriting in place, see `write_json`, or not isobox's)."""
    fd = os.open(cdir / STATE_NAME, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        recorded = os.fstat(fd).st_mtime
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return ContainerState.from_json(json.loads(b"".join(chunks)), fallback_id=cdir.name, recorded=recorded)


def process_alive(pid: object, start: object) -> bool:
    """Whether process ``pid`` still runs and is the one that started at ``start`` (its
    start time in clock ticks, /proc/<pid>/stat field 22: a pid is reused); a zombie has
    ended. Without a recorded start time, the pid alone is judged."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return False
    if fields[0] in (b"Z", b"X"):
        return False
    return not isinstance(start, int) or int(fields[19]) == start


def start_time(pid: int) -> Optional[int]:
    """/proc/<pid>/stat field 22, for process_alive."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def owner_alive(cdir: pathlib.Path) -> bool:
    """The owner holds the lock file: if we can take it, nobody owns the container.
    A container marked ``kept`` (the isobox command's and the supervisor's, unless --rm,
    as Docker keeps containers) stays until it is removed, even after its owner died."""
    if os.path.lexists(cdir / KEPT_NAME):
        return True
    held = owner_holds_lock(cdir)
    if held is None:
        # being created right now, or a crash before the lock existed: judge by age
        try:
            return time.time() - cdir.stat().st_mtime < 60
        except FileNotFoundError:
            return False
    return held


def owner_holds_lock(cdir: pathlib.Path) -> Optional[bool]:
    """Whether a live process holds the container's lock (its owner); None when there is
    no lock file."""
    try:
        fd = os.open(cdir / "lock", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def unlink_name(link: pathlib.Path, cid: str) -> None:
    """Drop a name's claim, if it is still this container's."""
    try:
        if os.readlink(link) == cid:
            os.unlink(link)
    except OSError:
        pass


# -- how it was made (options.json) ---------------------------------------------------------


@attrs.frozen
class RunOptions:
    """How a container was made and is owned (``options.json``): written once by its owner
    as it starts (control/owner.py: the isobox command and the supervisor; a `Container`
    of another program writes none), read for ``inspect`` and ``ps``.

    ``config`` is the `ContainerConfig` in its one JSON form (config.py: `config_to_json`,
    read back with `config_from_json`), kept as JSON here so that a reader that only lists
    containers needs none of the container machinery; ``image`` the reference as it was
    asked for; ``stdin`` whether its stdin is kept open (``-i``); ``auto_remove`` (``--rm``)
    and ``stop_timeout`` what its owner does at the end and on a stop; ``detached`` whether
    a supervisor owns it (``supervisor_pid``)."""

    config: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    image: Optional[str] = None
    platform: Optional[str] = None
    stdin: bool = False
    auto_remove: bool = False
    detached: bool = False
    stop_timeout: float = 10.0
    supervisor_pid: Optional[int] = None

    @classmethod
    def from_json(cls, doc: Any) -> "RunOptions":
        """ValueError names what does not fit."""
        if not isinstance(doc, dict):
            raise ValueError(f"options are a JSON object, got {type(doc).__name__}")
        config = doc.get("config")
        if not isinstance(config, dict):
            raise ValueError(f"'config' must be an object, got {config!r}")
        stop_timeout = doc.get("stop_timeout", 10.0)
        if isinstance(stop_timeout, bool) or not isinstance(stop_timeout, (int, float)):
            raise ValueError(f"'stop_timeout' must be a number, got {stop_timeout!r}")
        return cls(
            config=config,
            image=_optional_str(doc.get("image")),
            platform=_optional_str(doc.get("platform")),
            stdin=bool(doc.get("stdin")),
            auto_remove=bool(doc.get("auto_remove")),
            detached=bool(doc.get("detached")),
            stop_timeout=float(stop_timeout),
            supervisor_pid=_optional_int(doc.get("supervisor_pid")),
        )

    def to_json(self) -> Dict[str, Any]:
        return {
            "config": dict(self.config), "image": self.image, "platform": self.platform, "stdin": self.stdin,
            "auto_remove": self.auto_remove, "detached": self.detached, "stop_timeout": self.stop_timeout,
            "supervisor_pid": self.supervisor_pid,
        }


def write_options(cdir: pathlib.Path, options: RunOptions) -> None:
    """The one writer of ``options.json`` (its owner). Mode 0600: the environment may hold
    secrets."""
    path = cdir / OPTIONS_NAME
    replace_file(path, json.dumps(options.to_json()).encode(), f"{path}.tmp", durable=False, mode=0o600)


def read_options(cdir: pathlib.Path) -> Optional[RunOptions]:
    """The one reader of ``options.json``: None when there is none (a container another
    program made) or it is not a record of this isobox."""
    try:
        with open(cdir / OPTIONS_NAME, "rb") as f:
            return RunOptions.from_json(json.loads(f.read()))
    except (OSError, ValueError):
        return None
