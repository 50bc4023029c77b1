"""What registries serve, parsed once: media types, content descriptors, manifests and
indexes, and which of an index's manifests a platform runs.

Every document is hostile until checked here: a manifest or index must be JSON of
schemaVersion 2 whose kind its body and its ``Content-Type`` agree on (one that is both an
index and a manifest is refused: CVE-2021-41190), descriptors carry a digest isobox can
verify (`check_digest`) and a non-negative size, and an image's config and layers must be
media types isobox runs. Docker's schema 1 is refused with `UnsupportedManifest`, naming it.

The platform is chosen from an index as containerd chooses it (`Platform.best`:
attestation entries, ``unknown/unknown``, never match); a single-platform image's config
says its platform (`config_platform`). Pure: no I/O; `isobox.images.registry` fetches the
bytes, and the store keeps them.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import attrs

from . import ociconfig
from ..errors import (
    InvalidImage,
    InvalidOption,
    NotFound,
    RegistryError,
    UnsupportedManifest,
)
from .digest import names_unknown_algorithm, problem as digest_problem
from .platform import Platform

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)
#: Layer media types isobox applies (OCI image-spec and Docker schema 2): what
#: `isobox.images.unpack.apply_layer` accepts.
LAYER_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)
# Most preferred first; schema1 last and only so that we can name it when a registry has
# nothing else (it is refused with UnsupportedManifest).
ACCEPT = ", ".join(
    [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST, DOCKER_SCHEMA1_SIGNED,
     DOCKER_SCHEMA1]
)

MAX_MANIFEST_SIZE = 4 * 1024 * 1024  # containerd's and distribution's limit
MAX_CONFIG_SIZE = 8 * 1024 * 1024
MAX_INDEX_DEPTH = 3


def check_digest(value: object, what: str = "digest") -> str:
    """``value`` if it is a digest isobox can verify (`isobox.images.digest`); else
    UnsupportedManifest for an algorithm isobox cannot verify, RegistryError otherwise."""
    reason = digest_problem(value)
    if reason is None:
        return value  # type: ignore[return-value]  # a str: problem() said so
    if isinstance(value, str) and names_unknown_algorithm(value):
        raise UnsupportedManifest(f"{what}: {reason}")
    raise RegistryError(f"{what}: {reason}")


def _check_str(name: str) -> Callable[[Any, Any, Any], None]:
    def check(_: Any, __: Any, value: Any) -> None:
        if not isinstance(value, str) or not value:
            raise RegistryError(f"descriptor {name} must be a non-empty string: {value!r}")

    return check


def _check_size(_: Any, __: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RegistryError(f"descriptor size must be a non-negative integer: {value!r}")


def _check_digest_field(_: Any, __: Any, value: Any) -> None:
    check_digest(value, "descriptor digest")


def _freeze_annotations(value: Any) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise RegistryError("descriptor annotations must map strings to strings")
    return dict(value)


def _freeze_urls(value: Any) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not all(isinstance(u, str) for u in value):
        raise RegistryError("descriptor urls must be a list of strings")
    return tuple(value)


@attrs.frozen
class Descriptor:
    """A pointer to content: what it is, its digest and size (OCI content descriptor)."""

    media_type: str = attrs.field(validator=_check_str("mediaType"))
    digest: str = attrs.field(validator=_check_digest_field)
    size: int = attrs.field(validator=_check_size)
    urls: Tuple[str, ...] = attrs.field(default=(), converter=_freeze_urls)
    annotations: Mapping[str, str] = attrs.field(
        factory=dict, converter=_freeze_annotations, hash=False
    )
    platform: Optional[Platform] = None

    @classmethod
    def from_oci(cls, doc: Any) -> "Descriptor":
        if not isinstance(doc, Mapping):
            raise RegistryError(f"descriptor must be a JSON object, not {type(doc).__name__}")
        platform = None
        if doc.get("platform") is not None:
            try:
                platform = Platform.from_oci(doc["platform"])
            except InvalidOption as exc:
                raise RegistryError(f"descriptor has an invalid platform: {exc}") from exc
        return cls(
            media_type=doc.get("mediaType"),  # type: ignore[arg-type]  # validated
            digest=doc.get("digest"),  # type: ignore[arg-type]
            size=doc.get("size"),  # type: ignore[arg-type]
            urls=doc.get("urls"),
            annotations=doc.get("annotations"),
            platform=platform,
        )

    def to_oci(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.urls:
            doc["urls"] = list(self.urls)
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        if self.platform is not None:
            doc["platform"] = self.platform.to_oci()
        return doc


def load_json_object(raw: bytes, what: str) -> Dict[str, Any]:
    """A registry's JSON document (a manifest, an index, a token response) that must be
    an object; RegistryError naming ``what`` otherwise."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RegistryError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise RegistryError(f"{what} must be a JSON object")
    return doc


