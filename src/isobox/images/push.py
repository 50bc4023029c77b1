"""Pushing an image: the distribution spec's upload protocol, over the registry client's
HTTP session (`isobox.images.http`: credentials as a pull finds them, tokens, retries,
redirects, errors translated there).

For each blob (configs and layers, as the store holds them: `isobox.images.content`):

1. ``HEAD /v2/<name>/blobs/<digest>``: a blob the registry has is skipped. So a push
   that was interrupted, run again, uploads only what is missing.
2. ``POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>`` when the image came
   from another repository of the same registry: 201 means mounted, nothing sent; a 202
   is an ordinary upload session (the registry declined).  Otherwise ``POST
   /v2/<name>/blobs/uploads/`` opens one (202 and its ``Location``).
3. A blob up to `MONOLITHIC_MAX` goes in one ``PUT <location>?digest=`` with its bytes.
   A larger one is streamed in ``PATCH`` requests (``Content-Range``), each at most
   `CHUNK_SIZE`, then closed by ``PUT <location>?digest=``.  A PATCH that breaks off
   asks the registry where the upload stands (``GET <location>``: ``Range: 0-N``) and
   continues from there; an upload the registry forgot is started again, bounded.

Then the manifests, by digest, and the top document (the one manifest, or the index of a
multi-platform image) under the tag, each ``PUT`` with its media type and its stored
bytes, so every digest is the one pulled. A registry that answers with another digest
(``Docker-Content-Digest``) than the bytes have is `DigestMismatch`.

Tokens: the push scope ``repository:<name>:pull,push``, plus ``repository:<from>:pull``
for a mount.
"""

from __future__ import annotations

import concurrent.futures
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Set, Tuple, Union

from ..errors import DigestMismatch, InvalidOption, IsoboxError, RegistryError
from .content import BlobReader, StoredImage, collect
from .http import Endpoint, Session, TransportError, raise_unless
from .manifest import Descriptor
from .reference import Reference
from .store import Store

if TYPE_CHECKING:
    from .image import Image, ProgressCallback

CHUNK_SIZE = 64 * 1024 * 1024  # bytes per PATCH request
MONOLITHIC_MAX = 1024 * 1024  # blobs up to this go in one PUT
MAX_PARALLEL_BLOBS = 4
MAX_RESTARTS = 3  # uploads of one blob started again after the registry forgot one


def push_image(image: "Image", store: Store, ref: Union[None, str, Reference], *,
               auth: Any = None, progress: "Optional[ProgressCallback]" = None) -> str:
    """`Image.push`: returns the digest the tag points to."""
    from .http import EndpointMemory
    from .image import REGISTRIES_FILE
    from .registry import RegistryClient

    if ref is None and image.reference is None:
        raise InvalidOption("this image has no name to push it as: give ref")
    target = ref if isinstance(ref, Reference) else Reference.parse(ref or str(image.reference))
    if target.digest is not None:
        raise InvalidOption(f"cannot push to {target}: push to a tag, not a digest")
    with store.in_use():
        content = collect(store, image)
        memory = EndpointMemory(store.root / REGISTRIES_FILE, store.write_file)
        with RegistryClient(credentials=auth, memory=memory) as client, \
                BlobReader(store, auth=auth, client=client) as reader:
            pusher = _Pusher(client.session, client.origin(target), target, reader, progress)
            blobs: List[Tuple[Descriptor, StoredImage]] = []
            seen: Set[str] = set()
            for item in content.images:
                for desc in item.blobs():
                    if desc.digest not in seen:
                        seen.add(desc.digest)
                        blobs.append((desc, item))
            pusher.blobs(blobs)
            digest, media_type, raw = content.top
            if content.index is not None:
                for item in content.images:
                    pusher.manifest(item.manifest.digest, item.manifest.media_type,
                                    item.manifest.raw, item.manifest.digest)
            pusher.manifest(target.tag or "latest", media_type, raw, digest)
    return digest


