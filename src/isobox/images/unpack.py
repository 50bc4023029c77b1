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
  before anything is allocated for them; a sparse file's map counts as extended header,
  and each of its regions as an entry.  Headers are parsed here, not by tarfile, for
  that reason (tarfile reads a PAX header of any size into memory) and to keep names as
  bytes.  Every malformed input raises `LayerError`, with the low-level error as
  ``__cause__``.
* The archive is read as Go's archive/tar (containerd, Docker, most image scanners) and
  GNU tar both read it: several extended headers in a row, GNU long names, sparse files
  in all of GNU's forms (old 'S' headers, PAX 0.0, 0.1 and 1.0; written with holes), PAX
  records checked as strictly as either checks them.  Where the two read the same bytes
  differently, the layer is refused (`_TarReader` lists the cases), so that no file is
  hidden from the tools that inspect a layer; PAX global headers are ignored, as
  containerd and Docker ignore them.
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

import errno
import itertools
import logging
import os
import queue
import re
import stat
import threading
import zlib
from typing import IO, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union, cast

import attrs
import zstandard

from ..errors import HostNotSupported, InvalidOption, LayerError
from .digest import Hasher, is_digest
from .manifest import LAYER_MEDIA_TYPES

try:
    from .._native._core import lib as _lib
except ImportError:  # pragma: no cover - a broken install; apply_layer says so
    _lib = None

__all__ = ["Limits", "LayerStats", "apply_layer", "remove_tree", "LAYER_MEDIA_TYPES"]

log = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

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
    #: bytes of PAX and GNU long-name headers in front of one entry, and of its sparse map
    #: (sparse regions count as entries in ``max_entries``)
    max_header_size: int = attrs.field(default=1 * MiB, validator=_positive)


def _check_diff_id(value: object) -> None:
    if not (is_digest(value) and str(value).startswith("sha256:")):
        raise ValueError(f"a diff_id is a sha256 digest, not {value!r}")


@attrs.frozen
class LayerStats:
    """What applying a layer found: its diff_id (sha256 of the uncompressed tar, as the
    image config lists it), size and entry count."""

    diff_id: str = attrs.field(validator=lambda _i, _a, v: _check_diff_id(v))
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
_INT64_MAX = 2**63 - 1
_ID_MAX = 2**32 - 2  # (uid_t)-1 means "leave unchanged" to chown(2)
_PAX_TIME = re.compile(rb"(-?)([0-9]+)(?:\.([0-9]*))?")
# A numeric header field as both Go (parseNumeric: NULs and spaces trimmed at both ends, cut
# at the first NUL) and GNU tar (from_header: one leading NUL, spaces, octal digits, then a
# NUL or a space) read it to the same number; anything else one of them reads differently.
_NUM_FIELD = re.compile(rb"\0? *([0-7]+)(?:[ \0]*|\0.*)", re.DOTALL)
_BLANK_FIELD = re.compile(rb"\0? *\0[ \0]*")  # 0 to both (all spaces is an error to GNU tar)
# Types whose size both readers ignore: no data follows (Go isHeaderOnlyType, GNU tar).
_HEADER_ONLY = frozenset((b"1", b"5"))
# Types Go reads no data for but GNU tar does: a size other than 0 splits the readers.
_DATALESS = frozenset((b"2", b"3", b"4", b"6"))
# PAX values that stand for the ustar string fields: Go (validPAXRecord) refuses a NUL
# in them, GNU tar cuts the value there.
_PAX_STRINGS = frozenset((b"path", b"linkpath", b"uname", b"gname", b"GNU.sparse.name"))
_SPARSE_OFFSET = b"GNU.sparse.offset"
_SPARSE_NUMBYTES = b"GNU.sparse.numbytes"
_Map = List[Tuple[int, int]]  # a sparse file's data regions: (offset, length)


def _cstr(field: bytes) -> bytes:
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


