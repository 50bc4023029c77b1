"""isobox: Docker's job as a library — pull OCI images and run them as sandboxed
processes, daemonless and rootless.

    >>> import isobox
    >>> isobox.run("busybox", ["echo", "hi"]).stdout
    b'hi\\n'
"""

from __future__ import annotations

from .container import Container, ContainerConfig
from .doctor import doctor
from .errors import (
    AuthenticationError,
    CommandNotExecutable,
    CredentialsError,
    CommandNotFound,
    ContainerError,
    ContainerNotFound,
    DigestMismatch,
    HostNotSupported,
    ImageNotFound,
    InvalidOption,
    InvalidReference,
    IsoboxError,
    LayerError,
    NameConflict,
    NotFound,
    RateLimited,
    RegistryError,
    SetupError,
    StoreError,
    Timeout,
    UnsupportedManifest,
)
from .auth import Credentials, lookup_credentials
from .image import Image, ImageConfig, ProgressCallback
from .mounts import Bind, Tmpfs, Volume, VolumeInfo, remove_volume, volumes
from .result import ExitStatusError, RunResult
from .run import run
from .platform import Platform
from .reference import Reference
from .store import PruneReport, Store, prune

__version__ = "0.1.0"

__all__ = [
    "Container",
    "ContainerConfig",
    "Image",
    "ImageConfig",
    "RunResult",
    "Store",
    "Reference",
    "Platform",
    "Credentials",
    "lookup_credentials",
    "ProgressCallback",
    "PruneReport",
    "prune",
    "run",
    "doctor",
    "Bind",
    "Tmpfs",
    "Volume",
    "VolumeInfo",
    "volumes",
    "remove_volume",
    "AuthenticationError",
    "CommandNotExecutable",
    "CommandNotFound",
    "CredentialsError",
    "ContainerError",
    "ContainerNotFound",
    "DigestMismatch",
    "ExitStatusError",
    "HostNotSupported",
    "ImageNotFound",
    "InvalidOption",
    "InvalidReference",
    "IsoboxError",
    "LayerError",
    "NameConflict",
    "NotFound",
    "RateLimited",
    "RegistryError",
    "SetupError",
    "StoreError",
    "Timeout",
    "UnsupportedManifest",
]

# Public names belong to the package (as httpx does), so reprs and docs show isobox.X.
for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__"):
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _obj
