"""Inflating a layer stream: the compression told by magic bytes, bounded output, the
diff_id hashed on the way, all in a thread of its own.

A layer arrives as an iterator of compressed chunks, straight from the registry socket.
`Inflater`'s thread inflates them (gzip with any number of members, zstd with any number
of frames, or plain tar, told apart by magic bytes as Docker and containerd tell them:
registries serve plain tars labelled +gzip) and hashes the uncompressed bytes into the
diff_id, while the caller's thread parses tar headers and creates the files. zlib,
zstandard, hashlib and os.write release the GIL, so decompression overlaps with file
creation as ``tar -xzf`` overlaps gzip with tar.

Hostile streams: every decompressed chunk is bounded (a bomb never sits in memory whole),
the total is bounded by the caller's limit, a truncated gzip or zstd stream and garbage
after its end are `LayerError`; exceptions of the caller's chunk iterator (a digest
mismatch the registry stream raises at its end) come through unchanged (`FromSource`).
"""

from __future__ import annotations

import itertools
import queue
import threading
import zlib
from typing import IO, Iterable, Iterator, List, Optional, Union, cast

import zstandard

from ..errors import LayerError
from .digest import Hasher

_KiB = 1024
_MiB = 1024 * _KiB

_OUT = 1 * _MiB  # bound on one decompressed chunk: a bomb never sits in memory whole
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _is_zstd_skippable(head: bytes) -> bool:
    return len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"


