"""The on-disk store: the one piece of global state, resolved once and passed down.

Layout under the root (every write goes to ``tmp/`` first and is renamed into place)::

    blobs/sha256/<hex>          manifests, indexes, configs and compressed layer blobs,
                                verbatim, by digest (what push and save send as they are)
    layers/sha256/<hex>/        extracted layers, by diff_id (overlayfs lower dirs), or by
                                chain ID for the rare layer whose extraction depends on
                                the layers below (a hard link to a lower layer's file)
    layers/sha256/<hex>.json    the layer's unpacked size and entry count
    images/sha256/<hex>.json    image records, by manifest digest
    images/refs/<hex>.json      tag records: reference -> digest -> manifest per platform
    containers/<id>/            per-container upper/work dirs, state, logs (the runtime's),
                                and layers.json: the layers it uses (the store's, `hold_layers`)
    volumes/<name>/             named volumes
    tmp/                        temporary names; anything here is garbage after a crash
    locks/                      flock files

A layer is streamed from the socket through its hash and decompressor straight into a
temporary directory, which becomes ``layers/<diff_id>/`` only once both the blob digest
and the diff_id check out; the compressed bytes are written beside it on the way and
renamed to ``blobs/`` at the same moment (`commit_blob_file`), so that a push or save
sends the very blob the manifest names (its digest, and the manifest's, preserved). A
layer found in the store is not downloaded again: its blob for another manifest (another
compression) is fetched when a push or save first needs it. A crash leaves garbage under
``tmp/`` (removed by `Store.prune`), never a half layer or blob that is used.

Locking (``fcntl.flock``, released by the kernel when a process dies):

- ``locks/gc.lock``: shared while pulling (and while a container is being created, see
  `Store.in_use`), exclusive while pruning or removing images, so garbage collection never
  takes a layer or temporary directory from under a running pull.
- ``locks/layer-<hex>.lock``, ``locks/blob-<hex>.lock``: one downloader per layer or blob;
  others wait, then find it in place. So concurrent pulls download each blob once.
- ``locks/ref-<hex>.lock``: read-modify-write of one tag record.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pathlib
import re
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

import attrs

from ..errors import DigestMismatch, IsoboxError, StoreError
from ..host import remover
from ..host.fs import remove_tree, replace_file
from ..host.privilege import Privilege
from .digest import check, compute, is_digest, matches, name_key, split

if TYPE_CHECKING:
    from .image import Image

PathLike = Union[str, "os.PathLike[str]"]

SUBDIRS = ("blobs", "layers", "images", "containers", "volumes", "tmp", "locks")
# In a container's directory, the store's record of the layers it uses (`Store.hold_layers`).
HELD_LAYERS_NAME = "layers.json"

# Lock files prune may delete (only while it holds gc.lock exclusively: nobody else has them).
_ITEM_LOCK_PREFIXES = ("layer-", "blob-", "ref-")
_MAKING_PREFIX = ".making-"  # tmp/ directories between their mkdir and their flock


def _check_digest(value: object) -> str:
    """``value`` if it is a digest (`isobox.images.digest`), else DigestMismatch. Digests
    name files: anything else (an attacker's "sha256:../../x") must never reach a path."""
    return check(value, DigestMismatch)


def _split(value: str) -> Tuple[str, str]:
    return split(_check_digest(value))


# -- records ---------------------------------------------------------------------------


def _str_map(value: Any) -> Mapping[str, str]:
    return {str(k): str(v) for k, v in dict(value or {}).items()}


@attrs.frozen
class LayerRecord:
    """One layer of an image: the blob it came from and the diff_id its directory has."""

    digest: str = attrs.field(validator=lambda _i, _a, v: _check_digest(v))
    diff_id: str = attrs.field(validator=lambda _i, _a, v: _check_digest(v))
    media_type: str = ""
    size: int = 0  # compressed, as the manifest says
    # The chain ID naming the directory when the extracted layer depends on the layers
    # below it (a hard link to a lower file, an opaque root); None: named by diff_id.
    chain_id: Optional[str] = attrs.field(
        default=None, validator=lambda _i, _a, v: v is None or _check_digest(v)
    )

    @property
    def key(self) -> str:
        """The name of the layer's directory under layers/."""
        return self.chain_id or self.diff_id

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "LayerRecord":
        return cls(
            digest=doc["digest"],
            diff_id=doc["diff_id"],
            media_type=str(doc.get("media_type", "")),
            size=int(doc.get("size", 0)),
            chain_id=doc.get("chain_id"),
        )

    def to_json(self) -> Dict[str, Any]:
        return attrs.asdict(self)


def _layer_records(value: Any) -> Tuple[LayerRecord, ...]:
    return tuple(value)


@attrs.frozen
class ImageRecord:
    """What the store knows about one pulled image (one platform's manifest)."""

    digest: str = attrs.field(validator=lambda _i, _a, v: _check_digest(v))  # manifest
    media_type: str
    config_digest: str = attrs.field(validator=lambda _i, _a, v: _check_digest(v))
    config: Mapping[str, Any] = attrs.field(hash=False)  # the whole config document
    layers: Tuple[LayerRecord, ...] = attrs.field(converter=_layer_records)
    platform: str
    size: int  # unpacked bytes of all layers
    pulled: float = 0.0  # time.time() of the pull
    # The repository it came from ("registry/path", "" when loaded or unknown): where a
    # layer blob the store lacks is fetched, and what a push to the same registry mounts.
    source: str = ""

    @property
    def diff_ids(self) -> Tuple[str, ...]:
        return tuple(layer.diff_id for layer in self.layers)

    @property
    def layer_keys(self) -> Tuple[str, ...]:
        """The layers' directory names (see `LayerRecord.key`), lowest first."""
        return tuple(layer.key for layer in self.layers)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "ImageRecord":
        return cls(
            digest=doc["digest"],
            media_type=str(doc.get("media_type", "")),
            config_digest=doc["config_digest"],
            config=dict(doc["config"]),
            layers=[LayerRecord.from_json(layer) for layer in doc["layers"]],
            platform=str(doc.get("platform", "")),
            size=int(doc.get("size", 0)),
            pulled=float(doc.get("pulled", 0.0)),
            source=str(doc.get("source", "")),
        )

    def to_json(self) -> Dict[str, Any]:
        return {
            "digest": self.digest,
            "media_type": self.media_type,
            "config_digest": self.config_digest,
            "config": dict(self.config),
            "layers": [layer.to_json() for layer in self.layers],
            "platform": self.platform,
            "size": self.size,
            "pulled": self.pulled,
            "source": self.source,
        }


@attrs.frozen
class TagRecord:
    """A reference as last pulled: the digest it pointed to (an index for multi-platform
    images) and the manifest pulled for each platform asked for."""

    reference: str
    digest: str = attrs.field(validator=lambda _i, _a, v: _check_digest(v))
    manifests: Mapping[str, str] = attrs.field(factory=dict, converter=_str_map, hash=False)
    last: str = ""  # the platform pulled most recently: what a platform-less lookup gets

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "TagRecord":
        record = cls(
            reference=str(doc["reference"]),
            digest=doc["digest"],
            manifests=doc.get("manifests") or {},
            last=str(doc.get("last", "")),
        )
        for digest in record.manifests.values():
            _check_digest(digest)
        return record

    def to_json(self) -> Dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "manifests": dict(self.manifests),
            "last": self.last,
        }


