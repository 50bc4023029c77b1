"""Reading a layer's tar archive: ustar, GNU and PAX headers, long names, sparse files,
forward only, as bytes, within `Limits`.

Headers are parsed here, not by tarfile: tarfile reads a PAX header of any size into
memory, and names must stay bytes. `Limits` bound the entry count, the uncompressed size
and the size of extended headers before anything is allocated for them; a sparse file's
map counts as extended header, and each of its regions as an entry. Every malformed input
raises `LayerError`, with the low-level error as ``__cause__``.

The archive is read as Go's archive/tar (containerd, Docker, most image scanners) and GNU
tar both read it: several extended headers in a row, GNU long names, sparse files in all
of GNU's forms (old 'S' headers, PAX 0.0, 0.1 and 1.0), PAX records checked as strictly as
either checks them. Where the two read the same bytes differently, the layer is refused
(`TarReader` lists the cases), so that no file is hidden from the tools that inspect a
layer; PAX global headers are ignored, as containerd and Docker ignore them.

What the entries mean on disk is `isobox.images.unpack`'s job.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Dict, List, Optional, Tuple

import attrs

from ..errors import InvalidOption, LayerError

_MiB = 1024 * 1024
_GiB = 1024 * _MiB


def _positive(instance: object, attribute: "attrs.Attribute[int]", value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidOption(f"Limits.{attribute.name} must be a positive integer, not {value!r}")


@attrs.frozen
class Limits:
    """Bounds on one layer, so that an archive bomb fails with `LayerError` instead of
    filling the disk or the memory.  The defaults fit the largest real images."""

    max_entries: int = attrs.field(default=1_000_000, validator=_positive)
    #: uncompressed bytes of the stream, and separately bytes copied from lower layers
    max_total_size: int = attrs.field(default=64 * _GiB, validator=_positive)
    #: bytes of PAX and GNU long-name headers in front of one entry, and of its sparse map
    #: (sparse regions count as entries in ``max_entries``)
    max_header_size: int = attrs.field(default=1 * _MiB, validator=_positive)


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


class Entry:
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


class TarReader:
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

    def __init__(self, next_chunk: Callable[[], Optional[bytes]], limits: Limits) -> None:
        self._next = next_chunk  # the next uncompressed chunk, None at the end
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
    def next(self) -> Optional[Entry]:
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
    ) -> Entry:
        e = Entry()
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


__all__ = ["BLK", "CHR", "DIR", "Entry", "FIFO", "LNK", "Limits", "REG", "SYM", "TarReader"]