def _inflate(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Yields the uncompressed stream, telling the compression by its magic bytes (as
    Docker and containerd do: registries serve plain tars labelled +gzip)."""
    head = b""
    for chunk in chunks:
        head += bytes(chunk)
        if len(head) >= 4:
            break
    stream = itertools.chain((head,), chunks)
    if head.startswith(_GZIP_MAGIC):
        yield from _gunzip(stream)
    elif head.startswith(_ZSTD_MAGIC) or _is_zstd_skippable(head):
        yield from _unzstd(stream)
    elif head.startswith(b"BZh") or head.startswith(b"\xfd7zXZ\x00"):
        raise LayerError("bzip2 and xz layers are not OCI layer formats")
    else:
        for chunk in stream:
            if chunk:
                yield bytes(chunk)


def _gunzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """gzip with any number of members (pigz, concatenated layers), then optional zero
    padding; other trailing bytes are refused, as Go's gzip reader refuses them."""
    d: Optional["zlib._Decompress"] = None
    padding = False
    try:
        for data in chunks:
            while data:
                if d is None:
                    if padding or data[0] == 0:
                        padding = True
                        if data.strip(b"\0"):
                            raise LayerError("garbage after the end of the gzip stream")
                        break
                    if data[0] != 0x1F or data[1:2] not in (b"", b"\x8b"):
                        raise LayerError("garbage after the end of the gzip stream")
                    d = zlib.decompressobj(31)  # 31: gzip header and trailer (zlib docs)
                out = d.decompress(data, _OUT)
                if out:
                    yield out
                if d.eof:
                    data, d = d.unused_data, None
                    continue
                data = d.unconsumed_tail
                while not data and len(out) == _OUT:  # output pending without new input
                    out = d.decompress(b"", _OUT)
                    if out:
                        yield out
                    if d.eof:
                        data, d = d.unused_data, None
                        break
    except zlib.error as exc:
        raise LayerError(f"corrupt gzip stream: {exc}") from exc
    if d is not None:
        raise LayerError("truncated gzip stream")


class _ZstdFrames:
    """Follows zstd frame and block headers over the compressed bytes (no decompression)
    to tell a complete stream from a truncated one: python-zstandard's stream reader
    treats a stream cut inside a frame as a clean end.  Format: RFC 8878, section 3.1."""

    def __init__(self) -> None:
        self._state = "magic"
        self._need = 4
        self._buf = b""
        self._skip = 0
        self._checksum = False
        self.frames = 0

    @property
    def complete(self) -> bool:
        return self._state == "magic" and not self._buf and not self._skip and self.frames > 0

    def feed(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._need - len(self._buf), n - pos)
            self._buf += data[pos : pos + take]
            pos += take
            if len(self._buf) == self._need:
                buf, self._buf = self._buf, b""
                self._advance(buf)

    def _advance(self, buf: bytes) -> None:
        if self._state == "magic":
            if buf == _ZSTD_MAGIC:
                self._state, self._need = "descriptor", 1
            elif _is_zstd_skippable(buf):
                self._state, self._need = "skippable", 4
            else:  # not a frame: the decompressor reports it
                self._state, self._need = "bad", 1 << 62
        elif self._state == "skippable":
            self._skip = int.from_bytes(buf, "little")
            self.frames += 1
            self._state, self._need = "magic", 4
        elif self._state == "descriptor":
            fhd = buf[0]
            single = bool(fhd & 0x20)
            self._checksum = bool(fhd & 0x04)
            fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
            did = (0, 1, 2, 4)[fhd & 0x03]
            self._state, self._need = "header", (0 if single else 1) + did + fcs
        elif self._state in ("header", "block"):
            if self._state == "block":
                value = int.from_bytes(buf, "little")
                last, kind, size = value & 1, (value >> 1) & 3, value >> 3
                self._skip = 1 if kind == 1 else size  # RLE blocks carry one byte
                if last:
                    self.frames += 1
                    if self._checksum:
                        self._state, self._need = "checksum", 4
                    else:
                        self._state, self._need = "magic", 4
                    return
            self._state, self._need = "block", 3
        elif self._state == "checksum":
            self._state, self._need = "magic", 4


class _ChunkReader:
    """The file-like source zstandard's stream reader pulls compressed bytes from."""

    def __init__(self, chunks: Iterator[bytes], frames: _ZstdFrames) -> None:
        self._chunks = chunks
        self._frames = frames
        self._rest = b""

    def read(self, size: int = -1) -> bytes:
        if not self._rest:
            for chunk in self._chunks:
                if chunk:
                    self._rest = bytes(chunk)
                    break
            else:
                return b""
        if size < 0 or size >= len(self._rest):
            out, self._rest = self._rest, b""
        else:
            out, self._rest = self._rest[:size], self._rest[size:]
        self._frames.feed(out)
        return out


def _unzstd(chunks: Iterator[bytes]) -> Iterator[bytes]:
    frames = _ZstdFrames()
    source = _ChunkReader(chunks, frames)
    try:
        # read_across_frames: zstd streams may hold several frames (zstd -B, pzstd).
        # read(_OUT) bounds every output chunk whatever the compression ratio.
        reader = zstandard.ZstdDecompressor().stream_reader(
            cast("IO[bytes]", source), read_size=256 * _KiB, read_across_frames=True, closefd=False
        )
        while True:
            out = reader.read(_OUT)
            if not out:
                break
            yield out
    except zstandard.ZstdError as exc:
        raise LayerError(f"corrupt zstd stream: {exc}") from exc
    if not frames.complete:
        raise LayerError("truncated zstd stream")


class FromSource(Exception):
    """Carries an exception of the caller's chunk iterator through the decompressors, so
    that it is raised unchanged, never mistaken for a broken layer."""

    def __init__(self, original: Exception) -> None:
        super().__init__(original)
        self.original = original


def _guarded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except Exception as exc:
            raise FromSource(exc) from exc
        yield chunk


class _End:
    pass


_END = _End()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Inflater:
    """The decompression thread: pulls the caller's chunks, inflates, hashes, counts, and
    hands uncompressed chunks over a bounded queue.  Exceptions from the chunk iterator
    (RegistryError, DigestMismatch) reach the caller unchanged; more than ``max_size``
    uncompressed bytes are `LayerError` (`isobox.images.tar.Limits.max_total_size`)."""

    def __init__(self, chunks: Iterable[bytes], max_size: int) -> None:
        self._chunks = iter(chunks)
        self._limit = max_size
        self._queue: "queue.Queue[Union[bytes, _End, _Failed]]" = queue.Queue(maxsize=8)
        self._stop = threading.Event()
        self._done = False
        self.hasher = Hasher("sha256")  # the diff_id
        self.size = 0
        self._thread = threading.Thread(target=self._run, name="isobox-inflate", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        pending: List[bytes] = []  # small chunks are handed over together: each handover
        pending_size = 0  # costs two GIL switches
        try:
            for out in _inflate(_guarded(self._chunks)):
                self.size += len(out)
                if self.size > self._limit:
                    raise LayerError(
                        f"layer is larger than {self._limit} bytes uncompressed "
                        "(Limits.max_total_size)"
                    )
                pending.append(out)
                pending_size += len(out)
                if pending_size >= _OUT:
                    out = pending[0] if len(pending) == 1 else b"".join(pending)
                    pending, pending_size = [], 0
                    self.hasher.update(out)
                    if not self._put(out):
                        return
            if pending:
                out = b"".join(pending)
                self.hasher.update(out)
                if not self._put(out):
                    return
            self._put(_END)
        except Exception as exc:  # handed to the caller's thread, raised there
            self._put(_Failed(exc))
        finally:
            close = getattr(self._chunks, "close", None)
            if close is not None:  # e.g. a generator holding an HTTP response
                try:
                    close()
                except Exception:  # pragma: no cover - closing is best effort
                    pass

    def _put(self, item: Union[bytes, _End, _Failed]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> Optional[bytes]:
        """The next uncompressed chunk, or None at the end of the stream."""
        if self._done:
            return None
        item = self._queue.get()
        if isinstance(item, bytes):
            return item
        self._done = True
        if isinstance(item, _Failed):
            raise item.exc
        return None

    def drain(self) -> None:
        """Reads to the end: the diff_id covers every byte, and the registry's iterator
        verifies the blob digest only once it is exhausted."""
        while self.get() is not None:
            pass

    def close(self) -> None:
        # Joins the thread; if it is blocked reading the network, that read's timeout
        # bounds the wait.
        self._stop.set()
        self._thread.join()


__all__ = ["FromSource", "Inflater"]
