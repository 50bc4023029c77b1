"""A container's options, checked when they are given (`ContainerConfig`): a bad option
fails before anything touches the host. And the config's one JSON form
(`config_to_json`, `config_from_json`): how ``isobox run -d`` hands it to the supervisor
and how ``options.json`` records it for inspect, so an option never changes its shape on
the way (state.py, control/supervisor.py).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import attrs

from . import cgroups as _cgroups
from . import devices as _devices
from . import logs as _logs
from ..errors import InvalidOption
from .mounts import Bind, Mount, Tmpfs, Volume
from .spelling import NAME, Command, Env, parse_command, parse_env

if TYPE_CHECKING:
    from ..net.ports import PortBinding

RLIMITS = {
    "core": 4, "cpu": 0, "data": 2, "fsize": 1, "locks": 10, "memlock": 8, "msgqueue": 12,
    "nice": 13, "nofile": 7, "nproc": 6, "rss": 5, "rtprio": 14, "rttime": 15,
    "sigpending": 11, "stack": 3, "as": 9,
}

HOSTNAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,62})$")

def _rlimits(value: Optional[Mapping[str, Any]]) -> Tuple[Tuple[int, int, int], ...]:
    out = []
    for name, limit in (value or {}).items():
        if name not in RLIMITS:
            raise InvalidOption(f"unknown rlimit {name!r}; known: {', '.join(sorted(RLIMITS))}")
        soft, hard = (limit, limit) if isinstance(limit, int) else tuple(limit)
        if not (0 <= soft <= hard):
            raise InvalidOption(f"rlimit {name}: need 0 <= soft <= hard, got {soft}, {hard}")
        out.append((RLIMITS[name], int(soft), int(hard)))
    return tuple(out)


def _mounts(value: Optional[Sequence[Mount]]) -> Tuple[Mount, ...]:
    out = tuple(value or ())
    seen = set()
    for m in out:
        if not isinstance(m, (Bind, Volume, Tmpfs)):
            raise InvalidOption(f"mounts must be Bind, Volume or Tmpfs, got {m!r}")
        if m.target in seen:
            raise InvalidOption(f"duplicate mount point: {m.target}")
        seen.add(m.target)
    return out


def _device_nodes(value: Optional[Sequence[Union[str, _devices.Device, _devices.DeviceNode]]],
             ) -> Tuple[_devices.DeviceNode, ...]:
    """`devices=["/dev/fuse", Device(...)]`: each resolved to its node(s) now (stat of the
    host path), so a bad one fails before the host is touched."""
    nodes: List[_devices.DeviceNode] = []
    for item in value or ():
        if isinstance(item, _devices.DeviceNode):
            found: Tuple[_devices.DeviceNode, ...] = (item,)
        elif isinstance(item, _devices.Device):
            found = item.resolve()
        elif isinstance(item, str):
            found = _devices.Device.parse(item).resolve()
        else:
            raise InvalidOption(f"devices must be isobox.Device or strings like '/dev/fuse', got {item!r}")
        for node in found:
            if not node.path.startswith("/dev/") or "/../" in node.path + "/":
                raise InvalidOption(f"device {node.host}: isobox puts devices under /dev only, "
                                    f"not at {node.path}")
        nodes.extend(found)
    return tuple(nodes)


def check_tty_size(value: Optional[Sequence[int]]) -> Tuple[int, int]:
    if value is None:
        return (24, 80)
    rows, cols = (int(v) for v in value)
    if not (0 < rows < 65536 and 0 < cols < 65536):
        raise InvalidOption(f"tty_size must be (rows, columns), got {value!r}")
    return rows, cols


def _check_name(inst: Any, attr: Any, value: Optional[str]) -> None:
    if value is not None and not NAME.match(value):
        raise InvalidOption(f"invalid container name {value!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")


def _check_hostname(inst: Any, attr: Any, value: Optional[str]) -> None:
    if value is not None and not HOSTNAME_RE.match(value):
        raise InvalidOption(f"invalid hostname {value!r}")


def _check_abs(inst: Any, attr: Any, value: Optional[str]) -> None:
    if value is not None and (not value.startswith("/") or "\0" in value):
        raise InvalidOption(f"{attr.name} must be an absolute path, got {value!r}")


def _check_network(inst: Any, attr: Any, value: str) -> None:
    if value not in ("none", "host"):
        raise InvalidOption(f"network must be 'none' or 'host', got {value!r}")


def _ports(value: Any) -> Tuple["PortBinding", ...]:
    """net/ports.py's `parse_ports`, imported only where ports are published (its attrs
    classes cost a millisecond of every ``isobox run``)."""
    if not value:
        return ()
    from ..net.ports import parse_ports

    return parse_ports(value)


def _check_publishing(inst: "ContainerConfig", attr: Any, value: bool) -> None:
    """Published ports lead into the container's own network namespace: with the
    host's network there is none (Docker ignores -p there with a warning; isobox refuses)."""
    if (inst.ports or value) and inst.network == "host":
        raise InvalidOption("ports cannot be published with network='host': the container "
                            "uses the host's ports directly")


