"""Platforms (os/architecture/variant): normalised and matched as containerd does.

Normalisation follows containerd's ``platforms`` package (``normalizeArch``): ``aarch64``
is ``arm64``, ``x86_64`` is ``amd64``, ``armhf`` is ``arm/v7``, ``armel`` is ``arm/v6``,
``i386`` is ``386``. Its canonical form leaves the most common variant implicit for arm64
(v8) and amd64 (v1) and spells it out for 32-bit arm (v7), so ``linux/arm64/v8`` and
``linux/aarch64`` are the same `Platform` as ``linux/arm64``.

Matching follows containerd's ``platforms.Only``: a platform also runs older variants of its
architecture (arm64/v8.2 runs v8.1 and v8; arm/v7 runs v6 and v5; amd64/v3 runs v2 and v1),
arm64 runs 32-bit arm, amd64 runs 386; an exact match is preferred over a compatible one.
"""

from __future__ import annotations

import os
import re
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import attrs

from ..errors import InvalidOption

_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Go's and Debian's spellings of `uname -m` and of image metadata, as containerd maps them.
_ARCH_ALIASES = {
    "i386": ("386", None),
    "i486": ("386", None),
    "i586": ("386", None),
    "i686": ("386", None),
    "x86_64": ("amd64", None),
    "x86-64": ("amd64", None),
    "aarch64": ("arm64", None),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
}
# uname's 32-bit arm machines (armv7l, armv6l, armv5tel, armv8l): the digit is the variant.
_UNAME_ARM = re.compile(r"^armv([3-8])[a-z]*$")


