"""Image references: Docker's reference grammar and its Docker Hub normalisation.

`Reference.parse` accepts what ``docker pull`` accepts and normalises it the same way
(distribution/reference's ``ParseNormalizedNamed``, then ``ParseDockerRef``'s rule that a
digest, not a tag, is what a reference pins)::

    busybox                       -> docker.io/library/busybox:latest
    index.docker.io/busybox:1.36  -> docker.io/library/busybox:1.36
    localhost:5000/x@sha256:<hex> -> localhost:5000/x@sha256:<hex>   (tag stays None)

The grammar, from distribution/reference's package documentation::

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain "/"] path-component ["/" path-component]*
    domain           := host [":" port-number]
    host             := domain-name | "[" IPv6address "]"
    domain-name      := domain-component ["." domain-component]*
    domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    port-number      := /[0-9]+/
    path-component   := alpha-numeric [separator alpha-numeric]*
    alpha-numeric    := /[a-z0-9]+/
    separator        := /[_.]|__|[-]+/
    tag              := /[\\w][\\w.-]{0,127}/
    digest           := algorithm ":" hex   (algorithm: sha256, sha384 or sha512, lowercase
                                             hex of exactly the hash's length: `digest`)

The first "/"-separated part of a name is the registry domain only when it contains a "."
or a ":", has an uppercase letter, or is ``localhost``; otherwise the whole name is a path
on Docker Hub, where single-component paths live under ``library/``. The path is at most
255 characters and lowercase; the domain may hold uppercase letters (it is kept as written).

Where we deliberately differ from Docker (each a case Docker accepts but cannot pull):

* a first part that contains "." but is not a valid domain (``foo_bar.com/x``) is refused;
  Docker parses it into a reference with an empty domain that no registry can serve;
* digests must use an algorithm Docker can verify (sha256, sha384, sha512) -- this is
  go-digest's rule, which Docker applies too, so only its wording differs.

Pure: no I/O, no network, no global state.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import attrs

from ..errors import InvalidReference
from .digest import problem as digest_problem

# Docker Hub's names: the domain references use, the host its API answers at, and the
# legacy domain Docker still reads (and normalises to the first).
DOCKER_HUB_DOMAIN = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
LEGACY_HUB_DOMAIN = "index.docker.io"
DEFAULT_TAG = "latest"
MAX_PATH_LENGTH = 255
MAX_TAG_LENGTH = 128

_OFFICIAL_PREFIX = "library/"

# Character classes are spelled out: Python's \w and \d match non-ASCII letters and
# digits, Go's do not. Every pattern is used with fullmatch (``$`` would accept a
# trailing newline). None of them can backtrack more than linearly.
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")


def _shown(text: str, limit: int = 100) -> str:
    """``repr`` of user input, cut short: a hostile megabyte should not fill the logs."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _domain_problem(domain: str) -> Optional[str]:
    if not _DOMAIN.fullmatch(domain):
        return (
            f"invalid registry domain {_shown(domain)} (expected a host name, an IPv4 "
            "address or a bracketed IPv6 address, optionally followed by ':port')"
        )
    return None


def _path_problem(path: str) -> Optional[str]:
    if path != path.lower():
        return "repository name must be lowercase"
    for component in path.split("/"):
        if not component:
            return "repository name has an empty component (a leading, trailing or double '/')"
        if not _PATH_COMPONENT.fullmatch(component):
            return (
                f"invalid repository name component {_shown(component)} (lowercase letters "
                "and digits, separated by '.', '_', '__' or dashes)"
            )
    if len(path) > MAX_PATH_LENGTH:
        return f"repository name must not be more than {MAX_PATH_LENGTH} characters"
    return None


def _tag_problem(tag: str) -> Optional[str]:
    if len(tag) > MAX_TAG_LENGTH:
        return f"tag must not be more than {MAX_TAG_LENGTH} characters"
    if not _TAG.fullmatch(tag):
        return (
            f"invalid tag {_shown(tag)} (letters, digits, '_', '.' and '-', not starting with "
            "'.' or '-')"
        )
    return None


def _check(problem: Optional[str]) -> None:
    if problem is not None:
        raise InvalidReference(problem)


def _validate_domain(_: Any, __: Any, domain: Any) -> None:
    if not isinstance(domain, str):
        raise InvalidReference(f"reference domain must be a string, not {type(domain).__name__}")
    _check(_domain_problem(domain))
    if domain == LEGACY_HUB_DOMAIN:
        raise InvalidReference(f"write Docker Hub's domain as {DOCKER_HUB_DOMAIN!r}")
    if not _names_a_domain(domain):
        raise InvalidReference(
            f"{_shown(domain)} would be read as a path on Docker Hub, not as a registry domain "
            "(a domain needs a '.', a ':port', an uppercase letter, or is 'localhost')"
        )


def _validate_path(ref: Any, _: Any, path: Any) -> None:
    if not isinstance(path, str):
        raise InvalidReference(f"reference path must be a string, not {type(path).__name__}")
    _check(_path_problem(path))
    if ref.domain == DOCKER_HUB_DOMAIN and "/" not in path:
        raise InvalidReference(
            f"official Docker Hub images live under {_OFFICIAL_PREFIX!r}: "
            f"write {_shown(_OFFICIAL_PREFIX + path)}"
        )