@attrs.frozen
class LayerInfo:
    """An extracted layer in the store."""

    diff_id: str
    path: pathlib.Path
    size: int  # unpacked bytes
    entries: int


@attrs.frozen
class PruneReport:
    """What `Store.prune` removed."""

    images: Tuple[str, ...] = ()  # manifest digests of removed (untagged) image records
    layers: Tuple[str, ...] = ()  # diff_ids of removed layer directories
    volumes: Tuple[str, ...] = ()  # names of removed volumes (only when asked for)
    blobs: int = 0
    temporaries: int = 0
    reclaimed: int = 0  # bytes, counting layers by their unpacked size
    warnings: Tuple[str, ...] = ()


# -- temporaries held by this process ----------------------------------------------------

# tmp/ directories this process made and still uses -> the fd holding their flock (see
# Store.temp_dir), and the store roots whose tmp/ it swept once.  Facts about this process,
# not caches of the store: a forked copy holds none of them.
_held_temporaries: Dict[str, int] = {}
_swept_temporaries: Set[pathlib.Path] = set()


def _release_temporary(path: pathlib.Path) -> None:
    fd = _held_temporaries.pop(str(path), -1)
    if fd >= 0:
        os.close(fd)


def _forget_temporaries_in_child() -> None:
    for fd in _held_temporaries.values():
        try:
            os.close(fd)  # the flock is the parent's open file description: it stays
        except OSError:
            pass
    _held_temporaries.clear()


