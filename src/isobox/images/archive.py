"""Images to and from archives: the OCI image layout (a directory, or a tar of one: an
oci-archive) and ``docker save``'s tar, several images each (`save_archive`,
`load_archive`; the documents themselves are `isobox.images.layout`'s).

Saving writes what the store holds, verbatim (`isobox.images.content`): an OCI layout
keeps every manifest and index digest; a docker archive has no manifests, and holds each
layer uncompressed (its digest the diff_id, as ``docker load`` checks it), so only the
config digest (the image ID) survives it. The archive is written under a temporary name
beside ``path`` and renamed into place when complete.

Loading treats the archive as hostile. Nothing is extracted to disk: entries are read by
name from the tar (or opened under the directory without following links). An entry name
that leaves the archive, a link that does (links inside it are followed by name, as old
``docker save`` archives link repeated layers), a device or other special entry that is
read, a document over `layout.MAX_DOCUMENT`, more than `layout.MAX_ENTRIES` members, a
blob whose size or digest is not the one announced: each is `InvalidArchive` naming the
archive and the entry. Every manifest and config is checked before any layer is read,
and each image goes into the store the way a pull puts it there (`image._install`:
layers under temporary names renamed once verified, records last), so a failure leaves
no image half-written.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import stat
import tarfile
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import attrs

from ..errors import InvalidArchive, InvalidOption, IsoboxError, StoreError
from . import layout
from .content import BlobReader, ImageContent, StoredImage, collect
from .digest import Hasher, compute
from .manifest import (
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_CONFIG_SIZE,
    MAX_INDEX_DEPTH,
    MAX_MANIFEST_SIZE,
    Descriptor,
    Index,
    Manifest,
    check_runnable,
    classify,
    config_platform,
)
from .platform import Platform
from .reference import Reference
from .store import Store

if TYPE_CHECKING:
    from .image import Image

CHUNK = 1024 * 1024
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"


# -- reading --------------------------------------------------------------------------------


class _Source:
    """An archive's entries by name: a tar file or a directory."""

    where: str

    def size(self, name: str) -> Optional[int]:
        raise NotImplementedError

    def open(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def has(self, name: str) -> bool:
        return self.size(name) is not None

    def read(self, name: str, limit: int) -> bytes:
        size = self.size(name)
        if size is None:
            raise InvalidArchive(f"{self.where}: no entry {name}")
        if size > limit:
            raise InvalidArchive(f"{self.where}: {name} is {size} bytes, more than the {limit} allowed")
        with self.open(name) as f:
            return f.read(limit + 1)


class _TarSource(_Source):
    def __init__(self, path: pathlib.Path) -> None:
        self.where = str(path)
        self._path = path
        try:
            self._tar = tarfile.open(path, "r:")
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise InvalidArchive(f"{path}: not a tar archive: {exc}") from None
        self._members: Dict[str, tarfile.TarInfo] = {}
        try:
            count = 0
            while True:
                member = self._tar.next()
                if member is None:
                    break
                count += 1
                if count > layout.MAX_ENTRIES:
                    raise InvalidArchive(f"{path}: more than {layout.MAX_ENTRIES} entries")
                name = layout.entry_name(member.name, self.where)
                self._members[name] = member
        except (tarfile.TarError, EOFError, OSError) as exc:
            self._tar.close()
            raise InvalidArchive(f"{path}: damaged tar archive: {exc}") from None
        except BaseException:
            self._tar.close()
            raise

    def _member(self, name: str) -> Optional[tarfile.TarInfo]:
        seen = 0
        member = self._members.get(name)
        while member is not None and (member.issym() or member.islnk()):
            seen += 1
            if seen > 8:
                raise InvalidArchive(f"{self.where}: {name}: too many links")
            target = (layout.link_target(member.name, member.linkname, self.where) if member.issym()
                      else layout.entry_name(member.linkname, self.where))
            member = self._members.get(target)
        if member is not None and not member.isfile():
            if member.isdir():
                return None
            raise InvalidArchive(f"{self.where}: {name} is not a regular file")
        return member

    def size(self, name: str) -> Optional[int]:
        member = self._member(name)
        return None if member is None else int(member.size)

    def open(self, name: str) -> IO[bytes]:
        """The entry's bytes through a file of its own: layers are read by several
        threads at once (the tar is uncompressed: see `_open_source`)."""
        member = self._member(name)
        if member is None:
            raise InvalidArchive(f"{self.where}: no entry {name}")
        if member.sparse:
            raise InvalidArchive(f"{self.where}: {name} is a sparse file")
        f = open(self._path, "rb")
        f.seek(member.offset_data)
        return _Slice(f, int(member.size))  # type: ignore[return-value]

    def close(self) -> None:
        self._tar.close()


class _Slice:
    """``size`` bytes of an open file from where it stands (a tar member's data)."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._f = f
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def __enter__(self) -> "_Slice":
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


class _DirSource(_Source):
    """An OCI layout directory: every component opened with O_NOFOLLOW, so a link in
    the layout (to /etc/shadow, say) is refused, never followed."""

    def __init__(self, path: pathlib.Path) -> None:
        self.where = str(path)
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise InvalidArchive(f"{path}: cannot open: {exc.strerror}") from None

    def _open_fd(self, name: str) -> Optional[int]:
        parts = name.split("/")
        fd = os.dup(self._fd)
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (0 if last else os.O_DIRECTORY)
                try:
                    nxt = os.open(part, flags, dir_fd=fd)
                except FileNotFoundError:
                    return None
                except OSError as exc:
                    raise InvalidArchive(f"{self.where}: {name}: {exc.strerror} (a link?)") from None
                os.close(fd)
                fd = nxt
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidArchive(f"{self.where}: {name} is not a regular file")
            out, fd = fd, -1
            return out
        finally:
            if fd >= 0:
                os.close(fd)

    def size(self, name: str) -> Optional[int]:
        fd = self._open_fd(name)
        if fd is None:
            return None
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def open(self, name: str) -> IO[bytes]:
        fd = self._open_fd(name)
        if fd is None:
            raise InvalidArchive(f"{self.where}: no entry {name}")
        return os.fdopen(fd, "rb")

    def close(self) -> None:
        os.close(self._fd)


def _open_source(path: pathlib.Path, store: Store) -> Tuple[_Source, Optional[pathlib.Path]]:
    """The archive's entries; a compressed tar (``docker save | gzip``) is inflated to a
    store temporary first (returned, for `Store.discard`), so entries can be read at
    their offsets."""
    if path.is_dir():
        return _DirSource(path), None
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise InvalidArchive(f"{path}: cannot open: {exc.strerror}") from None
    if not (head.startswith(b"\x1f\x8b") or head.startswith(b"\x28\xb5\x2f\xfd")):
        return _TarSource(path), None
    from .inflate import Inflater
    from .tar import Limits

    folder = store.temp_dir("load-")
    try:
        plain = folder / "archive.tar"

        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as src:
                while True:
                    data = src.read(CHUNK)
                    if not data:
                        return
                    yield data

        inflater = Inflater(chunks(), Limits().max_total_size * 4)
        inflater.start()
        try:
            with open(plain, "wb") as out:
                while True:
                    chunk = inflater.get()
                    if chunk is None:
                        break
                    out.write(chunk)
        except IsoboxError as exc:
            raise InvalidArchive(f"{path}: cannot decompress: {exc}") from None
        finally:
            inflater.close()
        source = _TarSource(plain)
        source.where = str(path)
        return source, folder
    except BaseException:
        store.discard(folder)
        raise


class _Blobs:
    """The `image.BlobSource` of an archive: entries streamed, sizes and digests checked
    (the last chunk is handed over only once the whole entry hashed right)."""

    def __init__(self, source: _Source, names: Dict[str, str]) -> None:
        self.source = source
        self.names = names  # digest -> entry name

    def iter_blob(self, ref: Any, desc: Descriptor, *,
                  progress: Optional[Callable[[int], None]] = None) -> Iterator[bytes]:
        name = self.names.get(desc.digest, layout.blob_entry(desc.digest))
        where = f"{self.source.where}: {name}"
        hasher = Hasher.like(desc.digest)
        done = 0
        pending: Optional[bytes] = None
        with self.source.open(name) as f:
            while True:
                data = f.read(min(CHUNK, desc.size - done + 1))
                if not data:
                    break
                done += len(data)
                if done > desc.size:
                    raise InvalidArchive(f"{where}: longer than the {desc.size} bytes announced")
                hasher.update(data)
                if pending is not None:
                    yield pending
                pending = data
                if progress is not None:
                    progress(done)
        if done != desc.size:
            raise InvalidArchive(f"{where}: {done} bytes, not the {desc.size} announced")
        if hasher.digest != desc.digest:
            raise InvalidArchive(f"{where}: hashes to {hasher.digest}, not {desc.digest}")
        if pending is not None:
            yield pending


def _verified(source: _Source, name: str, digest: Optional[str], limit: int) -> bytes:
    raw = source.read(name, limit)
    if len(raw) > limit:
        raise InvalidArchive(f"{source.where}: {name} is more than the {limit} bytes allowed")
    if digest is not None and compute(raw, digest.partition(":")[0]) != digest:
        raise InvalidArchive(f"{source.where}: {name} does not hash to {digest}")
    return raw


@attrs.frozen
class _Planned:
    """One image to install: what `image._install` takes."""

    name: Optional[Reference]
    top_digest: str
    manifest: Manifest
    platform: Platform
    config: bytes = attrs.field(repr=False)
    index: Optional[Index] = None
    also: Tuple[Reference, ...] = ()  # more names (docker RepoTags)


def _plan_manifest(source: _Source, desc: Descriptor, name: Optional[Reference], top: str,
                   index: Optional[Index]) -> _Planned:
    entry = layout.blob_entry(desc.digest)
    where = f"{source.where}: {entry}"
    raw = _verified(source, entry, desc.digest, MAX_MANIFEST_SIZE)
    try:
        media_type = classify(raw, desc.media_type, where)
        manifest = Manifest.from_bytes(raw, media_type, desc.digest)
        check_runnable(manifest, where)
        config = _verified(source, layout.blob_entry(manifest.config.digest), manifest.config.digest,
                           MAX_CONFIG_SIZE)
        platform = (config_platform(config, f"{source.where}: config {manifest.config.digest}")
                    or desc.platform or Platform.host())
    except InvalidArchive:
        raise
    except IsoboxError as exc:
        raise InvalidArchive(f"{where}: {exc}") from None
    for layer in manifest.layers:
        size = source.size(layout.blob_entry(layer.digest))
        if size is None:
            raise InvalidArchive(f"{source.where}: layer {layer.digest} of {desc.digest} is missing")
        if size != layer.size:
            raise InvalidArchive(f"{source.where}: {layout.blob_entry(layer.digest)} is {size} bytes, "
                                 f"not the {layer.size} its manifest says")
    return _Planned(name, top, manifest, platform, config, index)


def _plan_oci(source: _Source) -> List[_Planned]:
    where = f"{source.where}: {layout.INDEX_FILE}"
    entries = layout.parse_index(_verified(source, layout.INDEX_FILE, None, layout.MAX_DOCUMENT), where)
    planned: List[_Planned] = []
    for entry in entries:
        desc = entry.descriptor
        if desc.media_type in MANIFEST_TYPES:
            planned.append(_plan_manifest(source, desc, entry.name, desc.digest, None))
            continue
        if desc.media_type not in INDEX_TYPES:
            continue  # an artifact, a signature: nothing to run
        found = _plan_index(source, desc, entry.name, desc.digest, 1)
        if not found:
            raise InvalidArchive(f"{source.where}: index {desc.digest} has none of its images in the "
                                 "archive")
        planned += found
    return planned


def _plan_index(source: _Source, desc: Descriptor, name: Optional[Reference], top: str,
                depth: int) -> List[_Planned]:
    if depth > MAX_INDEX_DEPTH:
        raise InvalidArchive(f"{source.where}: indexes nested more than {MAX_INDEX_DEPTH} deep")
    entry = layout.blob_entry(desc.digest)
    raw = _verified(source, entry, desc.digest, MAX_MANIFEST_SIZE)
    try:
        index = Index.from_bytes(raw, classify(raw, desc.media_type, entry), desc.digest)
    except IsoboxError as exc:
        raise InvalidArchive(f"{source.where}: {entry}: {exc}") from None
    out: List[_Planned] = []
    for item in index.manifests:
        if item.platform is not None and item.platform.os == "unknown":
            continue  # attestations
        if not source.has(layout.blob_entry(item.digest)):
            continue  # a platform the archive does not carry
        if item.media_type in INDEX_TYPES:
            out += _plan_index(source, item, name, top, depth + 1)
        elif item.media_type in MANIFEST_TYPES:
            out.append(_plan_manifest(source, item, name, top, index if depth == 1 else None))
    return out


def _plan_docker(source: _Source) -> Tuple[List[_Planned], Dict[str, str]]:
    """Images of a docker save archive, with manifests made for them (Docker's media
    types; a layer's digest is its file's), and the layers' entry names by digest."""
    where = f"{source.where}: {layout.DOCKER_MANIFEST_FILE}"
    entries = layout.parse_docker_manifest(
        _verified(source, layout.DOCKER_MANIFEST_FILE, None, layout.MAX_DOCUMENT), where)
    names: Dict[str, str] = {}
    planned = []
    for entry in entries:
        config = _verified(source, entry.config, None, MAX_CONFIG_SIZE)
        config_digest = compute(config)
        layers = []
        for name in entry.layers:
            size = source.size(name)
            if size is None:
                raise InvalidArchive(f"{source.where}: layer {name} is missing")
            digest, media_type = _layer_digest(source, name)
            names[digest] = name
            layers.append({"mediaType": media_type, "size": size, "digest": digest})
        doc = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
               "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": config_digest},
               "layers": layers}
        raw = json.dumps(doc, indent=3).encode()
        digest = compute(raw)
        names[config_digest] = entry.config
        try:
            manifest = Manifest.from_bytes(raw, DOCKER_MANIFEST, digest)
            platform = config_platform(config, f"{source.where}: {entry.config}") or Platform.host()
        except IsoboxError as exc:
            raise InvalidArchive(f"{source.where}: {entry.config}: {exc}") from None
        first = entry.repo_tags[0] if entry.repo_tags else None
        planned.append(_Planned(first, digest, manifest, platform, config, None, entry.repo_tags[1:]))
    return planned, names