@attrs.frozen
class ContainerConfig:
    """A container's options, checked when built: a bad option fails before the host is
    touched. ``command`` replaces the image's Cmd; ``entrypoint`` replaces its Entrypoint
    and drops its Cmd (Docker's rules)."""

    command: Optional[Tuple[str, ...]] = attrs.field(default=None, converter=parse_command)
    entrypoint: Optional[Tuple[str, ...]] = attrs.field(default=None, converter=parse_command)
    name: Optional[str] = attrs.field(default=None, validator=_check_name)
    env: Tuple[Tuple[str, str], ...] = attrs.field(default=(), converter=parse_env)
    workdir: Optional[str] = attrs.field(default=None, validator=_check_abs)
    user: Optional[str] = None
    hostname: Optional[str] = attrs.field(default=None, validator=_check_hostname)
    init: bool = False
    read_only: bool = False
    network: str = attrs.field(default="none", validator=_check_network)
    userns: Optional[bool] = None
    rlimits: Tuple[Tuple[int, int, int], ...] = attrs.field(default=(), converter=_rlimits)
    mounts: Tuple[Mount, ...] = attrs.field(default=(), converter=_mounts)
    tty: bool = False
    tty_size: Tuple[int, int] = attrs.field(default=(24, 80), converter=check_tty_size)
    seccomp: bool = True
    limits: _cgroups.Limits = attrs.field(factory=_cgroups.Limits)
    devices: Tuple[_devices.DeviceNode, ...] = attrs.field(default=(), converter=_device_nodes)
    log: _logs.LogPolicy = attrs.field(factory=_logs.LogPolicy)
    ports: Tuple["PortBinding", ...] = attrs.field(default=(), converter=_ports)
    publish_all: bool = attrs.field(default=False, validator=_check_publishing)

    @classmethod
    def from_options(
        cls,
        command: Command = None,
        *,
        entrypoint: Command = None,
        name: Optional[str] = None,
        env: Env = None,
        workdir: Optional[str] = None,
        user: Optional[str] = None,
        hostname: Optional[str] = None,
        init: bool = False,
        read_only: bool = False,
        network: str = "none",
        userns: Optional[bool] = None,
        rlimits: Optional[Mapping[str, Any]] = None,
        mounts: Optional[Sequence[Mount]] = None,
        tty: bool = False,
        tty_size: Optional[Tuple[int, int]] = None,
        seccomp: bool = True,
        memory: Union[int, str, None] = None,
        pids_limit: Optional[int] = None,
        cpus: Optional[float] = None,
        devices: Optional[Sequence[Union[str, _devices.Device]]] = None,
        log_max_size: Union[int, str, None] = "20m",
        log_max_files: int = 5,
        ports: Union[Mapping[Any, Any], Sequence["PortBinding"], None] = None,
        publish_all: bool = False,
    ) -> "ContainerConfig":
        """From `Container`'s keyword arguments (Docker's names: ``memory``,
        ``pids_limit``, ``cpus``, ``log_max_size``, ``log_max_files``), the one place they
        become the config's fields."""
        return cls(
            command=command, entrypoint=entrypoint, name=name, env=env, workdir=workdir,
            user=user, hostname=hostname, init=init, read_only=read_only, network=network,
            userns=userns, rlimits=rlimits, mounts=mounts, tty=tty, tty_size=tty_size, seccomp=seccomp,
            limits=_cgroups.Limits(memory=memory, pids=pids_limit, cpus=cpus), devices=devices,
            log=_logs.LogPolicy(max_size=log_max_size, max_files=log_max_files),
            ports=ports, publish_all=publish_all,
        )


