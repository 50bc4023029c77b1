"""The registry v2 client: auth, manifests, platform selection, verified blob streams.

It speaks the OCI distribution protocol (Docker's registry v2 API) with ``requests``:

- ``GET /v2/`` learns how the registry wants to be authenticated (``WWW-Authenticate``),
  once per endpoint, and once at all when the caller passes an `EndpointMemory` (the
  store's ``registries.json``): later processes reuse the answer, and ping again only when
  a request through it fails. Bearer: one token per repository scope
  (``repository:<path>:pull``) from the challenge's realm, anonymous or with credentials
  (Basic to the token endpoint; the oauth2 POST with a refresh token when ``docker login``
  stored an identity token), reused until its ``expires_in``; a 401 re-authenticates once.
  Basic: the credentials on every request. Credentials given to the client win; otherwise
  they are looked up as Docker does (`isobox.auth.lookup_credentials`), only when a
  registry asks for them.
- The registry is assumed hostile: every manifest is size-capped and hashed against the
  digest it was asked for and the one the registry announces; every blob is read up to its
  declared size and no further, and hashed (sha256/sha384/sha512) before the last chunk is
  handed over. Redirects are followed here, so ``Authorization`` never leaves the registry's
  own origin. Plain HTTP is used only for loopback hosts and ``$ISOBOX_INSECURE_REGISTRIES``.
- Transient failures are retried, bounded: 429 and 5xx with exponential backoff honouring
  ``Retry-After``; a broken or truncated blob download resumes with ``Range``.
- ``$ISOBOX_REGISTRY_MIRROR`` (as Docker's ``registry-mirrors``): Docker Hub references are
  tried at the mirror first, then at Docker Hub.

Every ``requests``/``urllib3`` exception is translated here into isobox's tree, kept as
``__cause__``.
"""

from __future__ import annotations

import base64
import email.utils
import ipaddress
import json
import os
import re
import threading
import time
import urllib.parse
import warnings
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import attrs
import requests
import urllib3

from . import ociconfig
from .credentials import Credentials, lookup_credentials
from .digest import Hasher, compute, has_known_algorithm, matches, problem as digest_problem
from ..errors import (
    AuthenticationError,
    DigestMismatch,
    InvalidImage,
    InvalidOption,
    NotFound,
    RateLimited,
    RegistryError,
    UnsupportedManifest,
)
from .platform import Platform
from .reference import DOCKER_HUB_DOMAIN, Reference
from .unpack import LAYER_MEDIA_TYPES

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
LAYER_TYPES = LAYER_MEDIA_TYPES  # one list: what unpack.apply_layer accepts
# Most preferred first; schema1 last and only so that we can name it when a registry has
# nothing else (it is refused with UnsupportedManifest).
ACCEPT = ", ".join(
    [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST, DOCKER_SCHEMA1_SIGNED,
     DOCKER_SCHEMA1]
)

MAX_MANIFEST_SIZE = 4 * 1024 * 1024  # containerd's and distribution's limit
MAX_CONFIG_SIZE = 8 * 1024 * 1024
MAX_TOKEN_RESPONSE = 1024 * 1024
MAX_ERROR_BODY = 64 * 1024
MAX_REDIRECTS = 5
MAX_INDEX_DEPTH = 3
CHUNK_SIZE = 256 * 1024
MIN_TOKEN_LIFETIME = 60  # seconds; the token spec's default when expires_in is absent

ENV_INSECURE = "ISOBOX_INSECURE_REGISTRIES"
ENV_MIRROR = "ISOBOX_REGISTRY_MIRROR"

_T = TypeVar("_T")


class _TransportError(RegistryError):
    """A request that did not get an answer (refused, reset, timed out): worth a retry."""


# ---------------------------------------------------------------------------------------
# Digests


def check_digest(value: object, what: str = "digest") -> str:
    """``value`` if it is a digest isobox can verify (`isobox.images.digest`); else
    UnsupportedManifest for an algorithm isobox cannot verify, RegistryError otherwise."""
    reason = digest_problem(value)
    if reason is None:
        return value  # type: ignore[return-value]  # a str: problem() said so
    if isinstance(value, str) and not has_known_algorithm(value):
        raise UnsupportedManifest(f"{what}: {reason}")
    raise RegistryError(f"{what}: {reason}")


# ---------------------------------------------------------------------------------------
# Values


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


def _load_json(raw: bytes, what: str) -> Dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RegistryError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise RegistryError(f"{what} must be a JSON object")
    return doc


def _load_schema2(raw: bytes, kind: str, digest: str) -> Dict[str, Any]:
    """A manifest or index document: JSON, schemaVersion 2 (schema 1 is refused)."""
    doc = _load_json(raw, kind)
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


@attrs.frozen
class ResolvedImage:
    """What a reference resolved to for one platform.

    ``digest`` is the digest the reference points to (the index's for a multi-platform
    image), ``manifest`` the chosen platform's manifest, ``config`` its verified config blob
    (fetched anyway to check the platform of single-platform images).
    """

    reference: Reference
    digest: str
    manifest: Manifest
    platform: Platform
    config: bytes = attrs.field(repr=False)
    index: Optional[Index] = None


@attrs.frozen
class RetryPolicy:
    """Bounds on retrying: ``attempts`` tries per request (and consecutive failed resumes of
    one blob), exponential backoff from ``base_delay`` capped at ``max_delay``; a
    ``Retry-After`` longer than ``max_delay`` is not waited for (RateLimited at once)."""

    attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    base_delay: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    max_delay: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    max_resumes: int = attrs.field(default=20, validator=attrs.validators.ge(0))

    def backoff(self, failures: int) -> float:
        return float(min(self.max_delay, self.base_delay * (2 ** max(0, failures - 1))))