def _layer_digest(source: _Source, name: str) -> Tuple[str, str]:
    """A docker archive layer's digest (its bytes hashed once) and media type (by its
    magic bytes: ``docker save`` writes plain tars, other tools gzip them)."""
    hasher = Hasher("sha256")
    with source.open(name) as f:
        head = f.read(4)
        hasher.update(head)
        while True:
            data = f.read(CHUNK)
            if not data:
                break
            hasher.update(data)
    media_type = (DOCKER_LAYER_GZIP if head.startswith(b"\x1f\x8b")
                  else DOCKER_LAYER_ZSTD if head.startswith(b"\x28\xb5\x2f\xfd") else DOCKER_LAYER)
    return hasher.digest, media_type


def load_archive(path: pathlib.Path, store: Store) -> List["Image"]:
    """Every image in the archive or layout ``path``, installed into ``store``."""
    from .image import _install

    source, spilled = _open_source(path, store)
    try:
        names: Dict[str, str] = {}
        if source.has(layout.INDEX_FILE):
            planned = _plan_oci(source)
        elif source.has(layout.DOCKER_MANIFEST_FILE):
            planned, names = _plan_docker(source)
        else:
            raise InvalidArchive(f"{path}: neither an OCI layout (index.json) nor a docker save "
                                 "archive (manifest.json)")
        if not planned:
            raise InvalidArchive(f"{path}: holds no image")
        blobs = _Blobs(source, names)
        loaded: List["Image"] = []
        with store.in_use():
            for item in planned:
                label = f"{path}: {item.name or item.manifest.digest}"
                resolved = _resolved(item)
                image = _install(store, blobs, item.name, item.platform, resolved, None,
                                 source="", label=label)
                for extra in item.also:
                    tag = store.read_tag(str(item.name)) if item.name else None
                    if tag is not None:
                        store.copy_tag(str(extra), tag)
                loaded.append(image)
        return loaded
    finally:
        source.close()
        if spilled is not None:
            store.discard(spilled)


