"""An image configuration document, decoded the way Docker decodes it.

Docker (moby's ``image.NewFromJSON``, called by ``ImageStore.Put`` while pulling) decodes
the config blob with Go's ``encoding/json`` into typed structs (``image.Image``, its
``config`` and ``container_config`` a ``container.Config``), and refuses the whole pull
when any field has the wrong type. This module reproduces that decoding, field by field,
so that isobox accepts exactly the configs Docker accepts and reads them as Docker does:

- a field of the wrong type anywhere (``"Labels": ["a"]``, ``"Entrypoint": [1]``,
  ``"Env": {}``, ``"created": 5``) refuses the document (`InvalidImage`), also inside
  ``container_config`` and ``history`` which isobox does not use;
- ``null`` leaves a scalar field as it was, and sets a list, map or object field to nil;
  a ``null`` list element or map value becomes ``""``;
- ``Cmd``, ``Entrypoint`` and ``Shell`` are moby's ``strslice.StrSlice``: a string is a
  one-element list (the ``image.Image`` path; containerd's and the image-spec's types take
  only lists, so containerd refuses what moby reads as a one-element list);
- keys match field names exactly, else case-insensitively (Go's fold: ``"cmd"`` is
  ``Cmd``, ``"ſtopſignal"`` is ``StopSignal``), in document order, the last one winning;
  maps merge when given twice; unknown keys are ignored;
- ``created`` (and each ``history[].created``) is an RFC 3339 time as Go's
  ``time.Parse(time.RFC3339)`` takes it;
- invalid UTF-8 and lone surrogate escapes become U+FFFD, as in Go; ``NaN`` and
  ``Infinity`` are not JSON; numbers are read as Go reads them (an int64 field takes an
  integer literal within range, nothing else);
- after decoding, moby refuses a config without ``rootfs`` ("no RootFS key") and one
  whose history lists more non-empty layers than ``rootfs.diff_ids``.

`load` returns the document Docker would see: the known fields under their canonical
names (unknown ones dropped), which is what the store keeps and `ImageConfig` reads.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ..errors import InvalidImage

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class _Object(list):  # type: ignore[type-arg]
    """A JSON object as its (key, value) pairs in document order: Go sees every
    occurrence of a repeated key, Python's dict only the last."""


class _Number(str):
    """A JSON number's literal text: converted only where a field wants one, as Go does
    (so an ignored field may hold any number, and 1e999 is never a float)."""


class _Refused(Exception):
    def __init__(self, path: str, expected: str, value: Any) -> None:
        super().__init__(f"{path or 'the document'} must be {expected}, got {_kind(value)}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "a boolean"
    if isinstance(value, _Number):
        return f"the number {_short(str(value))}"
    if isinstance(value, str):
        return f"the string {_short(value)!r}"
    if isinstance(value, _Object) or isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__  # pragma: no cover - decoded JSON has no other kind


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _items(value: Any) -> Iterable[Tuple[str, Any]]:
    return value if isinstance(value, _Object) else value.items()


def _is_object(value: Any) -> bool:
    return isinstance(value, (_Object, dict))


_SURROGATES = re.compile("[\ud800-\udfff]")


def _text(value: str) -> str:
    """Go's decoder turns lone surrogate escapes (and invalid UTF-8) into U+FFFD."""
    return _SURROGATES.sub("\ufffd", value)


_FOLD_TO_ASCII = {"\u017f": "S", "\u212a": "K"}


def _fold(name: str) -> str:
    """Go's case folding of JSON keys (encoding/json foldName): ASCII letters by case;
    of the rest only U+017F (long s) and U+212A (Kelvin sign) fold to ASCII letters."""
    return "".join(c.upper() if c.isascii() else _FOLD_TO_ASCII.get(c, c) for c in name)


# -- field types: decode(value, current, path) -> new value ---------------------------------

Decoder = Callable[[Any, Any, str], Any]


def _string(value: Any, current: Any, path: str) -> Any:
    if value is None:
        return current  # null leaves a Go string as it was
    if isinstance(value, str) and not isinstance(value, _Number):
        return _text(value)
    raise _Refused(path, "a string", value)


def _bool(value: Any, current: Any, path: str) -> Any:
    if value is None:
        return current
    if value is True or value is False:
        return value
    raise _Refused(path, "true or false", value)


def _int64(value: Any, current: Any, path: str) -> Any:
    if value is None:
        return current
    if type(value) is int:  # already decoded (a stored record's document); never a bool
        if INT64_MIN <= value <= INT64_MAX:
            return value
        raise _Refused(path, "an integer within int64", value)
    if isinstance(value, _Number) and re.fullmatch(r"-?[0-9]+", value) and len(value) <= 20:
        number = int(value)
        if INT64_MIN <= number <= INT64_MAX:
            return number
        raise _Refused(path, "an integer within int64", value)
    raise _Refused(path, "an integer", value)


_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{1,2}):([0-9]{2}):([0-9]{2})(?:[.,][0-9]+)?"
    r"(Z|[+-]([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)