# ---------------------------------------------------------------------------------------
# WWW-Authenticate


@attrs.frozen
class Challenge:
    """One ``WWW-Authenticate`` challenge: scheme (lowercased) and its parameters."""

    scheme: str
    params: Mapping[str, str] = attrs.field(factory=dict, hash=False)


_TOKEN_CHARS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_challenges(header: str) -> List[Challenge]:
    """Parse RFC 7235 challenges: ``Bearer realm="...",service="...",scope="..."``.

    Several challenges may share one header (comma separated). Parameter names are
    lowercased; quoted values are unescaped. Malformed text yields what parsed so far.
    """
    challenges: List[Challenge] = []
    pos, n = 0, len(header)

    def skip_ws_commas(p: int) -> int:
        while p < n and header[p] in " \t,":
            p += 1
        return p

    def skip_ws(p: int) -> int:
        while p < n and header[p] in " \t":
            p += 1
        return p

    pos = skip_ws_commas(pos)
    while pos < n:
        m = _TOKEN_CHARS.match(header, pos)
        if m is None:
            break
        scheme = m.group(0).lower()
        pos = m.end()
        params: Dict[str, str] = {}
        while True:
            p = skip_ws_commas(pos)
            m = _TOKEN_CHARS.match(header, p)
            if m is None:
                pos = p
                break
            after = skip_ws(m.end())
            if after >= n or header[after] != "=":
                pos = p  # a token not followed by '=' starts the next challenge
                break
            name = m.group(0).lower()
            q = skip_ws(after + 1)
            if q < n and header[q] == '"':
                value_chars = []
                q += 1
                while q < n and header[q] != '"':
                    if header[q] == "\\" and q + 1 < n:
                        q += 1
                    value_chars.append(header[q])
                    q += 1
                q += 1  # closing quote (or end)
                value = "".join(value_chars)
            else:
                # A token by the RFC; servers also send unquoted URLs, so read to the next
                # comma or space.
                end = q
                while end < n and header[end] not in ", \t":
                    end += 1
                value, q = header[q:end], end
            params.setdefault(name, value)
            pos = q
        challenges.append(Challenge(scheme, params))
        pos = skip_ws_commas(pos)
    return challenges


# ---------------------------------------------------------------------------------------
# Hosts


def _split_host(host: str) -> Tuple[str, Optional[int]]:
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[1:end], host[end + 1 :]
        return name, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        return name, int(port)
    return host, None


def is_loopback(host: str) -> bool:
    name, _ = _split_host(host)
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _parse_insecure(value: Union[None, str, Iterable[str]]) -> Tuple[str, ...]:
    if value is None:
        value = os.environ.get(ENV_INSECURE, "")
    if isinstance(value, str):
        value = value.split(",")
    return tuple(v.strip().lower() for v in value if v and v.strip())


@attrs.frozen
class Endpoint:
    """Where to send a repository's requests: a registry host, how to reach it, and which
    credentials apply there."""

    host: str
    domain: str  # key for credential lookup (docker.io for Docker Hub)
    schemes: Tuple[str, ...]  # tried in order at the first request
    is_mirror: bool = False


# ---------------------------------------------------------------------------------------
# The client


@attrs.define
class _EndpointState:
    base: str  # scheme://host
    verify: Union[bool, str]
    challenge: Optional[Challenge]
    remembered: bool = False  # from EndpointMemory, not from a ping in this process


MAX_REMEMBERED_PARAM = 2048


