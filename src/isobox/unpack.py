"""Applying one layer stream: decompress, hash and untar it into a directory that overlayfs
can stack as a lower layer.

A layer arrives as an iterator of compressed chunks, straight from the registry socket.
One thread inflates them (gzip with any number of members, zstd with any number of
frames, or plain tar, told apart by magic bytes) and hashes the uncompressed bytes into
the diff_id; the calling thread parses tar headers and creates the files.  zlib,
zstandard, hashlib and os.write release the GIL, so decompression overlaps with file
creation as ``tar -xzf`` overlaps gzip with tar.

The archive is hostile until applied:

* Every parent directory is resolved by the kernel, with openat2(RESOLVE_IN_ROOT) from a
  descriptor of ``dest`` (see _native/fsops.c): ``..``, absolute symlinks and symlinked
  parents planted by earlier entries are clamped to ``dest``, as they would be inside the
  container.  The last component is never followed (O_NOFOLLOW, ``follow_symlinks=False``,
  mkdirat, symlinkat, linkat without AT_SYMLINK_FOLLOW), so no entry writes through a
  symlink, and a hard link can only name an inode already inside ``dest``.
* Member names with a ``..`` component are refused outright (no real producer writes
  them); a leading ``/`` or ``./`` is dropped, as tar does.  The layer root can only be
  given directory metadata, never be replaced.
* `Limits` bound the entry count, the uncompressed size and the size of extended headers,
  before anything is allocated for them.  Headers are parsed here, not by tarfile, for
  that reason (tarfile reads a PAX header of any size into memory) and to keep names as
  bytes.  Every malformed input raises `LayerError`, with the low-level error as
  ``__cause__``.
* xattrs in the archive that would forge overlayfs metadata (``trusted.overlay.*``,
  ``user.overlay.*``: whiteouts, redirects, metacopy) are dropped.

OCI semantics on disk (overlayfs's form, Documentation/filesystems/overlayfs.rst,
"whiteouts and opaque directories"):

* ``.wh..wh..opq`` makes its directory opaque: xattr ``<ns>.overlay.opaque=y``, where
  ``<ns>`` is ``trusted`` for an overlay mounted by real root and ``user`` for one mounted
  with ``-o userxattr`` in a user namespace (`apply_layer`'s ``userxattr``).  overlayfs
  ignores the opaque xattr on a layer's *root*, so an opaque marker at the root becomes
  a whiteout for every name of the lower layers' roots (``lower_dirs``).
* ``.wh.NAME`` becomes a whiteout: a 0:0 character device ("device"; unprivileged users
  may create exactly this device since Linux 5.8), or ("xattr", overlayfs >= 6.7) an
  empty regular file with ``<ns>.overlay.whiteout=y`` whose parent directory carries
  ``<ns>.overlay.opaque=x``.
* Whiteouts and opaque markers apply to lower layers only, wherever they stand in the
  archive: they are applied after the last entry.  A whiteout of a name this layer also
  creates keeps the entry (a directory then becomes opaque, hiding the lower one's
  contents); whiteouts inside an opaque directory are dropped as redundant.

Without root, ownership collapses to the caller (the user namespace maps the caller to
root, so the container sees root-owned files), device nodes are skipped and listed in
`LayerStats.skipped`, and xattrs only root may set (``trusted.*``, ``security.*``) are
skipped.  As root, uid/gid, devices and ``security.capability`` are applied; chown always
comes before chmod and the xattrs, since chown clears set-id bits and file capabilities.
Directory modes and times are applied last, deepest first, after their content.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import itertools
import logging
import os
import queue
import re
import stat
import threading
import urllib.parse
import zlib
from typing import IO, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union, cast

import attrs
import zstandard

from .errors import HostNotSupported, InvalidOption, LayerError

try:
    from ._native._core import lib as _lib
except ImportError:  # pragma: no cover - a broken install; apply_layer says so
    _lib = None

__all__ = ["Limits", "LayerStats", "apply_layer", "remove_tree", "LAYER_MEDIA_TYPES"]

log = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Layer media types apply_layer accepts (OCI image-spec and Docker schema 2).
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


def _positive(instance: object, attribute: "attrs.Attribute[int]", value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidOption(f"Limits.{attribute.name} must be a positive integer, not {value!r}")


@attrs.frozen
class Limits:
    """Bounds on one layer, so that an archive bomb fails with `LayerError` instead of
    filling the disk or the memory.  The defaults fit the largest real images."""

    max_entries: int = attrs.field(default=1_000_000, validator=_positive)
    #: uncompressed bytes of the stream, and separately bytes copied from lower layers
    max_total_size: int = attrs.field(default=64 * GiB, validator=_positive)
    #: bytes of PAX and GNU long-name headers in front of one entry
    max_header_size: int = attrs.field(default=1 * MiB, validator=_positive)


@attrs.frozen
class LayerStats:
    """What applying a layer found: its diff_id (sha256 of the uncompressed tar, as the
    image config lists it), size and entry count."""

    diff_id: str = attrs.field(validator=attrs.validators.matches_re(r"sha256:[0-9a-f]{64}"))
    size: int = attrs.field(validator=attrs.validators.ge(0))
    entries: int = attrs.field(validator=attrs.validators.ge(0))
    #: "path: reason" for each entry or xattr not applied for want of privilege
    skipped: Tuple[str, ...] = ()
    #: True when the result depends on ``lower_dirs`` (a hard link to a lower file, an
    #: opaque marker at the root): such a directory is only valid on top of those layers,
    #: so a store must key it by chain ID rather than diff_id.
    depends_on_lower: bool = False
    #: Without root: (path, uid, gid, mode to restore or None) of entries the archive gives
    #: another owner than root; the caller may apply them inside a user namespace with
    #: subordinate ids (idmap.chown_in_userns), else they stay the caller's.
    owners: Tuple[Tuple[str, int, int, Optional[int]], ...] = ()


# --------------------------------------------------------------------------- streams

_OUT = 1 * MiB  # bound on one decompressed chunk: a bomb never sits in memory whole
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
            cast("IO[bytes]", source), read_size=256 * KiB, read_across_frames=True, closefd=False
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


class _FromSource(Exception):
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
            raise _FromSource(exc) from exc
        yield chunk


class _End:
    pass


_END = _End()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Inflater:
    """The decompression thread: pulls the caller's chunks, inflates, hashes, counts, and
    hands uncompressed chunks over a bounded queue.  Exceptions from the chunk iterator
    (RegistryError, DigestMismatch) reach the caller unchanged."""

    def __init__(self, chunks: Iterable[bytes], limits: Limits) -> None:
        self._chunks = iter(chunks)
        self._limit = limits.max_total_size
        self._queue: "queue.Queue[Union[bytes, _End, _Failed]]" = queue.Queue(maxsize=8)
        self._stop = threading.Event()
        self._done = False
        self.sha256 = hashlib.sha256()
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
                    self.sha256.update(out)
                    if not self._put(out):
                        return
            if pending:
                out = b"".join(pending)
                self.sha256.update(out)
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


# --------------------------------------------------------------------------- tar

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)

REG, LNK, SYM, CHR, BLK, DIR, FIFO = range(7)
_KINDS = {
    b"0": REG,
    b"\0": REG,
    b"7": REG,  # contiguous file: a regular file everywhere but a few old Unixes
    b"1": LNK,
    b"2": SYM,
    b"3": CHR,
    b"4": BLK,
    b"5": DIR,
    b"6": FIFO,
    b"D": DIR,  # GNU dump directory: a directory whose data lists names (skipped)
}
_PAX_TIME = re.compile(rb"(-?)([0-9]+)(?:\.([0-9]*))?")
_PAX_INT = re.compile(rb"[0-9]+")
_ID_MAX = 2**32 - 2  # (uid_t)-1 means "leave unchanged" to chown(2)


def _cstr(field: bytes) -> bytes:
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


def _num(field: bytes, what: str) -> int:
    """A numeric header field: octal text, or GNU base-256 when the high bit is set."""
    text = field.split(b"\0", 1)[0].strip(b" ")
    if text.isdigit():  # ASCII digits only: no sign, "0o" or "_" that int() would take
        try:
            return int(text, 8)
        except ValueError:
            pass  # an 8 or a 9
    elif not text:
        return 0
    elif field[0] & 0x80:
        if field[0] == 0xFF:  # negative, two's complement over the whole field
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(field[1:], "big")
    raise LayerError(f"invalid tar header: {what} field {field!r} is not octal")


def _pax_int(value: bytes, key: bytes) -> int:
    if not _PAX_INT.fullmatch(value):
        raise LayerError(f"invalid PAX record {key.decode('ascii', 'replace')}={value!r}")
    return int(value)


def _pax_time(value: bytes, key: bytes) -> int:
    match = _PAX_TIME.fullmatch(value)
    if not match or len(value) > 64:
        raise LayerError(f"invalid PAX record {key.decode('ascii', 'replace')}={value!r}")
    sign, whole, frac = match.groups()
    ns = int(whole) * 10**9 + int(((frac or b"") + b"000000000")[:9])
    return -ns if sign else ns


def _parse_pax(data: bytes, into: Dict[bytes, bytes]) -> None:
    """PAX extended header records, "<len> <key>=<value>\\n" (POSIX pax(1))."""
    pos, end = 0, len(data)
    while pos < end:
        if data[pos] == 0:
            if data[pos:].strip(b"\0"):
                raise LayerError("invalid PAX header: bytes after a NUL")
            return
        space = data.find(b" ", pos, pos + 24)
        if space < 0 or not _PAX_INT.fullmatch(data[pos:space]):
            raise LayerError("invalid PAX header: record without a length")
        length = int(data[pos:space])
        stop = pos + length
        if stop > end or stop <= space + 1 or data[stop - 1] != 0x0A:
            raise LayerError("invalid PAX header: record length does not match")
        key, eq, value = data[space + 1 : stop - 1].partition(b"=")
        if not eq or not key:
            raise LayerError("invalid PAX header: record without a key")
        into[key] = value
        pos = stop


class _Entry:
    __slots__ = (
        "name",
        "kind",
        "size",
        "mode",
        "uid",
        "gid",
        "mtime_ns",
        "atime_ns",
        "link",
        "devmajor",
        "devminor",
        "xattrs",
    )

    name: bytes
    kind: int
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int
    link: bytes
    devmajor: int
    devminor: int
    xattrs: Optional[Dict[str, bytes]]


class _TarReader:
    """A forward-only reader of ustar, GNU and PAX archives over the inflated chunks."""

    def __init__(self, inflater: _Inflater, limits: Limits) -> None:
        self._next = inflater.get
        self._limits = limits
        self._buf = b""
        self._pos = 0
        self._left = 0  # unread data + padding of the current entry
        self._global: Dict[bytes, bytes] = {}
        self.entries = 0

    # -- raw access
    def _refill(self) -> bool:
        chunk = self._next()
        if chunk is None:
            return False
        self._buf, self._pos = chunk, 0
        return True

    def _read(self, n: int) -> bytes:
        end = self._pos + n
        if end <= len(self._buf):
            out = self._buf[self._pos : end]
            self._pos = end
            return out
        parts = bytearray(self._buf[self._pos :])
        while len(parts) < n:
            if not self._refill():
                raise LayerError("truncated tar archive")
            take = n - len(parts)
            parts += self._buf[:take]
            self._pos = min(take, len(self._buf))
        return bytes(parts)

    def _skip(self, n: int) -> None:
        while n:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._refill():
                    raise LayerError("truncated tar archive")
                continue
            step = min(avail, n)
            self._pos += step
            n -= step

    def copy_to(self, fd: int, n: int) -> None:
        """Writes the current entry's first n data bytes to fd."""
        self._left -= n
        while n:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._refill():
                    raise LayerError("truncated tar archive")
                continue
            step = min(avail, n)
            view = memoryview(self._buf)[self._pos : self._pos + step]
            while view:
                view = view[os.write(fd, view) :]
            self._pos += step
            n -= step

    # -- headers
    def next(self) -> Optional[_Entry]:
        """The next entry, or None at the end of the archive."""
        if self._left:
            self._skip(self._left)
            self._left = 0
        pax: Dict[bytes, bytes] = {}
        long_name: Optional[bytes] = None
        long_link: Optional[bytes] = None
        header_bytes = 0
        while True:
            if self._pos == len(self._buf) and not self._refill():
                block = None  # end of stream on a block boundary: tar and Go accept it
            else:
                block = self._read(_BLOCK)
            if block is None or block == _ZERO_BLOCK:
                if pax or long_name is not None or long_link is not None:
                    raise LayerError("truncated tar archive: extended header without entry")
                return None
            self._check_sum(block)
            kind_flag = block[156:157]
            size = _num(block[124:136], "size")
            padded = size + (-size % _BLOCK)
            if kind_flag in (b"x", b"g", b"L", b"K"):
                header_bytes += size
                if header_bytes > self._limits.max_header_size:
                    raise LayerError(
                        f"extended tar headers larger than {self._limits.max_header_size} "
                        "bytes (Limits.max_header_size)"
                    )
                data = self._read(padded)[:size]
                if kind_flag == b"x":
                    _parse_pax(data, pax)
                elif kind_flag == b"g":
                    _parse_pax(data, self._global)
                elif kind_flag == b"L":
                    long_name = _cstr(data)
                else:
                    long_link = _cstr(data)
                continue
            if kind_flag == b"V":  # volume label: not a file
                self._skip(padded)
                continue
            self.entries += 1
            if self.entries > self._limits.max_entries:
                raise LayerError(
                    f"layer has more than {self._limits.max_entries} entries "
                    "(Limits.max_entries)"
                )
            return self._entry(block, kind_flag, size, pax, long_name, long_link)

    @staticmethod
    def _check_sum(block: bytes) -> None:
        stored = _num(block[148:156], "checksum")
        unsigned = sum(block) - sum(block[148:156]) + 256  # the field counts as spaces
        if stored == unsigned:
            return
        signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + 256
        if stored != signed:  # some historic tars summed signed chars
            raise LayerError("invalid tar header (bad checksum): not a tar archive?")

    def _entry(
        self,
        block: bytes,
        kind_flag: bytes,
        size: int,
        pax: Dict[bytes, bytes],
        long_name: Optional[bytes],
        long_link: Optional[bytes],
    ) -> _Entry:
        records = {**self._global, **pax} if self._global else pax
        e = _Entry()
        name = _cstr(block[0:100])
        if block[257:263] == b"ustar\0":  # POSIX ustar: 155-byte prefix (not in GNU's form)
            prefix = _cstr(block[345:500])
            if prefix:
                name = prefix + b"/" + name
        if long_name is not None:
            name = long_name
        link = long_link if long_link is not None else _cstr(block[157:257])
        e.mode = _num(block[100:108], "mode") & 0o7777
        e.uid = _num(block[108:116], "uid")
        e.gid = _num(block[116:124], "gid")
        e.mtime_ns = _num(block[136:148], "mtime") * 10**9
        atime_ns: Optional[int] = None
        if kind_flag in (b"3", b"4"):
            e.devmajor = _num(block[329:337], "devmajor")
            e.devminor = _num(block[337:345], "devminor")
        else:
            e.devmajor = e.devminor = 0
        e.xattrs = None
        if records:
            for key, value in records.items():
                if not value:  # an empty value deletes the record (POSIX pax(1))
                    continue
                if key == b"path":
                    name = value
                elif key == b"linkpath":
                    link = value
                elif key == b"size":
                    size = _pax_int(value, key)
                elif key == b"uid":
                    e.uid = _pax_int(value, key)
                elif key == b"gid":
                    e.gid = _pax_int(value, key)
                elif key == b"mtime":
                    e.mtime_ns = _pax_time(value, key)
                elif key == b"atime":
                    atime_ns = _pax_time(value, key)
                elif key == b"SCHILY.devmajor":
                    e.devmajor = _pax_int(value, key)
                elif key == b"SCHILY.devminor":
                    e.devminor = _pax_int(value, key)
                elif key.startswith(b"SCHILY.xattr."):
                    xname = key[13:].decode("utf-8", "surrogateescape")
                    e.xattrs = e.xattrs or {}
                    e.xattrs[xname] = value
                elif key.startswith(b"LIBARCHIVE.xattr."):  # bsdtar: %-escaped name, base64
                    xname = urllib.parse.unquote_to_bytes(key[17:]).decode(
                        "utf-8", "surrogateescape"
                    )
                    try:
                        decoded = base64.b64decode(value + b"=" * (-len(value) % 4))
                    except ValueError as exc:
                        raise LayerError(f"invalid PAX record {key!r}") from exc
                    e.xattrs = e.xattrs or {}
                    e.xattrs[xname] = decoded
                elif key.startswith(b"GNU.sparse."):
                    raise LayerError(f"sparse file {name!r} is not supported in layers")
        e.atime_ns = e.mtime_ns if atime_ns is None else atime_ns
        if kind_flag == b"S":
            raise LayerError(f"sparse file {name!r} is not supported in layers")
        kind = _KINDS.get(kind_flag)
        if kind is None:
            raise LayerError(f"unsupported tar entry type {kind_flag!r} for {name!r}")
        if kind == REG and kind_flag == b"\0" and name.endswith(b"/"):
            kind = DIR  # pre-POSIX tars mark directories only by the trailing slash
        if not 0 <= e.uid <= _ID_MAX or not 0 <= e.gid <= _ID_MAX:
            raise LayerError(f"invalid owner {e.uid}:{e.gid} for {name!r}")
        if size < 0:
            raise LayerError(f"invalid size for {name!r}")
        e.name, e.link, e.kind, e.size = name, link, kind, size
        self._left = size + (-size % _BLOCK)
        return e


