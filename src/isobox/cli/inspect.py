"""`isobox inspect`: containers (by name or id) and images (by reference or id) as
Docker's JSON documents, with the fields isobox has."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any, Dict, List, Optional

from ..control.client import ContainerInfo, find
from ..errors import ContainerNotFound, ImageNotFound, InvalidReference
from ..images.image import Image
from ..images.store import Store
from . import EXIT_ERROR
from .format import exit_status, familiar


def _iso(t: Optional[float]) -> str:
    """A time as Docker's inspect shows it (RFC 3339 in UTC; Go's zero time for none)."""
    if t is None:
        return "0001-01-01T00:00:00Z"
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def inspect_container(info: ContainerInfo) -> Dict[str, Any]:
    """Docker's `inspect` document for a container, the fields isobox has."""
    recorded = info.options or {}
    opts = recorded.get("options") or {}
    mounts = opts.get("mounts") or []
    state = {
        "Status": info.status, "Running": info.running, "Paused": False, "Restarting": False,
        "OOMKilled": False, "Dead": False, "Pid": info.pid if info.running else 0,
        "ExitCode": exit_status(info.exit_code) if info.exit_code is not None else 0, "Error": "",
        "StartedAt": _iso(info.created), "FinishedAt": _iso(info.finished),
    }
    env = list(opts.get("env") or [])
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
            "Binds": [f"{m.get('source', m.get('name'))}:{m['target']}" + (":ro" if m.get("read_only") else "")
                      for m in mounts if m.get("type") in ("bind", "volume")],
            "NetworkMode": opts.get("network", "none"),
            "AutoRemove": bool(recorded.get("auto_remove")),
            "ReadonlyRootfs": bool(opts.get("read_only")),
            "Tmpfs": {m["target"]: ",".join(filter(None, [f"size={m['size']}" if m.get("size") else "",
                                                           f"mode={int(m.get('mode', 0o1777)):o}"]))
                      for m in mounts if m.get("type") == "tmpfs"},
            "Init": bool(opts.get("init")),
        },
        "Mounts": [{"Type": m["type"], "Name": m.get("name", ""), "Source": m.get("source", ""),
                    "Destination": m["target"], "RW": not m.get("read_only"),
                    "Mode": "ro" if m.get("read_only") else ""}
                   for m in mounts if m.get("type") in ("bind", "volume")],
        "Config": {
            "Hostname": opts.get("hostname") or info.id[:12],
            "User": opts.get("user") or "",
            "Env": env,
            "Cmd": opts.get("command"),
            "Entrypoint": opts.get("entrypoint"),
            "Image": recorded.get("image") or familiar(info.image, info.image_digest),
            "WorkingDir": opts.get("workdir") or "",
            "Tty": bool(opts.get("tty")),
            "OpenStdin": bool(opts.get("stdin")),
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