class EndpointMemory:
    """What each registry's ``GET /v2/`` answered, kept in one small JSON file, so that a
    later process (a re-pull is usually a new one) can skip the ping: a cached re-pull is
    then one HEAD request, plus a token request where a token is needed.

    The file (``registries.json`` under the store root, written through ``write``: the
    store's atomic temp-and-rename) maps ``host[:port]`` to the scheme that answered and
    the challenge (scheme, realm, service), or none for anonymous access. Tokens are never
    written: they are credentials. A stale record costs one failed request: the client
    pings again and rewrites it (see `RegistryClient._call`). Concurrent writers may lose
    each other's update; the loser pings again next time. A malformed file is ignored.
    """

    def __init__(self, path: "os.PathLike[str]", write: Callable[[Any, bytes], None]) -> None:
        self.path = path
        self._write = write
        self._lock = threading.Lock()

    def _read(self) -> Dict[str, Any]:
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read(1024 * 1024))
        except (OSError, ValueError, RecursionError):
            return {}
        registries = doc.get("registries") if isinstance(doc, dict) else None
        return dict(registries) if isinstance(registries, dict) else {}

    def get(self, host: str) -> Optional[Tuple[str, Optional[Challenge]]]:
        """(base URL, challenge) remembered for ``host``, or None."""
        entry = self._read().get(host)
        if not isinstance(entry, dict) or not isinstance(entry.get("base"), str):
            return None
        raw = entry.get("challenge")
        if raw is None:
            return entry["base"], None
        if not isinstance(raw, dict) or raw.get("scheme") not in ("bearer", "basic"):
            return None
        params = raw.get("params")
        if not isinstance(params, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
            return None
        return entry["base"], Challenge(raw["scheme"], dict(params))

    def put(self, host: str, base: str, challenge: Optional[Challenge]) -> None:
        """Remember an answer; writes only when it changed."""
        record: Dict[str, Any] = {"base": base, "challenge": None}
        if challenge is not None:
            params = {k: v for k, v in challenge.params.items()
                      if k in ("realm", "service") and len(v) <= MAX_REMEMBERED_PARAM}
            record["challenge"] = {"scheme": challenge.scheme, "params": params}
        with self._lock:
            registries = self._read()
            if registries.get(host) == record:
                return
            registries[host] = record
            data = json.dumps({"registries": registries}, indent=1, sort_keys=True).encode()
            try:
                self._write(self.path, data)
            except Exception:  # noqa: BLE001 - a cache: failing to write it changes nothing
                pass


class RegistryClient:
    """A registry v2 client for pulling; safe to share between threads.

    ``credentials`` (a `Credentials` or ``(username, password)``) apply to the references'
    own registries; a mirror uses what Docker's config holds for the mirror's host, so
    Docker Hub credentials never go to a mirror. ``insecure`` (hosts, default
    ``$ISOBOX_INSECURE_REGISTRIES``) may be reached over plain HTTP (after HTTPS failed);
    loopback hosts always may. ``mirror`` (a URL, default ``$ISOBOX_REGISTRY_MIRROR``,
    ``""`` for none) is tried first for Docker Hub references. ``memory`` remembers what
    each registry's ``GET /v2/`` answered across processes (`EndpointMemory`).
    """

    def __init__(
        self,
        credentials: Any = None,
        *,
        insecure: Union[None, str, Iterable[str]] = None,
        mirror: Optional[str] = None,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        memory: Optional[EndpointMemory] = None,
    ) -> None:
        self._memory = memory
        self._credentials: Optional[Credentials] = Credentials.coerce(credentials)
        self._insecure = _parse_insecure(insecure)
        self._mirror = self._parse_mirror(os.environ.get(ENV_MIRROR) if mirror is None else mirror)
        self._timeout = timeout
        self.retry = retry
        self._session = requests.Session()
        # No netrc, no environment-wide auth: Authorization is ours alone. Proxies and CA
        # bundles from the environment are applied per request (see _request_once).
        self._session.trust_env = False
        self._lock = threading.Lock()
        self._states: Dict[str, _EndpointState] = {}
        self._tokens: Dict[Tuple[str, str, Tuple[str, ...]], Tuple[str, float]] = {}
        self._found_credentials: Dict[str, Optional[Credentials]] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- configuration --------------------------------------------------------------------

    def _allowed_plain(self, host: str) -> bool:
        host = host.lower()
        name, _ = _split_host(host)
        return is_loopback(host) or host in self._insecure or name in self._insecure

    def _parse_mirror(self, mirror: Optional[str]) -> Optional[Endpoint]:
        if not mirror:
            return None
        text = mirror.strip()
        if "://" not in text:
            text = "https://" + text
        url = urllib.parse.urlsplit(text)
        if url.scheme not in ("http", "https") or not url.netloc or url.path not in ("", "/"):
            raise InvalidOption(
                f"registry mirror must be a URL like https://mirror.example:5000, not {mirror!r}"
            )
        if url.username or url.password or url.query or url.fragment:
            raise InvalidOption(f"registry mirror URL must be scheme://host[:port]: {mirror!r}")
        host = url.netloc
        if url.scheme == "http" and not self._allowed_plain(host):
            raise InvalidOption(
                f"registry mirror {mirror!r} uses plain HTTP: list {host} in ${ENV_INSECURE} "
                "to allow it (only loopback hosts are allowed by default)"
            )
        return Endpoint(host=host, domain=host, schemes=(url.scheme,), is_mirror=True)

    def endpoints(self, ref: Union[Reference, str]) -> List[Endpoint]:
        """Where ``ref``'s content is looked for, in order (a mirror first for Docker Hub)."""
        ref = _as_reference(ref)
        out = []
        if ref.is_docker_hub and self._mirror is not None:
            out.append(self._mirror)
        host = ref.api_host
        schemes = ("https", "http") if self._allowed_plain(host) else ("https",)
        out.append(Endpoint(host=host, domain=ref.domain, schemes=schemes))
        return out

    def _credentials_for(self, ep: Endpoint) -> Optional[Credentials]:
        if self._credentials is not None and not ep.is_mirror:
            return self._credentials
        with self._lock:
            if ep.domain in self._found_credentials:
                return self._found_credentials[ep.domain]
        found = lookup_credentials(ep.domain)
        with self._lock:
            self._found_credentials[ep.domain] = found
        return found

    # -- public API -----------------------------------------------------------------------

    def head_manifest(self, ref: Union[Reference, str]) -> Optional[str]:
        """The digest ``ref`` points to now (one HEAD request; Docker Hub does not count
        it against the pull rate limit); None when the registry does not say. A digest
        reference is answered without asking."""
        ref = _as_reference(ref)
        if ref.digest is not None:
            return ref.digest

        def attempt(ep: Endpoint) -> Optional[str]:
            url_path = f"/v2/{ref.path}/manifests/{ref.tag or 'latest'}"
            resp = self._call(ep, ref, "HEAD", url_path, {"Accept": ACCEPT})
            with resp:
                self._raise_for_status(resp, ref, "manifest")
                digest = resp.headers.get("Docker-Content-Digest")
            return check_digest(digest, "Docker-Content-Digest") if digest else None

        return self._each_endpoint(ref, attempt)

    def resolve(
        self, ref: Union[Reference, str], platform: Optional[Platform] = None
    ) -> ResolvedImage:
        """Find the manifest ``ref`` names for ``platform`` (default: this host's),
        verified, with its config."""
        ref = _as_reference(ref)
        wanted = platform if platform is not None else Platform.host()
        return self._each_endpoint(ref, lambda ep: self._resolve_at(ep, ref, wanted))

    def fetch_blob(
        self, ref: Union[Reference, str], desc: Descriptor, max_size: int = MAX_CONFIG_SIZE
    ) -> bytes:
        """A small blob (a config), whole and verified."""
        if desc.size > max_size:
            raise RegistryError(
                f"blob {desc.digest} is {desc.size} bytes, more than the {max_size} allowed"
            )
        return b"".join(self.iter_blob(ref, desc))

    def iter_blob(
        self,
        ref: Union[Reference, str],
        desc: Descriptor,
        *,
        progress: Optional[Callable[[int], None]] = None,
    ) -> Iterator[bytes]:
        """Stream a blob, verified: never more than ``desc.size`` bytes are read, and the
        last chunk is handed over only once the whole blob hashed to ``desc.digest``
        (otherwise DigestMismatch). Resumes with Range after a broken connection."""
        ref = _as_reference(ref)
        check_digest(desc.digest)
        if desc.size == 0:
            if not matches(b"", desc.digest):
                raise DigestMismatch(f"blob {desc.digest} is announced empty but is not")
            return
        failures: List[Tuple[Endpoint, RegistryError]] = []
        for ep in self.endpoints(ref):
            started = False
            try:
                for chunk in self._blob_at(ep, ref, desc, progress):
                    started = True
                    yield chunk
                return
            except RegistryError as exc:
                if started:
                    raise
                failures.append((ep, exc))
        raise _tried_everywhere(ref, failures)

    # -- resolution -----------------------------------------------------------------------

    def _each_endpoint(self, ref: Reference, attempt: Callable[[Endpoint], _T]) -> _T:
        """Try each endpoint (mirror, then origin) until one answers. When all fail, the
        error says what each answered (`_tried_everywhere`)."""
        failures: List[Tuple[Endpoint, RegistryError]] = []
        for ep in self.endpoints(ref):
            try:
                return attempt(ep)
            except RegistryError as exc:
                failures.append((ep, exc))
        raise _tried_everywhere(ref, failures)

    def _resolve_at(self, ep: Endpoint, ref: Reference, wanted: Platform) -> ResolvedImage:
        target = ref.digest or ref.tag or "latest"
        raw, media_type, digest = self._get_manifest(ep, ref, target, ref.digest, None)
        top_digest = digest
        index: Optional[Index] = None
        chosen_platform: Optional[Platform] = None
        depth = 0
        while media_type in INDEX_TYPES:
            depth += 1
            if depth > MAX_INDEX_DEPTH:
                raise UnsupportedManifest(f"{ref}: indexes nested more than {MAX_INDEX_DEPTH} deep")
            idx = Index.from_bytes(raw, media_type, digest)
            if index is None:
                index = idx
            choice = wanted.best([d.platform for d in idx.manifests])
            if choice is None:
                available = ", ".join(idx.platforms()) or "none"
                raise NotFound(
                    f"{ref} has no image for platform {wanted}; available: {available}"
                )
            desc = idx.manifests[choice]
            if desc.media_type not in INDEX_TYPES | MANIFEST_TYPES:
                raise UnsupportedManifest(
                    f"{ref}: the entry for {desc.platform or wanted} is "
                    f"{desc.media_type!r}, not an image manifest"
                )
            chosen_platform = desc.platform or chosen_platform
            raw, media_type, digest = self._get_manifest(ep, ref, desc.digest, desc.digest,
                                                         desc.size)
        manifest = Manifest.from_bytes(raw, media_type, digest)
        if manifest.config.media_type not in CONFIG_TYPES:
            raise UnsupportedManifest(
                f"{ref} is not a container image: its config is {manifest.config.media_type!r}"
                " (an OCI artifact?)"
            )
        for layer in manifest.layers:
            if layer.media_type not in LAYER_TYPES:
                raise UnsupportedManifest(
                    f"{ref}: layer {layer.digest} has media type {layer.media_type!r}, which "
                    "isobox cannot unpack"
                )
        if manifest.config.size > MAX_CONFIG_SIZE:
            raise RegistryError(
                f"{ref}: image config is {manifest.config.size} bytes, more than the "
                f"{MAX_CONFIG_SIZE} allowed"
            )
        config = b"".join(self._blob_at(ep, ref, manifest.config, None))
        config_platform = _config_platform(config, f"config {manifest.config.digest} of {ref}")
        if chosen_platform is None:
            if config_platform is not None and not wanted.matches(config_platform):
                raise NotFound(
                    f"{ref} has no image for platform {wanted}; available: {config_platform}"
                )
            chosen_platform = config_platform or wanted
        return ResolvedImage(
            reference=ref,
            digest=top_digest,
            manifest=manifest,
            platform=chosen_platform,
            config=config,
            index=index,
        )

    def _get_manifest(
        self,
        ep: Endpoint,
        ref: Reference,
        target: str,
        expected: Optional[str],
        expected_size: Optional[int],
    ) -> Tuple[bytes, str, str]:
        """GET a manifest by tag or digest: (raw, media type, verified digest)."""
        resp = self._call(ep, ref, "GET", f"/v2/{ref.path}/manifests/{target}",
                          {"Accept": ACCEPT})
        with resp:
            self._raise_for_status(resp, ref, "manifest")
            length = _content_length(resp)
            if length is not None and length > MAX_MANIFEST_SIZE:
                raise RegistryError(
                    f"{ref}: manifest is {length} bytes, more than the "
                    f"{MAX_MANIFEST_SIZE} allowed"
                )
            if expected_size is not None:
                encoded = resp.headers.get("Content-Encoding", "identity").lower() not in (
                    "identity", "")
                if length is not None and not encoded and length != expected_size:
                    raise DigestMismatch(
                        f"{ref}: manifest {expected} is {length} bytes, not the "
                        f"{expected_size} its descriptor says"
                    )
                # One byte past the announced size tells a longer one; never read further.
                raw = self._read_capped(resp, min(expected_size, MAX_MANIFEST_SIZE) + 1, ref)
            else:
                raw = self._read_capped(resp, MAX_MANIFEST_SIZE + 1, ref)
            if len(raw) > MAX_MANIFEST_SIZE:
                raise RegistryError(
                    f"{ref}: manifest is more than the {MAX_MANIFEST_SIZE} bytes allowed"
                )
            header_digest = resp.headers.get("Docker-Content-Digest")
            content_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if expected_size is not None and len(raw) != expected_size:
            got = f"{len(raw)} bytes" if len(raw) <= expected_size else "longer"
            raise DigestMismatch(
                f"{ref}: manifest {expected} is {got}, not the {expected_size} bytes its "
                "descriptor says"
            )
        # Classified first: schema1's digest covers its payload without the signatures, so
        # it would look like a mismatch instead of what it is.
        media_type = _manifest_media_type(raw, content_type, ref)
        for claimed, source in ((expected, "the reference"),
                                (header_digest, "Docker-Content-Digest")):
            if claimed:
                check_digest(claimed, f"manifest digest from {source}")
                actual = compute(raw, claimed.split(":", 1)[0])
                if actual != claimed:
                    raise DigestMismatch(
                        f"{ref}: manifest hashes to {actual}, not {claimed} ({source})"
                    )
        digest = expected or header_digest or compute(raw)
        return raw, media_type, digest

    # -- blobs ----------------------------------------------------------------------------

    def _blob_at(
        self,
        ep: Endpoint,
        ref: Reference,
        desc: Descriptor,
        progress: Optional[Callable[[int], None]],
    ) -> Iterator[bytes]:
        size, digest = desc.size, desc.digest
        hasher = Hasher.like(digest)
        received = 0
        failures = 0
        resumes = 0
        pending: Optional[bytes] = None
        url_path = f"/v2/{ref.path}/blobs/{digest}"
        last_error: Optional[BaseException] = None
        while True:
            headers = {}
            if received:
                headers["Range"] = f"bytes={received}-"
            before = received
            resp: Optional[requests.Response]
            try:
                resp = self._call(ep, ref, "GET", url_path, headers)
            except RegistryError as exc:
                if received == 0 or isinstance(exc, (AuthenticationError, NotFound)):
                    raise
                resp = None
                last_error = exc
            if resp is not None:
                with resp:
                    skip, exact = self._check_blob_response(resp, ref, desc, received)
                    decode = resp.headers.get("Content-Encoding", "identity").lower() not in (
                        "identity",
                        "",
                    )
                    try:
                        while received < size:
                            want = min(CHUNK_SIZE, size - received + skip)
                            data = resp.raw.read(want, decode_content=decode)
                            if not data:
                                break
                            if skip:
                                cut = min(skip, len(data))
                                data, skip = data[cut:], skip - cut
                                if not data:
                                    continue
                            hasher.update(data)
                            received += len(data)
                            if pending is not None:
                                yield pending
                            pending = data
                            if progress is not None:
                                progress(received)
                        if received >= size and not exact and resp.raw.read(
                                1, decode_content=decode):
                            # No Content-Length vouched for where the body ends: one byte
                            # more, never further, tells a blob longer than announced
                            # (containerd refuses it too: "unexpected commit size").
                            raise DigestMismatch(
                                f"{ref}: blob {digest} is longer than the {size} bytes its "
                                "descriptor says"
                            )
                    except (requests.RequestException, urllib3.exceptions.HTTPError,
                            OSError) as exc:
                        last_error = exc
            if received >= size:
                break
            # Truncated or broken: resume from what we have, within bounds.
            resumes += 1
            failures = 0 if received > before else failures + 1
            if failures >= self.retry.attempts or resumes > self.retry.max_resumes:
                raise RegistryError(
                    f"{ref}: download of blob {digest} kept breaking at {received} of "
                    f"{size} bytes ({resumes} resumes)"
                ) from last_error
            if failures:
                time.sleep(self.retry.backoff(failures))
        actual = hasher.digest
        if actual != digest:
            raise DigestMismatch(f"{ref}: blob {digest} hashes to {actual}")
        if pending is not None:
            yield pending

    def _check_blob_response(
        self, resp: requests.Response, ref: Reference, desc: Descriptor, offset: int
    ) -> Tuple[int, bool]:
        """Check a blob response fits the descriptor; returns how many bytes to skip (a
        server that ignored our Range sends the blob from its start) and whether an exact
        Content-Length bounds the body. A blob whose size differs from the descriptor's,
        longer or shorter, is DigestMismatch naming both sizes."""
        if resp.status_code == 416 and offset:
            raise DigestMismatch(
                f"{ref}: blob {desc.digest} is {offset} bytes, not the {desc.size} its "
                "descriptor says"
            )
        self._raise_for_status(resp, ref, "blob")
        skip = 0
        expected = desc.size
        if resp.status_code == 206:
            m = re.match(r"^bytes (\d+)-(\d+)/(\d+|\*)$",
                         resp.headers.get("Content-Range", "").strip())
            if m is None or int(m.group(1)) != offset:
                raise RegistryError(
                    f"{ref}: blob {desc.digest}: asked for bytes from {offset}, got "
                    f"{resp.headers.get('Content-Range')!r}"
                )
            if m.group(3) != "*" and int(m.group(3)) != desc.size:
                raise DigestMismatch(
                    f"{ref}: blob {desc.digest} is {m.group(3)} bytes, not the {desc.size} "
                    "its descriptor says"
                )
            expected = desc.size - offset
        elif resp.status_code == 200:
            skip = offset
        else:
            raise RegistryError(f"{ref}: blob {desc.digest}: unexpected HTTP {resp.status_code}")
        encoded = resp.headers.get("Content-Encoding", "identity").lower() not in ("identity", "")
        length = _content_length(resp)
        if length is not None and not encoded and length != expected:
            raise DigestMismatch(
                f"{ref}: blob {desc.digest} is {length + (desc.size - expected)} bytes, not "
                f"the {desc.size} its descriptor says"
            )
        return skip, length is not None and not encoded


    # -- HTTP plumbing --------------------------------------------------------------------

    def _verify_for(self, ep: Endpoint, scheme: str) -> Union[bool, str]:
        if scheme == "https" and self._allowed_plain(ep.host) and "http" in ep.schemes:
            return False  # an insecure registry: TLS without verification first
        return _ca_bundle()

    def _state(self, ep: Endpoint, ref: Reference) -> _EndpointState:
        """How to talk to ``ep``: learned once per process, from `EndpointMemory` when it
        remembers the endpoint, else by pinging ``/v2/``."""
        with self._lock:
            state = self._states.get(ep.host)
        if state is not None:
            return state
        remembered = self._memory.get(ep.host) if self._memory is not None else None
        if remembered is not None:
            base, challenge = remembered
            scheme = base.partition("://")[0]
            # Only a base this client would pick itself: a record never downgrades a
            # registry to plain HTTP it may not use.
            if scheme in ep.schemes and base == f"{scheme}://{ep.host}":
                state = _EndpointState(base=base, verify=self._verify_for(ep, scheme),
                                       challenge=challenge, remembered=True)
                with self._lock:
                    self._states[ep.host] = state
                return state
        return self._ping(ep)

    def _ping(self, ep: Endpoint) -> _EndpointState:
        """GET ``/v2/``: picks the scheme and learns the challenge (and remembers both)."""
        last: Optional[BaseException] = None
        for scheme in ep.schemes:
            base = f"{scheme}://{ep.host}"
            verify = self._verify_for(ep, scheme)
            try:
                resp = self._request_once("GET", base + "/v2/", {}, verify)
            except RegistryError as exc:
                last = exc
                continue
            with resp:
                if resp.status_code == 200:
                    challenge = None
                elif resp.status_code == 401:
                    challenges = parse_challenges(resp.headers.get("WWW-Authenticate", ""))
                    challenge = _pick_challenge(challenges)
                    if challenge is None:
                        raise AuthenticationError(
                            f"{ep.host} asks for authentication isobox does not support: "
                            f"{resp.headers.get('WWW-Authenticate')!r}"
                        )
                elif resp.status_code == 429:
                    raise RateLimited(_rate_limit_message(ep.host, resp))
                else:
                    raise RegistryError(
                        f"{base} is not a registry v2 API (GET /v2/ answered HTTP "
                        f"{resp.status_code})"
                    )
            state = _EndpointState(base=base, verify=verify, challenge=challenge)
            with self._lock:
                self._states[ep.host] = state
            self._remember(ep, state)
            return state
        assert last is not None
        raise last

    def _remember(self, ep: Endpoint, state: _EndpointState) -> None:
        if self._memory is not None:
            self._memory.put(ep.host, state.base, state.challenge)

    def _authorization(
        self, ep: Endpoint, state: _EndpointState, ref: Reference, refresh: bool
    ) -> Optional[str]:
        challenge = state.challenge
        if challenge is None:
            return None
        creds = self._credentials_for(ep)
        if challenge.scheme == "basic":
            if creds is None or creds.username is None or creds.password is None:
                raise AuthenticationError(
                    f"{ep.host} requires a username and password (basic auth) and none were "
                    "given or found in Docker's config (docker login)"
                )
            if not state.base.startswith("https:") and not self._allowed_plain(ep.host):
                raise AuthenticationError(f"refusing to send a password to {state.base}")
            raw = f"{creds.username}:{creds.password}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
        # One token per repository: a 401's own scope parameter names the same pull scope.
        scopes = (f"repository:{ref.path}:pull",)
        return "Bearer " + self._token(ep, challenge, scopes, creds, refresh)

    def _token(
        self,
        ep: Endpoint,
        challenge: Challenge,
        scopes: Tuple[str, ...],
        creds: Optional[Credentials],
        refresh: bool,
    ) -> str:
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        key = (realm, service, scopes)
        now = time.monotonic()
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and not refresh and cached[1] > now:
                return cached[0]
            self._tokens.pop(key, None)
        realm_url = urllib.parse.urlsplit(realm)
        if realm_url.scheme not in ("http", "https") or not realm_url.netloc:
            raise AuthenticationError(f"{ep.host} names an invalid token realm {realm!r}")
        if realm_url.scheme == "http" and not self._allowed_plain(realm_url.netloc):
            raise AuthenticationError(
                f"{ep.host} wants tokens from {realm!r} over plain HTTP; refusing (list the "
                f"host in ${ENV_INSECURE} to allow it)"
            )
        verify = _ca_bundle()
        if creds is not None and creds.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "service": service,
                "scope": " ".join(scopes),
                "client_id": "isobox",
            }
            resp = self._request_once("POST", realm, {}, verify, data=form)
        else:
            headers = {}
            params: List[Tuple[str, str]] = []
            if service:
                params.append(("service", service))
            params += [("scope", s) for s in scopes]
            if creds is not None and creds.username is not None and creds.password is not None:
                raw = f"{creds.username}:{creds.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
                params.append(("account", creds.username))
            url = realm + ("&" if realm_url.query else "?") + urllib.parse.urlencode(params)
            resp = self._request_once("GET", url, headers, verify)
        with resp:
            if resp.status_code in (401, 403):
                detail = _error_detail(resp)
                who = "the credentials" if creds is not None else "anonymous access"
                raise AuthenticationError(
                    f"token server {realm_url.netloc} refused {who} for {ep.domain}"
                    + (f": {detail}" if detail else "")
                )
            if resp.status_code == 429:
                raise RateLimited(_rate_limit_message(realm_url.netloc, resp))
            if resp.status_code != 200:
                raise RegistryError(
                    f"token server {realm_url.netloc} answered HTTP {resp.status_code}"
                )
            body = self._read_capped(resp, MAX_TOKEN_RESPONSE, None)
        doc = _load_json(body, "token response")
        token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise AuthenticationError(f"token server {realm_url.netloc} sent no usable token")
        lifetime = doc.get("expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)):
            lifetime = MIN_TOKEN_LIFETIME
        lifetime = max(float(lifetime), MIN_TOKEN_LIFETIME)
        # Renew a little before the server's deadline: clocks and latency differ.
        expiry = now + lifetime - min(10.0, lifetime * 0.1)
        with self._lock:
            self._tokens[key] = (token, expiry)
        return token

    def _call(
        self,
        ep: Endpoint,
        ref: Reference,
        method: str,
        url_path: str,
        headers: Mapping[str, str],
        *,
        follow_redirects: bool = True,
    ) -> requests.Response:
        """One API call with auth (re-authenticating once on 401) and bounded retries of
        429, 5xx and broken connections."""
        state = self._state(ep, ref)
        failures = 0
        reauthed = False
        while True:
            authorization = self._authorization(ep, state, ref, refresh=reauthed)
            try:
                resp, at_origin = self._send(
                    state, method, state.base + url_path, headers, authorization,
                    follow_redirects,
                )
            except _TransportError:
                if state.remembered:
                    state = self._ping(ep)  # the remembered scheme may be stale: ping once
                    continue
                failures += 1
                if failures >= self.retry.attempts:
                    raise
                time.sleep(self.retry.backoff(failures))
                continue
            if resp.status_code == 401 and at_origin and state.remembered:
                # A remembered answer no longer holds (auth turned on, another realm):
                # the full dance once, as if nothing had been remembered.
                resp.close()
                state = self._ping(ep)
                continue
            if resp.status_code == 401 and at_origin and not reauthed and state.challenge:
                challenges = parse_challenges(resp.headers.get("WWW-Authenticate", ""))
                new = _pick_challenge(challenges)
                resp.close()
                if new is not None:
                    state.challenge = new
                    self._remember(ep, state)
                reauthed = True
                continue
            if resp.status_code == 401 and at_origin and state.challenge is None:
                # The ping said open, this resource says otherwise: learn and retry once.
                new = _pick_challenge(
                    parse_challenges(resp.headers.get("WWW-Authenticate", ""))
                )
                if new is not None and not reauthed:
                    resp.close()
                    state.challenge = new
                    self._remember(ep, state)
                    reauthed = True
                    continue
            if resp.status_code == 429 or resp.status_code in (500, 502, 503, 504):
                failures += 1
                delay = _retry_after(resp)
                wait = self.retry.backoff(failures) if delay is None else delay
                if failures >= self.retry.attempts or wait > self.retry.max_delay:
                    if resp.status_code == 429:
                        message = _rate_limit_message(ep.host, resp)
                        resp.close()
                        raise RateLimited(message)
                    status = resp.status_code
                    resp.close()
                    raise RegistryError(
                        f"{ep.host}: {method} {url_path} answered HTTP {status} "
                        f"{failures} times"
                    )
                resp.close()
                time.sleep(wait)
                continue
            return resp

    def _send(
        self,
        state: _EndpointState,
        method: str,
        url: str,
        headers: Mapping[str, str],
        authorization: Optional[str],
        follow_redirects: bool,
    ) -> Tuple[requests.Response, bool]:
        """Send, following redirects ourselves: Authorization goes only to the registry's
        own origin, and never over a downgrade to plain HTTP."""
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            at_origin = _origin(url) == origin
            h = dict(headers)
            if authorization and at_origin:
                h["Authorization"] = authorization
            verify = state.verify if at_origin else _ca_bundle()
            resp = self._request_once(method, url, h, verify)
            if not follow_redirects or resp.status_code not in (301, 302, 303, 307, 308):
                return resp, at_origin
            location = resp.headers.get("Location")
            resp.close()
            if not location:
                raise RegistryError(f"redirect without Location from {url}")
            url = urllib.parse.urljoin(url, location)
            target = urllib.parse.urlsplit(url)
            if target.scheme not in ("http", "https"):
                raise RegistryError(f"refusing redirect to {target.scheme!r} URL")
            if target.scheme == "http" and not self._allowed_plain(target.netloc):
                raise RegistryError(f"refusing redirect to plain HTTP {target.netloc}")
        raise RegistryError(f"more than {MAX_REDIRECTS} redirects from {origin}")

    def _request_once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        verify: Union[bool, str],
        *,
        data: Optional[Mapping[str, str]] = None,
    ) -> requests.Response:
        host = urllib.parse.urlsplit(url).netloc
        proxies = {} if is_loopback(host) else requests.utils.get_environ_proxies(url)
        # identity: content is hashed as sent. A server that compresses anyway is decoded by
        # urllib3, whose streaming reads bound the decompressed size (>= 2.6).
        h = {"User-Agent": "isobox", "Accept-Encoding": "identity", **headers}
        try:
            with warnings.catch_warnings():
                if verify is False:  # only ever for loopback and listed insecure hosts
                    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                return self._session.request(
                    method,
                    url,
                    headers=h,
                    data=data,
                    stream=True,
                    allow_redirects=False,
                    timeout=self._timeout,
                    verify=verify,
                    proxies=proxies,
                )
        except requests.RequestException as exc:
            raise _TransportError(f"cannot reach {url}: {exc}") from exc

    def _read_capped(self, resp: requests.Response, cap: int, ref: Optional[Reference]) -> bytes:
        try:
            data = resp.raw.read(cap, decode_content=True)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise RegistryError(f"reading {resp.url} failed: {exc}") from exc
        return bytes(data or b"")

    def _raise_for_status(self, resp: requests.Response, ref: Reference, what: str) -> None:
        status = resp.status_code
        if status in (200, 206):
            return
        detail = _error_detail(resp)
        suffix = f": {detail}" if detail else ""
        if status == 404:
            raise NotFound(f"{ref}: {what} not found{suffix}")
        if status in (401, 403):
            raise AuthenticationError(
                f"{ref}: access denied (HTTP {status}){suffix} — does the repository exist, "
                "and are you logged in (credentials or docker login)?"
            )
        if status == 429:
            raise RateLimited(_rate_limit_message(ref.api_host, resp))
        raise RegistryError(f"{ref}: {what}: HTTP {status}{suffix}")


