"""A bundle's config.json (the OCI runtime spec, config.md and config-linux.md), read into
checked values before anything touches the host.

What is read is what isobox can do; a field that asks for something it cannot do yet is
refused by name (`Unsupported`), never silently dropped.  One is replaced rather than
applied, and `ignored` says so (the command logs it as a warning): the device cgroup's
rules (``linux.resources.devices``) are the library's policy (Docker's allowlist, plus a
rule per ``linux.devices`` node), whatever the list says beyond denying everything else.
Unknown properties are ignored, as the spec requires ("implementations MUST NOT generate
an error if they encounter an unknown property").
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs

from ..errors import InvalidOption
from ..runtime.config import RLIMITS
from ..runtime.seccomp_data import CAPABILITIES
from . import hooks as _hooks


class Unsupported(InvalidOption):
    """Raised when config.json asks for something isobox-runtime does not do yet."""


def _obj(doc: Any, where: str) -> Mapping[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise InvalidOption(f"config.json: {where} must be an object")
    return doc


def _list(doc: Any, where: str) -> Sequence[Any]:
    if doc is None:
        return ()
    if not isinstance(doc, list):
        raise InvalidOption(f"config.json: {where} must be an array")
    return doc


def _str(doc: Any, where: str) -> str:
    if not isinstance(doc, str):
        raise InvalidOption(f"config.json: {where} must be a string")
    return doc


def _uint(doc: Any, where: str, bits: int = 32) -> int:
    if isinstance(doc, bool) or not isinstance(doc, int) or not 0 <= doc < (1 << bits):
        raise InvalidOption(f"config.json: {where} must be an unsigned {bits}-bit integer, got {doc!r}")
    return doc


def _limits(resources: Mapping[str, Any]) -> Tuple[Optional[int], Optional[int], Optional[float]]:
    """The resources the library's cgroups apply (pids.max, the memory limit, a CPU quota):
    anything else in pids, memory or cpu is refused by name."""
    pids = _obj(resources.get("pids"), "linux.resources.pids")
    memory = _obj(resources.get("memory"), "linux.resources.memory")
    cpu = _obj(resources.get("cpu"), "linux.resources.cpu")
    for where, doc, known in (("pids", pids, {"limit"}), ("memory", memory, {"limit"}),
                              ("cpu", cpu, {"quota", "period"})):
        extra = sorted(k for k, v in doc.items() if k not in known and v is not None)
        if extra:
            raise Unsupported(f"config.json: linux.resources.{where}.{', '.join(extra)} is not supported yet")
    limit = pids.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise InvalidOption("config.json: linux.resources.pids.limit must be an integer")
    mem = memory.get("limit")
    if mem is not None and (isinstance(mem, bool) or not isinstance(mem, int)):
        raise InvalidOption("config.json: linux.resources.memory.limit must be an integer")
    cpus: Optional[float] = None
    quota, period = cpu.get("quota"), cpu.get("period")
    if quota is not None and quota > 0:
        cpus = quota / (period or 100000)
    return (None if limit is None else (limit if limit > 0 else -1),
            None if mem is None or mem < 0 else mem, cpus)


# The sysctls a container may set: those its own namespaces hold (runc's validateSysctl):
# System V IPC and POSIX queues with an ipc namespace, net.* with a network namespace,
# the host and domain names with a uts namespace.  Anything else is the host's.
IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
               "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}


def _check_sysctl(key: str, namespaces: Sequence[str]) -> None:
    if not key or "/" in key or ".." in key.split("."):
        raise InvalidOption(f"config.json: linux.sysctl: {key!r} is not a sysctl name")
    if key in IPC_SYSCTLS or key.startswith("fs.mqueue."):
        need = "ipc"
    elif key.startswith("net."):
        need = "network"
    elif key in ("kernel.hostname", "kernel.domainname"):
        need = "uts"
    else:
        raise InvalidOption(f"config.json: linux.sysctl: {key} is not namespaced: it would change the host")
    if need not in namespaces:
        raise InvalidOption(f"config.json: linux.sysctl: {key} needs the container's own {need} namespace")


# namespace type -> the key runc and the spec give it
NAMESPACES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")


@attrs.frozen
class Mount:
    """One entry of ``mounts``, in order."""

    destination: str
    type: str
    source: str
    options: Tuple[str, ...]

    @classmethod
    def from_oci(cls, doc: Any, i: int) -> "Mount":
        d = _obj(doc, f"mounts[{i}]")
        dest = _str(d.get("destination"), f"mounts[{i}].destination")
        if not dest.startswith("/"):
            raise InvalidOption(f"config.json: mounts[{i}].destination must be absolute, got {dest!r}")
        if d.get("uidMappings") or d.get("gidMappings"):
            raise Unsupported(f"config.json: mounts[{i}] ({dest}): idmapped mounts are not supported yet")
        options = tuple(_str(o, f"mounts[{i}].options[]") for o in _list(d.get("options"), f"mounts[{i}].options"))
        kind = d.get("type")
        if kind is None:
            kind = "bind" if ("bind" in options or "rbind" in options) else "none"
        return cls(posixpath.normpath(dest), _str(kind, f"mounts[{i}].type"),
                   _str(d.get("source", kind), f"mounts[{i}].source"), options)


@attrs.frozen
class Device:
    """One entry of ``linux.devices``: a node to make in the container."""

    path: str
    type: str
    major: int
    minor: int
    mode: int
    uid: int
    gid: int

    @classmethod
    def from_oci(cls, doc: Any, i: int) -> "Device":
        d = _obj(doc, f"linux.devices[{i}]")
        path = posixpath.normpath(_str(d.get("path"), f"linux.devices[{i}].path"))
        kind = _str(d.get("type"), f"linux.devices[{i}].type")
        if kind not in ("c", "u", "b", "p"):
            raise InvalidOption(f"config.json: linux.devices[{i}].type must be c, u, b or p, got {kind!r}")
        major = _uint(d.get("major", 0), f"linux.devices[{i}].major", 64) if kind != "p" else 0
        minor = _uint(d.get("minor", 0), f"linux.devices[{i}].minor", 64) if kind != "p" else 0
        mode = _uint(d.get("fileMode", 0o666), f"linux.devices[{i}].fileMode")
        return cls(path, "c" if kind == "u" else kind, major, minor, mode & 0o7777,
                   _uint(d.get("uid", 0), f"linux.devices[{i}].uid"),
                   _uint(d.get("gid", 0), f"linux.devices[{i}].gid"))


@attrs.frozen
class IdMapping:
    container: int
    host: int
    size: int

    @classmethod
    def from_oci(cls, doc: Any, where: str) -> "IdMapping":
        d = _obj(doc, where)
        return cls(_uint(d.get("containerID"), f"{where}.containerID"),
                   _uint(d.get("hostID"), f"{where}.hostID"), _uint(d.get("size"), f"{where}.size"))


@attrs.frozen
class BundleConfig:
    """config.json as isobox-runtime reads it; ``bundle`` and ``root`` are absolute."""

    bundle: str
    root: str
    root_readonly: bool
    args: Tuple[str, ...]
    env: Tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    additional_gids: Tuple[int, ...]
    umask: Optional[int]
    terminal: bool
    capabilities: Tuple[int, ...]  # the bounding set, by number
    capability_sets: Tuple[int, int, int, int]  # effective, permitted, inheritable, ambient masks
    no_new_privileges: bool
    rlimits: Tuple[Tuple[int, int, int], ...]
    oom_score_adj: Optional[int]
    hostname: Optional[str]
    mounts: Tuple[Mount, ...]
    namespaces: Tuple[str, ...]
    uid_mappings: Tuple[IdMapping, ...]
    gid_mappings: Tuple[IdMapping, ...]
    devices: Tuple[Device, ...]
    device_rules: Tuple[Mapping[str, Any], ...]
    masked_paths: Tuple[str, ...]
    readonly_paths: Tuple[str, ...]
    seccomp: Optional[Mapping[str, Any]]
    limits: Tuple[Optional[int], Optional[int], Optional[float]]  # pids, memory bytes, cpus
    cgroups_path: Optional[str]
    rootfs_propagation: Optional[str]
    sysctl: Mapping[str, str]
    hooks: Mapping[str, Tuple[_hooks.Hook, ...]]
    annotations: Mapping[str, str]
    ignored: Tuple[str, ...]  # what was read and deliberately not applied, for the log

    @classmethod
    def load(cls, bundle: str) -> "BundleConfig":
        """Read ``bundle``/config.json; InvalidOption (or Unsupported) names the field."""
        bundle = os.path.abspath(bundle)
        path = os.path.join(bundle, "config.json")
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise InvalidOption(f"no config.json in the bundle {bundle}") from None
        except (OSError, ValueError) as exc:
            raise InvalidOption(f"cannot read {path}: {exc}") from exc
        return cls.from_oci(doc, bundle)

    @classmethod
    def from_oci(cls, doc: Any, bundle: str) -> "BundleConfig":
        top = _obj(doc, "the document")
        ignored: List[str] = []
        version = top.get("ociVersion")
        if not isinstance(version, str) or not version.startswith("1."):
            raise InvalidOption(f"config.json: ociVersion {version!r} is not a 1.x version")
        root_doc = _obj(top.get("root"), "root")
        root = os.path.join(bundle, _str(root_doc.get("path"), "root.path"))
        if not os.path.isdir(root):
            raise InvalidOption(f"config.json: root.path {root} is not a directory")
        proc = _obj(top.get("process"), "process")
        if not proc:
            raise InvalidOption("config.json: process is required for create")
        args = tuple(_str(a, "process.args[]") for a in _list(proc.get("args"), "process.args"))
        if not args:
            raise InvalidOption("config.json: process.args must name the command")
        if proc.get("commandLine"):
            raise Unsupported("config.json: process.commandLine is for Windows")
        for label in ("apparmorProfile", "selinuxLabel"):
            if proc.get(label):
                raise Unsupported(f"config.json: process.{label}: this host's security module "
                                  "labels are not supported by isobox-runtime yet")
        if proc.get("ioPriority") or proc.get("scheduler") or proc.get("execCPUAffinity"):
            raise Unsupported("config.json: process.ioPriority, scheduler and execCPUAffinity are not supported yet")
        user = _obj(proc.get("user"), "process.user")
        if user.get("username"):
            raise Unsupported("config.json: process.user.username is for Windows")
        cwd = _str(proc.get("cwd", "/"), "process.cwd")
        if not cwd.startswith("/"):
            raise InvalidOption(f"config.json: process.cwd must be absolute, got {cwd!r}")
        caps = _obj(proc.get("capabilities"), "process.capabilities")
        sets: Dict[str, int] = {}
        for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"):
            mask = 0
            for name in _list(caps.get(kind), f"process.capabilities.{kind}"):
                # "Any value which cannot be mapped to a relevant kernel interface MUST
                # cause an error" (config.md)
                if name not in CAPABILITIES:
                    raise InvalidOption(f"config.json: process.capabilities.{kind}: unknown capability {name!r}")
                mask |= 1 << CAPABILITIES.index(name)
            sets[kind] = mask
        rlimits: List[Tuple[int, int, int]] = []
        for i, rl in enumerate(_list(proc.get("rlimits"), "process.rlimits")):
            r = _obj(rl, f"process.rlimits[{i}]")
            kind = _str(r.get("type"), f"process.rlimits[{i}].type")
            name = kind[len("RLIMIT_"):].lower() if kind.startswith("RLIMIT_") else ""
            if name not in RLIMITS:
                raise InvalidOption(f"config.json: unknown rlimit {kind!r}")
            soft = _uint(r.get("soft"), f"process.rlimits[{i}].soft", 64)
            hard = _uint(r.get("hard"), f"process.rlimits[{i}].hard", 64)
            rlimits.append((RLIMITS[name], soft, hard))
        oom = proc.get("oomScoreAdj")
        if oom is not None and (isinstance(oom, bool) or not isinstance(oom, int) or not -1000 <= oom <= 1000):
            raise InvalidOption(f"config.json: process.oomScoreAdj must be in -1000..1000, got {oom!r}")
        umask = user.get("umask")

        linux = _obj(top.get("linux"), "linux")
        namespaces: List[str] = []
        for i, ns in enumerate(_list(linux.get("namespaces"), "linux.namespaces")):
            n = _obj(ns, f"linux.namespaces[{i}]")
            kind = _str(n.get("type"), f"linux.namespaces[{i}].type")
            if kind not in NAMESPACES:
                raise InvalidOption(f"config.json: unknown namespace type {kind!r}")
            if kind in namespaces:
                raise InvalidOption(f"config.json: namespace {kind} is listed twice")
            if n.get("path"):
                raise Unsupported(f"config.json: joining the {kind} namespace at {n['path']} is not supported yet")
            if kind == "time":
                raise Unsupported("config.json: time namespaces are not supported yet")
            namespaces.append(kind)
        sysctl = {str(k): _str(v, f"linux.sysctl[{k}]") for k, v in _obj(linux.get("sysctl"), "linux.sysctl").items()}
        for key in sysctl:
            _check_sysctl(key, namespaces)
        for key in ("intelRdt", "personality", "timeOffsets", "mountLabel"):
            if linux.get(key):
                raise Unsupported(f"config.json: linux.{key} is not supported yet")
        prop = linux.get("rootfsPropagation") or None
        if prop is not None and prop not in ("shared", "rshared", "slave", "rslave", "private",
                                             "rprivate", "unbindable", "runbindable"):
            raise InvalidOption(f"config.json: linux.rootfsPropagation {prop!r} is not a propagation")
        hooks = _hooks.parse(top.get("hooks"))
        resources = _obj(linux.get("resources"), "linux.resources")
        for key in resources:
            if key not in ("devices", "pids", "memory", "cpu") and resources[key]:
                raise Unsupported(f"config.json: linux.resources.{key} is not supported yet")
        limits = _limits(resources)
        device_rules = tuple(_obj(r, "linux.resources.devices[]")
                             for r in _list(resources.get("devices"), "linux.resources.devices"))
        if any(r.get("allow") for r in device_rules):
            ignored.append("linux.resources.devices: the device cgroup allows the standard nodes "
                           "and linux.devices, not the listed rules")
        cgroups_path = linux.get("cgroupsPath")
        if cgroups_path is not None:
            cgroups_path = posixpath.normpath(_str(cgroups_path, "linux.cgroupsPath"))
            if ".." in cgroups_path.split("/") or ":" in cgroups_path:
                raise Unsupported(f"config.json: linux.cgroupsPath {cgroups_path!r}: only a cgroupfs "
                                  "path is supported (no systemd slice:prefix:name, no ..)")
        hostname = top.get("hostname")
        if hostname is not None and "uts" not in namespaces:
            if hostname:
                raise InvalidOption("config.json: hostname needs a uts namespace")
            hostname = None
        for key in ("domainname",):
            if top.get(key):
                raise Unsupported(f"config.json: {key} is not supported yet")
        annotations = {str(k): str(v) for k, v in _obj(top.get("annotations"), "annotations").items()}
        return cls(
            bundle=bundle,
            root=os.path.realpath(root),
            root_readonly=bool(root_doc.get("readonly", False)),
            args=args,
            env=tuple(_str(e, "process.env[]") for e in _list(proc.get("env"), "process.env")),
            cwd=cwd,
            uid=_uint(user.get("uid", 0), "process.user.uid"),
            gid=_uint(user.get("gid", 0), "process.user.gid"),
            additional_gids=tuple(_uint(g, "process.user.additionalGids[]")
                                  for g in _list(user.get("additionalGids"), "process.user.additionalGids")),
            umask=None if umask is None else _uint(umask, "process.user.umask") & 0o777,
            terminal=bool(proc.get("terminal", False)),
            capabilities=tuple(n for n in range(64) if sets["bounding"] >> n & 1),
            capability_sets=(sets["effective"], sets["permitted"], sets["inheritable"], sets["ambient"]),
            no_new_privileges=bool(proc.get("noNewPrivileges", False)),
            rlimits=tuple(rlimits),
            oom_score_adj=oom,
            hostname=None if hostname is None else _str(hostname, "hostname"),
            mounts=tuple(Mount.from_oci(m, i) for i, m in enumerate(_list(top.get("mounts"), "mounts"))),
            namespaces=tuple(namespaces),
            uid_mappings=tuple(IdMapping.from_oci(m, f"linux.uidMappings[{i}]")
                               for i, m in enumerate(_list(linux.get("uidMappings"), "linux.uidMappings"))),
            gid_mappings=tuple(IdMapping.from_oci(m, f"linux.gidMappings[{i}]")
                               for i, m in enumerate(_list(linux.get("gidMappings"), "linux.gidMappings"))),
            devices=tuple(Device.from_oci(d, i) for i, d in enumerate(_list(linux.get("devices"), "linux.devices"))),
            device_rules=device_rules,
            masked_paths=tuple(_str(p, "linux.maskedPaths[]") for p in _list(linux.get("maskedPaths"), "linux.maskedPaths")),
            readonly_paths=tuple(_str(p, "linux.readonlyPaths[]")
                                 for p in _list(linux.get("readonlyPaths"), "linux.readonlyPaths")),
            seccomp=_obj(linux.get("seccomp"), "linux.seccomp") or None,
            limits=limits,
            cgroups_path=cgroups_path,
            rootfs_propagation=prop,
            sysctl=sysctl,
            hooks=hooks,
            annotations=annotations,
            ignored=tuple(ignored),
        )

    def env_path(self) -> str:
        for entry in self.env:
            if entry.startswith("PATH="):
                return entry[len("PATH="):]
        return ""