def _resolved(item: _Planned) -> Any:
    from .registry import ResolvedImage

    return ResolvedImage(reference=item.name or Reference(domain="localhost", path="loaded"),
                         digest=item.top_digest, manifest=item.manifest, platform=item.platform,
                         config=item.config, index=item.index)


# -- writing --------------------------------------------------------------------------------


class _Writer:
    """Entries into a tar (written under a temporary name, renamed when complete) or a
    new directory."""

    def __init__(self, path: pathlib.Path, as_dir: bool) -> None:
        self.path = path
        self.as_dir = as_dir
        self.names: Set[str] = set()
        self.tmp = path.with_name(f".{path.name}.isobox-{os.getpid()}-{os.urandom(4).hex()}")
        if as_dir:
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise InvalidOption(f"{path} exists and is not an empty directory")
            self.tmp.mkdir(mode=0o755)
            self._tar: Optional[tarfile.TarFile] = None
        else:
            self._tar = tarfile.open(self.tmp, "w", format=tarfile.PAX_FORMAT)

    def _info(self, name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644
        info.mtime = 0
        return info

    def _dirs(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d in self.names:
                continue
            self.names.add(d)
            if self._tar is not None:
                info = tarfile.TarInfo(d)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                self._tar.addfile(info)
            else:
                (self.tmp / d).mkdir(mode=0o755, exist_ok=True)

    def add_bytes(self, name: str, data: bytes) -> None:
        if name in self.names:
            return
        self._dirs(name)
        self.names.add(name)
        if self._tar is not None:
            import io

            self._tar.addfile(self._info(name, len(data)), io.BytesIO(data))
        else:
            (self.tmp / name).write_bytes(data)

    def add_chunks(self, name: str, size: int, chunks: Iterator[bytes]) -> None:
        if name in self.names:
            return
        self._dirs(name)
        self.names.add(name)
        if self._tar is not None:
            self._tar.addfile(self._info(name, size), _ChunkFile(chunks))
        else:
            with open(self.tmp / name, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)

    def commit(self) -> None:
        if self._tar is not None:
            self._tar.close()
            os.replace(self.tmp, self.path)
        else:
            if self.path.exists():
                self.path.rmdir()
            os.rename(self.tmp, self.path)

    def abort(self) -> None:
        from ..host.fs import remove_tree

        if self._tar is not None:
            self._tar.close()
        with contextlib.suppress(OSError):
            if self.tmp.is_dir():
                remove_tree(self.tmp)
            else:
                self.tmp.unlink()


class _ChunkFile:
    """A read()-able over chunks, for tarfile.addfile."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buf += chunk
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


def save_archive(images: List["Image"], path: pathlib.Path, fmt: str, store: Store) -> None:
    """Write ``images`` to ``path`` as ``fmt`` ("oci", "oci-dir", "docker-archive")."""
    with store.in_use():
        contents = [collect(store, image) for image in images]
        writer = _Writer(path, as_dir=fmt == "oci-dir")
        try:
            with BlobReader(store) as reader:
                if fmt == "docker-archive":
                    _write_docker(writer, contents, images, reader, store)
                else:
                    _write_oci(writer, contents, reader)
            writer.commit()
        except BaseException:
            writer.abort()
            raise


def _write_oci(writer: _Writer, contents: List[ImageContent], reader: BlobReader) -> None:
    entries: List[Tuple[Descriptor, Optional[str]]] = []
    for content in contents:
        for image in content.images:
            writer.add_bytes(layout.blob_entry(image.manifest.digest), image.manifest.raw)
            for desc in image.blobs():
                writer.add_chunks(layout.blob_entry(desc.digest), desc.size, reader.chunks(desc, image))
        digest, media_type, raw = content.top
        if content.index is not None:
            writer.add_bytes(layout.blob_entry(digest), raw)
        entries.append((Descriptor(media_type=media_type, digest=digest, size=len(raw)),
                        str(content.name) if content.name else None))
    writer.add_bytes(layout.LAYOUT_FILE, layout.LAYOUT_VERSION)
    writer.add_bytes(layout.INDEX_FILE, layout.write_index(entries))


def _write_docker(writer: _Writer, contents: List[ImageContent], images: List["Image"],
                  reader: BlobReader, store: Store) -> None:
    entries: List[layout.DockerEntry] = []
    for content, img in zip(contents, images):
        image = next(i for i in content.images if i.manifest.digest == img.digest)
        config_name = image.manifest.config.digest.partition(":")[2] + ".json"
        writer.add_bytes(config_name, image.config)
        names = []
        for desc, diff_id in zip(image.manifest.layers, image.record.diff_ids):
            name = diff_id.partition(":")[2] + "/layer.tar"
            names.append(name)
            if name not in writer.names:
                _add_plain_layer(writer, name, desc, diff_id, image, reader, store)
        entries.append(layout.DockerEntry(config_name, (content.name,) if content.name else (),
                                          tuple(names)))
    writer.add_bytes(layout.DOCKER_MANIFEST_FILE, layout.write_docker_manifest(entries))
    writer.add_bytes(layout.REPOSITORIES_FILE, layout.write_repositories(entries))


def _add_plain_layer(writer: _Writer, name: str, desc: Descriptor, diff_id: str,
                     image: StoredImage, reader: BlobReader, store: Store) -> None:
    """A layer uncompressed (what ``docker load`` checks against the diff_id), by way of
    a temporary file: a tar member's size comes before its data."""
    from .inflate import Inflater
    from .tar import Limits

    folder = store.temp_dir("save-")
    try:
        tmp = folder / "layer.tar"
        inflater = Inflater(reader.chunks(desc, image), Limits().max_total_size)
        inflater.start()
        try:
            with open(tmp, "wb") as f:
                while True:
                    chunk = inflater.get()
                    if chunk is None:
                        break
                    f.write(chunk)
        finally:
            inflater.close()
        if inflater.hasher.digest != diff_id:
            raise StoreError(f"layer {desc.digest} of {image.record.digest} unpacks to "
                             f"{inflater.hasher.digest}, not its diff_id {diff_id}")
        size = tmp.stat().st_size

        def chunks() -> Iterator[bytes]:
            with open(tmp, "rb") as f:
                while True:
                    data = f.read(CHUNK)
                    if not data:
                        return
                    yield data

        writer.add_chunks(name, size, chunks())
    finally:
        store.discard(folder)


__all__ = ["load_archive", "save_archive"]
