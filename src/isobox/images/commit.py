"""A new image from a parent image and directories of changes: `docker commit`'s job, and
what each filesystem step of a build does.

`write_blob` turns a directory of changes (a container's upper directory, a build step's
new files) into a compressed layer blob in the store's temporaries: the tar
(`layerdiff.write_layer`) is hashed into its diff_id and compressed (gzip, or zstd) into a
file hashed into its digest, in one pass. `derive` then makes the image: the parent's
configuration with the new layers' diff_ids and history appended and ``config`` changes
applied (`metadata`), an OCI manifest over the parent's layer descriptors and the new
ones, and installs it the way a pull or a load does (`image._install`, which extracts the
new layers into the store, keeps their blobs for push and save, and records and tags the
image). A parent made from a directory (`Image.from_directory`) has no blobs: its
directories become layers first.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import pathlib
import zlib
from typing import (IO, TYPE_CHECKING, Any, Callable, Collection, Dict, Iterator, List, Mapping,
                    Optional, Sequence, Tuple)

import attrs

from ..errors import InvalidOption, StoreError
from ..host.idmap import IdMap
from .digest import Hasher, compute
from .layerdiff import DiffStats, write_layer
from .manifest import OCI_MANIFEST, Descriptor, Manifest
from .platform import Platform
from .reference import Reference
from .store import Store

if TYPE_CHECKING:
    from .image import Image

__all__ = ["LayerBlob", "write_blob", "derive", "COMPRESSIONS", "OCI_CONFIG"]

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
COMPRESSIONS = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
_CHUNK = 1 << 20


@attrs.frozen
class LayerBlob:
    """A compressed layer blob waiting in the store's temporaries (`path`)."""

    path: pathlib.Path
    digest: str
    diff_id: str
    size: int
    media_type: str
    stats: DiffStats

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(media_type=self.media_type, digest=self.digest, size=self.size)


class _Sink:
    """What write_layer writes to: hashed as a tar, compressed, hashed again, written."""

    def __init__(self, out: IO[bytes], compression: str) -> None:
        self.out = out
        self.tar = Hasher("sha256")
        self.blob = Hasher("sha256")
        self.size = 0
        if compression == "gzip":
            gz = zlib.compressobj(6, zlib.DEFLATED, 31)  # a gzip member, mtime 0: reproducible
            self._compress: Callable[[bytes], bytes] = gz.compress
            self._flush: Callable[[], bytes] = gz.flush
        else:
            import zstandard

            zs = zstandard.ZstdCompressor(level=3).compressobj()
            self._compress, self._flush = zs.compress, zs.flush

    def _emit(self, data: bytes) -> None:
        if data:
            self.blob.update(data)
            self.out.write(data)
            self.size += len(data)

    def write(self, data: bytes) -> int:
        self.tar.update(data)
        self._emit(self._compress(data))
        return len(data)

    def close(self) -> None:
        self._emit(self._flush())


def write_blob(store: Store, changes: "os.PathLike[str] | str", *, ids: Optional[IdMap] = None,
               exclude: Collection[str] = (), compression: str = "gzip",
               mtime: Optional[int] = None,
               owner: Optional[Callable[[str], Optional[Tuple[int, int]]]] = None) -> LayerBlob:
    """The changes in ``changes`` as a compressed layer blob in the store's temporaries
    (see `layerdiff.write_layer` for ``ids``, ``exclude`` and ``mtime``); `derive` takes it
    into the store, or the caller discards ``path.parent``."""
    if compression not in COMPRESSIONS:
        raise InvalidOption(f"compression must be one of {', '.join(COMPRESSIONS)}, not {compression!r}")
    work = store.temp_dir("commit-")
    path = work / "blob"
    try:
        with open(path, "wb") as f:
            sink = _Sink(f, compression)
            stats = write_layer(changes, sink, ids=ids, exclude=exclude, mtime=mtime,  # type: ignore[arg-type]
                                owner=owner)
            sink.close()
            f.flush()
    except BaseException:
        store.discard(work)
        raise
    return LayerBlob(path=path, digest=sink.blob.digest, diff_id=sink.tar.digest, size=sink.size,
                     media_type=COMPRESSIONS[compression], stats=stats)