def _num(field: bytes, what: str) -> int:
    """A numeric header field: octal text, or GNU base-256 (first byte 0x80, or 0xff for
    a negative number), read only when Go and GNU tar read it alike."""
    text = field.rstrip(b" \0")
    if text.isdigit():  # the common form: digits, then NUL or space padding
        try:
            return int(text, 8)
        except ValueError:
            pass  # an 8 or a 9
    elif field[0] == 0x80 or field[0] == 0xFF:
        # GNU tar takes only these two first bytes; Go takes any with the high bit set
        value = int.from_bytes(field, "big", signed=True) if field[0] == 0xFF else (
            int.from_bytes(field[1:], "big"))
        if -(2**63) <= value <= _INT64_MAX:  # Go refuses what int64 cannot hold
            return value
    else:
        match = _NUM_FIELD.fullmatch(field)
        if match:
            return int(match.group(1), 8)
        if _BLANK_FIELD.fullmatch(field):
            return 0
    raise LayerError(f"invalid tar header: {what} field {field!r} is not a number")


def _decimal(digits: bytes, limit: int) -> Optional[int]:
    """ASCII digits as an int no larger than limit, else None (without handing int() a
    string of thousands of digits)."""
    digits = digits.lstrip(b"0")
    if len(digits) > 19:
        return None
    value = int(digits or b"0")
    return value if value <= limit else None


def _pax_uint(value: bytes, key: bytes, limit: int = _INT64_MAX) -> int:
    # Decimal digits only: GNU tar refuses a sign ("invalid uid=+7"), and both refuse
    # what does not fit (GNU tar: uid_t, off_t; Go: int64).
    number = _decimal(value, limit) if value.isdigit() else None
    if number is None:
        raise LayerError(f"invalid PAX record {key.decode('ascii', 'replace')}={value!r}")
    return number


def _pax_time(value: bytes, key: bytes) -> int:
    """Seconds with an optional fraction, in ns, as Go's parsePAXTime and GNU tar's
    decode_time both read them: no "+" (GNU tar), no exponent (Go), within int64 seconds,
    any number of fraction digits (the first nine count)."""
    match = _PAX_TIME.fullmatch(value)
    sign, whole, frac = match.groups() if match else (b"", b"", b"")
    secs = _decimal(whole, 2**63 if sign else _INT64_MAX) if match else None
    if secs is None:
        raise LayerError(f"invalid PAX record {key.decode('ascii', 'replace')}={value!r}")
    ns = secs * 10**9 + int(((frac or b"")[:9] + b"000000000")[:9])
    return -ns if sign else ns


