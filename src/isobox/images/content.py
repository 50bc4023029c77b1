"""A stored image as content: the manifests, index, configs and layer blobs that a push
sends to a registry and a save writes into an archive, read from the store as pulled.

What an image is made of (`collect`): its own manifest, or, when its name holds several
platforms of one multi-platform image, every stored platform and the index over them:
the index as pulled when the store has all its runnable manifests (its digest kept),
else a new index of those it has. Bytes are the store's, verbatim, so digests hold.

Layer blobs (`BlobReader`): a pull keeps each layer's compressed blob (store.py); a
layer the store had already when the image was pulled (shared with another image, in
another compression) has no blob of this manifest yet: it is fetched once from the
repository the image came from (``ImageRecord.source``, else the names it has) into
the store. Every blob read from the store is hashed on the way and a mismatch is a
`StoreError`: what leaves isobox is what the manifest names.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

import attrs

from ..errors import IsoboxError, RegistryError, StoreError
from .digest import Hasher
from .manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_TYPES,
    OCI_INDEX,
    Descriptor,
    Index,
    Manifest,
    classify,
)
from .platform import Platform
from .reference import Reference
from .store import ImageRecord, Store

if TYPE_CHECKING:
    from .image import Image
    from .registry import RegistryClient

CHUNK = 1024 * 1024


@attrs.frozen
class StoredImage:
    """One platform's image: its record and manifest, and the config's bytes."""

    record: ImageRecord
    manifest: Manifest
    config: bytes = attrs.field(repr=False)

    @property
    def platform(self) -> Platform:
        return Platform.parse(self.record.platform)

    def blobs(self) -> List[Descriptor]:
        """The config, then the layers (each digest once)."""
        seen: Dict[str, Descriptor] = {}
        for desc in (self.manifest.config, *self.manifest.layers):
            seen.setdefault(desc.digest, desc)
        return list(seen.values())


@attrs.frozen
class ImageContent:
    """What one named image is: its platform images and, for several, their index.
    ``digest``/``media_type``/``raw`` are the top document (the index, or the one
    manifest) that the name points to."""

    name: Optional[Reference]
    images: Tuple[StoredImage, ...]
    index: Optional[Index] = None

    @property
    def top(self) -> Tuple[str, str, bytes]:
        if self.index is not None:
            return self.index.digest, self.index.media_type, self.index.raw
        manifest = self.images[0].manifest
        return manifest.digest, manifest.media_type, manifest.raw


def stored_image(store: Store, digest: str, where: str) -> StoredImage:
    """The stored image with manifest ``digest``: StoreError when a part is missing."""
    record = store.read_image(digest)
    raw = store.read_blob(digest)
    config = store.read_blob(record.config_digest) if record is not None else None
    if record is None or raw is None or config is None:
        raise StoreError(f"{where}: image {digest} is not (or no longer) whole in the store "
                         f"{store.root}: pull it again")
    return StoredImage(record, Manifest.from_bytes(raw, record.media_type, digest), config)


def collect(store: Store, image: "Image") -> ImageContent:
    """What ``image`` is made of (see the module docstring)."""
    assert image.digest is not None
    where = image.reference or image.digest
    own = stored_image(store, image.digest, where)
    name = Reference.parse(image.reference) if image.reference else None
    tag = store.read_tag(image.reference) if image.reference else None
    if tag is None or image.digest not in tag.manifests.values():
        return ImageContent(name, (own,))
    stored = sorted(set(tag.manifests.values()))
    raw_index = store.read_blob(tag.digest) if tag.digest not in stored else None
    if raw_index is None or len(stored) < 2:
        return ImageContent(name, (own,))
    try:
        media_type = classify(raw_index, "", where)
        if media_type not in INDEX_TYPES:
            return ImageContent(name, (own,))
        index = Index.from_bytes(raw_index, media_type, tag.digest)
    except IsoboxError:
        return ImageContent(name, (own,))
    images: List[StoredImage] = []
    missing = False
    for desc in index.manifests:
        if desc.digest in stored:
            images.append(stored_image(store, desc.digest, where))
        elif desc.platform is None or desc.platform.os != "unknown":
            missing = True  # a platform not pulled (attestations do not count)
    for digest in stored:
        if all(i.manifest.digest != digest for i in images):
            images.append(stored_image(store, digest, where))
    if missing or any(d.digest not in stored for d in index.manifests):
        index = new_index(images, index.media_type)
    return ImageContent(name, tuple(images), index)


def new_index(images: List[StoredImage], media_type: str = OCI_INDEX) -> Index:
    """An index over ``images`` (a Docker manifest list when they are Docker manifests)."""
    import json

    from .digest import compute

    if media_type not in INDEX_TYPES:
        media_type = OCI_INDEX
    if all(i.manifest.media_type == DOCKER_MANIFEST for i in images):
        media_type = DOCKER_MANIFEST_LIST
    entries = [
        Descriptor(media_type=i.manifest.media_type, digest=i.manifest.digest,
                   size=len(i.manifest.raw), platform=i.platform).to_oci()
        for i in images
    ]
    raw = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries},
                     indent=2).encode()
    return Index.from_bytes(raw, media_type, compute(raw))


class BlobReader:
    """Reads an image's blobs from the store, fetching a missing layer blob from where
    the image came from first (see the module docstring). Close it (or use ``with``)."""

    def __init__(self, store: Store, *, auth: Any = None,
                 client: "Optional[RegistryClient]" = None) -> None:
        self.store = store
        self._auth = auth
        self._client = client
        self._own_client = False

    def close(self) -> None:
        if self._own_client and self._client is not None:
            self._client.close()

    def __enter__(self) -> "BlobReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def client(self) -> "RegistryClient":
        if self._client is None:
            from .http import EndpointMemory
            from .image import REGISTRIES_FILE
            from .registry import RegistryClient

            memory = EndpointMemory(self.store.root / REGISTRIES_FILE, self.store.write_file)
            self._client = RegistryClient(credentials=self._auth, memory=memory)
            self._own_client = True
        return self._client

    def path(self, desc: Descriptor, image: StoredImage) -> pathlib.Path:
        """The blob's file in the store, fetched first when missing."""
        path = self.store.blob_path(desc.digest)
        if path.is_file():
            return path
        self._fetch(desc, image)
        return path

    def _origins(self, image: StoredImage) -> List[Reference]:
        names: List[str] = []
        if image.record.source:
            names.append(image.record.source)
        for tag in self.store.tags():
            if image.record.digest in tag.manifests.values():
                names.append(tag.reference)
        out: List[Reference] = []
        for name in dict.fromkeys(names):
            try:
                ref = Reference.parse(name)
            except IsoboxError:
                continue
            out.append(Reference(domain=ref.domain, path=ref.path, tag="latest"))
        return out

    def _fetch(self, desc: Descriptor, image: StoredImage) -> None:
        errors: List[str] = []
        for origin in self._origins(image):
            with self.store.lock("blob-" + desc.digest.partition(":")[2]):
                if self.store.blob_path(desc.digest).is_file():
                    return
                folder = self.store.temp_dir("blob-")
                try:
                    tmp = folder / "blob"
                    with open(tmp, "wb") as f:
                        for chunk in self.client().iter_blob(origin, desc):
                            f.write(chunk)
                    self.store.commit_blob_file(tmp, desc.digest)
                    return
                except RegistryError as exc:
                    errors.append(str(exc))
                finally:
                    self.store.discard(folder)
        tried = "; ".join(errors) if errors else "the image names no repository it came from"
        raise StoreError(
            f"{image.record.digest}: layer blob {desc.digest} is not in the store (the layer "
            f"was stored before this image was pulled, as another blob) and fetching it "
            f"failed: {tried}"
        )

    def chunks(self, desc: Descriptor, image: StoredImage,
               progress: Optional[Callable[[int], None]] = None,
               offset: int = 0) -> Iterator[bytes]:
        """The blob's bytes from ``offset``, hashed on the way (all of it): StoreError
        before the last chunk when the store's copy does not hash to its digest."""
        path = self.path(desc, image)
        hasher = Hasher.like(desc.digest)
        done = 0
        pending: Optional[bytes] = None
        try:
            f = open(path, "rb")
        except OSError as exc:
            raise StoreError(f"cannot read blob {path}: {exc.strerror}") from exc
        with f:
            while True:
                data = f.read(CHUNK)
                if not data:
                    break
                hasher.update(data)
                start = done
                done += len(data)
                if done <= offset:
                    continue
                if start < offset:
                    data = data[offset - start:]
                if pending is not None:
                    yield pending
                pending = data
                if progress is not None:
                    progress(done)
        if hasher.digest != desc.digest or done != desc.size:
            with_size = "" if done == desc.size else f" ({done} bytes, not {desc.size})"
            raise StoreError(f"blob {desc.digest} in the store {self.store.root} is corrupt"
                             f"{with_size}: remove the image and pull it again")
        if pending is not None:
            yield pending

    def read(self, desc: Descriptor, image: StoredImage) -> bytes:
        return b"".join(self.chunks(desc, image))


__all__ = ["BlobReader", "ImageContent", "StoredImage", "collect", "new_index", "stored_image"]
