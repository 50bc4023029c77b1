"""isobox: Docker's job as a library — pull OCI images and run them as sandboxed
processes, daemonless and rootless.

    >>> import isobox
    >>> isobox.run("busybox", ["echo", "hi"]).stdout
    b'hi\\n'

Names are loaded on first use (PEP 562), so `import isobox` and the `isobox` command
pay only for what they touch: running a cached image never imports the registry client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict, List

__version__ = "0.1.0"

# public name -> the private module that defines it
_EXPORTS: Dict[str, str] = {
    # images
    "Image": "image", "ImageConfig": "image", "ProgressCallback": "image",
    "Reference": "reference", "Platform": "platform",
    "Credentials": "auth", "lookup_credentials": "auth",
    "Store": "store", "PruneReport": "store", "prune": "store",
    # containers
    "Container": "container", "ContainerConfig": "container",
    "Bind": "mounts", "Tmpfs": "mounts", "Volume": "mounts", "Device": "devices", "VolumeInfo": "named_volumes",
    "volumes": "named_volumes", "remove_volume": "named_volumes",
    "RunResult": "result", "run": "oneshot", "doctor": "hostcheck",
    "containers": "control", "ContainerInfo": "control", "get_container": "control",
    "ContainerHandle": "control", "RemoteExec": "control", "run_detached": "supervisor",
    # errors
    "IsoboxError": "errors", "InvalidReference": "errors", "InvalidOption": "errors",
    "RegistryError": "errors", "AuthenticationError": "errors", "CredentialsError": "errors",
    "NotFound": "errors", "DigestMismatch": "errors", "RateLimited": "errors",
    "UnsupportedManifest": "errors", "InvalidImage": "errors", "StoreError": "errors", "ImageNotFound": "errors",
    "LayerError": "errors", "ContainerError": "errors", "NameConflict": "errors",
    "ContainerNotFound": "errors", "SetupError": "errors", "CommandNotFound": "errors",
    "CommandNotExecutable": "errors", "ExitStatusLost": "errors", "Timeout": "errors", "HostNotSupported": "errors",
    "ExitStatusError": "result",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'isobox' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    # public names belong to the package (as httpx does), so reprs and docs show isobox.X
    if isinstance(value, type) or callable(value):
        try:
            value.__module__ = __name__
        except (AttributeError, TypeError):
            pass
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted([*__all__, "__version__"])


if TYPE_CHECKING:  # what type checkers see: the same names, imported eagerly
    from .auth import Credentials, lookup_credentials
    from .container import Container, ContainerConfig
    from .hostcheck import doctor
    from .errors import (
        AuthenticationError,
        CommandNotExecutable,
        CommandNotFound,
        ContainerError,
        ContainerNotFound,
        CredentialsError,
        DigestMismatch,
        ExitStatusLost,
        HostNotSupported,
        ImageNotFound,
        InvalidImage,
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
    from .image import Image, ImageConfig, ProgressCallback
    from .devices import Device
    from .mounts import Bind, Tmpfs, Volume
    from .named_volumes import VolumeInfo, remove_volume, volumes
    from .platform import Platform
    from .reference import Reference
    from .result import ExitStatusError, RunResult
    from .oneshot import run
    from .store import PruneReport, Store, prune
    from .control import (
        ContainerHandle,
        ContainerInfo,
        RemoteExec,
        containers,
        get_container,
    )
    from .supervisor import run_detached
