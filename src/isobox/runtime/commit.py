"""`docker commit`: a container's writes as a new image (`Container.commit`).

The new image's configuration is the container's, as Docker builds it: the image's
config with what the container was run with over it (its environment, command and
entrypoint, working directory, user), then ``changes`` (Dockerfile lines, the subset
`docker commit --change` accepts: `isobox.images.metadata`). Its one new layer is the
container's upper directory (`isobox.images.layerdiff`), without the files isobox makes
for every container (Docker keeps those in an "init" layer that commits never include):
the mount points of /etc/hosts, /etc/hostname, /etc/resolv.conf and of /dev, /proc and
/sys where the image lacks them.

The container is not paused (Docker's ``--pause=false``): a running container may change
files while they are read; a file that changes size or identity meanwhile fails the
commit (`LayerError`) rather than being written half. Stop it first for a consistent image.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

from ..host.idmap import IdMap
from ..images.commit import derive, write_blob
from ..images.metadata import apply_changes
from ..images.store import Store
from .config import ContainerConfig

if TYPE_CHECKING:
    from ..images.image import Image

__all__ = ["commit", "INIT_LAYER_PATHS"]

INIT_LAYER_PATHS = ("etc/hosts", "etc/hostname", "etc/resolv.conf", "dev", "proc", "sys")


def container_config(image: "Image", cfg: ContainerConfig) -> Dict[str, Any]:
    """The image config's ``config`` object a commit starts from: ``image``'s, with what
    the container was run with (``cfg``) over it, as Docker merges them."""
    img = image.config
    doc: Dict[str, Any] = dict(img.to_oci())
    env: Dict[str, str] = {}
    for entry in img.env:
        key, _, value = entry.partition("=")
        env[key] = value
    env.update(cfg.env)
    if env:
        doc["Env"] = [f"{k}={v}" for k, v in env.items()]
    if cfg.entrypoint is not None:
        doc["Entrypoint"] = list(cfg.entrypoint) or None
        doc["Cmd"] = list(cfg.command) if cfg.command is not None else None
    elif cfg.command is not None:
        doc["Cmd"] = list(cfg.command)
    if cfg.workdir:
        doc["WorkingDir"] = cfg.workdir
    if cfg.user:
        doc["User"] = cfg.user
    return {k: v for k, v in doc.items() if v is not None}


def commit(store: Store, cdir: pathlib.Path, image: "Image", cfg: ContainerConfig,
           argv: Sequence[str], ids: Optional[IdMap], tag: Optional[str] = None, *,
           changes: Sequence[str] = (), message: Optional[str] = None, author: Optional[str] = None,
           compression: str = "gzip") -> "Image":
    """Commit the container whose directory is ``cdir`` (its upper directory written
    through the user namespace map ``ids``), made from ``image`` with ``cfg``."""
    config = apply_changes(container_config(image, cfg), list(changes))
    blob = write_blob(store, cdir / "upper", ids=ids, exclude=INIT_LAYER_PATHS, compression=compression)
    entry: Dict[str, Any] = {"created_by": " ".join(argv)}
    if message:
        entry["comment"] = message
    if author:
        entry["author"] = author
    return derive(store, image, [blob], config=config, history=[entry], author=author,
                  tag=tag, label="commit")