def _validate_tag(_: Any, __: Any, tag: Any) -> None:
    if tag is None:
        return
    if not isinstance(tag, str):
        raise InvalidReference(f"tag must be a string, not {type(tag).__name__}")
    _check(_tag_problem(tag))


def _validate_digest(_: Any, __: Any, digest: Any) -> None:
    if digest is None:
        return
    if not isinstance(digest, str):
        raise InvalidReference(f"digest must be a string, not {type(digest).__name__}")
    _check(digest_problem(digest))


def _names_a_domain(first: str) -> bool:
    """Docker's rule for whether the first part of a name is a registry or a path."""
    return first == "localhost" or "." in first or ":" in first or first != first.lower()


def _split_domain(text: str) -> tuple[str, str]:
    """Split a familiar reference into (domain, rest), as Docker's splitDockerDomain."""
    first, slash, rest = text.partition("/")
    if not slash:
        return DOCKER_HUB_DOMAIN, _OFFICIAL_PREFIX + text
    if first == LEGACY_HUB_DOMAIN:
        domain, remote = DOCKER_HUB_DOMAIN, rest
    elif _names_a_domain(first):
        domain, remote = first, rest
    else:
        domain, remote = DOCKER_HUB_DOMAIN, text
    if domain == DOCKER_HUB_DOMAIN and "/" not in remote:
        remote = _OFFICIAL_PREFIX + remote
    return domain, remote


@attrs.frozen
class Reference:
    """A normalised image reference: where an image lives and which one.

    Built by `parse` from what users type, or from already-normal components (validated:
    a bad component raises `InvalidReference`). `parse` always fills a tag or a digest; a
    reference built by hand may have neither and then names just the repository.
    When both are set the digest decides what is pulled; the tag is kept for display.
    """

    domain: str = attrs.field(validator=_validate_domain)
    path: str = attrs.field(validator=_validate_path)
    tag: Optional[str] = attrs.field(default=None, validator=_validate_tag)
    digest: Optional[str] = attrs.field(default=None, validator=_validate_digest)

    @classmethod
    def parse(cls, text: str) -> "Reference":
        """Parse what a user would give ``docker pull``; raise `InvalidReference` if Docker
        would refuse it (or could not pull it)."""
        if not isinstance(text, str):
            raise InvalidReference(
                f"invalid reference: expected a string, not {type(text).__name__}"
            )

        def fail(reason: str) -> InvalidReference:
            return InvalidReference(f"invalid reference {_shown(text, 300)}: {reason}")

        if not text:
            raise fail("reference is empty")
        if _IMAGE_ID.fullmatch(text):
            raise fail("a 64-digit hexadecimal string is an image ID, not a repository name")

        domain, remainder = _split_domain(text)
        name_and_tag, at, digest_text = remainder.partition("@")
        path, colon, tag_text = name_and_tag.partition(":")

        problem = _domain_problem(domain) or _path_problem(path)
        if problem is None and colon:
            problem = _tag_problem(tag_text)
        if problem is None and at:
            problem = digest_problem(digest_text)
        if problem is not None:
            raise fail(problem)

        tag = tag_text if colon else None
        digest = digest_text if at else None
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        try:
            return cls(domain=domain, path=path, tag=tag, digest=digest)
        except InvalidReference as exc:  # not expected: parse only builds normal references
            raise fail(str(exc)) from exc

    def __str__(self) -> str:
        """The full normalised form; a digest pins the image, so the tag is left out."""
        if self.digest is not None:
            return f"{self.repository}@{self.digest}"
        if self.tag is not None:
            return f"{self.repository}:{self.tag}"
        return self.repository

    @property
    def repository(self) -> str:
        """``domain/path``: the repository, without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def is_docker_hub(self) -> bool:
        return self.domain == DOCKER_HUB_DOMAIN

    @property
    def api_host(self) -> str:
        """The host (and port) that serves the registry API for this reference."""
        return DOCKER_HUB_API_HOST if self.is_docker_hub else self.domain

    @property
    def familiar(self) -> str:
        """The short form Docker shows (``busybox:latest``), with tag and digest.

        Unlike Docker's, it keeps ``docker.io/`` where dropping it would change the meaning
        (``docker.io/a.b/c`` is not ``a.b/c``), so it always parses back to this reference.
        """
        name = self.repository
        if self.is_docker_hub:
            short = self.path
            if short.startswith(_OFFICIAL_PREFIX) and "/" not in short[len(_OFFICIAL_PREFIX) :]:
                short = short[len(_OFFICIAL_PREFIX) :]
            first, slash, _ = short.partition("/")
            bare_id = self.tag is None and self.digest is None and _IMAGE_ID.fullmatch(short)
            if not (slash and _names_a_domain(first)) and not bare_id:
                name = short
        if self.tag is not None:
            name += f":{self.tag}"
        if self.digest is not None:
            name += f"@{self.digest}"
        return name

    def with_tag(self, tag: str) -> "Reference":
        """This reference with another tag (a digest, if any, is kept)."""
        return attrs.evolve(self, tag=tag)

    def with_digest(self, digest: str) -> "Reference":
        """This reference pinned to a digest (the tag, if any, is kept for display)."""
        return attrs.evolve(self, digest=digest)


__all__ = ["Reference", "DOCKER_HUB_DOMAIN", "DOCKER_HUB_API_HOST", "LEGACY_HUB_DOMAIN"]