def _load_schema2(raw: bytes, kind: str, digest: str) -> Dict[str, Any]:
    """A manifest or index document: JSON, schemaVersion 2 (schema 1 is refused)."""
    doc = load_json_object(raw, kind)
    if doc.get("schemaVersion") != 2:
        raise UnsupportedManifest(f"{kind} {digest} has schemaVersion {doc.get('schemaVersion')!r}, not 2")
    return doc


@attrs.frozen
class Manifest:
    """One image's manifest: its config and layers, with the exact bytes it was hashed from."""

    digest: str
    media_type: str
    raw: bytes = attrs.field(repr=False)
    config: Descriptor
    layers: Tuple[Descriptor, ...]

    @classmethod
    def from_bytes(cls, raw: bytes, media_type: str, digest: str) -> "Manifest":
        doc = _load_schema2(raw, "manifest", digest)
        if "manifests" in doc:
            raise RegistryError(f"manifest {digest} has a 'manifests' field (an index?)")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise RegistryError(f"manifest {digest} has no layers list")
        return cls(
            digest=digest,
            media_type=media_type,
            raw=raw,
            config=Descriptor.from_oci(doc.get("config")),
            layers=tuple(Descriptor.from_oci(layer) for layer in layers),
        )


@attrs.frozen
class Index:
    """A multi-platform image index (OCI index or Docker manifest list)."""

    digest: str
    media_type: str
    raw: bytes = attrs.field(repr=False)
    manifests: Tuple[Descriptor, ...]

    @classmethod
    def from_bytes(cls, raw: bytes, media_type: str, digest: str) -> "Index":
        doc = _load_schema2(raw, "index", digest)
        if "config" in doc or "layers" in doc:
            raise RegistryError(f"index {digest} has 'config' or 'layers' (a manifest?)")
        manifests = doc.get("manifests")
        if not isinstance(manifests, list):
            raise RegistryError(f"index {digest} has no manifests list")
        return cls(
            digest=digest,
            media_type=media_type,
            raw=raw,
            manifests=tuple(Descriptor.from_oci(m) for m in manifests),
        )

    def platforms(self) -> List[str]:
        """The runnable platforms listed, for messages (attestations left out)."""
        names = []
        for d in self.manifests:
            if d.platform is None:
                names.append(f"(no platform: {d.digest[:19]})")
            elif d.platform.os != "unknown":
                names.append(str(d.platform))
        return names