def _parse_pax(data: bytes) -> Tuple[Dict[bytes, bytes], List[bytes]]:
    """The records of one PAX extended header, "<len> <key>=<value>\\n" (POSIX pax(1)),
    checked so that Go's archive/tar (parsePAXRecord, validPAXRecord) and GNU tar
    (xheader.c decode_record) would both read them, and read them alike.  Returns the
    records (a later one wins) and, apart, the values of GNU sparse 0.0 offset/numbytes
    records in order (they repeat, so a dict cannot hold them)."""
    records: Dict[bytes, bytes] = {}
    sparse: List[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        space = data.find(b" ", pos, end)
        digits = data[pos:space] if space > pos else b""
        length = _decimal(digits, end) if digits.isdigit() else None
        if length is None:
            # NUL padding ends the records for GNU tar; Go refuses it
            raise LayerError("a record does not start with its decimal length and a space")
        stop = pos + length
        if stop <= space + 1 or data[stop - 1] != 0x0A:
            raise LayerError("a record's length does not end it at a newline")
        key, eq, value = data[space + 1 : stop - 1].partition(b"=")
        if not eq or not key:
            raise LayerError("a record is not key=value")
        if key[0] in b" \t":  # GNU tar skips the blanks, Go keeps them in the key
            raise LayerError(f"record key {key!r} starts with a blank")
        if b"\0" in key:
            raise LayerError(f"record key {key!r} holds a NUL byte")
        if key in _PAX_STRINGS and b"\0" in value:
            raise LayerError(f"record {key.decode('ascii')} holds a NUL byte")
        if key == _SPARSE_OFFSET or key == _SPARSE_NUMBYTES:
            # GNU sparse 0.0: offset and numbytes records alternate (Go checks the same)
            if key != (_SPARSE_NUMBYTES if len(sparse) % 2 else _SPARSE_OFFSET) or b"," in value:
                raise LayerError("GNU sparse 0.0 offset and numbytes records out of order")
            sparse.append(value)
        else:
            records[key] = value
        pos = stop
    return records, sparse


def _regions_in(regions: "_Map", size: int, data: int, name: bytes) -> "_Map":
    """Checks a sparse map against the file's size and the data stored for it, as Go
    (validateSparseEntries, errMissData, errUnrefData) and GNU tar (sparse.c) check it:
    regions in order, none overlapping, none past the size, and exactly the stored data.
    So writing them never goes past the declared size.

    One more rule makes the two agree on where each region's data is: GNU tar reads every
    region from blocks of its own (sparse_extract_region reads 512 bytes at a time), Go
    reads the regions back to back, so every region but the last with data must fill
    whole blocks (GNU tar writes them so; Go's alignSparseEntries says why)."""
    end = 0
    total = 0
    ragged = False
    for offset, length in regions:
        if offset < 0 or length < 0:
            raise LayerError(f"sparse file {os.fsdecode(name)!r}: a negative region")
        if length and ragged:
            raise LayerError(
                f"sparse file {os.fsdecode(name)!r}: a region before the last is not a "
                "multiple of 512 bytes (GNU tar and Go would read its data differently)"
            )
        ragged = ragged or length % _BLOCK != 0
        if offset < end:
            raise LayerError(
                f"sparse file {os.fsdecode(name)!r}: regions overlap or are out of order"
            )
        end = offset + length
        if end > size:
            raise LayerError(
                f"sparse file {os.fsdecode(name)!r}: a region ends at {end}, past its size {size}"
            )
        total += length
    if end != size:
        # GNU tar sizes the file by its last region (it writes an empty one at the end
        # of a file that ends in a hole), Go by the declared size
        raise LayerError(
            f"sparse file {os.fsdecode(name)!r}: its map ends at {end}, not at its size {size}"
        )
    if total != data:
        raise LayerError(
            f"sparse file {os.fsdecode(name)!r}: its map holds {total} bytes of data, "
            f"the archive {data}"
        )
    return regions


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
        "sparse",
    )

    name: bytes
    kind: int
    size: int  # the file's size; for a sparse file more than the data in the archive
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int
    link: bytes
    devmajor: int
    devminor: int
    xattrs: Optional[Dict[str, bytes]]
    #: a sparse file's data regions (offset, length), in order, within size; else None
    sparse: Optional[List[Tuple[int, int]]]