# --------------------------------------------------------------------------- files

_DIRFD_CACHE = 32  # walk-ordered archives need few; pulls apply several layers at once
_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_O_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_O_DIR_FD = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WHITEOUT_PREFIX = b".wh."
_OPAQUE_MARKER = b".wh..wh..opq"
_AUFS_META = b".wh..wh."  # aufs's own bookkeeping (plnk, orph, aufs): skipped, as Docker does


def _split(path: bytes, what: str) -> Tuple[bytes, ...]:
    if b"\0" in path:
        raise LayerError(f"{what} {path!r} contains a NUL byte")
    parts = tuple(p for p in path.split(b"/") if p and p != b".")
    if b".." in parts:
        raise LayerError(f"{what} {path!r} contains '..'")
    return parts


def _show(parts: Sequence[bytes]) -> str:
    return os.fsdecode(b"/".join(parts)) or "/"


class _DirMeta:
    __slots__ = ("ident", "mode", "uid", "gid", "atime_ns", "mtime_ns", "xattrs")

    def __init__(
        self,
        ident: Tuple[int, int],
        mode: int,
        uid: Optional[int],
        gid: Optional[int],
        atime_ns: Optional[int],
        mtime_ns: Optional[int],
        xattrs: Optional[Dict[str, bytes]],
    ) -> None:
        self.ident = ident
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.atime_ns = atime_ns
        self.mtime_ns = mtime_ns
        self.xattrs = xattrs


