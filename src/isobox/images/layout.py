"""The documents of image archives, parsed and written: the OCI image layout's
``index.json`` (image-spec, image-layout.md) and ``docker save``'s ``manifest.json`` and
``repositories``. Pure: no I/O (`isobox.images.archive` reads and writes the files).

Names: an OCI layout names each image in its descriptor's annotations. isobox writes the
full reference in ``org.opencontainers.image.ref.name`` (as podman's oci-archive does;
skopeo's ``oci:DIR:NAME`` matches it) and in ``io.containerd.image.name`` (containerd's
import reads that one). Read back, ``io.containerd.image.name`` wins; a ref.name that is
only a tag (``latest``, what ``skopeo copy ... oci:DIR:latest`` writes) names no
repository, so that image is loaded without a name. ``docker save``'s manifest.json names
images in ``RepoTags`` (familiar names: ``busybox:latest``).

Every document is hostile: each is size-capped before parsing (`MAX_DOCUMENT`), must have
the shape the format gives it, and every path it names must stay inside the archive
(`entry_name`).
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import attrs

from ..errors import InvalidArchive, IsoboxError
from .manifest import OCI_INDEX, Descriptor
from .reference import Reference

MAX_DOCUMENT = 4 * 1024 * 1024  # index.json, manifest.json, repositories: as manifests
MAX_ENTRIES = 100_000  # members of an archive we read
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'
INDEX_FILE = "index.json"
DOCKER_MANIFEST_FILE = "manifest.json"
REPOSITORIES_FILE = "repositories"

_BARE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def entry_name(name: str, where: str) -> str:
    """``name`` as a relative path inside an archive (``./`` and repeated slashes
    dropped); InvalidArchive when it is absolute, leaves the archive (``..``), is empty
    or holds a NUL."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InvalidArchive(f"{where}: invalid entry name {name!r}")
    if name.startswith("/"):
        raise InvalidArchive(f"{where}: entry {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidArchive(f"{where}: entry {name!r} leaves the archive (..)")
    if not parts:
        raise InvalidArchive(f"{where}: invalid entry name {name!r}")
    return "/".join(parts)


def link_target(name: str, target: str, where: str) -> str:
    """The entry a symbolic link ``name`` -> ``target`` names inside the archive
    (old ``docker save`` links repeated layers to one copy); InvalidArchive when it
    leaves the archive."""
    if not target or target.startswith("/") or "\x00" in target:
        raise InvalidArchive(f"{where}: {name} is a link to {target!r}, outside the archive")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if joined == ".." or joined.startswith("../") or joined == ".":
        raise InvalidArchive(f"{where}: {name} is a link to {target!r}, outside the archive")
    return entry_name(joined, where)


def blob_entry(digest: str) -> str:
    """Where an OCI layout keeps a blob."""
    algorithm, _, hexpart = digest.partition(":")
    return f"blobs/{algorithm}/{hexpart}"


def _load(raw: bytes, where: str) -> Any:
    if len(raw) > MAX_DOCUMENT:
        raise InvalidArchive(f"{where}: more than the {MAX_DOCUMENT} bytes allowed")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidArchive(f"{where}: not valid JSON: {exc}") from None


# -- OCI layout ----------------------------------------------------------------------------


@attrs.frozen
class LayoutEntry:
    """One image of an OCI layout's index.json: its top descriptor and its name."""

    descriptor: Descriptor
    name: Optional[Reference]


def name_of(annotations: Any) -> Optional[Reference]:
    """The reference an index.json entry's annotations name (see the module docstring)."""
    if not isinstance(annotations, dict):
        return None
    for key in (CONTAINERD_NAME, REF_NAME):
        value = annotations.get(key)
        if not isinstance(value, str) or not value:
            continue
        if key == REF_NAME and _BARE_TAG.fullmatch(value):
            continue  # only a tag: no repository
        try:
            ref = Reference.parse(value)
        except IsoboxError:
            continue
        return ref if ref.digest is None else None
    return None


def parse_index(raw: bytes, where: str) -> List[LayoutEntry]:
    """The images an OCI layout's index.json lists."""
    doc = _load(raw, where)
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise InvalidArchive(f"{where}: not an OCI image index (schemaVersion 2)")
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise InvalidArchive(f"{where}: no manifests list")
    out = []
    for i, item in enumerate(manifests):
        try:
            desc = Descriptor.from_oci(item)
        except IsoboxError as exc:
            raise InvalidArchive(f"{where}: manifests[{i}]: {exc}") from None
        out.append(LayoutEntry(desc, name_of(item.get("annotations"))))
    return out


def write_index(entries: Sequence[Tuple[Descriptor, Optional[str]]]) -> bytes:
    """index.json for ``(top descriptor, full name or None)`` pairs."""
    manifests = []
    for desc, name in entries:
        doc = desc.to_oci()
        doc.pop("platform", None)
        if name:
            doc["annotations"] = {**doc.get("annotations", {}), CONTAINERD_NAME: name,
                                  REF_NAME: name}
        manifests.append(doc)
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests},
                      indent=2).encode()