def _normalize_arch(arch: str, variant: Optional[str]) -> Tuple[str, Optional[str]]:
    arch = arch.lower()
    variant = variant.lower() if variant else None
    match = _UNAME_ARM.match(arch)
    if match:
        return "arm", "v" + match.group(1)
    if arch in _ARCH_ALIASES:
        arch, alias_variant = _ARCH_ALIASES[arch]
        if alias_variant is not None or arch == "386":
            variant = alias_variant
    if arch == "amd64" and variant == "v1":
        variant = None
    elif arch == "arm64" and variant in ("8", "v8"):
        variant = None
    elif arch == "arm":
        if variant in (None, "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
    return arch, variant


def _normalize_os(os_name: str) -> str:
    os_name = os_name.lower()
    return "darwin" if os_name == "macos" else os_name


def _check_component(name: str) -> Any:
    def check(instance: object, attribute: object, value: Optional[str]) -> None:
        if value is None and name == "variant":
            return
        if not isinstance(value, str) or not _COMPONENT.match(value):
            raise InvalidOption(f"invalid platform {name}: {value!r}")

    return check


def _version(variant: Optional[str], default: str) -> Optional[Tuple[int, int]]:
    """``v8.2`` -> (8, 2); None means the architecture's default variant."""
    match = re.match(r"^v(\d{1,3})(?:\.(\d{1,3}))?$", variant or default)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


@attrs.frozen(eq=True, order=False)
class Platform:
    """An os/architecture[/variant] triple, always held in containerd's canonical form."""

    os: str = attrs.field(validator=_check_component("os"))
    architecture: str = attrs.field(validator=_check_component("architecture"))
    variant: Optional[str] = attrs.field(default=None, validator=_check_component("variant"))

    def __attrs_post_init__(self) -> None:
        arch, variant = _normalize_arch(self.architecture, self.variant)
        object.__setattr__(self, "os", _normalize_os(self.os))
        object.__setattr__(self, "architecture", arch)
        object.__setattr__(self, "variant", variant)

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """Parse ``os/arch[/variant]`` or a bare ``arch`` (the host's os), as ``--platform``."""
        if not isinstance(text, str):
            raise InvalidOption(f"platform must be a string, not {type(text).__name__}")
        parts = text.strip().split("/")
        if not 1 <= len(parts) <= 3 or not all(_COMPONENT.match(p) for p in parts):
            raise InvalidOption(
                f"invalid platform {text!r}: expected os/architecture[/variant], "
                "e.g. linux/amd64 or linux/arm/v7"
            )
        if len(parts) == 1:
            if parts[0].lower() == "linux":
                return cls.host()
            return cls(os="linux", architecture=parts[0])
        return cls(
            os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) == 3 else None
        )

    @classmethod
    def from_oci(cls, doc: Mapping[str, Any]) -> "Platform":
        """From an OCI ``platform`` object (an index entry, an image config)."""
        if not isinstance(doc, Mapping):
            raise InvalidOption(f"platform must be an object, not {type(doc).__name__}")
        os_name, arch, variant = doc.get("os"), doc.get("architecture"), doc.get("variant")
        if not isinstance(os_name, str) or not isinstance(arch, str):
            raise InvalidOption(f"platform needs string os and architecture: {dict(doc)!r}")
        if variant == "":
            variant = None
        if variant is not None and not isinstance(variant, str):
            raise InvalidOption(f"platform variant must be a string: {variant!r}")
        return cls(os=os_name, architecture=arch, variant=variant)

    def to_oci(self) -> dict[str, str]:
        doc = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            doc["variant"] = self.variant
        return doc

    @classmethod
    def host(cls) -> "Platform":
        """The platform this machine runs natively, variant included (as containerd's
        DefaultSpec: arm variant from /proc/cpuinfo, amd64 micro-architecture level)."""
        uname = os.uname()
        arch, variant = _normalize_arch(uname.machine, None)
        if arch == "arm":
            variant = _cpuinfo_arm_variant() or variant
        elif arch == "amd64":
            variant = _amd64_level(_cpuinfo("flags"))
        return cls(os=uname.sysname, architecture=arch, variant=variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def compatible(self) -> Tuple["Platform", ...]:
        """Platforms this one runs, best first (containerd's ``platformVector``)."""
        out: List[Platform] = [self]
        if self.architecture == "amd64":
            level = _version(self.variant, "v1")
            if level is not None:
                out += [Platform(self.os, "amd64", f"v{n}") for n in range(level[0] - 1, 0, -1)]
            out.append(Platform(self.os, "386"))
        elif self.architecture == "arm":
            level = _version(self.variant, "v7")
            if level is not None:
                out += [Platform(self.os, "arm", f"v{n}") for n in range(level[0] - 1, 4, -1)]
        elif self.architecture == "arm64":
            level = _version(self.variant, "v8")
            if level is not None and level[0] >= 8:
                major, minor = level
                if major == 9:
                    out += [
                        Platform(self.os, "arm64", f"v9.{m}" if m else "v9")
                        for m in range(minor - 1, -1, -1)
                    ]
                    # v9.0 diverged from v8.5: v9.x runs v8.(x+5) and below.
                    major, minor = 8, minor + 5
                    out.append(Platform(self.os, "arm64", f"v8.{minor}"))
                if major == 8:
                    out += [
                        Platform(self.os, "arm64", f"v8.{m}" if m else "v8")
                        for m in range(minor - 1, -1, -1)
                    ]
                out += Platform(self.os, "arm", "v8").compatible()
        seen: List[Platform] = []
        for p in out:
            if p not in seen:
                seen.append(p)
        return tuple(seen)

    def matches(self, other: "Platform") -> bool:
        """Whether an image built for ``other`` runs on this platform."""
        return other in self.compatible()

    def best(self, candidates: Sequence[Optional["Platform"]]) -> Optional[int]:
        """Index of the candidate to run, or None: the most exact compatible platform, first
        listed on ties; an entry without a platform only when nothing matches (containerd
        keeps those, sorted last). ``unknown/unknown`` entries (attestations) never match."""
        order = self.compatible()
        best_index: Optional[int] = None
        best_rank = len(order) + 1
        for i, candidate in enumerate(candidates):
            if candidate is None:
                rank = len(order)
            elif candidate in order:
                rank = order.index(candidate)
            else:
                continue
            if rank < best_rank:
                best_index, best_rank = i, rank
        return best_index


def _cpuinfo(field: str) -> Optional[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() == field.lower():
                    return value.strip()
    except OSError:
        return None
    return None


def _cpuinfo_arm_variant() -> Optional[str]:
    value = (_cpuinfo("CPU architecture") or "").lower()
    if value in ("8", "aarch64"):
        return "v8"
    if value.startswith("7") or value.startswith("?("):
        model = (_cpuinfo("model name") or "").lower()
        # Raspberry Pi ARMv6 kernels report 7 (containerd's cpuinfo_linux.go).
        return "v6" if model.startswith("armv6-compatible") else "v7"
    for digit in "6543":
        if value.startswith(digit):
            return "v" + digit
    return None


_AMD64_LEVELS = (
    ("v2", {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}),
    ("v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    ("v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
)


def _amd64_level(flags: Optional[str]) -> Optional[str]:
    """x86-64 micro-architecture level from cpuinfo flags (None is v1, the baseline)."""
    have = set((flags or "").split())
    level: Optional[str] = None
    for name, needed in _AMD64_LEVELS:
        if not needed <= have:
            break
        level = name
    return level


__all__ = ["Platform"]