# ---------------------------------------------------------------------------------------
# Helpers


def _tried_everywhere(ref: Reference, failures: Sequence[Tuple[Endpoint, RegistryError]]
                      ) -> RegistryError:
    """The error when every endpoint failed. With a mirror, it says what was tried where:
    "not found at the mirror M (…); then Docker Hub (registry-1.docker.io): cannot reach
    …", rather than only Docker Hub's failure, which hides that the mirror lacks the name.
    Its class is the origin's (NotFound, AuthenticationError, ...), chained to it."""
    assert failures, "no endpoints"
    last = failures[-1][1]
    if len(failures) == 1:
        return last
    prefix = f"{ref}: "
    parts = []
    for ep, exc in failures:
        text = str(exc)
        text = text[len(prefix):] if text.startswith(prefix) else text
        where = (f"the registry mirror {ep.host} (${ENV_MIRROR})" if ep.is_mirror
                 else f"Docker Hub ({ep.host})" if ep.domain == DOCKER_HUB_DOMAIN else ep.host)
        parts.append(f"{where}: {text}")
    cls = type(last) if type(last) is not _TransportError else RegistryError
    error = cls(f"{ref}: tried " + "; then ".join(parts))
    error.__cause__ = last  # the mirror's error is in the message (and last's context)
    error.__suppress_context__ = True
    return error