class _TarReader:
    """A forward-only reader of ustar, GNU and PAX archives over the inflated chunks.

    It reads what both Go's archive/tar (containerd's and Docker's reader) and GNU tar
    read, and reads it as they do; where those two read the same bytes differently (an
    entry would get another name, size or content from one than from the other) the
    archive is refused rather than read either way, since image scanners and the other
    runtimes would not see the layer isobox applies.  Those cases (each run through GNU
    tar 1.34 and Go 1.27): a GNU long name or link beside a different PAX path or
    linkpath; a PAX global header or volume label after extended headers; a header after
    a lone zero block; a symlink, device, fifo or old-style directory with data; numeric
    fields with more than one leading NUL, garbage after a space, or base-256 not starting
    0x80/0xff; PAX records with a signed or exponent number, NUL padding, blanks or a NUL
    in the key, a NUL in a path or name, an xattr name with GNU tar's %3D/%25 escapes;
    sparse maps whose inner regions do not fill whole blocks or that stop short of the
    file's size."""

    def __init__(self, inflater: _Inflater, limits: Limits) -> None:
        self._next = inflater.get
        self._limits = limits
        self._buf = b""
        self._pos = 0
        self._left = 0  # unread data + padding of the current entry
        self._header_bytes = 0  # extended headers and sparse maps of the current entry
        self._regions = 0  # sparse regions so far: they count against max_entries
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
        """Writes the current entry's next n data bytes to fd."""
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

    def copy_sparse_to(self, fd: int, regions: List[Tuple[int, int]], size: int) -> None:
        """Writes a sparse entry's data regions at their offsets in fd (a new, empty file)
        and sets its size: what lies between stays a hole, never written (lseek(2);
        ftruncate(2) extends a file with a hole), so a 60 GB file with a few data bytes
        takes a few blocks, as GNU tar and Go's Reader.writeTo make it."""
        for offset, length in regions:
            if length:
                os.lseek(fd, offset, os.SEEK_SET)
                self.copy_to(fd, length)
        os.ftruncate(fd, size)

    def _header_data(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self._limits.max_header_size:
            raise LayerError(
                f"extended tar headers larger than {self._limits.max_header_size} "
                "bytes (Limits.max_header_size)"
            )

    def _count_regions(self, n: int, name: bytes) -> None:
        # Each region costs a seek and a write, like an entry: the map counts against
        # Limits.max_entries before anything is allocated for it.
        if self.entries + self._regions + n > self._limits.max_entries:
            raise LayerError(
                f"sparse file {os.fsdecode(name)!r}: the layer has more than "
                f"{self._limits.max_entries} entries and sparse regions (Limits.max_entries)"
            )
        self._regions += n

    # -- headers
    def next(self) -> Optional[_Entry]:
        """The next entry, or None at the end of the archive."""
        if self._left:
            self._skip(self._left)
            self._left = 0
        pax: Optional[Dict[bytes, bytes]] = None
        sparse0: List[bytes] = []
        long_name: Optional[bytes] = None
        long_link: Optional[bytes] = None
        malformed: Optional[str] = None
        self._header_bytes = 0
        while True:
            if self._pos == len(self._buf) and not self._refill():
                block = None  # end of stream on a block boundary: tar and Go accept it
            else:
                block = self._read(_BLOCK)
            if block is None or block == _ZERO_BLOCK:
                if pax is not None or long_name is not None or long_link is not None:
                    raise LayerError("truncated tar archive: extended header without entry")
                if malformed is not None:  # a broken global header at the end
                    raise LayerError(malformed)
                if block is not None and (self._pos < len(self._buf) or self._refill()):
                    # the end is two zero blocks, or one at the end of the stream; GNU
                    # tar stops at a lone one, Go refuses a header after it
                    if self._read(_BLOCK) != _ZERO_BLOCK:
                        raise LayerError("invalid tar archive: a header after a zero block")
                return None
            self._check_sum(block)
            kind_flag = block[156:157]
            try:
                size = _num(block[124:136], "size")
            except LayerError as exc:
                raise LayerError(f"{os.fsdecode(_cstr(block[0:100]))!r}: {exc}") from exc
            if kind_flag in (b"x", b"g", b"L", b"K"):
                if size < 0:
                    raise LayerError("invalid tar header: negative size")
                self._header_data(size)
                data = self._read(size + (-size % _BLOCK))[:size]
                if kind_flag == b"L" or kind_flag == b"K":
                    # Go ignores an empty long name; so does GNU tar, in effect
                    text = _cstr(data)
                    if kind_flag == b"L":
                        long_name = text or None
                    else:
                        long_link = text or None
                    continue
                try:
                    records, sparse = _parse_pax(data)
                except LayerError as exc:
                    what = "global header" if kind_flag == b"g" else "header"
                    malformed = malformed or f"invalid PAX {what}: {exc}"
                    records, sparse = {}, []
                if kind_flag == b"x":
                    # Of several in a row only the last counts, to Go (parsePAX's map
                    # replaces the earlier one) and to GNU tar (xheader_read) alike.
                    pax, sparse0 = records, sparse
                elif pax is not None or long_name is not None or long_link is not None:
                    # Go ends the entry at a global header, dropping what came before;
                    # GNU tar keeps it for the entry after
                    raise LayerError(
                        "invalid tar archive: a PAX global header between an extended "
                        "header and its entry"
                    )
                # A global header's records are not applied, as containerd and Docker
                # ignore them ("PAX Global Extended Headers found and ignored"): Go's
                # reader returns them as an entry of their own.  GNU tar applies them
                # to every later entry, path and size included.
                continue
            if kind_flag == b"V":  # volume label: not a file
                if pax is not None or long_name is not None or long_link is not None:
                    # Go gives the extended headers to the label, GNU tar to the next entry
                    raise LayerError("invalid tar archive: extended header before a volume label")
                if size < 0:
                    raise LayerError("invalid tar header: negative size")
                self._skip(size + (-size % _BLOCK))
                continue
            self.entries += 1
            if self.entries + self._regions > self._limits.max_entries:
                raise LayerError(
                    f"layer has more than {self._limits.max_entries} entries "
                    "(Limits.max_entries)"
                )
            if malformed is not None:
                shown = long_name or (pax or {}).get(b"path") or _cstr(block[0:100])
                raise LayerError(f"{os.fsdecode(shown)!r}: {malformed}")
            return self._entry(block, kind_flag, size, pax, sparse0, long_name, long_link)

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
        pax: Optional[Dict[bytes, bytes]],
        sparse0: List[bytes],
        long_name: Optional[bytes],
        long_link: Optional[bytes],
    ) -> _Entry:
        e = _Entry()
        name = _cstr(block[0:100])
        if block[257:263] == b"ustar\0":  # POSIX ustar: a name prefix (not in GNU's form)
            # star's prefix is 131 bytes, then its atime and ctime (Go: formatSTAR)
            prefix = _cstr(block[345:476] if block[508:512] == b"tar\0" else block[345:500])
            if prefix:
                name = prefix + b"/" + name
        link = _cstr(block[157:257])
        try:
            e.mode = _num(block[100:108], "mode") & 0o7777
            e.uid = _num(block[108:116], "uid")
            e.gid = _num(block[116:124], "gid")
            e.mtime_ns = _num(block[136:148], "mtime") * 10**9
            if kind_flag in (b"3", b"4"):
                e.devmajor = _num(block[329:337], "devmajor")
                e.devminor = _num(block[337:345], "devminor")
            else:
                e.devmajor = e.devminor = 0
        except LayerError as exc:
            raise LayerError(f"{os.fsdecode(long_name or name)!r}: {exc}") from exc
        atime_ns: Optional[int] = None
        e.xattrs = None
        e.sparse = None
        is_sparse = bool(sparse0)
        pax_path = pax_link = None
        if pax:
            try:
                for key, value in pax.items():
                    if key.startswith(b"SCHILY.xattr."):
                        # applied even when empty, as containerd and GNU tar do
                        xname = key[13:]
                        if not xname:
                            raise LayerError("an xattr record without a name")
                        if b"%3D" in xname or b"%25" in xname:
                            # GNU tar decodes these two escapes in the name, Go does not
                            raise LayerError(
                                f"xattr name {xname!r} reads differently to GNU tar and Go"
                            )
                        e.xattrs = e.xattrs or {}
                        e.xattrs[xname.decode("utf-8", "surrogateescape")] = value
                        continue
                    if not value:  # keep the header's field (Go's mergePAX; POSIX pax(1))
                        continue
                    if key == b"path":
                        pax_path = value
                    elif key == b"linkpath":
                        pax_link = value
                    elif key == b"size":
                        size = _pax_uint(value, key)
                    elif key == b"uid":
                        e.uid = _pax_uint(value, key, _ID_MAX)
                    elif key == b"gid":
                        e.gid = _pax_uint(value, key, _ID_MAX)
                    elif key == b"mtime":
                        e.mtime_ns = _pax_time(value, key)
                    elif key == b"atime":
                        atime_ns = _pax_time(value, key)
                    elif key == b"ctime":
                        _pax_time(value, key)  # not applied, but Go and GNU tar refuse a bad one
                    elif key.startswith(b"GNU.sparse."):
                        is_sparse = True
                    # Others are ignored, as Go and GNU tar ignore them: SCHILY.devmajor
                    # and SCHILY.devminor (GNU tar 1.34 calls them unknown keywords) and
                    # LIBARCHIVE.xattr.* (bsdtar writes SCHILY.xattr.* beside them).
            except LayerError as exc:
                shown = long_name or pax_path or name
                raise LayerError(f"{os.fsdecode(shown)!r}: {exc}") from exc
        sparse_name = pax.get(b"GNU.sparse.name") if is_sparse and pax else None
        # A GNU long name (or link) wins over the PAX path (linkpath) for Go, the PAX
        # record for GNU tar: when both say something different, the archive is refused.
        if long_name is not None:
            if pax_path is not None and pax_path != long_name and not sparse_name:
                raise LayerError(
                    f"{os.fsdecode(long_name)!r}: GNU long name and PAX path "
                    f"{os.fsdecode(pax_path)!r} disagree"
                )
            name = long_name
        elif pax_path is not None:
            name = pax_path
        if long_link is not None:
            if pax_link is not None and pax_link != long_link:
                raise LayerError(
                    f"{os.fsdecode(name)!r}: GNU long link {os.fsdecode(long_link)!r} and "
                    f"PAX linkpath {os.fsdecode(pax_link)!r} disagree"
                )
            link = long_link
        elif pax_link is not None:
            link = pax_link
        e.atime_ns = e.mtime_ns if atime_ns is None else atime_ns
        kind = _KINDS.get(kind_flag)
        if kind is None:
            if kind_flag != b"S":
                raise LayerError(
                    f"unsupported tar entry type {kind_flag!r} for {os.fsdecode(name)!r}"
                )
            kind = REG  # old GNU sparse file
        if not 0 <= e.uid <= _ID_MAX or not 0 <= e.gid <= _ID_MAX:
            raise LayerError(f"invalid owner {e.uid}:{e.gid} for {os.fsdecode(name)!r}")
        if size < 0:
            raise LayerError(f"invalid size for {os.fsdecode(name)!r}")
        if kind_flag in _HEADER_ONLY:
            size = 0  # Go and GNU tar read no data after a directory or a hard link
        elif kind_flag in _DATALESS or (kind_flag == b"\0" and name.endswith(b"/")):
            if kind_flag == b"\0":
                kind = DIR  # pre-POSIX tars mark directories only by the trailing slash
            if size:
                raise LayerError(
                    f"{os.fsdecode(name)!r}: a {'directory' if kind == DIR else 'special file'} "
                    f"with {size} bytes of data (GNU tar reads them, Go does not)"
                )
        self._left = size + (-size % _BLOCK)
        if kind_flag == b"S":
            if is_sparse:
                raise LayerError(
                    f"{os.fsdecode(name)!r}: both an old GNU sparse header and GNU sparse records"
                )
            e.sparse, size = self._old_gnu_sparse(block, name, size)
        elif is_sparse:
            if kind != REG:
                raise LayerError(
                    f"{os.fsdecode(name)!r}: GNU sparse records on an entry that is no file"
                )
            if sparse_name:
                name = sparse_name
            e.sparse, size = self._pax_sparse(pax or {}, sparse0, name, size)
        e.name, e.link, e.kind, e.size = name, link, kind, size
        return e

    def _old_gnu_sparse(self, block: bytes, name: bytes, data: int) -> Tuple[_Map, int]:
        """The map of an old GNU sparse entry (type 'S'): four regions in the header, 21
        in each extension block after it while "isextended" is set (GNU tar's
        oldgnu_get_sparse_info, Go's readOldGNUSparseMap).  Returns it and the real size."""
        if block[257:265] != b"ustar  \0":
            # star's sparse type shares the flag with another layout (Go refuses it too)
            raise LayerError(f"{os.fsdecode(name)!r}: a sparse header in a non-GNU archive")
        size = _num(block[483:495], "realsize")
        if size < 0:
            raise LayerError(f"invalid size for {os.fsdecode(name)!r}")
        regions: List[Tuple[int, int]] = []
        table, count, extended = block[386:482], 4, block[482]
        while True:
            ended = False
            for i in range(count):
                entry = table[24 * i : 24 * i + 24]
                # GNU tar ends the list at an empty numbytes field, Go at an empty offset
                if entry[0] == 0 or entry[12] == 0:
                    if entry[0] != entry[12]:
                        raise LayerError(
                            f"sparse file {os.fsdecode(name)!r}: a half-empty map entry"
                        )
                    ended = True
                    break
                offset = _num(entry[:12], "sparse offset")
                regions.append((offset, _num(entry[12:], "sparse numbytes")))
            if not extended:
                break
            if ended:
                # GNU tar reads no extension block after a list that ended early; Go does
                raise LayerError(
                    f"sparse file {os.fsdecode(name)!r}: extension blocks after the end of its map"
                )
            self._header_data(_BLOCK)
            ext = self._read(_BLOCK)
            table, count, extended = ext, 21, ext[504]
        self._count_regions(len(regions), name)
        return _regions_in(regions, size, data, name), size

    def _pax_sparse(
        self, pax: Dict[bytes, bytes], sparse0: List[bytes], name: bytes, data: int
    ) -> Tuple[_Map, int]:
        """The map of a GNU sparse file in PAX form (GNU tar's sparse.c, Go's
        readGNUSparsePAXHeaders): 0.0 (repeated offset/numbytes records), 0.1 (one
        GNU.sparse.map record) or 1.0 (the map at the start of the data).  Returns the map
        and the real size; the data left to read is what the map places."""
        shown = os.fsdecode(name)
        major, minor = pax.get(b"GNU.sparse.major"), pax.get(b"GNU.sparse.minor")
        if major or minor:
            version = (major, minor)
            if version not in ((b"0", b"0"), (b"0", b"1"), (b"1", b"0")):
                raise LayerError(
                    f"sparse file {shown!r}: GNU sparse format {major!r}.{minor!r} is unknown"
                )
        elif not sparse0 and not pax.get(b"GNU.sparse.map"):
            raise LayerError(f"sparse file {shown!r}: GNU sparse records without a map")
        size = data
        sizes = [v for v in (pax.get(b"GNU.sparse.size"), pax.get(b"GNU.sparse.realsize")) if v]
        if sizes:
            if len(sizes) == 2 and sizes[0] != sizes[1]:
                # Go takes GNU.sparse.size, GNU tar the later record
                raise LayerError(
                    f"sparse file {shown!r}: GNU.sparse.size and GNU.sparse.realsize disagree"
                )
            size = _pax_uint(sizes[0], b"GNU.sparse.size")
        if major == b"1":
            return self._sparse_map_1_0(name, size, data)
        if sparse0 and b"GNU.sparse.map" in pax:
            raise LayerError(f"sparse file {shown!r}: both GNU sparse 0.0 and 0.1 maps")
        count = _pax_uint(pax.get(b"GNU.sparse.numblocks", b""), b"GNU.sparse.numblocks")
        self._count_regions(count, name)
        if sparse0:
            values = sparse0
        else:
            text = pax.get(b"GNU.sparse.map", b"")
            if text.count(b",") + 1 != 2 * count:
                raise LayerError(
                    f"sparse file {shown!r}: GNU.sparse.map does not hold {count} regions"
                )
            values = text.split(b",")
        if len(values) != 2 * count:
            raise LayerError(f"sparse file {shown!r}: the map does not hold {count} regions")
        regions = [
            (_pax_uint(values[i], _SPARSE_OFFSET), _pax_uint(values[i + 1], _SPARSE_NUMBYTES))
            for i in range(0, len(values), 2)
        ]
        return _regions_in(regions, size, data, name), size

    def _sparse_map_1_0(self, name: bytes, size: int, data: int) -> Tuple[_Map, int]:
        """GNU sparse 1.0: decimal numbers, one a line, at the start of the data: the
        region count, then offset and length of each; the map ends with the block that
        holds its last newline (GNU tar's pax_decode_header, Go's readGNUSparseMap1x0)."""
        shown = os.fsdecode(name)
        text = bytearray()
        lines: List[bytes] = []
        count: Optional[int] = None
        used = 0
        while count is None or len(lines) < 1 + 2 * count:
            if used + _BLOCK > data:
                raise LayerError(f"sparse file {shown!r}: its map runs past its data")
            self._header_data(_BLOCK)
            text += self._read(_BLOCK)
            used += _BLOCK
            *done, rest = text.split(b"\n")
            lines.extend(bytes(line) for line in done)
            text = bytearray(rest)
            if count is None and lines:
                count = _pax_uint(lines[0], b"sparse map count")
                self._count_regions(count, name)
        self._left -= used
        numbers = [_pax_uint(v, b"sparse map entry") for v in lines[1 : 1 + 2 * count]]
        regions = list(zip(numbers[0::2], numbers[1::2]))
        return _regions_in(regions, size, data - used, name), size


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
            if e.sparse is not None:
                reader.copy_sparse_to(fd, e.sparse, e.size)
            elif e.size:
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

    def _copy_file(
        self, sfd_dir: int, sname: bytes, pfd: int, name: bytes, st: os.stat_result
    ) -> None:
        # What is written counts: a sparse file's holes are kept (below), not written.
        self.copied += min(st.st_size, st.st_blocks * 512)
        if self.copied > self.limits.max_total_size:
            raise LayerError("hard links copy more than Limits.max_total_size from lower layers")
        src = os.open(sname, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd_dir)
        try:
            dst = os.open(name, _O_NEW_FILE, 0o600, dir_fd=pfd)
            try:
                # Only the data segments are copied (lseek(2) SEEK_DATA/SEEK_HOLE, Linux
                # 3.1; file systems without them report one segment), then the size is
                # set: a sparse lower file stays sparse, as overlayfs's copy-up keeps it.
                pos = 0
                while pos < st.st_size:
                    try:
                        start = os.lseek(src, pos, os.SEEK_DATA)
                    except OSError as exc:
                        if exc.errno == errno.ENXIO:  # only a hole is left
                            break
                        raise
                    end = min(os.lseek(src, start, os.SEEK_HOLE), st.st_size)
                    os.lseek(dst, start, os.SEEK_SET)
                    while start < end:
                        n = os.sendfile(dst, src, start, min(end - start, 64 * MiB))
                        if n == 0:  # the file shrank under us
                            break
                        start += n
                    pos = end if start >= end else st.st_size
                os.ftruncate(dst, st.st_size)
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
            inflater.hasher.digest[:19],
            len(layer.skipped),
            "; ".join(layer.skipped[:5]),
            " ..." if len(layer.skipped) > 5 else "",
        )
    return LayerStats(
        diff_id=inflater.hasher.digest,
        size=inflater.size,
        entries=reader.entries,
        skipped=tuple(layer.skipped),
        depends_on_lower=layer.depends_on_lower,
        owners=tuple((os.fsdecode(p), u, g, m) for p, (u, g, m) in layer.owners.items()),
    )