# -- docker save ---------------------------------------------------------------------------


@attrs.frozen
class DockerEntry:
    """One image of a ``docker save`` archive's manifest.json."""

    config: str  # entry name of the config
    repo_tags: Tuple[Reference, ...]
    layers: Tuple[str, ...]  # entry names of the layer tars, lowest first


def parse_docker_manifest(raw: bytes, where: str) -> List[DockerEntry]:
    doc = _load(raw, where)
    if not isinstance(doc, list):
        raise InvalidArchive(f"{where}: not a list of images")
    out = []
    for i, item in enumerate(doc):
        here = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise InvalidArchive(f"{here}: not an object")
        config, tags, layers = item.get("Config"), item.get("RepoTags"), item.get("Layers")
        if not isinstance(config, str):
            raise InvalidArchive(f"{here}: Config is not a string")
        if tags is None:
            tags = []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InvalidArchive(f"{here}: RepoTags is not a list of strings")
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise InvalidArchive(f"{here}: Layers is not a list of strings")
        refs = []
        for tag in tags:
            try:
                ref = Reference.parse(tag)
            except IsoboxError as exc:
                raise InvalidArchive(f"{here}: RepoTags: {exc}") from None
            if ref.digest is not None:
                raise InvalidArchive(f"{here}: RepoTags names a digest: {tag!r}")
            refs.append(ref)
        out.append(DockerEntry(entry_name(config, here), tuple(refs),
                               tuple(entry_name(x, here) for x in layers)))
    return out


def write_docker_manifest(entries: Sequence[DockerEntry]) -> bytes:
    return json.dumps([
        {"Config": e.config, "RepoTags": [r.familiar for r in e.repo_tags] or None,
         "Layers": list(e.layers)}
        for e in entries
    ]).encode()


def write_repositories(entries: Sequence[DockerEntry]) -> bytes:
    """The legacy ``repositories`` file: repository -> tag -> the top layer's id (the
    name of its directory)."""
    repos: Dict[str, Dict[str, str]] = {}
    for e in entries:
        if not e.layers:
            continue
        top = e.layers[-1].split("/", 1)[0]
        for ref in e.repo_tags:
            bare = Reference(domain=ref.domain, path=ref.path).familiar
            repos.setdefault(bare, {})[ref.tag or "latest"] = top
    return json.dumps(repos).encode()


__all__ = [
    "CONTAINERD_NAME", "DockerEntry", "LayoutEntry", "MAX_DOCUMENT", "MAX_ENTRIES", "REF_NAME",
    "blob_entry", "entry_name", "link_target", "name_of", "parse_docker_manifest", "parse_index",
    "write_docker_manifest", "write_index", "write_repositories",
]