# -- the JSON form ----------------------------------------------------------------------------

RLIMIT_NAMES = {number: name for name, number in RLIMITS.items()}


def mounts_to_json(mounts: Sequence[Mount]) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    for m in mounts:
        if isinstance(m, Bind):
            out.append({"type": "bind", "source": m.source, "target": m.target, "read_only": m.read_only})
        elif isinstance(m, Volume):
            out.append({"type": "volume", "name": m.name, "target": m.target, "read_only": m.read_only})
        else:
            out.append({"type": "tmpfs", "target": m.target, "size": m.size, "mode": m.mode, "exec": m.exec})
    return out


def mounts_from_json(docs: Sequence[Mapping[str, Any]]) -> Tuple[Mount, ...]:
    out: List[Mount] = []
    for d in docs:
        kind = d.get("type")
        if kind == "bind":
            out.append(Bind(d["source"], d["target"], read_only=bool(d.get("read_only"))))
        elif kind == "volume":
            out.append(Volume(d["name"], d["target"], read_only=bool(d.get("read_only"))))
        elif kind == "tmpfs":
            out.append(Tmpfs(d["target"], size=d.get("size"), mode=int(d.get("mode", 0o1777)),
                             exec=bool(d.get("exec"))))
        else:
            raise InvalidOption(f"unknown mount type {kind!r}")
    return tuple(out)


def config_to_json(config: ContainerConfig) -> Dict[str, Any]:
    """The config as a JSON object: one key per field, with Docker's spellings where a
    field has one (``env`` as "NAME=value" entries, as Docker's Config.Env)."""
    return {
        "command": None if config.command is None else list(config.command),
        "entrypoint": None if config.entrypoint is None else list(config.entrypoint),
        "name": config.name,
        "env": [f"{k}={v}" for k, v in config.env],
        "workdir": config.workdir,
        "user": config.user,
        "hostname": config.hostname,
        "init": config.init,
        "read_only": config.read_only,
        "network": config.network,
        "userns": config.userns,
        "rlimits": {RLIMIT_NAMES[number]: [soft, hard] for number, soft, hard in config.rlimits},
        "mounts": mounts_to_json(config.mounts),
        "tty": config.tty,
        "tty_size": list(config.tty_size),
        "seccomp": config.seccomp,
        "limits": {"memory": config.limits.memory, "pids": config.limits.pids, "cpus": config.limits.cpus},
        "devices": [attrs.asdict(node) for node in config.devices],
        "log": {"max_size": config.log.max_size, "max_files": config.log.max_files},
        "ports": [b.to_json() for b in config.ports],
        "publish_all": config.publish_all,
    }


def config_from_json(doc: Any) -> ContainerConfig:
    """The config `config_to_json` wrote, checked again field by field (InvalidOption)."""
    if not isinstance(doc, dict):
        raise InvalidOption(f"a container config is a JSON object, got {type(doc).__name__}")
    unknown = set(doc) - {f.name for f in attrs.fields(ContainerConfig)}
    if unknown:
        raise InvalidOption(f"container config: unknown field(s) {', '.join(sorted(unknown))}")
    try:
        fields: Dict[str, Any] = dict(doc)
        if "env" in fields:
            fields["env"] = dict(str(e).split("=", 1) for e in fields["env"] or ())
        if "mounts" in fields:
            fields["mounts"] = mounts_from_json(fields["mounts"] or ())
        if "limits" in fields:
            fields["limits"] = _cgroups.Limits(**fields["limits"])
        if "devices" in fields:
            fields["devices"] = [_devices.DeviceNode(**node) for node in fields["devices"] or ()]
        if "log" in fields:
            fields["log"] = _logs.LogPolicy(**fields["log"])
        if fields.get("ports"):
            from ..net.ports import PortBinding

            fields["ports"] = tuple(PortBinding.from_json(d) for d in fields["ports"])
        return ContainerConfig(**fields)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidOption(f"malformed container config: {exc}") from exc