def _as_reference(ref: Union[Reference, str]) -> Reference:
    return ref if isinstance(ref, Reference) else Reference.parse(ref)


def _origin(url: str) -> Tuple[str, str]:
    u = urllib.parse.urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    return u.scheme, f"{(u.hostname or '').lower()}:{port}"


def _ca_bundle() -> Union[bool, str]:
    """requests' own environment rule (trust_env is off for auth reasons)."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


def _pick_challenge(challenges: Sequence[Challenge]) -> Optional[Challenge]:
    for scheme in ("bearer", "basic"):
        for c in challenges:
            if c.scheme == scheme:
                return c
    return None


def _content_length(resp: requests.Response) -> Optional[int]:
    value = resp.headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _retry_after(resp: requests.Response) -> Optional[float]:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _rate_limit_message(host: str, resp: requests.Response) -> str:
    parts = []
    for header in ("RateLimit-Limit", "RateLimit-Remaining", "docker-ratelimit-source",
                   "Retry-After"):
        value = resp.headers.get(header)
        if value:
            parts.append(f"{header}: {value}")
    detail = _error_detail(resp)
    text = f"{host} rate limit reached (HTTP 429)"
    if detail:
        text += f": {detail}"
    if parts:
        text += " [" + "; ".join(parts) + "]"
    return text


def _error_detail(resp: requests.Response) -> str:
    """The registry's error message (``{"errors": [{"code", "message"}]}``), bounded."""
    try:
        body = resp.raw.read(MAX_ERROR_BODY, decode_content=True) if resp.raw else b""
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        return ""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    messages = []
    if isinstance(doc, dict):
        for err in doc.get("errors") or []:
            if isinstance(err, dict):
                code, message = err.get("code"), err.get("message")
                text = " ".join(str(x) for x in (code, message) if isinstance(x, str))
                if text:
                    messages.append(text)
        if not messages and isinstance(doc.get("details"), str):
            messages.append(doc["details"])
    return "; ".join(messages)[:500]


def _manifest_media_type(raw: bytes, content_type: str, ref: Reference) -> str:
    """The manifest's kind, from its body and Content-Type, refusing schema1 and
    ambiguous documents (an index that is also a manifest: CVE-2021-41190)."""
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


def _config_platform(config: bytes, where: str) -> Optional[Platform]:
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
    "RegistryClient",
    "EndpointMemory",
    "RetryPolicy",
    "Descriptor",
    "Manifest",
    "Index",
    "ResolvedImage",
    "Endpoint",
    "Challenge",
    "parse_challenges",
    "check_digest",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_MANIFEST",
]