def _days_in(month: int, year: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def is_rfc3339(text: str) -> bool:
    """Whether Go's ``time.Parse(time.RFC3339, text)`` accepts ``text`` (what
    ``time.Time.UnmarshalJSON`` falls back to): a one-digit hour and a comma before the
    fraction pass, 24:00 and leap seconds do not, a zone offset may reach 24:60."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= _days_in(month, year)):
        return False
    if hour > 23 or minute > 59 or second > 59:
        return False
    if m.group(7) != "Z" and (int(m.group(8)) > 24 or int(m.group(9)) > 60):
        return False
    return True


def _time(value: Any, current: Any, path: str) -> Any:
    if value is None:
        return current  # time.Time.UnmarshalJSON: null is a no-op
    if isinstance(value, str) and not isinstance(value, _Number) and is_rfc3339(value):
        return value
    raise _Refused(path, "an RFC 3339 time", value)


def _strslice(value: Any, current: Any, path: str) -> Any:
    """moby's strslice.StrSlice: a list of strings, or one string."""
    if value is None:
        return None
    if isinstance(value, str) and not isinstance(value, _Number):
        return [_text(value)]
    if isinstance(value, list) and not isinstance(value, _Object):
        return [_string(v, "", f"{path}[{i}]") for i, v in enumerate(value)]
    raise _Refused(path, "a string or a list of strings", value)


def _list(element: Decoder, zero: Callable[[], Any], expected: str) -> Decoder:
    def decode(value: Any, current: Any, path: str) -> Any:
        if value is None:
            return None
        if isinstance(value, list) and not isinstance(value, _Object):
            return [element(v, zero(), f"{path}[{i}]") for i, v in enumerate(value)]
        raise _Refused(path, expected, value)

    return decode


def _string_map(value: Any, current: Any, path: str) -> Any:
    """map[string]string: a second occurrence merges into the first; null empties it."""
    if value is None:
        return None
    if not _is_object(value):
        raise _Refused(path, "an object of strings", value)
    out = dict(current or {})
    for key, item in _items(value):
        out[_text(key)] = _string(item, "", f"{path}[{_short(key)!r}]")
    return out


def _set(value: Any, current: Any, path: str) -> Any:
    """map[string]struct{} (ExposedPorts, Volumes): keys, each mapped to an object."""
    if value is None:
        return None
    if not _is_object(value):
        raise _Refused(path, "an object of objects", value)
    out = dict(current or {})
    for key, item in _items(value):
        if item is not None and not _is_object(item):
            raise _Refused(f"{path}[{_short(key)!r}]", "an object", item)
        out[_text(key)] = {}
    return out


class _Struct:
    """A Go struct: fields by JSON name; ``pointer`` when the Go field is a pointer (null
    sets it to nil; for a struct value null changes nothing)."""

    def __init__(self, fields: Dict[str, Decoder], *, pointer: bool) -> None:
        self.fields = fields
        self.pointer = pointer
        self.folded = {_fold(name): name for name in fields}

    def __call__(self, value: Any, current: Any, path: str) -> Any:
        if value is None:
            return None if self.pointer else current
        if not _is_object(value):
            raise _Refused(path, "an object", value)
        out = dict(current or {})
        for key, item in _items(value):
            name = key if key in self.fields else self.folded.get(_fold(key))
            if name is None:
                continue  # unknown keys are ignored, as Go's decoder does
            where = f"{path}.{name}" if path else name
            decoded = self.fields[name](item, out.get(name), where)
            if decoded is None:
                out.pop(name, None)
            else:
                out[name] = decoded
        return out


# moby api/types/container.HealthConfig: durations are int64 nanoseconds.
_HEALTHCHECK = _Struct({
    "Test": _list(_string, str, "a list of strings"),
    "Interval": _int64, "Timeout": _int64, "StartPeriod": _int64, "StartInterval": _int64,
    "Retries": _int64,
}, pointer=True)

# moby api/types/container.Config.
_CONFIG_FIELDS: Dict[str, Decoder] = {
    "Hostname": _string, "Domainname": _string, "User": _string,
    "AttachStdin": _bool, "AttachStdout": _bool, "AttachStderr": _bool,
    "ExposedPorts": _set, "Tty": _bool, "OpenStdin": _bool, "StdinOnce": _bool,
    "Env": _list(_string, str, "a list of strings"), "Cmd": _strslice,
    "Healthcheck": _HEALTHCHECK, "ArgsEscaped": _bool, "Image": _string,
    "Volumes": _set, "WorkingDir": _string, "Entrypoint": _strslice,
    "NetworkDisabled": _bool, "MacAddress": _string,
    "OnBuild": _list(_string, str, "a list of strings"), "Labels": _string_map,
    "StopSignal": _string, "StopTimeout": _int64, "Shell": _strslice,
}
CONFIG = _Struct(_CONFIG_FIELDS, pointer=True)

_HISTORY = _Struct({
    "created": _time, "author": _string, "created_by": _string, "comment": _string,
    "empty_layer": _bool,
}, pointer=False)

_ROOTFS = _Struct({"type": _string, "diff_ids": _list(_string, str, "a list of strings")},
                  pointer=True)

# moby image.Image (with its embedded V1Image), as image.NewFromJSON decodes it.
DOCUMENT = _Struct({
    "id": _string, "parent": _string, "comment": _string, "created": _time,
    "container": _string, "container_config": _Struct(_CONFIG_FIELDS, pointer=False),
    "docker_version": _string, "author": _string, "config": CONFIG,
    "architecture": _string, "os": _string, "Size": _int64,
    "rootfs": _ROOTFS, "history": _list(_HISTORY, dict, "a list of objects"),
    "os.version": _string, "os.features": _list(_string, str, "a list of strings"),
    "variant": _string,
}, pointer=False)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    """JSON as Go's decoder reads it: invalid UTF-8 bytes are U+FFFD each (surrogateescape
    keeps one character per byte, replaced with the lone surrogates), a BOM is an error,
    objects keep every pair, numbers keep their text."""
    text = raw.decode("utf-8", "surrogateescape")
    return json.loads(text, object_pairs_hook=_Object, parse_int=_Number,
                      parse_float=_Number, parse_constant=_no_constant)


def decode(schema: Decoder, value: Any, where: str, path: str = "") -> Any:
    """``value`` decoded by ``schema`` (`CONFIG`, `DOCUMENT`), or InvalidImage naming
    ``where`` (the image) and the field."""
    try:
        return schema(value, None, path)
    except _Refused as exc:
        raise InvalidImage(f"{where}: {exc}") from None


def load(raw: bytes, where: str) -> Dict[str, Any]:
    """The config document ``raw`` as Docker sees it (see the module docstring), or
    InvalidImage. ``where`` names it in messages ("config sha256:... of busybox")."""
    try:
        parsed = parse_json(raw)
    except (ValueError, RecursionError) as exc:
        # RecursionError: Python nests ~1000 deep where Go allows 10000; refused either way
        # where a typed field is that deep, and no real config comes near.
        raise InvalidImage(f"{where}: the image config is not JSON: {_short(str(exc), 200)}") from None
    doc = decode(DOCUMENT, parsed, where)
    if not isinstance(parsed, (_Object, dict)) or doc is None:
        raise InvalidImage(f"{where}: the image config is not a JSON object")
    check(doc, where)
    return dict(doc)


def check(doc: Dict[str, Any], where: str) -> None:
    """moby's checks after decoding (image.NewFromJSON, image/store.go Create)."""
    rootfs = doc.get("rootfs")
    if rootfs is None:
        raise InvalidImage(f"{where}: invalid image JSON, no rootfs")
    diff_ids = rootfs.get("diff_ids") or []
    non_empty = sum(1 for h in doc.get("history") or [] if not h.get("empty_layer"))
    if non_empty > len(diff_ids):
        raise InvalidImage(
            f"{where}: too many non-empty layers in history ({non_empty}) for the "
            f"{len(diff_ids)} rootfs.diff_ids"
        )


# -- signals -----------------------------------------------------------------------------

SIGRTMIN, SIGRTMAX = 34, 64  # moby/sys/signal's Linux values (glibc reserves 32, 33)
_SIGNALS: Dict[str, int] = {
    "ABRT": 6, "ALRM": 14, "BUS": 7, "CHLD": 17, "CLD": 17, "CONT": 18, "FPE": 8, "HUP": 1,
    "ILL": 4, "INT": 2, "IO": 29, "IOT": 6, "KILL": 9, "PIPE": 13, "POLL": 29, "PROF": 27,
    "PWR": 30, "QUIT": 3, "SEGV": 11, "STKFLT": 16, "STOP": 19, "SYS": 31, "TERM": 15,
    "TRAP": 5, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "USR1": 10, "USR2": 12,
    "VTALRM": 26, "WINCH": 28, "XCPU": 24, "XFSZ": 25,
    "RTMIN": SIGRTMIN, "RTMAX": SIGRTMAX,
    **{f"RTMIN+{i}": SIGRTMIN + i for i in range(1, 16)},
    **{f"RTMAX-{i}": SIGRTMAX - i for i in range(1, 15)},
}


def parse_signal(text: str) -> Optional[int]:
    """The signal ``text`` names as moby/sys/signal.ParseSignal reads it ("SIGTERM",
    "term", "15"), within Linux's 1..64 as podman's ParseSignalNameOrNumber requires;
    None when it names none.

    ParseSignal: a decimal integer (strconv.Atoi: optional sign, ASCII digits) other than
    0; else the name upper-cased (Go's simple mapping: of non-ASCII letters only U+017F
    and U+0131 become ASCII, "S" and "I"), one "SIG" prefix dropped, looked up in the Linux
    table. moby itself also takes numbers outside 1..64, which kill(2) then refuses.
    """
    if re.fullmatch(r"[+-]?[0-9]+", text, re.ASCII):
        number = int(text) if len(text) <= 20 else 0
        return number if 1 <= number <= SIGRTMAX else None
    upper = "".join(c.upper() if c.isascii() else {"\u017f": "S", "\u0131": "I"}.get(c, c)
                    for c in text)
    if upper.startswith("SIG"):
        upper = upper[3:]
    return _SIGNALS.get(upper)


__all__ = ["load", "decode", "check", "parse_json", "parse_signal", "is_rfc3339", "CONFIG",
           "DOCUMENT"]