class _LocalBlobs:
    """The `image.BlobSource` of blobs written here: each streamed from its file."""

    def __init__(self, blobs: Sequence[LayerBlob]) -> None:
        self.paths = {b.digest: b.path for b in blobs}

    def iter_blob(self, ref: Any, desc: Descriptor, *,
                  progress: Optional[Callable[[int], None]] = None) -> Iterator[bytes]:
        path = self.paths.get(desc.digest)
        if path is None:
            raise StoreError(f"layer blob {desc.digest} of {ref} is not in the store: pull its parent again")
        hasher = Hasher.like(desc.digest)
        done = 0
        with open(path, "rb") as f:
            while True:
                data = f.read(_CHUNK)
                if not data:
                    break
                hasher.update(data)
                done += len(data)
                if progress is not None:
                    progress(done)
                yield data
        if hasher.digest != desc.digest:
            raise StoreError(f"layer blob {path} changed: it hashes to {hasher.digest}, not {desc.digest}")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def parent_document(store: Store, parent: "Image") -> Tuple[Dict[str, Any], List[Descriptor], List[LayerBlob]]:
    """The parent's configuration document, its layers' descriptors, and (for a parent
    made from a directory) the blobs its directories became."""
    if parent.digest is not None:
        record = store.read_image(parent.digest)
        if record is None:
            raise StoreError(f"{parent.reference or parent.digest}: not recorded in the store at {store.root}")
        return (copy.deepcopy(dict(record.config)),
                [Descriptor(media_type=l.media_type, digest=l.digest, size=l.size) for l in record.layers],
                [])
    blobs = [write_blob(store, layer) for layer in parent.layers]
    platform = Platform.host()
    doc: Dict[str, Any] = {
        "architecture": platform.architecture, "os": platform.os,
        "config": dict(parent.config.to_oci()),
        "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in blobs]},
        "history": [{"created_by": f"isobox: from directory {layer}"} for layer in parent.layers],
    }
    if platform.variant and platform.architecture.startswith("arm"):
        doc["variant"] = platform.variant  # amd64's micro-architecture level is no image variant
    return doc, [b.descriptor for b in blobs], blobs


def derive(store: Store, parent: "Image", layers: Sequence[LayerBlob], *,
           config: Optional[Mapping[str, Any]] = None, history: Sequence[Mapping[str, Any]] = (),
           author: Optional[str] = None, tag: Optional[str] = None, created: Optional[str] = None,
           label: str = "commit") -> "Image":
    """The image ``parent`` + ``layers`` (lowest first), with ``config`` (the new
    ``config`` object, default the parent's) and ``history`` (one entry per step; an entry
    without ``empty_layer`` stands for one of ``layers``, in order), installed in ``store``
    and tagged ``tag`` (None: untagged, reachable by its ID). The blobs are taken."""
    from .image import _install
    from .registry import ResolvedImage

    reference = Reference.parse(tag) if tag is not None else None
    doc, descriptors, parent_blobs = parent_document(store, parent)
    all_blobs = [*parent_blobs, *layers]
    try:
        when = created or _now()
        if config is not None:
            doc["config"] = dict(config)
        rootfs = doc.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), *(b.diff_id for b in layers)]
        entries = [dict(h) for h in history] or [{"created_by": label} for _ in layers]
        for entry in entries:
            entry.setdefault("created", when)
        doc["history"] = [*doc.get("history", []), *entries]
        doc["created"] = when
        if author is not None:
            doc["author"] = author
        config_raw = _canonical(doc)
        config_desc = Descriptor(media_type=OCI_CONFIG, digest=compute(config_raw), size=len(config_raw))
        manifest_doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc.to_oci(),
            "layers": [d.to_oci() for d in [*descriptors, *(b.descriptor for b in layers)]],
        }
        raw = _canonical(manifest_doc)
        digest = compute(raw)
        manifest = Manifest.from_bytes(raw, OCI_MANIFEST, digest)
        platform = Platform(os=str(doc.get("os", "linux")), architecture=str(doc.get("architecture", "amd64")),
                            variant=doc.get("variant") or None)
        resolved = ResolvedImage(reference=reference or Reference(domain="localhost", path=label),
                                 digest=digest, manifest=manifest, platform=platform, config=config_raw)
        with store.in_use():
            return _install(store, _LocalBlobs(all_blobs), reference, platform, resolved, None,
                            source="", label=f"{label} of {parent.reference or parent.id or 'an image'}")
    finally:
        for b in all_blobs:
            store.discard(b.path.parent)
