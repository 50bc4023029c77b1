"""Digests: the one grammar of content addresses, the algorithms isobox verifies, hashing.

A digest names content by its hash, ``algorithm ":" encoded`` (OCI image-spec,
descriptor.md "Digests")::

    sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b

isobox accepts exactly the algorithms Docker can verify, with lowercase hex of the hash's
own length (`ALGORITHMS`): sha256 and sha512, which OCI registers, and sha384, which
go-digest registers and Docker therefore accepts in references. Every text matching this
is valid under both OCI's grammar and Docker's (distribution/reference), and is safe as a
file name: the store files blobs and layers under ``<algorithm>/<hex>``.

Every component asks here -- the reference parser (a digest a user typed), the registry
client (descriptors, ``Docker-Content-Digest``), the store (what may become a path), the
image code (configs, diff_ids) -- so that none refuses what another accepted. Each raises
its own family of error with `problem`'s reason: `InvalidReference` for a reference,
`RegistryError` for what a registry sent, `DigestMismatch` in the store.

``hashlib`` is imported on first use (it loads OpenSSL, ~3 ms): running a cached image
never hashes content. Pure otherwise: no I/O, no global state.
"""

from __future__ import annotations

import re
import types
from typing import TYPE_CHECKING, Any, Callable, List, Mapping, Optional, Sequence, Tuple

if TYPE_CHECKING:
    import hashlib

#: The algorithms isobox verifies, with the length of their lowercase hex encoding.
ALGORITHMS: Mapping[str, int] = types.MappingProxyType(
    {"sha256": 64, "sha384": 96, "sha512": 128}
)

# The shape of any digest, registered or not, as distribution/reference writes it; used
# only to tell "not a digest at all" from "an algorithm isobox cannot verify" in messages.
# Spelled out, since Python's \w would match non-ASCII letters; used with fullmatch.
_ALGORITHM_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*")
_ENCODED_SHAPE = re.compile(r"[0-9a-fA-F]{32,}")


def _shown(text: str, limit: int = 100) -> str:
    """``repr`` of untrusted text, cut short: a hostile megabyte should not fill the logs."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def problem(value: object) -> Optional[str]:
    """Why ``value`` is not a digest isobox can verify (a reason for a message), or None
    when it is one."""
    if not isinstance(value, str):
        return f"a digest must be a string, not {type(value).__name__}"
    algorithm, colon, encoded = value.partition(":")
    if not (colon and _ALGORITHM_SHAPE.fullmatch(algorithm) and _ENCODED_SHAPE.fullmatch(encoded)):
        return f"invalid digest {_shown(value)} (expected 'algorithm:hex', e.g. 'sha256:<hex>')"
    length = ALGORITHMS.get(algorithm)
    if length is None:
        supported = ", ".join(ALGORITHMS)
        return f"unsupported digest algorithm {_shown(algorithm)} (supported: {supported})"
    if len(encoded) != length:
        return f"{algorithm} digest must have {length} hex digits, not {len(encoded)}"
    if encoded != encoded.lower():
        return "digest hex must be lowercase"
    return None


def is_digest(value: object) -> bool:
    """Whether ``value`` is a digest isobox can verify."""
    return problem(value) is None


def names_unknown_algorithm(value: str) -> bool:
    """Whether ``value`` (``algorithm:...``, well formed or not) names an algorithm isobox
    cannot verify: a registry's content isobox cannot check, not a malformed digest."""
    algorithm, colon, _ = value.partition(":")
    return bool(colon) and algorithm not in ALGORITHMS


def check(value: object, error: Callable[[str], Exception], what: str = "digest") -> str:
    """``value`` when it is a digest isobox can verify; else ``error`` (an exception class
    of the caller's family) saying why, naming ``what`` was checked."""
    reason = problem(value)
    if reason is not None:
        raise error(f"{what}: {reason}" if what != "digest" else reason)
    return value  # type: ignore[return-value]  # problem() is None only for a str


def split(digest: str) -> Tuple[str, str]:
    """``(algorithm, hex)`` of a checked digest."""
    algorithm, _, encoded = digest.partition(":")
    return algorithm, encoded


# -- hashing -----------------------------------------------------------------------------


def _hashlib() -> "types.ModuleType":
    import hashlib  # on first use: not on the path of running a cached image

    return hashlib


class Hasher:
    """An incremental hash whose result is a digest: the stream's content address.

    ``update`` is the hash object's own method (no wrapper per chunk: layers stream
    through it a MiB at a time)."""

    def __init__(self, algorithm: str = "sha256") -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        self.algorithm = algorithm
        self._hash: "hashlib._Hash" = _hashlib().new(algorithm)
        self.update: Callable[[Any], None] = self._hash.update

    @classmethod
    def like(cls, digest: str) -> "Hasher":
        """A hasher of the algorithm ``digest`` (a checked digest) uses."""
        return cls(split(digest)[0])

    @property
    def digest(self) -> str:
        return f"{self.algorithm}:{self._hash.hexdigest()}"


def compute(data: bytes, algorithm: str = "sha256") -> str:
    """The digest of ``data``."""
    hasher = Hasher(algorithm)
    hasher.update(data)
    return hasher.digest


def matches(data: bytes, digest: str) -> bool:
    """Whether ``data`` hashes to ``digest`` (a checked digest)."""
    return compute(data, split(digest)[0]) == digest


def chain_ids(diff_ids: Sequence[str]) -> List[str]:
    """OCI chain IDs: ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1) + " " +
    DiffID(Ln)): a name for a layer together with everything below it (image-spec,
    config.md "Layer ChainID")."""
    out: List[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else compute(f"{out[-1]} {diff_id}".encode()))
    return out


def name_key(text: str) -> str:
    """A flat file name for arbitrary text (a reference holds ``/`` and ``:``): its sha256
    hex, from Python's own sha256, which `isobox run` uses to find a tag. hashlib loads
    OpenSSL first (~3 ms); for one short name it makes no difference which computes it."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # CPython <= 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found]  # CPython >= 3.12
        except ImportError:
            from hashlib import sha256
    key: str = sha256(text.encode()).hexdigest()
    return key


__all__ = [
    "ALGORITHMS",
    "Hasher",
    "chain_ids",
    "check",
    "compute",
    "is_digest",
    "matches",
    "name_key",
    "names_unknown_algorithm",
    "problem",
    "split",
]
