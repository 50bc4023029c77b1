"""`isobox inspect`: containers (by name or id) and images (by reference or id) as
Docker's JSON documents, with the fields isobox has."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any, Dict, List, Optional

from ..control.client import ContainerInfo, find
from ..errors import ContainerNotFound, ImageNotFound, InvalidOption, InvalidReference
from ..images.image import Image
from ..images.store import Store
from ..runtime.config import ContainerConfig, config_from_json
from ..runtime.mounts import Bind, Tmpfs, Volume
from ..runtime.state import RunOptions
from . import EXIT_ERROR
from .format import exit_status, familiar


def _iso(t: Optional[float]) -> str:
    """A time as Docker's inspect shows it (RFC 3339 in UTC; Go's zero time for none)."""
    if t is None:
        return "0001-01-01T00:00:00Z"
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _config(info: ContainerInfo) -> ContainerConfig:
    """The container's config as its owner recorded it (config.py reads it back); the
    defaults for a container another program made, or a record it cannot read."""
    if info.options is not None:
        try:
            return config_from_json(info.options.config)
        except InvalidOption:
            pass
    return ContainerConfig()


def inspect_container(info: ContainerInfo) -> Dict[str, Any]:
    """Docker's `inspect` document for a container, the fields isobox has."""
    recorded = info.options or RunOptions()
    config = _config(info)
    binds = [m for m in config.mounts if isinstance(m, (Bind, Volume))]
    state = {
        "Status": info.status, "Running": info.running, "Paused": False, "Restarting": False,
        "OOMKilled": False, "Dead": False, "Pid": info.pid if info.running else 0,
        "ExitCode": exit_status(info.exit_code) if info.exit_code is not None else 0, "Error": "",
        "StartedAt": _iso(info.created), "FinishedAt": _iso(info.finished),
    }
    command = list(info.command)
    return {
        "Id": info.id,
        "Created": _iso(info.created),
        "Path": command[0] if command else "",
        "Args": command[1:],
        "State": state,
        "Image": info.image_digest or "",
        "LogPath": str(info.path / "stdout.log"),
        "Name": "/" + info.name,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": {
            "Binds": [f"{m.source if isinstance(m, Bind) else m.name}:{m.target}" + (":ro" if m.read_only else "")
                      for m in binds],
            "NetworkMode": config.network,
            "AutoRemove": recorded.auto_remove,
            "ReadonlyRootfs": config.read_only,
            "Tmpfs": {m.target: ",".join(filter(None, [f"size={m.size}" if m.size else "", f"mode={m.mode:o}"]))
                      for m in config.mounts if isinstance(m, Tmpfs)},
            "Init": config.init,
            "PortBindings": {key: [{"HostIp": b.host_ip, "HostPort": str(b.host_port or "")}
                                   for b in config.ports if b.key == key]
                             for key in dict.fromkeys(b.key for b in config.ports)},
            "PublishAllPorts": config.publish_all,
        },
        "NetworkSettings": {"Ports": info.ports.docker() if info.ports and info.running else {}},
        "Mounts": [{"Type": "bind" if isinstance(m, Bind) else "volume",
                    "Name": m.name if isinstance(m, Volume) else "",
                    "Source": m.source if isinstance(m, Bind) else "",
                    "Destination": m.target, "RW": not m.read_only, "Mode": "ro" if m.read_only else ""}
                   for m in binds],
        "Config": {
            "Hostname": config.hostname or info.id[:12],
            "User": config.user or "",
            "Env": [f"{k}={v}" for k, v in config.env],
            "Cmd": None if config.command is None else list(config.command),
            "Entrypoint": None if config.entrypoint is None else list(config.entrypoint),
            "Image": recorded.image or familiar(info.image, info.image_digest),
            "WorkingDir": config.workdir or "",
            "Tty": config.tty,
            "OpenStdin": recorded.stdin,
        },
        "GraphDriver": {"Name": "overlay", "Data": {
            "UpperDir": str(info.path / "upper"), "WorkDir": str(info.path / "work")}},
    }


def inspect_image(image: Image, store: Store) -> Dict[str, Any]:
    """Docker's `inspect` document for an image, the fields isobox has."""
    record = next((r for r in store.records() if r.digest == image.digest), None)
    config: Dict[str, Any] = dict(record.config) if record is not None else {}
    tags = [t.reference for t in store.tags() if image.digest in t.manifests.values()]
    os_name, _, arch = (image.platform or "/").partition("/")
    arch, _, variant = arch.partition("/")
    doc: Dict[str, Any] = {
        "Id": record.config_digest if record is not None else image.digest,
        "RepoTags": [familiar(t, None) for t in tags],
        "RepoDigests": [t.split(":")[0].rsplit("@", 1)[0] + "@" + str(image.digest) for t in tags],
        "Created": config.get("created", ""),
        "Architecture": config.get("architecture", arch),
        "Os": config.get("os", os_name),
        "Size": image.size,
        "Config": dict(image.config.to_oci()),
        "RootFS": {"Type": "layers", "Layers": list(record.diff_ids) if record is not None else []},
        "Metadata": {"LastTagTime": _iso(record.pulled) if record is not None and record.pulled else ""},
    }
    if variant or config.get("variant"):
        doc["Variant"] = config.get("variant", variant)
    return doc


def inspect(args: argparse.Namespace) -> int:
    store = Store.open(args.root)
    docs: List[Dict[str, Any]] = []
    status = 0
    for ref in args.objects:
        try:
            docs.append(inspect_container(find(ref, store)))
            continue
        except ContainerNotFound:
            pass
        try:
            docs.append(inspect_image(Image.get(ref, store=store), store))
        except (ImageNotFound, InvalidReference):
            print(f"isobox: no such container or image: {ref}", file=sys.stderr)
            status = EXIT_ERROR
    print(json.dumps(docs, indent=4))
    return status