os.register_at_fork(after_in_child=_forget_temporaries_in_child)


# -- filesystem helpers -----------------------------------------------------------------


def tree_size(path: pathlib.Path) -> int:
    """Bytes a tree takes on disk (allocated blocks), as prune reports them. Iterative,
    and never follows a symlink: a container can nest directories in a volume deeper
    than Python's recursion limit (os.walk recurses). Directories it cannot read, or
    reach within PATH_MAX, are not counted."""
    total = 0
    stack = [os.fspath(path)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                except OSError:
                    pass
    return total


def _read_json(path: pathlib.Path) -> Any:
    with open(path, "rb") as f:
        return json.loads(f.read())


def _absolute(path: PathLike) -> pathlib.Path:
    return pathlib.Path(path).absolute()


# -- the store --------------------------------------------------------------------------


@attrs.frozen
class Store:
    """A store root, and whether this process uses it as root or rootless (`privilege`:
    decided once, when the store is opened, for everything done with it). Cheap to
    create; `open` makes the directories."""

    root: pathlib.Path = attrs.field(converter=_absolute)
    privilege: Privilege = attrs.field(factory=Privilege.current)

    @classmethod
    def open(cls, root: Optional[Union["Store", PathLike]] = None, *,
             privilege: Optional[Privilege] = None) -> "Store":
        """The store at ``root`` (default: `Privilege.default_store_root`), its directories
        made. ``privilege`` defaults to this process's (`Privilege.current`); a `Store`
        given as ``root`` is returned as it is."""
        if isinstance(root, Store):
            return root
        privilege = privilege or Privilege.current()
        store = cls(privilege.default_store_root() if root is None else root, privilege)
        try:
            for sub in SUBDIRS:
                os.makedirs(os.path.join(store.root, sub), 0o700, exist_ok=True)
            st = os.stat(store.root)
            if st.st_mode & 0o077 and st.st_uid == os.geteuid():
                os.chmod(store.root, 0o700)  # a store made before 0700 was the rule
        except OSError as exc:
            raise StoreError(f"cannot create the store at {store.root}: {exc.strerror}") from exc
        return store

    @property
    def blobs(self) -> pathlib.Path:
        return self.root / "blobs"

    @property
    def layers(self) -> pathlib.Path:
        return self.root / "layers"

    @property
    def images(self) -> pathlib.Path:
        return self.root / "images"

    @property
    def containers(self) -> pathlib.Path:
        return self.root / "containers"

    @property
    def volumes(self) -> pathlib.Path:
        return self.root / "volumes"

    @property
    def tmp(self) -> pathlib.Path:
        return self.root / "tmp"

    @property
    def locks(self) -> pathlib.Path:
        return self.root / "locks"

    # -- locks ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str, *, shared: bool = False) -> Iterator[None]:
        """Hold ``locks/<name>.lock`` (flock; blocks until granted)."""
        if not re.match(r"^[A-Za-z0-9_.-]+$", name) or name.startswith("."):
            raise StoreError(f"bad lock name {name!r}")
        path = self.locks / f"{name}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open lock {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def in_use(self) -> "contextlib.AbstractContextManager[None]":
        """Hold while reading image records and taking their layers into use (pulling,
        recording a container's layers: `hold_layers`): `prune` and image removal wait for
        every holder to finish."""
        return self.lock("gc", shared=True)

    def collecting(self) -> "contextlib.AbstractContextManager[None]":
        """Exclusive counterpart of `in_use`, held by prune and image removal."""
        return self.lock("gc")

    def using_volumes(self) -> "contextlib.AbstractContextManager[None]":
        """Hold while creating a container with named volumes, until its state.json lists
        them: volume removal waits. (Not `in_use`, which pulls hold for minutes.)"""
        return self.lock("volumes", shared=True)

    def removing_volumes(self) -> "contextlib.AbstractContextManager[None]":
        """Exclusive counterpart of `using_volumes`."""
        return self.lock("volumes")

    # -- layers containers hold -------------------------------------------------------------

    def hold_layers(self, container_id: str, layers: Sequence[PathLike]) -> None:
        """Record that container ``container_id`` uses ``layers`` (its image's, lowest
        first): prune and image removal keep them until `release_layers`, or until the
        container's directory is removed (the record is ``containers/<id>/layers.json``,
        the store's own file there). Written under `in_use`, so a prune either sees it or
        has finished. Only the layer's name counts (a directory given by ``Image.from_directory``
        is no layer of a store). Raises OSError when it cannot be written."""
        path = self._held_layers_path(container_id)
        keys = []
        for layer in layers:
            p = pathlib.Path(layer)
            if is_digest(f"{p.parent.name}:{p.name}"):  # layers/<algorithm>/<hex>
                keys.append(f"{p.parent.name}:{p.name}")
        data = json.dumps({"layers": keys}).encode()
        with self.in_use():
            # one write of a new file: no reader can run meanwhile (prune holds the lock
            # exclusively), so no temporary name and rename are needed
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except BaseException:
                os.close(fd)
                os.unlink(path)
                raise
            os.close(fd)

    def release_layers(self, container_id: str) -> None:
        """The container no longer uses the layers it held (it is being removed)."""
        try:
            os.unlink(self._held_layers_path(container_id))
        except FileNotFoundError:
            pass

    def _held_layers_path(self, container_id: str) -> pathlib.Path:
        if not re.match(r"^[A-Za-z0-9_-]+$", container_id):
            raise StoreError(f"bad container id {container_id!r}")
        return self.containers / container_id / HELD_LAYERS_NAME

    # -- temporaries ----------------------------------------------------------------------

    def temp_dir(self, prefix: str = "tmp-") -> pathlib.Path:
        """A new private directory under ``tmp/`` (same filesystem as everything else, so
        its contents can be renamed into place), held (flock on its own fd) until
        `discard` or `commit_layer` lets go of it: `sweep_temporaries` removes only what
        no live process holds."""
        name = f"{prefix}{os.getpid()}-{os.urandom(8).hex()}"
        path = self.tmp / name
        # made under a name the sweep passes over, locked, then renamed: a sweep (in another
        # thread or process) never sees it unheld between its mkdir and its flock
        making = self.tmp / f"{_MAKING_PREFIX}{name}"
        fd = -1
        try:
            making.mkdir(mode=0o700)
            fd = os.open(making, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_EX)  # a new directory: nobody else can hold it
            os.rename(making, path)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                making.rmdir()
            raise StoreError(f"cannot create {path}: {exc.strerror}") from exc
        _held_temporaries[str(path)] = fd
        return path

    def sweep_temporaries(self) -> int:
        """Remove what crashed or killed processes left under ``tmp/`` (a killed pull's
        half-extracted layers): directories no live process holds, and files older than
        an hour (atomic writes stay there for milliseconds). Safe while other processes
        pull; prune clears everything under ``tmp/`` with the store's gc lock instead.
        Returns how many entries were removed."""
        removed = 0
        try:
            entries = list(os.scandir(self.tmp))
        except OSError:
            return 0
        for entry in entries:
            if entry.name.startswith(_MAKING_PREFIX):
                continue  # being made and locked this instant (temp_dir); prune clears it
            try:
                if entry.is_dir(follow_symlinks=False):
                    fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live process holds it
                    finally:
                        os.close(fd)
                elif time.time() - entry.stat(follow_symlinks=False).st_mtime < 3600:
                    continue
                remove_tree(entry.path, self.privilege)
                removed += 1
            except OSError:
                continue  # gone meanwhile, or not ours to remove: prune reports it
        return removed

    def remove_later(self, path: pathlib.Path, privilege: Optional[Privilege] = None) -> None:
        """Remove the directory ``path`` (under the store) in the background: it is renamed
        into ``tmp/`` at once (gone from where it was, as far as anyone can see) and
        removed by this process's remover thread (`isobox.host.remover`). On a disk,
        removing a container's writable layer is most of the cost of ending it; the
        caller need not wait for it.
        Falls back to removing it here when it cannot be moved. ``privilege``: the store's,
        or one with the id map of the container that made the files (`Privilege.with_id_map`)."""
        privilege = privilege or self.privilege
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError:
            remove_tree(path, privilege)
            return
        trash = self.tmp / f"rm-{os.getpid()}-{os.urandom(8).hex()}"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held until removed: a sweep passes over it
            os.rename(path, trash)
        except OSError:
            os.close(fd)
            remove_tree(path, privilege)
            return
        _held_temporaries[str(trash)] = fd

        def job() -> None:
            try:
                with self.in_use():  # a prune waits for it (and clears tmp/ otherwise)
                    remove_tree(trash, privilege)
            except (OSError, IsoboxError):
                pass  # left under tmp/, unheld: the next sweep or prune takes it
            finally:
                _release_temporary(trash)

        remover.submit(job)

    def write_file(self, path: pathlib.Path, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically: temp name, fsync, rename."""
        tmp = self.tmp / f"w-{os.getpid()}-{os.urandom(8).hex()}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            replace_file(path, data, tmp, durable=True)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StoreError(f"cannot write {path}: {exc.strerror}") from exc

    def _write_json(self, path: pathlib.Path, doc: Any) -> None:
        self.write_file(path, json.dumps(doc, indent=1, sort_keys=True).encode())

    # -- blobs (manifests, indexes, configs) -------------------------------------------------

    def blob_path(self, digest: str) -> pathlib.Path:
        algorithm, hexpart = _split(digest)
        return self.blobs / algorithm / hexpart

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> Optional[bytes]:
        """The blob's bytes, verified; None when absent (or corrupt on disk)."""
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
        if not matches(data, digest):
            return None
        return data

    def write_blob(self, data: bytes, digest: Optional[str] = None) -> str:
        """Store ``data`` under its digest (checked against ``digest`` when given)."""
        algorithm = _split(digest)[0] if digest else "sha256"
        actual = compute(data, algorithm)
        if digest is not None and actual != digest:
            raise DigestMismatch(f"blob has digest {actual}, expected {digest}")
        path = self.blob_path(actual)
        if not path.is_file():
            self.write_file(path, data)
        return actual

    def commit_blob_file(self, path: pathlib.Path, digest: str) -> pathlib.Path:
        """Rename ``path`` (a verified blob written under a store temporary) into place
        as ``blobs/<digest>``; when the blob is there already, the new copy stays where
        it is (its temporary is discarded with it)."""
        final = self.blob_path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_file():
            return final
        try:
            os.chmod(path, 0o600)
            os.rename(path, final)
        except OSError as exc:
            raise StoreError(f"cannot move blob into {final}: {exc.strerror}") from exc
        return final

    # -- layers ---------------------------------------------------------------------------

    def layer_path(self, diff_id: str) -> pathlib.Path:
        algorithm, hexpart = _split(diff_id)
        return self.layers / algorithm / hexpart

    def has_layer(self, diff_id: str) -> bool:
        return self.layer_path(diff_id).is_dir()

    def layer_info(self, diff_id: str) -> Optional[LayerInfo]:
        path = self.layer_path(diff_id)
        if not path.is_dir():
            return None
        try:
            doc = _read_json(path.with_name(path.name + ".json"))
            size, entries = int(doc["size"]), int(doc["entries"])
        except (OSError, ValueError, KeyError, TypeError):
            size, entries = 0, 0
        return LayerInfo(diff_id=diff_id, path=path, size=size, entries=entries)

    def new_layer_dir(self) -> pathlib.Path:
        """An empty directory (mode 0755, as an image root without a ``./`` entry gets) to
        extract one layer into; pass it to `commit_layer` or `discard`.  The first in a
        process sweeps what killed pulls left (see `sweep_temporaries`)."""
        if self.root not in _swept_temporaries:
            _swept_temporaries.add(self.root)
            self.sweep_temporaries()
        parent = self.temp_dir("layer-")
        path = parent / "rootfs"
        path.mkdir()
        os.chmod(path, 0o755)
        return path

    def commit_layer(self, path: pathlib.Path, diff_id: str, size: int, entries: int) -> pathlib.Path:
        """Rename a verified extracted layer into place as ``layers/<diff_id>/``. Call with
        the layer's lock held; if the layer already exists the new copy is discarded."""
        final = self.layer_path(diff_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._write_json(final.with_name(final.name + ".json"), {"diff_id": diff_id, "size": size, "entries": entries})
        try:
            os.rename(path, final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise StoreError(f"cannot move layer into {final}: {exc.strerror}") from exc
            self.discard(path)
        else:
            self.discard(path)  # the now empty temporary parent
        return final

    def discard(self, path: pathlib.Path) -> None:
        """Remove a temporary made by `temp_dir`/`new_layer_dir` (whatever it holds)."""
        target = path
        while target.parent != self.tmp and target.parent != target:
            target = target.parent
        if target.parent != self.tmp:
            raise StoreError(f"not a store temporary: {path}")
        try:
            remove_tree(target, self.privilege)
        except OSError as exc:
            raise StoreError(f"cannot remove {target}: {exc.strerror}") from exc
        finally:
            _release_temporary(target)

    # -- image and tag records ----------------------------------------------------------------

    def _image_path(self, digest: str) -> pathlib.Path:
        algorithm, hexpart = _split(digest)
        return self.images / algorithm / f"{hexpart}.json"

    def _tag_path(self, reference: str) -> pathlib.Path:
        return self.images / "refs" / f"{name_key(reference)}.json"

    def read_image(self, digest: str) -> Optional[ImageRecord]:
        path = self._image_path(digest)
        try:
            record = ImageRecord.from_json(_read_json(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"corrupt image record {path}: {exc}") from exc
        if record.digest != digest:
            raise StoreError(f"image record {path} names {record.digest}")
        return record

    def write_image(self, record: ImageRecord) -> None:
        self._write_json(self._image_path(record.digest), record.to_json())

    def read_tag(self, reference: str) -> Optional[TagRecord]:
        path = self._tag_path(reference)
        try:
            record = TagRecord.from_json(_read_json(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"corrupt tag record {path}: {exc}") from exc
        return record if record.reference == reference else None

    def tag_image(self, reference: str, digest: str, platforms: Tuple[str, ...], manifest: str) -> TagRecord:
        """Record that ``reference`` points to ``digest`` and that ``manifest`` is its image
        for each of ``platforms``. A moved tag forgets the manifests of its old digest."""
        _check_digest(manifest)
        with self.lock("ref-" + name_key(reference)[:32]):
            old = self.read_tag(reference)
            manifests: Dict[str, str] = {}
            if old is not None and old.digest == digest:
                manifests.update(old.manifests)
            for platform in platforms:
                manifests[platform] = manifest
            record = TagRecord(reference=reference, digest=digest, manifests=manifests, last=platforms[0] if platforms else "")
            self._write_json(self._tag_path(reference), record.to_json())
            return record

    def copy_tag(self, reference: str, source: TagRecord) -> TagRecord:
        """Make ``reference`` point where ``source`` points (every platform it holds):
        `Image.tag`. A tag it replaces is forgotten, as a moved tag is."""
        with self.lock("ref-" + name_key(reference)[:32]):
            record = attrs.evolve(source, reference=reference)
            self._write_json(self._tag_path(reference), record.to_json())
            return record

    def untag(self, reference: str) -> bool:
        with self.lock("ref-" + name_key(reference)[:32]):
            try:
                self._tag_path(reference).unlink()
            except FileNotFoundError:
                return False
            return True

    def tags(self) -> List[TagRecord]:
        records = []
        folder = self.images / "refs"
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                records.append(TagRecord.from_json(_read_json(path)))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise StoreError(f"corrupt tag record {path}: {exc}") from exc
        return sorted(records, key=lambda r: r.reference)

    def records(self) -> List[ImageRecord]:
        """Every image record, tagged or not."""
        records = []
        for folder in sorted(self.images.iterdir()) if self.images.is_dir() else []:
            if folder.name == "refs" or not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.json")):
                record = self.read_image(f"{folder.name}:{path.stem}")
                if record is not None:
                    records.append(record)
        return records

    def layers_present(self, record: ImageRecord) -> bool:
        return all(self.has_layer(d) for d in record.layer_keys)

    def list_images(self) -> List["Image"]:
        """Every tagged image (one per reference and manifest), then the untagged ones.

        (Named so because ``Store.images`` is the records directory.)
        """
        from .image import Image

        records = {r.digest: r for r in self.records()}
        out: List[Image] = []
        tagged: Set[str] = set()
        for tag in self.tags():
            for digest in sorted(set(tag.manifests.values())):
                record = records.get(digest)
                if record is not None:
                    out.append(Image.from_record(record, tag.reference, self))
                    tagged.add(digest)
        out.extend(Image.from_record(r, None, self) for d, r in sorted(records.items()) if d not in tagged)
        return out

    # -- removal and garbage collection ---------------------------------------------------------

    def remove(self, reference: Optional[str] = None, digest: Optional[str] = None) -> Tuple[str, ...]:
        """Remove the tag ``reference``, or every tag of the image with manifest ``digest``
        and its record; then collect what nothing uses any more. Returns the removed
        references (and the digest when given)."""
        with self.collecting():
            removed: List[str] = []
            if reference is not None and self.untag(reference):
                removed.append(reference)
            if digest is not None:
                _check_digest(digest)
                for tag in self.tags():
                    if digest in tag.manifests.values() or tag.digest == digest:
                        if self.untag(tag.reference):
                            removed.append(tag.reference)
                path = self._image_path(digest)
                if path.exists():
                    path.unlink()
                    removed.append(digest)
            if removed:
                self._collect(clear_tmp=False)
            return tuple(removed)

    def prune(self) -> PruneReport:
        """Remove image records no tag points to, layers and blobs no image or container
        uses, crash garbage under ``tmp/`` and stale lock files. Waits for running pulls
        and starting containers. (`isobox.prune` also removes unused named volumes when
        asked.)"""
        with self.collecting():
            return self._collect(clear_tmp=True)

    def _container_layers(self) -> Tuple[Optional[Set[str]], List[str]]:
        """The hex names of layers containers hold (`hold_layers`); None when a record
        cannot be read (then no layer may be removed)."""
        used: Set[str] = set()
        warnings: List[str] = []
        folder = self.containers
        for record in sorted(folder.glob(f"*/{HELD_LAYERS_NAME}")) if folder.is_dir() else []:
            try:
                layers = _read_json(record).get("layers")
                if not isinstance(layers, list):
                    raise ValueError("'layers' is not a list")
            except FileNotFoundError:
                continue
            except (OSError, ValueError, AttributeError) as exc:
                warnings.append(f"cannot read {record} ({exc}): keeping every layer")
                return None, warnings
            for entry in layers:
                text = str(entry)
                if is_digest(text):
                    used.add(text.partition(":")[2])
        return used, warnings

    def _collect(self, *, clear_tmp: bool) -> PruneReport:
        warnings: List[str] = []
        tags = self.tags()
        kept_manifests = {d for t in tags for d in t.manifests.values()}
        removed_images: List[str] = []
        kept: List[ImageRecord] = []
        for record in self.records():
            if record.digest in kept_manifests:
                kept.append(record)
            else:
                self._image_path(record.digest).unlink()
                removed_images.append(record.digest)

        reclaimed = 0
        used_layers = {d.partition(":")[2] for r in kept for d in r.layer_keys}
        container_layers, container_warnings = self._container_layers()
        warnings += container_warnings
        removed_layers: List[str] = []
        if container_layers is not None:
            used_layers |= container_layers
            for algorithm_dir in self.layers.iterdir():
                if not algorithm_dir.is_dir():
                    continue
                for entry in sorted(algorithm_dir.iterdir()):
                    name = entry.name[:-5] if entry.name.endswith(".json") else entry.name
                    if name in used_layers:
                        continue
                    if entry.is_dir() and not entry.is_symlink():
                        diff_id = f"{algorithm_dir.name}:{name}"
                        info = self.layer_info(diff_id) if is_digest(diff_id) else None
                        reclaimed += info.size if info else 0
                        removed_layers.append(diff_id)
                    remove_tree(entry, self.privilege)

        used_blobs = ({t.digest for t in tags} | kept_manifests | {r.config_digest for r in kept}
                      | {layer.digest for r in kept for layer in r.layers})
        removed_blobs = 0
        for algorithm_dir in self.blobs.iterdir():
            if not algorithm_dir.is_dir():
                continue
            for entry in algorithm_dir.iterdir():
                if f"{algorithm_dir.name}:{entry.name}" not in used_blobs:
                    with contextlib.suppress(OSError):
                        reclaimed += entry.lstat().st_size
                    remove_tree(entry, self.privilege)
                    removed_blobs += 1

        temporaries = 0
        if clear_tmp:
            for entry in self.tmp.iterdir():
                reclaimed += tree_size(entry) if entry.is_dir() else entry.lstat().st_size
                remove_tree(entry, self.privilege)
                temporaries += 1
            for entry in self.locks.iterdir():
                if entry.name.startswith(_ITEM_LOCK_PREFIXES):
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
        return PruneReport(
            images=tuple(removed_images),
            layers=tuple(sorted(removed_layers)),
            blobs=removed_blobs,
            temporaries=temporaries,
            reclaimed=reclaimed,
            warnings=tuple(warnings),
        )
