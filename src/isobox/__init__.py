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

from ._version import __version__ as __version__

# public name -> the private module that defines it
_EXPORTS: Dict[str, str] = {
    # images
    "Image": "images.image", "ImageConfig": "images.image", "ProgressCallback": "images.image",
    "Reference": "images.reference", "Platform": "images.platform",
    "Credentials": "images.credentials", "lookup_credentials": "images.credentials",
    "Store": "images.store", "PruneReport": "images.store", "prune": "gc",
    # containers
    "Container": "runtime.container", "ContainerConfig": "runtime.config", "ContainerProtocol": "runtime.protocol",
    "Bind": "runtime.mounts", "Tmpfs": "runtime.mounts", "Volume": "runtime.mounts", "Device": "runtime.devices", "SubordinateIdWarning": "host.idmap", "VolumeInfo": "runtime.named_volumes",
    "volumes": "runtime.named_volumes", "remove_volume": "runtime.named_volumes",
    "RunResult": "result", "run": "oneshot", "doctor": "runtime.doctor",
    "containers": "control.client", "ContainerInfo": "control.client", "get_container": "control.client",
    "ContainerHandle": "control.client", "RemoteExec": "control.client", "run_detached": "control.supervisor",
    # errors
    "IsoboxError": "errors", "InvalidReference": "errors", "InvalidOption": "errors",
    "RegistryError": "errors", "AuthenticationError": "errors", "CredentialsError": "errors",
    "NotFound": "errors", "DigestMismatch": "errors", "RateLimited": "errors",
    "UnsupportedManifest": "errors", "InvalidImage": "errors", "InvalidArchive": "errors", "StoreError": "errors", "ImageNotFound": "errors",
    "LayerError": "errors", "ContainerError": "errors", "NameConflict": "errors",
    "ContainerNotFound": "errors", "SetupError": "errors", "CommandNotFound": "errors",
    "CommandNotExecutable": "errors", "ExitStatusLost": "errors", "Timeout": "errors", "HostNotSupported": "errors",
    "BuildError": "errors", "DockerfileError": "errors",
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


if TYPE_CHECKING:
    # What type checkers see: the same names, imported eagerly. `X as X` marks each as
    # re-exported: mypy --strict (no_implicit_reexport) treats a plain import as private
    # and cannot read `__all__` built at run time, so `from isobox import run` in user
    # code would fail (PEP 484: "import X as X" re-exports). tests/test_typing.py checks
    # this list against _EXPORTS.
    from .images.credentials import (
        Credentials as Credentials,
        lookup_credentials as lookup_credentials,
    )
    from .runtime.config import ContainerConfig as ContainerConfig
    from .runtime.container import Container as Container
    from .runtime.protocol import ContainerProtocol as ContainerProtocol
    from .control.client import (
        ContainerHandle as ContainerHandle,
        ContainerInfo as ContainerInfo,
        RemoteExec as RemoteExec,
        containers as containers,
        get_container as get_container,
    )
    from .errors import (
        AuthenticationError as AuthenticationError,
        CommandNotExecutable as CommandNotExecutable,
        CommandNotFound as CommandNotFound,
        BuildError as BuildError,
        ContainerError as ContainerError,
        ContainerNotFound as ContainerNotFound,
        CredentialsError as CredentialsError,
        DigestMismatch as DigestMismatch,
        DockerfileError as DockerfileError,
        ExitStatusLost as ExitStatusLost,
        HostNotSupported as HostNotSupported,
        ImageNotFound as ImageNotFound,
        InvalidArchive as InvalidArchive,
        InvalidImage as InvalidImage,
        InvalidOption as InvalidOption,
        InvalidReference as InvalidReference,
        IsoboxError as IsoboxError,
        LayerError as LayerError,
        NameConflict as NameConflict,
        NotFound as NotFound,
        RateLimited as RateLimited,
        RegistryError as RegistryError,
        SetupError as SetupError,
        StoreError as StoreError,
        Timeout as Timeout,
        UnsupportedManifest as UnsupportedManifest,
    )
    from .runtime.devices import Device as Device
    from .runtime.doctor import doctor as doctor
    from .host.idmap import SubordinateIdWarning as SubordinateIdWarning
    from .images.image import (
        Image as Image,
        ImageConfig as ImageConfig,
        ProgressCallback as ProgressCallback,
    )
    from .runtime.mounts import (
        Bind as Bind,
        Tmpfs as Tmpfs,
        Volume as Volume,
    )
    from .runtime.named_volumes import (
        VolumeInfo as VolumeInfo,
        remove_volume as remove_volume,
        volumes as volumes,
    )
    from .gc import prune as prune
    from .oneshot import run as run
    from .images.platform import Platform as Platform
    from .images.reference import Reference as Reference
    from .result import (
        ExitStatusError as ExitStatusError,
        RunResult as RunResult,
    )
    from .images.store import (
        PruneReport as PruneReport,
        Store as Store,
    )
    from .control.supervisor import run_detached as run_detached
