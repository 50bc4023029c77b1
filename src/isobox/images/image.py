"""`Image`: an image's configuration and its layers, ready to run.

Images come from a registry (`Image.pull`, see registry.py and store.py), from an archive
(`Image.load`, archive.py), or from a local
directory (`Image.from_directory`), which is how tests build root filesystems.

Pulling, in order: the reference's current digest is compared with the store's tag record
(one HEAD request: how each registry wants to be asked is remembered in the store's
``registries.json``; none offline or for a digest already stored); otherwise the registry
resolves it to one platform's manifest and config; every layer not yet in the store is
streamed, several at once, socket -> digest -> decompressor -> tar -> a temporary
directory, which is renamed to ``layers/<diff_id>/`` once the blob digest and the diff_id
the config announces both check out; the manifest, config and records are written last.
The registry client (and with it ``requests``) is imported only when a pull needs it.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import threading
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
)

import attrs

from ..errors import (
    DigestMismatch,
    ImageNotFound,
    InvalidImage,
    InvalidOption,
    IsoboxError,
)
from ..host.privilege import Privilege
from .digest import chain_ids, check, matches
from .platform import Platform
from .reference import Reference
from .store import ImageRecord, LayerRecord, PathLike, Store

if TYPE_CHECKING:
    from .manifest import Descriptor
    from .registry import RegistryClient, ResolvedImage

ProgressCallback = Callable[[str, int, int], None]
"""``progress(layer_digest, bytes_done, bytes_total)``, called from the pulling threads
(one per layer at a time); a layer already in the store is reported once as complete."""

MAX_PARALLEL_LAYERS = 4
# Under the store root: what each registry's GET /v2/ answered (http.EndpointMemory),
# so that a cached re-pull in a new process is one HEAD request. Not garbage: prune keeps
# it; removing it costs one ping per registry.
REGISTRIES_FILE = "registries.json"


def _str_tuple(value: Any) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidOption(f"expected a list of strings, got {value!r}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise InvalidOption(f"expected a list of strings, got {item!r} in it")
    return items


def _opt_str_tuple(value: Any) -> Optional[Tuple[str, ...]]:
    return None if value is None else _str_tuple(value)


def _labels(value: Any) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidOption(f"labels must map strings to strings, got {value!r}")
    return dict(value)


def _optional_str(_: Any, attribute: "attrs.Attribute[Any]", value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidOption(f"{attribute.name} must be a string, got {value!r}")


def _str(_: Any, attribute: "attrs.Attribute[Any]", value: Any) -> None:
    if not isinstance(value, str):
        raise InvalidOption(f"{attribute.name} must be a string, got {value!r}")


@attrs.frozen
class ImageConfig:
    """The part of an OCI image config that says how to run it.

    ``cmd``/``entrypoint`` are None when the image does not set them (Docker distinguishes
    an unset Cmd from an empty one). ``stop_signal`` is the image's text, as Docker keeps
    it; `stop_signum` is the signal to send. ``source`` names the config in messages
    ("config sha256:... of busybox"); it is not part of the value.
    """

    env: Tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    cmd: Optional[Tuple[str, ...]] = attrs.field(default=None, converter=_opt_str_tuple)
    entrypoint: Optional[Tuple[str, ...]] = attrs.field(default=None, converter=_opt_str_tuple)
    working_dir: str = attrs.field(default="", validator=_str)
    user: str = attrs.field(default="", validator=_str)
    exposed_ports: Tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_labels, hash=False)
    stop_signal: Optional[str] = attrs.field(default=None, validator=_optional_str)
    source: str = attrs.field(default="image config", eq=False, repr=False, validator=_str)

    @classmethod
    def from_oci(cls, doc: Any, *, source: str = "image config") -> "ImageConfig":
        """From the ``config`` object of an OCI/Docker image configuration document (or
        None), decoded as Docker decodes it (see `isobox.images.ociconfig`): a field of the wrong
        type is InvalidImage naming ``source`` and the field."""
        from . import ociconfig

        section = ociconfig.decode(ociconfig.CONFIG, doc, source, "config") or {}
        return cls(
            env=section.get("Env") or (),
            cmd=section.get("Cmd"),
            entrypoint=section.get("Entrypoint"),
            working_dir=section.get("WorkingDir", ""),
            user=section.get("User", ""),
            exposed_ports=sorted(section.get("ExposedPorts") or {}),
            labels=section.get("Labels") or {},
            stop_signal=section.get("StopSignal") or None,
            source=source,
        )

    @property
    def stop_signum(self) -> int:
        """The signal that stops a container of this image: its StopSignal, else SIGTERM
        (Docker's default, used only when the image sets none).

        InvalidImage when StopSignal names no signal. Docker accepts such an image at pull
        and at create (moby validates only the caller's StopSignal, before merging the
        image's), then cannot send it: every ``docker stop`` logs "invalid signal" and
        kills with SIGKILL after 2 s, and ``docker kill -s`` fails. Podman refuses to
        create the container (ParseSignalNameOrNumber, 1..64). isobox does as podman:
        containers read this property when they are created, so a bogus StopSignal fails
        there, once, and `Container.stop` always has a real signal.
        """
        import signal

        if not self.stop_signal:
            return int(signal.SIGTERM)
        from .ociconfig import parse_signal

        number = parse_signal(self.stop_signal)
        if number is None:
            shown = self.stop_signal if len(self.stop_signal) <= 60 else self.stop_signal[:60] + "..."
            raise InvalidImage(
                f"{self.source}: StopSignal {shown!r} is not a signal (a name such as SIGTERM, "
                "or a number from 1 to 64)"
            )
        return number

    def to_oci(self) -> Mapping[str, Any]:
        doc: dict[str, Any] = {}
        if self.env:
            doc["Env"] = list(self.env)
        if self.cmd is not None:
            doc["Cmd"] = list(self.cmd)
        if self.entrypoint is not None:
            doc["Entrypoint"] = list(self.entrypoint)
        if self.working_dir:
            doc["WorkingDir"] = self.working_dir
        if self.user:
            doc["User"] = self.user
        if self.exposed_ports:
            doc["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.labels:
            doc["Labels"] = dict(self.labels)
        if self.stop_signal:
            doc["StopSignal"] = self.stop_signal
        return doc


def _layers(value: Any) -> Tuple[pathlib.Path, ...]:
    return tuple(pathlib.Path(p) for p in value)


@attrs.frozen(repr=False)
class Image:
    """A runnable image: its config and its layer directories, lowest layer first.

    ``digest`` is the platform's manifest digest; ``id`` Docker's image ID, the config's
    digest (what ``docker images`` and ``docker inspect`` show); ``created`` the config's
    RFC 3339 time. The three are None for an image made from a directory.
    """

    config: ImageConfig = attrs.field(factory=ImageConfig)
    layers: Tuple[pathlib.Path, ...] = attrs.field(default=(), converter=_layers)
    reference: Optional[str] = None
    digest: Optional[str] = None
    platform: Optional[str] = None
    size: int = 0
    id: Optional[str] = None
    created: Optional[str] = None
    # The store the image is recorded in (None: made from a directory): where `tag`,
    # `push` and `save` find its record and blobs.
    store_root: Optional[pathlib.Path] = attrs.field(default=None, eq=False, repr=False)

    def __repr__(self) -> str:
        parts = [_shown_reference(self.reference)]
        if self.id or self.digest:
            parts.append(_short_digest(self.id or self.digest or ""))
        if self.platform:
            parts.append(self.platform)
        if self.id or self.size:
            parts.append(_size_text(self.size))
        return "<Image " + " ".join(_printable(p) for p in parts) + ">"

    def _repr_html_(self) -> str:
        """A small table for notebooks. Every value comes from the image (a registry's
        data), so everything is escaped."""
        import html

        command = list(self.config.entrypoint or ()) + list(self.config.cmd or ())
        rows = [
            ("Reference", self.reference or ""),
            ("ID", self.id or ""),
            ("Digest", self.digest or ""),
            ("Platform", self.platform or ""),
            ("Size", _size_text(self.size) if self.id or self.size else ""),
            ("Created", self.created or ""),
            ("Command", json.dumps(command) if command else ""),
        ]
        body = "".join(
            f"<tr><th style=\"text-align:left\">{html.escape(k)}</th>"
            f"<td><code>{html.escape(v)}</code></td></tr>"
            for k, v in rows if v
        )
        return f"<table><caption>isobox.Image</caption>{body}</table>"

    @classmethod
    def from_directory(
        cls, path: Union[str, "os.PathLike[str]"], config: Optional[ImageConfig] = None
    ) -> "Image":
        """A local root filesystem as a one-layer image, used in place (never copied or
        written: containers write to their own upper directory)."""
        root = pathlib.Path(path).absolute()
        if not root.is_dir():
            raise InvalidOption(f"not a directory: {root}")
        return cls(config=config or ImageConfig(), layers=(root,), reference=str(root))

    @classmethod
    def from_record(cls, record: ImageRecord, reference: Optional[str], store: Store) -> "Image":
        """The image a store record describes (its layers as the store's directories)."""
        source = f"config {record.config_digest} of {reference or record.digest}"
        created = record.config.get("created")
        return cls(
            config=ImageConfig.from_oci(record.config.get("config"), source=source),
            layers=[store.layer_path(d) for d in _unique_top(record.layer_keys)],
            reference=reference,
            digest=record.digest,
            platform=record.platform,
            size=record.size,
            id=record.config_digest,
            created=created if isinstance(created, str) else None,
            store_root=store.root,
        )

    @classmethod
    def pull(
        cls,
        ref: Union[str, Reference],
        *,
        if_missing: bool = False,
        platform: Union[None, str, Platform] = None,
        auth: Any = None,
        progress: Optional[ProgressCallback] = None,
        on_pull: Optional[Callable[[], None]] = None,
        offline: bool = False,
        store: Union[None, Store, PathLike] = None,
    ) -> "Image":
        """Pull ``ref`` (``"busybox"``, ``"ghcr.io/o/r:tag"``, ``"x@sha256:..."``) for
        ``platform`` (default: this host's) into the store and return it.

        A tag already stored costs one HEAD request when it still points to the same
        digest; a stored digest reference, or ``offline=True``, costs none (offline and
        not stored: `ImageNotFound`). ``if_missing=True`` returns the image `get` finds
        (by tag or digest; without ``platform``, the platform pulled last when this
        host's was not) without any request, and pulls only when there is none: what
        `isobox.run`, the pytest fixture and ``isobox run`` do, as ``docker run`` pulls
        once. ``on_pull`` is called before the registry is first asked (so never when
        the store answers), e.g. to say that a pull starts.

        ``auth`` is a `Credentials` or ``(user, password)``; by default credentials are
        looked up as Docker does. Layers shared with images already stored are not
        fetched again; concurrent pulls (threads or processes) fetch each layer once.
        ``.digest`` of the result is the platform's manifest digest.
        """
        reference = _parse_reference(ref)
        wanted = _parse_platform(platform)
        store = Store.open(store)
        if if_missing:
            found = _lookup(store, reference, wanted, fallback=platform is None)
            if found is not None:
                return found
        with store.in_use():
            cached = _lookup(store, reference, wanted, fallback=False)
            if cached is not None and (offline or reference.digest is not None):
                return cached
            if offline:
                raise ImageNotFound(f"{reference} ({wanted}) is not in the store and offline=True")
            if on_pull is not None:
                on_pull()
            from .http import EndpointMemory
            from .registry import RegistryClient

            memory = EndpointMemory(store.root / REGISTRIES_FILE, store.write_file)
            with RegistryClient(credentials=auth, memory=memory) as client:
                if cached is not None:
                    tag = store.read_tag(str(reference))
                    current = client.head_manifest(reference)
                    if tag is not None and current is not None and current == tag.digest:
                        return cached
                resolved = client.resolve(reference, wanted)
                return _install(store, client, reference, wanted, resolved, progress)

    @classmethod
    def get(
        cls,
        ref: Union[str, Reference],
        *,
        platform: Union[None, str, Platform] = None,
        store: Union[None, Store, PathLike] = None,
    ) -> "Image":
        """The stored image for ``ref``, without network; `ImageNotFound` if not pulled.

        Without ``platform``: this host's platform if it was pulled, else the platform
        pulled most recently for ``ref`` (as ``docker run`` uses what ``docker pull
        --platform`` fetched).
        """
        reference = _parse_reference(ref)
        store = Store.open(store)
        found = _lookup(store, reference, _parse_platform(platform), fallback=platform is None)
        if found is None:
            raise ImageNotFound(f"{reference} is not in the store {store.root}: pull it first")
        return found

    @classmethod
    def list(cls, store: Union[None, Store, PathLike] = None) -> List["Image"]:
        """Every stored image: one per tag and platform, then untagged ones."""
        return Store.open(store).list_images()

    def _store(self, store: Union[None, Store, PathLike], what: str) -> Store:
        if self.digest is None:
            raise InvalidOption(f"{what}: {self.reference or 'this image'} is a directory, not an "
                                "image in a store")
        return Store.open(store if store is not None else self.store_root)

    @classmethod
    def build(
        cls,
        context: PathLike,
        *,
        dockerfile: str = "Dockerfile",
        tag: Union[None, str, Sequence[str]] = None,
        build_args: Optional[Mapping[str, str]] = None,
        target: Optional[str] = None,
        platform: Optional[str] = None,
        network: str = "none",
        no_cache: bool = False,
        pull: bool = False,
        labels: Optional[Mapping[str, str]] = None,
        progress: Optional[Callable[[str], None]] = None,
        compression: str = "gzip",
        store: Union[None, Store, PathLike] = None,
    ) -> "Image":
        """Build the image ``dockerfile`` (relative to ``context``) describes (``docker
        build``), tag it ``tag`` (one name or several) and return it. ``build_args`` are
        ``--build-arg``s, ``target`` the stage to build (default the last), ``network``
        the RUN steps' ("none" or "host"), ``no_cache`` builds every step again, ``pull``
        pulls base images even when stored, ``labels`` are added to the result,
        ``progress`` receives a line per step and the steps' output. A step reused from
        the cache says "CACHED". Raises `DockerfileError` (naming the file and line) for
        what cannot be read, `BuildError` for a step that fails. The builder wing does
        the work (`isobox.builder.executor`): this is its public face."""
        from ..builder.executor import build  # the one import upwards, see setup.cfg

        return build(context, dockerfile=dockerfile, tag=tag, build_args=build_args, target=target,
                     platform=platform, network=network, no_cache=no_cache, pull=pull, labels=labels,
                     progress=progress, compression=compression, store=store)

    def tag(self, ref: Union[str, Reference], *, store: Union[None, Store, PathLike] = None) -> "Image":
        """Name this image ``ref`` too (``docker tag``): ``"registry:5000/team/app:1.2"``;
        a name without a tag gets ``latest``. Every platform stored under this image's
        own name goes with it (a multi-platform image stays one); a tag ``ref`` already
        had is moved. Returns the image under its new name."""
        target = _parse_reference(ref)
        if target.digest is not None:
            raise InvalidOption(f"cannot tag an image as {target}: a digest is not a tag")
        store = self._store(store, "tag")
        assert self.digest is not None
        with store.in_use():
            record = store.read_image(self.digest)
            if record is None:
                raise ImageNotFound(f"{self.reference or self.digest} is no longer in the store "
                                    f"{store.root}")
            source = store.read_tag(self.reference) if self.reference else None
            if source is not None and self.digest in source.manifests.values():
                store.copy_tag(str(target), source)
            else:
                store.tag_image(str(target), self.digest, (record.platform,), self.digest)
        return Image.from_record(record, str(target), store)

    def push(
        self,
        ref: Union[None, str, Reference] = None,
        *,
        auth: Any = None,
        progress: Optional[ProgressCallback] = None,
        store: Union[None, Store, PathLike] = None,
    ) -> str:
        """Upload this image to a registry as ``ref`` (default: its own name), with every
        platform stored under its name (a multi-platform image as its index); returns the
        digest the name now points to (the manifest's or index's, as stored: a push of
        a pulled image keeps its digest). Blobs the registry has are skipped, blobs of
        another repository of the same registry are mounted, and an interrupted push,
        run again, uploads only what is missing. ``auth`` as for `pull`."""
        from .push import push_image

        return push_image(self, self._store(store, "push"), ref, auth=auth, progress=progress)

    def save(
        self,
        path: PathLike,
        format: str = "oci",  # noqa: A002 - docker-py's and `isobox save`'s name
        *,
        store: Union[None, Store, PathLike] = None,
    ) -> None:
        """Write this image to ``path``: ``"oci"`` (an OCI image layout in a tar, as
        ``podman save --format oci-archive``), ``"oci-dir"`` (the layout as a
        directory) or ``"docker-archive"`` (``docker save``'s tar). `save_images`
        writes several images into one archive; `load` reads all three back."""
        save_images([self], path, format, store=self._store(store, "save"))

    @classmethod
    def load(cls, path: PathLike, *, store: Union[None, Store, PathLike] = None) -> List["Image"]:
        """Every image in the archive or OCI layout directory ``path`` (written by
        `save`, ``docker save``, ``podman save``, ``skopeo copy``), stored under the
        names the archive gives them. Hostile input: every blob is verified, and a
        path that leaves the archive, a link, or an oversized document is refused
        (`InvalidImage` naming the archive and entry) before anything is stored."""
        from .archive import load_archive

        return load_archive(pathlib.Path(path), Store.open(store))

    @classmethod
    def remove(cls, ref: str, *, store: Union[None, Store, PathLike] = None) -> Tuple[str, ...]:
        """Remove a tag (``"busybox"``) or, given an image ID (the config digest, as
        `isobox images` shows it) or a manifest digest, or a unique prefix of its hex
        (``"sha256:3f2a"``, ``"3f2a..."``: at least 12 digits), the image and all its tags; then remove the layers nothing uses any more (layers of containers stay).
        Returns what was removed; `ImageNotFound` if nothing matched."""
        store = Store.open(store)
        digests = _match_digests(store, ref)
        if digests is not None:
            removed = tuple(r for d in digests for r in store.remove(digest=d))
        else:
            removed = store.remove(reference=str(_parse_reference(ref)))
        if not removed:
            raise ImageNotFound(f"no such image: {ref}")
        return removed


def save_images(images: Sequence[Image], path: PathLike, format: str = "oci",  # noqa: A002
                *, store: Union[None, Store, PathLike] = None) -> None:
    """Write ``images`` into one archive at ``path`` (see `Image.save`)."""
    from .archive import save_archive

    if format not in ("oci", "oci-dir", "docker-archive"):
        raise InvalidOption(f"unknown archive format {format!r}: oci, oci-dir or docker-archive")
    if not images:
        raise InvalidOption("no images to save")
    roots = {image.store_root for image in images}
    if store is None and len(roots) == 1:
        store = next(iter(roots))
    save_archive(list(images), pathlib.Path(path), format, Store.open(store))


def _short_digest(digest: str) -> str:
    """``sha256:`` and the first 12 hex digits, as Docker abbreviates IDs."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}" if hexpart else digest[:19]


def _shown_reference(reference: Optional[str]) -> str:
    if not reference:
        return "<none>"
    try:
        return Reference.parse(reference).familiar
    except IsoboxError:
        return reference


def _printable(text: str, limit: int = 80) -> str:
    """Text for a repr: control characters escaped, long text cut."""
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."


def _size_text(size: float) -> str:
    """Decimal units with three significant digits, as Docker's HumanSize."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.3g} {unit}"
        size /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def _unique_top(diff_ids: Sequence[str]) -> List[str]:
    """diff_ids lowest first with repeats removed, keeping each layer's highest position:
    overlayfs takes a directory once, and the highest copy decides everything the lower
    copy could have (same files, same whiteouts)."""
    out: List[str] = []
    for diff_id in reversed(diff_ids):
        if diff_id not in out:
            out.append(diff_id)
    return out[::-1]


def _parse_reference(ref: Union[str, Reference]) -> Reference:
    if isinstance(ref, Reference):
        return ref
    return Reference.parse(ref)


def _parse_platform(platform: Union[None, str, Platform]) -> Platform:
    if platform is None:
        return Platform.host()
    if isinstance(platform, Platform):
        return platform
    return Platform.parse(platform)


_ID_PREFIX = re.compile(r"^(?:sha256:)?([0-9a-f]{12,64})$")


def _match_digests(store: Store, text: str) -> Optional[List[str]]:
    """The manifest digests ``text`` names as an image ID: Docker's ID (the config
    digest, what `isobox images` shows) or a manifest digest, in full or as a unique
    prefix of at least 12 hex digits. An ID names every stored manifest of that config
    (variants differing only in layer compression). None when it names no stored image
    (then it is a name)."""
    match = _ID_PREFIX.match(text)
    if match is None:
        return None
    prefix = "sha256:" + match.group(1)
    named: Dict[str, List[str]] = {}
    for record in store.records():
        for candidate in (record.digest, record.config_digest):
            if candidate.startswith(prefix):
                named.setdefault(candidate, []).append(record.digest)
    if len(named) > 1:
        raise InvalidOption(f"{text} is ambiguous: it matches {', '.join(sorted(named))}")
    if named:
        return sorted(set(next(iter(named.values()))))
    if len(match.group(1)) == 64:
        return [prefix]  # not a name either (Docker refuses 64 hex digits as one): tags only
    return None


def _index_choice(store: Store, digest: str, wanted: Platform) -> Optional[str]:
    """The manifest digest a stored index ``digest`` holds for ``wanted``, chosen as a
    pull chooses it; None when the blob is absent or no such index."""
    raw = store.read_blob(digest)
    if raw is None:
        return None
    from .manifest import OCI_INDEX, Index, choose  # digest references only

    try:
        return choose(Index.from_bytes(raw, OCI_INDEX, digest), wanted, digest).digest
    except IsoboxError:
        return None


def _lookup(store: Store, reference: Reference, wanted: Platform, *, fallback: bool) -> Optional[Image]:
    """The stored image ``reference`` names for ``wanted`` (or, with ``fallback``, for the
    platform last pulled), when its record and every layer are in place."""
    name = str(reference)
    tag = store.read_tag(name)
    digest: Optional[str] = None
    if tag is not None:
        digest = tag.manifests.get(str(wanted))
        if digest is None and fallback:
            digest = tag.manifests.get(tag.last)
    if digest is None and reference.digest is not None:
        # A digest stored under another name: the content is the same, so is the image.
        if store.read_image(reference.digest) is not None:
            digest = reference.digest
        else:
            digest = _index_choice(store, reference.digest, wanted)
        if digest is not None and store.read_image(digest) is not None:
            record = store.read_image(digest)
            assert record is not None
            platform_key = str(wanted)
            store.tag_image(name, reference.digest, (platform_key, record.platform), digest)
    if digest is None:
        return None
    record = store.read_image(digest)
    if record is None or not store.layers_present(record):
        return None
    return Image.from_record(record, name, store)


def _check_config(raw: bytes, manifest_layers: int, where: str) -> Dict[str, Any]:
    """The config document as Docker decodes it (`isobox.images.ociconfig`: InvalidImage for a
    field of the wrong type), with as many well-formed diff_ids as the manifest has
    layers."""
    from . import ociconfig

    doc = ociconfig.load(raw, where)
    diff_ids = doc["rootfs"].get("diff_ids") or []
    if len(diff_ids) != manifest_layers:
        raise DigestMismatch(
            f"{where}: the manifest has {manifest_layers} layers but the config lists "
            f"{len(diff_ids)} diff_ids"
        )
    for diff_id in diff_ids:
        check(diff_id, DigestMismatch, f"{where}: diff_id")
        if not str(diff_id).startswith("sha256:"):
            raise DigestMismatch(f"{where}: diff_id {diff_id} is not sha256")
    doc["rootfs"] = {**doc["rootfs"], "diff_ids": list(diff_ids)}
    ImageConfig.from_oci(doc.get("config"), source=where)
    return doc


class BlobSource(Protocol):
    """Where a pull's or a load's blobs come from: the registry client, or an archive
    (`isobox.images.archive`). ``iter_blob`` streams a blob, verified against ``desc``."""

    def iter_blob(self, ref: Any, desc: "Descriptor", *,
                  progress: Optional[Callable[[int], None]] = None) -> Iterator[bytes]: ...


def _install(
    store: Store,
    client: BlobSource,
    reference: Optional[Reference],
    wanted: Platform,
    resolved: "ResolvedImage",
    progress: Optional[ProgressCallback],
    *,
    source: Optional[str] = None,
    label: Optional[str] = None,
) -> Image:
    """Fetch a resolved image's layers into the store, then write its blobs and records,
    and tag it ``reference`` (None: leave it untagged; ``label`` names it in messages).
    ``source``: the repository to record (default: the reference's)."""
    if label is None:
        label = str(reference)
    manifest = resolved.manifest
    where = f"{label} ({manifest.digest})"
    config_digest = manifest.config.digest
    config_where = f"config {config_digest} of {label}"
    if not matches(resolved.config, config_digest):
        raise DigestMismatch(f"{where}: the config does not hash to {config_digest}")
    doc = _check_config(resolved.config, len(manifest.layers), config_where)
    diff_ids: List[str] = [str(d) for d in doc["rootfs"]["diff_ids"]]

    fetcher = _LayerFetcher(store, client, reference or label, list(manifest.layers), diff_ids,
                            progress)
    fetcher.fetch()

    store.write_blob(manifest.raw, manifest.digest)
    if resolved.index is not None:
        store.write_blob(resolved.index.raw, resolved.index.digest)
    store.write_blob(resolved.config, config_digest)
    keys = fetcher.keys
    record = ImageRecord(
        digest=manifest.digest,
        media_type=manifest.media_type,
        config_digest=config_digest,
        config=doc,
        layers=[
            LayerRecord(digest=desc.digest, diff_id=diff_id, media_type=desc.media_type,
                        size=desc.size, chain_id=None if key == diff_id else key)
            for desc, diff_id, key in zip(manifest.layers, diff_ids, keys)
        ],
        platform=str(resolved.platform),
        size=sum(fetcher.sizes[k] for k in _unique_top(keys)),
        pulled=time.time(),
        source=source if source is not None else reference.repository if reference else "",
    )
    store.write_image(record)
    if reference is None:
        return Image.from_record(record, None, store)
    platforms = tuple(dict.fromkeys((str(wanted), str(resolved.platform))))
    store.tag_image(str(reference), resolved.digest, platforms, manifest.digest)
    return Image.from_record(record, str(reference), store)


def _own(path: pathlib.Path, owners: Sequence[Tuple[str, int, int, Optional[int]]],
         privilege: Privilege) -> None:
    """Rootless, give files their archive owners through the store's id map (the caller's
    subordinate ids, in a user namespace of the native core); with no ranges they stay
    the caller's."""
    from ..host import idmap

    ids = privilege.id_map()
    if ids is not None and ids.helpers:
        idmap.chown_in_userns(str(path), owners, ids)


class _Cancelled(Exception):
    """Raised inside a layer download when another layer of the same pull failed."""


class _NeedsLowers(Exception):
    """Raised when a layer cannot be extracted on its own (see `_LayerFetcher`)."""


def _kept(chunks: Iterable[bytes], path: pathlib.Path) -> Iterator[bytes]:
    """The chunks, also written to ``path`` (the compressed blob, kept for push and save:
    committed only once the stream's digest check at its end passed)."""
    with open(path, "wb") as f:
        write = f.write
        for chunk in chunks:
            write(chunk)
            yield chunk


def _guarded(chunks: Iterable[bytes], cancel: threading.Event) -> Iterator[bytes]:
    for chunk in chunks:
        if cancel.is_set():
            raise _Cancelled()
        yield chunk


class _LayerFetcher:
    """Fetches one image's layers into the store: the orchestrator of a pull's downloads.

    First every missing layer is streamed and extracted on its own, several at once: the
    common case, stored by diff_id and shareable with any image. A layer whose extraction
    needs the layers below it (a hard link to a lower layer's file, an opaque marker at
    the root: `LayerStats.depends_on_lower`), or fails on its own, is then fetched again
    and extracted, in order, on top of its lower layers, and stored by chain ID.
    """

    def __init__(self, store: Store, client: BlobSource, reference: Union[Reference, str],
                 descs: List["Descriptor"], diff_ids: List[str],
                 progress: Optional[ProgressCallback]) -> None:
        self.store = store
        self.client = client
        self.reference = reference
        self.descs = descs
        self.diff_ids = diff_ids
        self.chains = chain_ids(diff_ids)
        self.progress = progress
        self.keys: List[str] = list(diff_ids)  # directory name per position
        self.sizes: Dict[str, int] = {}  # unpacked size per directory name
        self.cancel = threading.Event()

    def fetch(self) -> None:
        import concurrent.futures  # here, not at import: running a cached image needs none

        first: Dict[str, int] = {}  # diff_id -> first position
        for i, diff_id in enumerate(self.diff_ids):
            first.setdefault(diff_id, i)
        dependent: List[int] = []
        if first:
            workers = min(MAX_PARALLEL_LAYERS, len(first))
            with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="isobox-pull") as pool:
                futures = {pool.submit(self._alone, i): i for i in first.values()}
                try:
                    error: Optional[BaseException] = None
                    for future in concurrent.futures.as_completed(futures):
                        exc = future.exception()
                        if isinstance(exc, _NeedsLowers):
                            dependent.append(futures[future])
                        elif exc is not None and not isinstance(exc, _Cancelled) and error is None:
                            error = exc
                            self.cancel.set()
                    if error is not None:
                        raise error
                finally:
                    self.cancel.set()  # also on KeyboardInterrupt: workers stop at their next chunk
            self.cancel.clear()
        # Positions that repeat a dependent diff_id sit on other layers: each needs its own.
        later = [i for i, d in enumerate(self.diff_ids) if first[d] in dependent]
        for i in sorted(later):
            self._on_lowers(i)

    def _report(self, desc: "Descriptor") -> Optional[Callable[[int], None]]:
        callback = self.progress
        if callback is None:
            return None
        return lambda done: callback(desc.digest, done, desc.size)

    def _cached(self, key: str, desc: "Descriptor") -> bool:
        info = self.store.layer_info(key)
        if info is None:
            return False
        self.sizes[key] = info.size
        if self.progress is not None:
            self.progress(desc.digest, desc.size, desc.size)
        return True

    def _alone(self, i: int) -> None:
        """Layer ``i`` extracted by itself (or found in the store)."""
        diff_id, desc = self.diff_ids[i], self.descs[i]
        if i > 0 and self.store.has_layer(self.chains[i]) and not self.store.has_layer(diff_id):
            raise _NeedsLowers()  # stored by chain ID by an earlier pull: known dependent
        with self.store.lock("layer-" + diff_id.partition(":")[2]):
            if self._cached(diff_id, desc):
                return
            self._extract(i, diff_id, ())

    def _on_lowers(self, i: int) -> None:
        """Layer ``i`` extracted on top of the directories of the layers below it."""
        key, desc = self.chains[i], self.descs[i]
        lowers = [self.store.layer_path(k) for k in _unique_top(self.keys[:i])]
        with self.store.lock("layer-" + key.partition(":")[2]):
            if self._cached(key, desc):
                self.keys[i] = key
                return
            self._extract(i, key, lowers)

    def _extract(self, i: int, key: str, lowers: Sequence[pathlib.Path]) -> None:
        """Stream layer ``i`` into a temporary directory; commit it as ``key`` once the blob
        digest (checked by the stream at its end) and the diff_id both hold."""
        from ..errors import LayerError
        from .unpack import apply_layer

        diff_id, desc = self.diff_ids[i], self.descs[i]
        if self.cancel.is_set():
            raise _Cancelled()
        path = self.store.new_layer_dir()
        blob = path.parent / "blob"
        try:
            chunks = _guarded(_kept(self.client.iter_blob(self.reference, desc, progress=self._report(desc)),
                                    blob), self.cancel)
            try:
                stats = apply_layer(chunks, path, media_type=desc.media_type, lower_dirs=lowers,
                                    privilege=self.store.privilege)
            except LayerError:
                if i > 0 and not lowers:
                    raise _NeedsLowers() from None  # maybe a hard link into a lower layer
                raise
            for _ in chunks:
                # Anything apply_layer left unread must still pass the blob digest check,
                # which the stream makes at its end.
                pass
            if stats.diff_id != diff_id:
                raise DigestMismatch(
                    f"{self.reference}: layer {desc.digest} unpacks to {stats.diff_id}, but the "
                    f"image config says {diff_id}"
                )
            if stats.owners:
                _own(path, stats.owners, self.store.privilege)
            if stats.depends_on_lower and i > 0:
                if not lowers:
                    raise _NeedsLowers()
            else:
                key = diff_id  # independent after all: shareable by diff_id
            self.store.commit_blob_file(blob, desc.digest)
            self.store.commit_layer(path, key, stats.size, stats.entries)
        except BaseException:
            self.store.discard(path)
            raise
        self.keys[i] = key
        self.sizes[key] = int(stats.size)