def _clamp_ns(ns: int) -> int:
    return max(-(2**63), min(ns, 2**63 - 1))


class _Layer:
    """Creates the entries of one layer under the descriptor of ``dest``."""

    def __init__(
        self,
        dest: str,
        lower_dirs: Sequence[str],
        whiteout_format: str,
        format_is_default: bool,
        namespace: str,
        limits: Limits,
        existing: bool = False,
    ) -> None:
        self.privileged = os.geteuid() == 0
        self.existing = existing
        self.whiteout_format = whiteout_format
        self.format_is_default = format_is_default
        self.ns = namespace
        self.limits = limits
        self.lower_dirs = list(lower_dirs)
        self.root_fd = os.open(dest, _O_PATH_DIR)
        self.skipped: List[str] = []
        self.owners: Dict[bytes, Tuple[int, int, Optional[int]]] = {}
        self.depends_on_lower = False
        self.copied = 0
        self._dirfds: Dict[Tuple[bytes, ...], Tuple[int, Tuple[bytes, ...]]] = {}
        self._stale: List[int] = []  # dropped from the cache, closed after the entry
        self._dirs: Dict[Tuple[bytes, ...], _DirMeta] = {}
        self._whiteouts: Dict[Tuple[bytes, ...], Set[bytes]] = {}
        self._opaque: Set[Tuple[bytes, ...]] = set()
        self._skipped_paths: Set[Tuple[bytes, ...]] = set()
        self._lower_copies: Dict[Tuple[bytes, ...], Tuple[bytes, ...]] = {}
        try:
            if not existing and os.listdir(dest):
                raise LayerError(f"{dest} is not empty: apply a layer to a new directory")
            self._root_path = os.readlink(f"/proc/self/fd/{self.root_fd}".encode())
            st = os.fstat(self.root_fd)
            # New files take dest's group when dest is set-gid: then always chown.
            self.owner = (-1, -1) if st.st_mode & stat.S_ISGID else (os.geteuid(), os.getegid())
            self.umask_keeps = 0o777 & ~_umask()
            # dest gets 0755 (as Docker's layer directories) unless the archive says otherwise
            self._dirs[()] = _DirMeta((st.st_dev, st.st_ino),
                                      stat.S_IMODE(st.st_mode) if existing else 0o755,
                                      None, None, None, None, None)
        except BaseException:
            os.close(self.root_fd)
            raise

    def close(self) -> None:
        self._forget_dirfds()
        self._close_stale()
        os.close(self.root_fd)

    # -- resolution
    def _forget_dirfds(self) -> None:
        """Empties the cache; the descriptors stay open until the current entry is done,
        since its code may still hold them."""
        self._stale.extend(fd for fd, _ in self._dirfds.values())
        self._dirfds.clear()

    def _close_stale(self) -> None:
        for fd in self._stale:
            os.close(fd)
        self._stale.clear()

    def _openat2(self, dirfd: int, path: bytes, flags: int) -> int:
        """openat2 under dest's root; -errno on failure."""
        fd: int = _lib.ib_openat2(
            dirfd,
            path or b".",
            flags,
            0,
            _lib.IB_RESOLVE_IN_ROOT | _lib.IB_RESOLVE_NO_MAGICLINKS | _lib.IB_RESOLVE_NO_XDEV,
        )
        if fd == -errno.ENOSYS:
            raise HostNotSupported("applying layers needs openat2(2): Linux 5.6 or newer")
        return fd

    def _canonical(self, fd: int, literal: Tuple[bytes, ...]) -> Tuple[bytes, ...]:
        """The symlink-free path of a directory fd under dest (via /proc), so records made
        through a symlinked parent meet those made directly."""
        try:
            real = os.readlink(f"/proc/self/fd/{fd}".encode())
        except OSError:  # no /proc: the literal path is the best we know
            return literal
        root = self._root_path
        if real == root:
            return ()
        if not real.startswith(root.rstrip(b"/") + b"/"):
            raise LayerError(f"{_show(literal)} resolved outside the layer")  # cannot happen
        return tuple(real[len(root.rstrip(b"/")) + 1 :].split(b"/"))

    def dirfd(self, parts: Tuple[bytes, ...]) -> Tuple[int, Tuple[bytes, ...]]:
        """An O_PATH descriptor of the directory at ``parts`` (parents made as needed, 0755
        as tar makes them) and its canonical path.  Owned by the cache."""
        found = self._lookup(parts, create=True)
        if found is None:  # pragma: no cover - create=True raises instead
            raise LayerError(f"cannot open directory {_show(parts)}")
        return found

    def existing_dirfd(self, parts: Tuple[bytes, ...]) -> Optional[int]:
        """Like dirfd, but None when the directory does not exist."""
        found = self._lookup(parts, create=False)
        return None if found is None else found[0]

    def _lookup(
        self, parts: Tuple[bytes, ...], create: bool
    ) -> Optional[Tuple[int, Tuple[bytes, ...]]]:
        if not parts:
            return self.root_fd, ()
        hit = self._dirfds.get(parts)
        if hit is not None:
            return hit
        fd = self._openat2(self.root_fd, b"/".join(parts), _O_PATH_DIR)
        if fd == -errno.ENOENT and create:
            fd = self._make_parents(parts)
        if fd < 0:
            if not create and fd in (-errno.ENOENT, -errno.ENOTDIR):
                return None
            err = OSError(-fd, os.strerror(-fd))
            raise LayerError(f"cannot open directory {_show(parts)}: {err.strerror}") from err
        canon = self._canonical(fd, parts)
        if len(self._dirfds) >= _DIRFD_CACHE:
            self._forget_dirfds()
        self._dirfds[parts] = (fd, canon)
        return fd, canon

    def _make_parents(self, parts: Tuple[bytes, ...]) -> int:
        parent_fd = self.root_fd
        try:
            for i in range(1, len(parts) + 1):
                fd = self._openat2(self.root_fd, b"/".join(parts[:i]), _O_PATH_DIR)
                if fd == -errno.ENOENT:
                    try:
                        os.mkdir(parts[i - 1], 0o700, dir_fd=parent_fd)
                    except FileExistsError:  # a dangling symlink or a file in the way
                        return -errno.ENOTDIR
                    fd = self._openat2(self.root_fd, b"/".join(parts[:i]), _O_PATH_DIR)
                    if fd >= 0:
                        st = os.fstat(fd)
                        canon = self._canonical(fd, parts[:i])
                        if canon not in self._dirs:
                            self._dirs[canon] = _DirMeta(
                                (st.st_dev, st.st_ino), 0o755, None, None, None, None, None
                            )
                if fd < 0 or i == len(parts):
                    return fd
                if parent_fd != self.root_fd:
                    os.close(parent_fd)
                parent_fd = fd
            return -errno.ENOENT  # pragma: no cover - the loop returns
        finally:
            if parent_fd != self.root_fd:
                os.close(parent_fd)

    def _make_room(self, pfd: int, name: bytes, keep_dir: bool = False) -> bool:
        """Removes what stands at name so an entry can take its place (tar and OCI: a new
        entry replaces a non-directory; anything but a directory replaces a directory and
        its contents).  Returns True when an existing directory is kept."""
        try:
            st = os.lstat(name, dir_fd=pfd)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            _rmtree_at(pfd, name)
        else:
            os.unlink(name, dir_fd=pfd)
        self._forget_dirfds()  # a cached descriptor may name what was just removed
        return False

    # -- entries
    def apply(self, e: _Entry, reader: _TarReader) -> None:
        try:
            self._apply(e, reader)
        finally:
            if self._stale:
                self._close_stale()

    def _apply(self, e: _Entry, reader: _TarReader) -> None:
        parts = _split(e.name, "member name")
        for part in parts[:-1]:
            if part.startswith(_WHITEOUT_PREFIX):
                if part.startswith(_AUFS_META):
                    return
                raise LayerError(f"whiteout {_show(parts)} cannot be a directory")
        if not parts:
            if e.kind != DIR:
                raise LayerError("an entry would replace the layer root with a non-directory")
            self._dirs[()] = self._meta_for(e, self._dirs[()].ident)
            return
        name = parts[-1]
        if name.startswith(_WHITEOUT_PREFIX):
            self._whiteout(parts)
            return
        if self._skipped_paths or self._lower_copies:  # a new entry takes this name
            self._skipped_paths.discard(parts)
            for target in [t for t, p in self._lower_copies.items() if p == parts]:
                del self._lower_copies[target]
        pfd, pcanon = self.dirfd(parts[:-1])
        kind = e.kind
        if kind == REG:
            self._file(pfd, name, e, reader)
        elif kind == DIR:
            self._dir(pfd, pcanon, name, e)
        elif kind == SYM:
            self._symlink(pfd, name, e)
        elif kind == LNK:
            self._hardlink(pfd, parts, e)
        elif kind == FIFO:
            self._node(pfd, parts, e, stat.S_IFIFO)
        elif kind == CHR:
            self._node(pfd, parts, e, stat.S_IFCHR)
        else:
            self._node(pfd, parts, e, stat.S_IFBLK)
        if not self.privileged and (e.uid or e.gid) and kind in (REG, DIR, SYM, FIFO):
            # chown(2) clears set-id bits of files: remember the mode to put back
            setid = kind == REG and e.mode & (stat.S_ISUID | stat.S_ISGID)
            self.owners[b"/".join(parts)] = (e.uid, e.gid, e.mode if setid else None)

    def _meta_for(self, e: _Entry, ident: Tuple[int, int]) -> _DirMeta:
        return _DirMeta(ident, e.mode, e.uid, e.gid, e.atime_ns, e.mtime_ns, e.xattrs)

    def _whiteout(self, parts: Tuple[bytes, ...]) -> None:
        name = parts[-1]
        if self.existing:
            raise LayerError(f"{_show(parts)}: whiteout names are not copied into a container")
        if name.startswith(_AUFS_META) and name != _OPAQUE_MARKER:
            return
        target = name[len(_WHITEOUT_PREFIX) :]
        if target in (b"", b".", b".."):
            raise LayerError(f"malformed whiteout {_show(parts)}")
        try:
            _, canon = self.dirfd(parts[:-1])
        except LayerError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.ENOTDIR:
                # below a non-directory this layer made (umoci writes "f" then
                # "f/.wh.x"): that entry already hides everything below it
                return
            raise
        if name == _OPAQUE_MARKER:
            self._opaque.add(canon)
        else:
            self._whiteouts.setdefault(canon, set()).add(target)

    def _file(self, pfd: int, name: bytes, e: _Entry, reader: _TarReader) -> None:
        # Plain modes are given to open(2) directly (saving a fchmod) when the umask
        # keeps them whole and no chown or xattr comes after that could need the
        # owner's write permission or clear set-id bits.
        chown = self.privileged and (e.uid, e.gid) != self.owner
        direct = not (e.mode & ~self.umask_keeps or chown or e.xattrs)
        mode = e.mode if direct else 0o600
        try:
            fd = os.open(name, _O_NEW_FILE, mode, dir_fd=pfd)
        except FileExistsError:
            self._make_room(pfd, name)
            fd = os.open(name, _O_NEW_FILE, mode, dir_fd=pfd)
        try:
            if e.size:
                reader.copy_to(fd, e.size)
            if chown:
                os.fchown(fd, e.uid, e.gid)
            if e.xattrs:
                self._set_xattrs(fd, e.xattrs, e.name)
            if not direct:
                os.fchmod(fd, e.mode)
            os.utime(fd, ns=(_clamp_ns(e.atime_ns), _clamp_ns(e.mtime_ns)))
        finally:
            os.close(fd)

    def _dir(self, pfd: int, pcanon: Tuple[bytes, ...], name: bytes, e: _Entry) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
        except FileExistsError:
            if not self._make_room(pfd, name, keep_dir=True):
                os.mkdir(name, 0o700, dir_fd=pfd)
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        self._dirs[pcanon + (name,)] = self._meta_for(e, (st.st_dev, st.st_ino))

    def _symlink(self, pfd: int, name: bytes, e: _Entry) -> None:
        if not e.link or b"\0" in e.link:
            raise LayerError(f"symlink {e.name!r} has an invalid target {e.link!r}")
        try:
            os.symlink(e.link, name, dir_fd=pfd)
        except FileExistsError:
            self._make_room(pfd, name)
            os.symlink(e.link, name, dir_fd=pfd)
        self._finish_node(pfd, name, e, chmod=False)

    def _finish_node(self, pfd: int, name: bytes, e: _Entry, chmod: bool) -> None:
        """Metadata of an entry we hold no descriptor of (symlink, fifo, device)."""
        if self.privileged:
            os.chown(name, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)
        if e.xattrs:
            # xattrs of a symlink or special file: no fd can carry them (O_PATH fds refuse
            # fsetxattr), so name it under the parent's /proc magic link, not followed.
            self._set_xattrs(f"/proc/self/fd/{pfd}/".encode() + name, e.xattrs, e.name)
        if chmod:  # name was just made by mknod/mkfifo: not a symlink, nothing to follow
            os.chmod(name, e.mode, dir_fd=pfd)
        os.utime(
            name,
            ns=(_clamp_ns(e.atime_ns), _clamp_ns(e.mtime_ns)),
            dir_fd=pfd,
            follow_symlinks=False,
        )

    def _node(self, pfd: int, parts: Tuple[bytes, ...], e: _Entry, kind: int) -> None:
        name = parts[-1]
        if kind != stat.S_IFIFO and not self.privileged:
            self._skip(parts, "device node needs root (mknod)")
            return
        device = os.makedev(e.devmajor, e.devminor) if kind != stat.S_IFIFO else 0
        for attempt in (1, 2):
            try:
                os.mknod(name, kind | 0o600, device, dir_fd=pfd)
                break
            except FileExistsError:
                if attempt == 2:
                    raise
                self._make_room(pfd, name)
            except PermissionError:  # root without CAP_MKNOD (inside some containers)
                self._skip(parts, "device node refused by the host (mknod: EPERM)")
                return
        self._finish_node(pfd, name, e, chmod=True)

    def _skip(self, parts: Tuple[bytes, ...], why: str) -> None:
        self._skipped_paths.add(parts)
        self.skipped.append(f"{_show(parts)}: {why}")

    def _hardlink(self, pfd: int, parts: Tuple[bytes, ...], e: _Entry) -> None:
        name = parts[-1]
        target = _split(e.link, "hard link target")
        if not target:
            raise LayerError(f"hard link {_show(parts)} points at the layer root")
        if target[-1].startswith(_WHITEOUT_PREFIX):
            raise LayerError(f"hard link {_show(parts)} points at a whiteout")
        if target in self._skipped_paths:
            self._skip(parts, f"hard link to skipped {_show(target)}")
            return
        target = self._lower_copies.get(target, target)
        tfd = self.existing_dirfd(target[:-1])
        for attempt in (1, 2):
            if tfd is None:
                break
            try:
                # linkat without AT_SYMLINK_FOLLOW: a symlink target is linked itself,
                # never followed, so the new name is always an inode inside dest
                os.link(target[-1], name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
                return
            except FileNotFoundError:
                break
            except FileExistsError:
                src = os.stat(target[-1], dir_fd=tfd, follow_symlinks=False)
                dst = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                if stat.S_ISDIR(src.st_mode):
                    raise LayerError(f"hard link {_show(parts)} to directory {_show(target)}")
                if (src.st_dev, src.st_ino) == (dst.st_dev, dst.st_ino):
                    return
                if attempt == 2:
                    raise
                if target[: len(parts)] == parts:
                    # the target lives below the name being replaced: hold its inode
                    # under a temporary name while the old tree goes, then rename
                    tmp = b".isobox-link-" + os.urandom(8).hex().encode()
                    os.link(target[-1], tmp, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
                    self._make_room(pfd, name)
                    os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
                    return
                self._make_room(pfd, name)
            except PermissionError as exc:  # a directory, or a host's protected_hardlinks
                raise LayerError(f"cannot hard link {_show(parts)} to {_show(target)}") from exc
        self._link_from_lower(pfd, parts, target)

    def _link_from_lower(
        self, pfd: int, parts: Tuple[bytes, ...], target: Tuple[bytes, ...]
    ) -> None:
        """A hard link to a file of a lower layer: overlayfs layers cannot share an inode,
        so the file is copied (as overlayfs's own copy-up does); later links to the same
        target link to this copy."""
        self.depends_on_lower = True
        name = parts[-1]
        found = self._find_in_lowers(target)
        if found is None:
            raise LayerError(f"hard link {_show(parts)} points at missing {_show(target)}")
        tfd, st = found
        try:
            self._make_room(pfd, name)
            if stat.S_ISREG(st.st_mode):
                self._copy_file(tfd, target[-1], pfd, name, st)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(target[-1], dir_fd=tfd), name, dir_fd=pfd)
                if self.privileged:
                    os.chown(name, st.st_uid, st.st_gid, dir_fd=pfd, follow_symlinks=False)
            else:
                raise LayerError(
                    f"hard link {_show(parts)} to lower {_show(target)}: "
                    "only files and symlinks can be copied up"
                )
            self._lower_copies[target] = parts
        finally:
            os.close(tfd)

    def _find_in_lowers(
        self, target: Tuple[bytes, ...]
    ) -> Optional[Tuple[int, os.stat_result]]:
        """The lower layers' view of ``target``, as overlayfs would merge them: the
        highest layer holding it wins; a whiteout or a non-directory on the way hides it;
        an opaque directory on the way hides the layers below.  Walked one component at a
        time with O_NOFOLLOW, so the lookup cannot leave the layer either.  Returns an
        O_PATH fd of the parent (the caller closes it) and the entry's lstat."""
        for lower in reversed(self.lower_dirs):
            fd = os.open(lower, _O_PATH_DIR)
            opaque = False
            try:
                for comp in target[:-1]:
                    try:
                        st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        break
                    if not stat.S_ISDIR(st.st_mode):
                        return None
                    child = os.open(comp, _O_PATH_DIR | os.O_NOFOLLOW, dir_fd=fd)
                    os.close(fd)
                    fd = child
                    opaque = opaque or _xattr_is(fd, "overlay.opaque", b"y")
                else:
                    try:
                        st = os.stat(target[-1], dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        pass
                    else:
                        if _is_whiteout(fd, target[-1], st):
                            return None
                        fd, found = -1, fd
                        return found, st
            finally:
                if fd >= 0:
                    os.close(fd)
            if opaque:
                return None
        return None

    def _copy_file(self, sfd_dir: int, sname: bytes, pfd: int, name: bytes, st: os.stat_result) -> None:
        self.copied += st.st_size
        if self.copied > self.limits.max_total_size:
            raise LayerError("hard links copy more than Limits.max_total_size from lower layers")
        src = os.open(sname, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd_dir)
        try:
            dst = os.open(name, _O_NEW_FILE, 0o600, dir_fd=pfd)
            try:
                left = st.st_size
                while left > 0:
                    n = os.sendfile(dst, src, None, min(left, 64 * MiB))
                    if n == 0:
                        break
                    left -= n
                if self.privileged:
                    os.fchown(dst, st.st_uid, st.st_gid)
                os.fchmod(dst, stat.S_IMODE(st.st_mode))
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(dst)
        finally:
            os.close(src)

    # -- xattrs
    def _xattr_allowed(self, key: str) -> Optional[str]:
        """None when the archive's xattr may be set here, else why not."""
        if key.startswith(("trusted.overlay.", "user.overlay.")):
            return "overlayfs metadata from the archive is refused"
        if key.startswith("user."):
            return None
        if key == "security.capability" or key.startswith("trusted."):
            return None if self.privileged else "needs root"
        return "namespace not restored from layers"

    def _set_xattrs(self, target: Union[int, bytes], xattrs: Dict[str, bytes], what: bytes) -> None:
        for key, value in xattrs.items():
            why = self._xattr_allowed(key)
            if why is None:
                try:
                    if isinstance(target, int):
                        os.setxattr(target, key, value)
                    else:
                        os.setxattr(target, key, value, follow_symlinks=False)
                    continue
                except OSError as exc:
                    why = exc.strerror or str(exc)
            self.skipped.append(f"{os.fsdecode(what)}: xattr {key}: {why}")

    # -- end of the layer
    def finish(self) -> None:
        self._forget_dirfds()
        self._apply_whiteouts()
        self._apply_dir_metadata()

    def _open_dir(self, parts: Tuple[bytes, ...]) -> Optional[int]:
        """A read fd of the directory at canonical ``parts``, or None if none is there."""
        if not parts:
            return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.root_fd)
        if len(parts) == 1:
            pfd = self.root_fd
        else:
            pfd = self._openat2(self.root_fd, b"/".join(parts[:-1]), _O_PATH_DIR)
            if pfd < 0:
                return None
        try:
            return os.open(parts[-1], _O_DIR_FD, dir_fd=pfd)
        except OSError:
            return None
        finally:
            if pfd != self.root_fd:
                os.close(pfd)

    def _opaque_xattr(self, fd: int, value: bytes) -> None:
        os.setxattr(fd, f"{self.ns}.overlay.opaque", value)

    def _apply_whiteouts(self) -> None:
        opaque = set(self._opaque)
        if () in opaque:
            # overlayfs ignores the opaque xattr on a lower layer's root: hide each name of
            # the lower roots with a whiteout instead.
            opaque.discard(())
            self.depends_on_lower = True
            at_root = self._whiteouts.setdefault((), set())
            for lower in self.lower_dirs:
                at_root.update(os.fsencode(n) for n in os.listdir(lower))
        whiteouts: Dict[Tuple[bytes, ...], List[bytes]] = {}
        for parent, wanted in self._whiteouts.items():
            fd = self._open_dir(parent)
            if fd is None:
                continue
            try:
                for name in sorted(wanted):
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        whiteouts.setdefault(parent, []).append(name)
                        continue
                    if stat.S_ISDIR(st.st_mode):  # deleted below, recreated here
                        opaque.add(parent + (name,))
            finally:
                os.close(fd)
        for parts in sorted(opaque):
            fd = self._open_dir(parts)
            if fd is None:
                continue
            try:
                self._opaque_xattr(fd, b"y")
            except OSError as exc:
                raise LayerError(
                    f"cannot mark {_show(parts)} opaque ({self.ns}.overlay.opaque)"
                ) from exc
            finally:
                os.close(fd)
        for parent, names in whiteouts.items():
            if any(parent[:i] in opaque for i in range(len(parent) + 1)):
                continue  # an opaque directory already hides everything below
            fd = self._open_dir(parent)
            if fd is None:
                continue
            try:
                for name in names:
                    self._make_whiteout(fd, parent, name)
            finally:
                os.close(fd)

    def _make_whiteout(self, fd: int, parent: Tuple[bytes, ...], name: bytes) -> None:
        if self.whiteout_format == "device":
            try:
                # a 0:0 character device; any user may make one since Linux 5.8
                # (a3c751a50fe6 "vfs: allow unprivileged whiteout creation")
                os.mknod(name, stat.S_IFCHR, 0, dir_fd=fd)
                return
            except PermissionError as exc:
                if not self.format_is_default:
                    raise LayerError(
                        f"cannot create whiteout {_show(parent + (name,))}"
                    ) from exc
                log.warning("mknod of a whiteout refused; using xattr whiteouts (Linux >= 6.7)")
                self.whiteout_format = "xattr"
        try:
            wfd = os.open(name, _O_NEW_FILE, 0o600, dir_fd=fd)
            try:
                os.setxattr(wfd, f"{self.ns}.overlay.whiteout", b"y")
            finally:
                os.close(wfd)
            # the parent says it holds xattr whiteouts, so overlayfs looks for them
            self._opaque_xattr(fd, b"x")
        except OSError as exc:
            raise LayerError(f"cannot create whiteout {_show(parent + (name,))}") from exc

    def _apply_dir_metadata(self) -> None:
        # Deepest first: a directory's mode may forbid the caller to enter it, and
        # creating content changes its mtime.
        for parts in sorted(self._dirs, key=len, reverse=True):
            meta = self._dirs[parts]
            fd = self._open_dir(parts)
            if fd is None:
                continue
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != meta.ident:
                    continue  # replaced by a later entry
                if self.privileged and meta.uid is not None and meta.gid is not None:
                    os.fchown(fd, meta.uid, meta.gid)
                if meta.xattrs:
                    self._set_xattrs(fd, meta.xattrs, b"/".join(parts) or b"/")
                os.fchmod(fd, meta.mode)
                if meta.mtime_ns is not None:
                    atime = meta.atime_ns if meta.atime_ns is not None else meta.mtime_ns
                    os.utime(fd, ns=(_clamp_ns(atime), _clamp_ns(meta.mtime_ns)))
            finally:
                os.close(fd)


def _umask() -> int:
    """The process umask, read without setting it (os.umask would race other threads)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777  # unknown: never trust open(2)'s mode, always fchmod


def _xattr_is(fd: int, name: str, value: Optional[bytes], child: bytes = b"") -> bool:
    """Whether the file at fd (O_PATH; or its child, not followed) has the overlay xattr
    ``trusted.<name>`` or ``user.<name>`` (with the given value, when one is given)."""
    path = f"/proc/self/fd/{fd}".encode() + (b"/" + child if child else b"")
    for ns in ("trusted", "user"):
        try:
            # the fd's own magic link must be followed; a child must not be
            got = os.getxattr(path, f"{ns}.{name}", follow_symlinks=not child)
        except OSError:
            continue
        if value is None or got == value:
            return True
    return False


def _is_whiteout(dirfd: int, name: bytes, st: os.stat_result) -> bool:
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    return stat.S_ISREG(st.st_mode) and st.st_size == 0 and _xattr_is(
        dirfd, "overlay.whiteout", None, name
    )


def _rmtree_at(dirfd: int, name: Union[str, bytes]) -> None:
    """Removes the tree at name under dirfd without following any symlink, making
    directories writable where their mode forbids it (a finished layer holds 0555
    directories).

    Iterative, and with two fds open at most whatever the depth (a container or a layer
    can nest directories deeper than Python recurses, and than an unprivileged user's
    1024 fds): it goes down with openat and back up with "..", checking that each
    parent is still the directory it came from."""
    privileged = os.geteuid() == 0
    path: List[Tuple[Union[str, bytes], Tuple[int, int]]] = []  # from the top: name, (dev, ino)

    def enter(parent: int, child: Union[str, bytes]) -> int:
        # Every directory entered is made rwx for its owner first, so its children can be
        # opened, chmod-ed and unlinked in turn (needless, and skipped, as root).
        try:
            fd = os.open(child, _O_DIR_FD, dir_fd=parent)
        except PermissionError:
            # not readable; its parent is searchable (entered before), so chmod it by
            # name: fchmodat follows a final symlink, but the lstat proves there is none
            if not stat.S_ISDIR(os.lstat(child, dir_fd=parent).st_mode):
                raise
            os.chmod(child, 0o700, dir_fd=parent)
            fd = os.open(child, _O_DIR_FD, dir_fd=parent)
        try:
            st = os.fstat(fd)
            if not privileged and stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
                os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
        except BaseException:
            os.close(fd)
            raise
        path.append((child, (st.st_dev, st.st_ino)))
        return fd

    fd = enter(dirfd, name)
    try:
        while True:
            sub: Optional[str] = None
            with os.scandir(fd) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        sub = entry.name
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if sub is not None:
                inner = enter(fd, sub)
                os.close(fd)
                fd = inner
                continue
            child, _ = path.pop()  # fd is empty now: remove it from its parent
            if not path:
                os.close(fd)
                fd = -1
                os.rmdir(child, dir_fd=dirfd)
                return
            up = os.open("..", _O_DIR_FD, dir_fd=fd)
            st = os.fstat(up)
            os.close(fd)
            fd = up
            if (st.st_dev, st.st_ino) != path[-1][1]:
                raise OSError(errno.ESTALE, "a directory moved while its tree was being removed")
            os.rmdir(child, dir_fd=fd)
    finally:
        if fd >= 0:
            os.close(fd)


def remove_tree(path: Union[str, "os.PathLike[str]"]) -> None:
    """Removes a layer directory (or any tree) that apply_layer made.

    shutil.rmtree fails without root on the read-only directories images contain; this
    makes each writable as needed, never follows a symlink, and ignores a missing path.
    """
    path = os.fspath(path)
    parent, name = os.path.split(os.path.abspath(path))
    try:
        pfd = os.open(parent, _O_PATH_DIR)
    except FileNotFoundError:
        return
    try:
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            _rmtree_at(pfd, name)
        else:
            os.unlink(name, dir_fd=pfd)
    finally:
        os.close(pfd)


# --------------------------------------------------------------------------- API


def apply_layer(
    chunks: Iterable[bytes],
    dest: Union[str, "os.PathLike[str]"],
    *,
    media_type: Optional[str] = None,
    limits: Limits = Limits(),
    lower_dirs: Sequence[Union[str, "os.PathLike[str]"]] = (),
    whiteout_format: Optional[str] = None,
    userxattr: Optional[bool] = None,
    existing: bool = False,
) -> LayerStats:
    """Applies one layer stream to ``dest``, an existing empty directory (a temporary name
    the caller renames once this returns; after an exception the caller removes it with
    `remove_tree`).

    ``chunks`` are the blob's bytes as they arrive (gzip, zstd or plain tar, by magic
    bytes; ``media_type``, if given, must be a layer type).  Exceptions the iterator
    raises (a digest mismatch) propagate unchanged; the stream is always read to its end.

    ``lower_dirs`` are the layers below, lowest first: a hard link to a file of a lower
    layer is resolved there and copied, and an opaque marker at the root whites out their
    names.  Either makes the result depend on them (`LayerStats.depends_on_lower`).

    ``whiteout_format``: "device" (0:0 character devices; the default, for root and, since
    Linux 5.8, for everyone, falling back to "xattr" if mknod is refused) or "xattr"
    (overlayfs >= 6.7 xattr whiteouts).  ``userxattr``: the layer will be mounted with
    ``-o userxattr`` in a user namespace, so overlay metadata goes to ``user.overlay.*``
    instead of ``trusted.overlay.*``; default True unless running as root.

    ``existing=True`` applies a plain tar stream into a directory that already has content
    (copies into a container, `docker cp`): its mode is kept, and whiteout names are refused
    rather than applied.

    Raises LayerError for malformed or hostile input, and never writes outside ``dest``.
    """
    if _lib is None:
        raise HostNotSupported("isobox's native core is not built; reinstall: pip install .")
    if media_type is not None and media_type not in LAYER_MEDIA_TYPES:
        raise LayerError(f"{media_type!r} is not a layer media type isobox can apply")
    if whiteout_format not in (None, "device", "xattr"):
        raise InvalidOption(f"whiteout_format must be 'device' or 'xattr', not {whiteout_format!r}")
    privileged = os.geteuid() == 0
    if userxattr is None:
        userxattr = not privileged
    if not userxattr and not privileged:
        raise InvalidOption("trusted.overlay.* xattrs need root: pass userxattr=True")
    try:
        layer = _Layer(
            os.fspath(dest),
            [os.fspath(d) for d in lower_dirs],
            whiteout_format or "device",
            whiteout_format is None,
            "user" if userxattr else "trusted",
            limits,
            existing,
        )
    except OSError as exc:
        raise LayerError(f"cannot apply a layer to {os.fspath(dest)!r}: {exc.strerror}") from exc
    inflater = _Inflater(chunks, limits)
    inflater.start()
    source_error: Optional[Exception] = None
    try:
        reader = _TarReader(inflater, limits)
        try:
            while True:
                entry = reader.next()
                if entry is None:
                    break
                try:
                    layer.apply(entry, reader)
                except OSError as exc:
                    raise LayerError(
                        f"cannot apply {os.fsdecode(entry.name)!r}: {exc.strerror or exc}"
                    ) from exc
            inflater.drain()
            layer.finish()
        except _FromSource as exc:
            source_error = exc.original  # raised below, outside this handler's context
        except OSError as exc:
            raise LayerError(f"cannot apply layer: {exc.strerror or exc}") from exc
        except RecursionError as exc:  # pragma: no cover - defensive; code is iterative
            raise LayerError("layer nests too deeply") from exc
    finally:
        inflater.close()
        layer.close()
    if source_error is not None:
        raise source_error
    if layer.skipped:
        log.warning(
            "layer %s: %d entries or xattrs not applied without privilege: %s%s",
            "sha256:" + inflater.sha256.hexdigest()[:12],
            len(layer.skipped),
            "; ".join(layer.skipped[:5]),
            " ..." if len(layer.skipped) > 5 else "",
        )
    return LayerStats(
        diff_id="sha256:" + inflater.sha256.hexdigest(),
        size=inflater.size,
        entries=reader.entries,
        skipped=tuple(layer.skipped),
        depends_on_lower=layer.depends_on_lower,
        owners=tuple((os.fsdecode(p), u, g, m) for p, (u, g, m) in layer.owners.items()),
    )
