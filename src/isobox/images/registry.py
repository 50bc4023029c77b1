"""The registry client: what a pull asks a registry for, and what the answers must be.

It speaks the OCI distribution protocol (Docker's registry v2 API) over an
`isobox.images.http.Session` (authentication, retries, redirects, and the translation of
``requests``' exceptions live there) and parses what comes back with
`isobox.images.manifest`:

- `RegistryClient.resolve` follows a tag or digest through indexes to one platform's
  manifest and config; `head_manifest` asks where a tag points now (one HEAD request);
  `iter_blob` streams a blob.
- The registry is assumed hostile: every manifest is size-capped and hashed against the
  digest it was asked for and the one the registry announces; every blob is read up to its
  declared size and no further, and hashed (sha256/sha384/sha512) before the last chunk is
  handed over. A broken or truncated blob download resumes with ``Range``.
- ``$ISOBOX_REGISTRY_MIRROR`` (as Docker's ``registry-mirrors``): Docker Hub references are
  tried at the mirror first, then at Docker Hub; when both fail, the error says what each
  answered.
"""

from __future__ import annotations

import os
import re
import time
import urllib.parse
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import attrs

from ..errors import (
    AuthenticationError,
    DigestMismatch,
    InvalidOption,
    NotFound,
    RegistryError,
    UnsupportedManifest,
)
from .digest import Hasher, compute, matches
from .http import (
    ENV_INSECURE,
    Endpoint,
    EndpointMemory,
    RetryPolicy,
    Session,
    TransportError,
    content_length,
    is_encoded,
    raise_for_status,
    read,
)
from .manifest import (
    ACCEPT,
    INDEX_TYPES,
    MAX_CONFIG_SIZE,
    MAX_INDEX_DEPTH,
    MAX_MANIFEST_SIZE,
    Descriptor,
    Index,
    Manifest,
    check_digest,
    check_runnable,
    choose,
    classify,
    config_platform,
)
from .platform import Platform
from .reference import DOCKER_HUB_DOMAIN, Reference

if TYPE_CHECKING:
    import requests

CHUNK_SIZE = 256 * 1024
ENV_MIRROR = "ISOBOX_REGISTRY_MIRROR"

_T = TypeVar("_T")


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
        self._http = Session(credentials, insecure=insecure, timeout=timeout, retry=retry,
                             memory=memory)
        self.retry = retry
        self._mirror = self._parse_mirror(os.environ.get(ENV_MIRROR) if mirror is None else mirror)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- configuration --------------------------------------------------------------------

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
        if url.scheme == "http" and not self._http.allows_plain(host):
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
        schemes = ("https", "http") if self._http.allows_plain(host) else ("https",)
        out.append(Endpoint(host=host, domain=ref.domain, schemes=schemes))
        return out

    @property
    def session(self) -> Session:
        """The HTTP session (auth, retries, redirects): what a push speaks through."""
        return self._http

    def origin(self, ref: Union[Reference, str]) -> Endpoint:
        """The reference's own registry (never a mirror): where a push goes."""
        return self.endpoints(ref)[-1]

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
            resp = self._http.call(ep, ref, "HEAD", url_path, {"Accept": ACCEPT})
            with resp:
                raise_for_status(resp, ref, "manifest")
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
            desc = choose(idx, wanted, ref)
            chosen_platform = desc.platform or chosen_platform
            raw, media_type, digest = self._get_manifest(ep, ref, desc.digest, desc.digest,
                                                         desc.size)
        manifest = Manifest.from_bytes(raw, media_type, digest)
        check_runnable(manifest, ref)
        config = b"".join(self._blob_at(ep, ref, manifest.config, None))
        named = config_platform(config, f"config {manifest.config.digest} of {ref}")
        if chosen_platform is None:
            if named is not None and not wanted.matches(named):
                raise NotFound(f"{ref} has no image for platform {wanted}; available: {named}")
            chosen_platform = named or wanted
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
        resp = self._http.call(ep, ref, "GET", f"/v2/{ref.path}/manifests/{target}",
                          {"Accept": ACCEPT})
        with resp:
            raise_for_status(resp, ref, "manifest")
            length = content_length(resp)
            if length is not None and length > MAX_MANIFEST_SIZE:
                raise RegistryError(
                    f"{ref}: manifest is {length} bytes, more than the "
                    f"{MAX_MANIFEST_SIZE} allowed"
                )
            if expected_size is not None:
                if length is not None and not is_encoded(resp) and length != expected_size:
                    raise DigestMismatch(
                        f"{ref}: manifest {expected} is {length} bytes, not the "
                        f"{expected_size} its descriptor says"
                    )
                # One byte past the announced size tells a longer one; never read further.
                raw = read(resp, min(expected_size, MAX_MANIFEST_SIZE) + 1, decode=True)
            else:
                raw = read(resp, MAX_MANIFEST_SIZE + 1, decode=True)
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
        media_type = classify(raw, content_type, ref)
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
            resp: "Optional[requests.Response]"
            try:
                resp = self._http.call(ep, ref, "GET", url_path, headers)
            except RegistryError as exc:
                if received == 0 or isinstance(exc, (AuthenticationError, NotFound)):
                    raise
                resp = None
                last_error = exc
            if resp is not None:
                with resp:
                    skip, exact = self._check_blob_response(resp, ref, desc, received)
                    decode = is_encoded(resp)
                    try:
                        while received < size:
                            want = min(CHUNK_SIZE, size - received + skip)
                            data = read(resp, want, decode=decode)
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
                        if received >= size and not exact and read(resp, 1, decode=decode):
                            # No Content-Length vouched for where the body ends: one byte
                            # more, never further, tells a blob longer than announced
                            # (containerd refuses it too: "unexpected commit size").
                            raise DigestMismatch(
                                f"{ref}: blob {digest} is longer than the {size} bytes its "
                                "descriptor says"
                            )
                    except TransportError as exc:
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
        self, resp: "requests.Response", ref: Reference, desc: Descriptor, offset: int
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
        raise_for_status(resp, ref, "blob")
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
        encoded = is_encoded(resp)
        length = content_length(resp)
        if length is not None and not encoded and length != expected:
            raise DigestMismatch(
                f"{ref}: blob {desc.digest} is {length + (desc.size - expected)} bytes, not "
                f"the {desc.size} its descriptor says"
            )
        return skip, length is not None and not encoded


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
    cls = type(last) if type(last) is not TransportError else RegistryError
    error = cls(f"{ref}: tried " + "; then ".join(parts))
    error.__cause__ = last  # the mirror's error is in the message (and last's context)
    error.__suppress_context__ = True
    return error


def _as_reference(ref: Union[Reference, str]) -> Reference:
    return ref if isinstance(ref, Reference) else Reference.parse(ref)


__all__ = ["CHUNK_SIZE", "ENV_MIRROR", "RegistryClient", "ResolvedImage"]
