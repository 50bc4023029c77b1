"""`Image`: an image's configuration and its layers, ready to run.

Images come from a registry (`Image.pull`, see registry.py and store.py) or from a local
directory (`Image.from_directory`), which is how tests build root filesystems.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping, Optional, Tuple, Union

import attrs

from .errors import InvalidOption


def _str_tuple(value: Any) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)):
        raise InvalidOption(f"expected a list of strings, got {value!r}")
    return tuple(str(v) for v in value)


def _opt_str_tuple(value: Any) -> Optional[Tuple[str, ...]]:
    return None if value is None else _str_tuple(value)


def _labels(value: Any) -> Mapping[str, str]:
    return dict(value or {})


@attrs.frozen
class ImageConfig:
    """The part of an OCI image config that says how to run it.

    ``cmd``/``entrypoint`` are None when the image does not set them (Docker distinguishes
    an unset Cmd from an empty one).
    """

    env: Tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    cmd: Optional[Tuple[str, ...]] = attrs.field(default=None, converter=_opt_str_tuple)
    entrypoint: Optional[Tuple[str, ...]] = attrs.field(default=None, converter=_opt_str_tuple)
    working_dir: str = ""
    user: str = ""
    exposed_ports: Tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_labels, hash=False)
    stop_signal: Optional[str] = None

    @classmethod
    def from_oci(cls, doc: Mapping[str, Any]) -> "ImageConfig":
        """From the ``config`` object of an OCI/Docker image configuration document."""
        if not isinstance(doc, Mapping):
            raise InvalidOption("image config must be a JSON object")
        return cls(
            env=doc.get("Env") or (),
            cmd=doc.get("Cmd"),
            entrypoint=doc.get("Entrypoint"),
            working_dir=doc.get("WorkingDir") or "",
            user=doc.get("User") or "",
            exposed_ports=sorted((doc.get("ExposedPorts") or {}).keys()),
            labels=doc.get("Labels") or {},
            stop_signal=doc.get("StopSignal") or None,
        )

    def to_oci(self) -> Mapping[str, Any]:
        doc: dict[str, Any] = {}
        if self.env:
            doc["Env"] = list(self.env)
        if self.cmd is not None:
            doc["Cmd"] = list(self.cmd)
        if self.entrypoint is not None:
            doc["Entrypoint"] = list(self.entrypoint)
        if self.working_dir:
            doc["WorkingDir"] = self.working_dir
        if self.user:
            doc["User"] = self.user
        if self.exposed_ports:
            doc["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.labels:
            doc["Labels"] = dict(self.labels)
        if self.stop_signal:
            doc["StopSignal"] = self.stop_signal
        return doc


def _layers(value: Any) -> Tuple[pathlib.Path, ...]:
    return tuple(pathlib.Path(p) for p in value)


@attrs.frozen
class Image:
    """A runnable image: its config and its layer directories, lowest layer first."""

    config: ImageConfig = attrs.field(factory=ImageConfig)
    layers: Tuple[pathlib.Path, ...] = attrs.field(default=(), converter=_layers)
    reference: Optional[str] = None
    digest: Optional[str] = None
    platform: Optional[str] = None
    size: int = 0

    @classmethod
    def from_directory(
        cls, path: Union[str, "os.PathLike[str]"], config: Optional[ImageConfig] = None
    ) -> "Image":
        """A local root filesystem as a one-layer image, used in place (never copied or
        written: containers write to their own upper directory)."""
        root = pathlib.Path(path).absolute()
        if not root.is_dir():
            raise InvalidOption(f"not a directory: {root}")
        return cls(config=config or ImageConfig(), layers=(root,), reference=str(root))