def classify(raw: bytes, content_type: str, ref: object) -> str:
    """The media type of a manifest or index, from its body and ``Content-Type``, refusing
    schema1 and ambiguous documents (an index that is also a manifest: CVE-2021-41190).
    ``ref`` names where it came from in messages."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RegistryError(f"{ref}: manifest is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise RegistryError(f"{ref}: manifest must be a JSON object")
    body_type = doc.get("mediaType")
    if doc.get("schemaVersion") == 1 or content_type in SCHEMA1_TYPES or body_type in SCHEMA1_TYPES:
        raise UnsupportedManifest(
            f"{ref} is a Docker image manifest v2 schema 1, a format deprecated since 2017 "
            "that isobox does not pull; push the image again with a current tool "
            "(docker, podman, skopeo) to convert it"
        )
    if body_type is not None and not isinstance(body_type, str):
        raise RegistryError(f"{ref}: manifest mediaType must be a string")
    known = INDEX_TYPES | MANIFEST_TYPES
    if body_type and content_type in known and body_type != content_type:
        raise RegistryError(
            f"{ref}: manifest says it is {body_type!r} but was served as {content_type!r}"
        )
    media_type = body_type or (content_type if content_type in known else None)
    if media_type is None:
        if "manifests" in doc:
            media_type = OCI_INDEX
        elif "config" in doc:
            media_type = OCI_MANIFEST
        else:
            raise UnsupportedManifest(f"{ref}: cannot tell what kind of manifest this is")
    if media_type not in known:
        raise UnsupportedManifest(f"{ref}: unsupported manifest media type {media_type!r}")
    if media_type in INDEX_TYPES and ("config" in doc or "layers" in doc):
        raise RegistryError(f"{ref}: index also has 'config' or 'layers'")
    if media_type in MANIFEST_TYPES and "manifests" in doc:
        raise RegistryError(f"{ref}: manifest also has 'manifests'")
    return media_type


def choose(index: Index, wanted: Platform, ref: object) -> Descriptor:
    """The entry of ``index`` that ``wanted`` runs (containerd's choice, `Platform.best`):
    NotFound naming the platforms the index has when none matches, UnsupportedManifest
    when the entry is not a manifest or an index."""
    choice = wanted.best([d.platform for d in index.manifests])
    if choice is None:
        available = ", ".join(index.platforms()) or "none"
        raise NotFound(f"{ref} has no image for platform {wanted}; available: {available}")
    desc = index.manifests[choice]
    if desc.media_type not in INDEX_TYPES | MANIFEST_TYPES:
        raise UnsupportedManifest(
            f"{ref}: the entry for {desc.platform or wanted} is {desc.media_type!r}, not an "
            "image manifest"
        )
    return desc


def check_runnable(manifest: Manifest, ref: object) -> None:
    """Refuse what is no container image isobox can run: a config of another media type
    (an OCI artifact), a layer isobox cannot unpack, a config over `MAX_CONFIG_SIZE`."""
    if manifest.config.media_type not in CONFIG_TYPES:
        raise UnsupportedManifest(
            f"{ref} is not a container image: its config is {manifest.config.media_type!r}"
            " (an OCI artifact?)"
        )
    for layer in manifest.layers:
        if layer.media_type not in LAYER_MEDIA_TYPES:
            raise UnsupportedManifest(
                f"{ref}: layer {layer.digest} has media type {layer.media_type!r}, which "
                "isobox cannot unpack"
            )
    if manifest.config.size > MAX_CONFIG_SIZE:
        raise RegistryError(
            f"{ref}: image config is {manifest.config.size} bytes, more than the "
            f"{MAX_CONFIG_SIZE} allowed"
        )


def config_platform(config: bytes, where: str) -> Optional[Platform]:
    """The platform an image config names (None without os and architecture), from the
    document as Docker decodes it: a config Docker refuses is InvalidImage here, before
    any layer is fetched."""
    doc = ociconfig.load(config, where)
    if not doc.get("os") or not doc.get("architecture"):
        return None
    try:
        return Platform.from_oci(doc)
    except InvalidOption as exc:
        raise InvalidImage(f"{where}: invalid platform: {exc}") from exc


__all__ = [
    "ACCEPT",
    "CONFIG_TYPES",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "Descriptor",
    "INDEX_TYPES",
    "Index",
    "LAYER_MEDIA_TYPES",
    "MANIFEST_TYPES",
    "Manifest",
    "load_json_object",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "check_digest",
    "check_runnable",
    "choose",
    "classify",
    "config_platform",
]
