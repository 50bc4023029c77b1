"""The one exception tree: every failure isobox raises derives from `IsoboxError`.

Lower layers (requests, OSError from the host) are translated at one boundary each and
kept as ``__cause__``, so callers catch isobox's families and still see the root cause.
"""

from __future__ import annotations

import os
from typing import Optional


class IsoboxError(Exception):
    """Raised for any isobox failure; catch this to catch them all."""


class InvalidReference(IsoboxError, ValueError):
    """Raised when an image reference does not follow Docker's reference grammar."""


class InvalidOption(IsoboxError, ValueError):
    """Raised when a container or image option is invalid, before the host is touched."""


class RegistryError(IsoboxError):
    """Raised when talking to a registry fails."""


class AuthenticationError(RegistryError):
    """Raised when the registry refuses our credentials or we have none it accepts."""


class CredentialsError(RegistryError):
    """Raised when stored registry credentials cannot be read: a malformed Docker config
    file, or a credential helper that is missing, fails or does not answer."""


class NotFound(RegistryError):
    """Raised when the registry has no such repository, tag, manifest or blob."""


class DigestMismatch(RegistryError):
    """Raised when content does not hash to the digest (or size) it was announced with."""


class RateLimited(RegistryError):
    """Raised when the registry keeps answering 429 after our retries."""


class UnsupportedManifest(RegistryError):
    """Raised for manifest kinds isobox does not run (schema1, unknown media types)."""


class InvalidImage(RegistryError):
    """Raised when an image's manifest or configuration is malformed: a field of the wrong
    type or an impossible value (a list of labels, a bogus StopSignal), as Docker refuses it."""


class InvalidArchive(IsoboxError, ValueError):
    """Raised when an image archive or OCI layout being loaded is malformed or hostile (a
    path leaving it, a link, an oversized document, a blob that does not hash to its
    digest); the message names the archive and the entry."""


class StoreError(IsoboxError):
    """Raised when the on-disk store cannot be read or written."""


class ImageNotFound(StoreError):
    """Raised when an image is asked for offline and is not in the store."""


class LayerError(StoreError):
    """Raised when a layer archive is malformed or hostile and cannot be applied."""


class ContainerError(IsoboxError):
    """Raised when a container cannot be created, started or managed."""


class NameConflict(ContainerError):
    """Raised when a container name is already taken by a live container."""


class ContainerNotFound(ContainerError):
    """Raised when no container has the given name or id."""


class SetupError(ContainerError):
    """Raised when a step of the container's setup failed in the child.

    ``step`` is the failed step's name (``"mount /proc"``), ``errno`` the error number.
    """

    def __init__(self, step: str, errno: int, detail: Optional[str] = None) -> None:
        self.step = step
        self.errno = errno
        self.detail = detail
        text = f"{step}: {os.strerror(errno)}" if errno else step
        if detail:
            text += f" ({detail})"
        super().__init__(text)


class CommandNotFound(SetupError):
    """Raised when the container's command does not exist in its filesystem."""


class CommandNotExecutable(SetupError):
    """Raised when the container's command exists but cannot be executed."""


class ExitStatusLost(ContainerError):
    """Raised when a container's (or exec's) exit status was collected by another wait in
    this process (SIGCHLD ignored, or a handler calling waitpid(-1)) on a kernel too old to
    keep it for isobox's pidfd (before Linux 6.15)."""


class Timeout(ContainerError):
    """Raised when a container or exec outlives the timeout it was given."""


class BuildError(IsoboxError):
    """Raised when a build cannot use its input (context, ignore file) or a step fails."""


class DockerfileError(BuildError, ValueError):
    """Raised for a Dockerfile (or a ``commit(changes=)`` line) that cannot be read,
    naming the file and line."""


class HostNotSupported(IsoboxError):
    """Raised when this host cannot do what was asked (not Linux, no user namespaces, ...).

    The message names the fix when one is known.
    """


__all__ = [
    "IsoboxError",
    "InvalidReference",
    "InvalidOption",
    "RegistryError",
    "AuthenticationError",
    "CredentialsError",
    "NotFound",
    "DigestMismatch",
    "RateLimited",
    "UnsupportedManifest",
    "InvalidImage",
    "InvalidArchive",
    "StoreError",
    "ImageNotFound",
    "LayerError",
    "ContainerError",
    "NameConflict",
    "ContainerNotFound",
    "SetupError",
    "CommandNotFound",
    "CommandNotExecutable",
    "ExitStatusLost",
    "Timeout",
    "BuildError",
    "DockerfileError",
    "HostNotSupported",
]