class _Pusher:
    def __init__(self, session: Session, ep: Endpoint, target: Reference, reader: BlobReader,
                 progress: "Optional[ProgressCallback]") -> None:
        self.http = session
        self.ep = ep
        self.target = target
        self.reader = reader
        self.progress = progress
        self.scope = (f"repository:{target.path}:pull,push",)
        self.cancel = threading.Event()

    def _call(self, method: str, url: str, headers: Optional[Dict[str, str]] = None, *,
              body: Any = None, scopes: Tuple[str, ...] = (), retry_broken: bool = True) -> Any:
        if self.cancel.is_set():
            raise _Cancelled()
        return self.http.call(self.ep, self.target, method, url, headers or {}, body=body,
                              scopes=scopes or self.scope, retry_broken=retry_broken)

    # -- blobs ---------------------------------------------------------------------------

    def blobs(self, blobs: List[Tuple[Descriptor, StoredImage]]) -> None:
        if not blobs:
            return
        workers = min(MAX_PARALLEL_BLOBS, len(blobs))
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="isobox-push") as pool:
            futures = [pool.submit(self.blob, desc, item) for desc, item in blobs]
            try:
                error: Optional[BaseException] = None
                for future in concurrent.futures.as_completed(futures):
                    exc = future.exception()
                    if exc is not None and not isinstance(exc, _Cancelled) and error is None:
                        error = exc
                        self.cancel.set()
                if error is not None:
                    raise error
            finally:
                self.cancel.set()  # also on KeyboardInterrupt: uploads stop at their next chunk
        self.cancel.clear()

    def _report(self, desc: Descriptor, done: int) -> None:
        if self.progress is not None:
            self.progress(desc.digest, done, desc.size)

    def blob(self, desc: Descriptor, item: StoredImage) -> None:
        path = f"/v2/{self.target.path}/blobs/{desc.digest}"
        with self._call("HEAD", path) as resp:
            if resp.status_code == 200:
                self._report(desc, desc.size)
                return
            if resp.status_code != 404:
                raise_unless(resp, self.target, f"blob {desc.digest}", 200, 404)
        location = self._start(desc, item)
        if location is None:
            self._report(desc, desc.size)
            return
        for attempt in range(MAX_RESTARTS + 1):
            try:
                if desc.size <= MONOLITHIC_MAX:
                    self._finish(location, desc, self.reader.read(desc, item))
                else:
                    self._chunks(location, desc, item)
                return
            except _Forgotten:
                if attempt == MAX_RESTARTS:
                    raise RegistryError(f"{self.target}: upload of blob {desc.digest} kept "
                                        "failing (the registry lost it each time)") from None
                location = self._start(desc, item, mount=False) or ""
                if not location:
                    return

    def _mount_from(self, item: StoredImage) -> Optional[str]:
        """The repository of the same registry the image came from, if another."""
        if not item.record.source:
            return None
        try:
            source = Reference.parse(item.record.source)
        except IsoboxError:
            return None
        if source.domain != self.target.domain or source.path == self.target.path:
            return None
        return source.path

    def _start(self, desc: Descriptor, item: StoredImage, *, mount: bool = True) -> Optional[str]:
        """An upload's Location, or None when the blob was mounted."""
        url = f"/v2/{self.target.path}/blobs/uploads/"
        scopes: Tuple[str, ...] = self.scope
        origin = self._mount_from(item) if mount else None
        if origin is not None:
            url += "?" + urllib.parse.urlencode({"mount": desc.digest, "from": origin})
            scopes = self.scope + (f"repository:{origin}:pull",)
        with self._call("POST", url, scopes=scopes) as resp:
            if origin is not None and resp.status_code == 201:
                return None
            raise_unless(resp, self.target, f"upload of blob {desc.digest}", 202)
            return self._location(resp, desc)

    def _location(self, resp: Any, desc: Descriptor) -> str:
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"{self.target}: upload of blob {desc.digest}: no Location")
        return str(location)

    def _finish(self, location: str, desc: Descriptor, data: bytes) -> None:
        """PUT <location>?digest= with the rest of the blob (or none)."""
        sep = "&" if "?" in location else "?"
        url = f"{location}{sep}digest={urllib.parse.quote(desc.digest)}"
        headers = {"Content-Type": "application/octet-stream"}
        with self._call("PUT", url, headers, body=data) as resp:
            if resp.status_code in (404, 416):
                raise _Forgotten()
            raise_unless(resp, self.target, f"upload of blob {desc.digest}", 201, 204)
            self._check_digest(resp, desc.digest, "blob")
        self._report(desc, desc.size)

    def _chunks(self, location: str, desc: Descriptor, item: StoredImage) -> None:
        offset = 0
        breaks = 0
        while offset < desc.size:
            end = min(desc.size, offset + CHUNK_SIZE)
            headers = {"Content-Type": "application/octet-stream",
                       "Content-Range": f"{offset}-{end - 1}"}
            start = offset
            try:
                with self._call("PATCH", location, headers, retry_broken=False,
                                body=lambda: _Sized(self._slice(desc, item, start, end),
                                                    end - start)) as resp:
                    if resp.status_code in (404, 416):
                        offset, location = self._status(location, desc)
                        continue
                    raise_unless(resp, self.target, f"upload of blob {desc.digest}", 202, 204)
                    location = self._location(resp, desc)
                    offset = end
                    breaks = 0
            except TransportError:
                breaks += 1
                if breaks > self.http.retry.attempts:
                    raise
                offset, location = self._status(location, desc)
            self._report(desc, offset)
        self._finish(location, desc, b"")

    def _slice(self, desc: Descriptor, item: StoredImage, start: int, end: int) -> Iterator[bytes]:
        left = end - start
        for chunk in self.reader.chunks(desc, item, offset=start):
            if self.cancel.is_set():
                raise _Cancelled()
            if len(chunk) >= left:
                yield chunk[:left]
                return
            left -= len(chunk)
            yield chunk

    def _status(self, location: str, desc: Descriptor) -> Tuple[int, str]:
        """Where an upload stands: (bytes the registry has, the Location to continue at);
        `_Forgotten` when the registry no longer knows it."""
        with self._call("GET", location) as resp:
            if resp.status_code == 404:
                raise _Forgotten()
            raise_unless(resp, self.target, f"upload of blob {desc.digest}", 204)
            got = resp.headers.get("Range", "")
            location = resp.headers.get("Location") or location
        first, _, last = got.partition("-")
        if not first.isdigit() or not last.isdigit() or int(first) != 0 or int(last) == 0:
            # "0-0" is distribution's answer for an empty upload (its end is size - 1,
            # but never below 0); a one-byte upload is never in progress here
            return 0, location
        return min(int(last) + 1, desc.size), location

    # -- manifests ---------------------------------------------------------------------------

    def manifest(self, ref: str, media_type: str, raw: bytes, digest: str) -> None:
        url = f"/v2/{self.target.path}/manifests/{ref}"
        with self._call("PUT", url, {"Content-Type": media_type}, body=raw) as resp:
            raise_unless(resp, self.target, f"manifest {ref}", 201, 202)
            self._check_digest(resp, digest, "manifest")

    def _check_digest(self, resp: Any, digest: str, what: str) -> None:
        said = resp.headers.get("Docker-Content-Digest")
        if said and said != digest:
            raise DigestMismatch(f"{self.target}: the registry stored the {what} {digest} as {said}")


class _Sized:
    """Chunks of a known total: requests sends them with that Content-Length (a bare
    generator would go as chunked transfer encoding, which some proxies refuse)."""

    def __init__(self, chunks: Iterator[bytes], size: int) -> None:
        self._chunks = chunks
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks


class _Cancelled(Exception):
    """Raised in an upload when another upload of the same push failed."""


class _Forgotten(Exception):
    """Raised when the registry no longer knows an upload session."""


__all__ = ["CHUNK_SIZE", "MONOLITHIC_MAX", "push_image"]
