"""Rootful or rootless: decided once, and passed down.

`Privilege.current` reads the process state once, when a store is opened
(`isobox.images.store.Store.open`); the store carries the value, and everything below
takes it from there (a container from its store, a pull's layers from theirs, a copy from
its container) instead of asking the kernel again. bubblewrap decides ``is_privileged``
once in the same way. What follows from it:

==============================  =======================  ===============================
                                rootful (euid 0)         rootless
==============================  =======================  ===============================
a container's user namespace    none                     one, mapped by `id_map`
overlay metadata (xattrs)       ``trusted.overlay.*``    ``user.overlay.*``, mounted
                                                         with ``-o userxattr``
a layer's owners                chown as the archive     the caller's, then subordinate
                                says                     ids in a user namespace
device nodes in a layer         mknod                    skipped
the device cgroup program       loaded (bpf(2))          none (devices stay unusable)
a removal refused               an error                 retried in a user namespace
default store                   /var/lib/isobox          $XDG_DATA_HOME/isobox
runtime directories under       /run/isobox              $XDG_RUNTIME_DIR/isobox
==============================  =======================  ===============================

Whiteouts are not on the list: both sides write 0:0 character devices (any user may make
that one device since Linux 5.8), falling back to xattr whiteouts where mknod is refused
(`isobox.images.unpack`).

Who the caller *is* (the owner of a file, the uid a socket peer must have, the ids in a
one-id map) is identity, not privilege: those places still ask `os.geteuid`.
"""

from __future__ import annotations

import os
import pathlib
from typing import TYPE_CHECKING, Optional

import attrs

from ..errors import InvalidOption

if TYPE_CHECKING:
    from .idmap import IdMap

ROOT_RUNTIME_DIR = "/run"
RUNTIME_DIR_ENV = "ISOBOX_RUNTIME_DIR"  # overrides the base (/run, $XDG_RUNTIME_DIR) for all
STORE_ROOT_ENV = "ISOBOX_ROOT"
ROOT_STORE_ROOT = "/var/lib/isobox"


def _no_map_as_root(instance: "Privilege", _attribute: "attrs.Attribute[Optional[IdMap]]",
                    value: "Optional[IdMap]") -> None:
    if value is not None and instance.rootful:
        raise InvalidOption("a rootful isobox uses no user namespace: it has no id map")


@attrs.frozen
class Privilege:
    """Whether isobox runs as root, and what it may do for that; see the module docstring.
    Made by `current`; made by hand to run as the other side would decide (tests)."""

    rootful: bool
    #: rootless: the user namespace map containers and removals use; None: the caller's
    #: (`idmap.for_caller`, read from /etc/subuid when first needed: see `id_map`)
    ids: Optional["IdMap"] = attrs.field(default=None, validator=_no_map_as_root)
    #: the base runtime directories go under (``<base>/isobox/``), or None (run-time
    #: files stay in the store); runtime/rundir.py uses it only where it is private and on
    #: a tmpfs, which it checks when a container starts
    runtime_base: Optional[pathlib.Path] = None

    @classmethod
    def current(cls) -> "Privilege":
        """This process's: root or not, and the runtime directory base that goes with it."""
        rootful = os.geteuid() == 0
        return cls(rootful=rootful, runtime_base=_runtime_base(rootful))

    @property
    def user_namespace(self) -> bool:
        """Whether containers get a user namespace (and their layers ``-o userxattr``)."""
        return not self.rootful

    @property
    def overlay_xattrs(self) -> str:
        """The xattr namespace of overlayfs's metadata in layers: ``trusted`` for an overlay
        real root mounts, ``user`` for one mounted with ``-o userxattr`` (Linux 5.11)."""
        return "trusted" if self.rootful else "user"

    @property
    def can_chown(self) -> bool:
        """Files can be given any owner (a layer's entries get the archive's)."""
        return self.rootful

    @property
    def can_mknod(self) -> bool:
        """Device nodes can be made (rootless, mknod(2) makes only whiteouts)."""
        return self.rootful

    @property
    def device_program(self) -> bool:
        """The cgroup v2 device program can be loaded: bpf(2) needs CAP_BPF/CAP_SYS_ADMIN
        in the initial user namespace; a rootless container needs none (runtime/cgroups.py)."""
        return self.rootful

    def id_map(self) -> Optional["IdMap"]:
        """The map of a container's user namespace: None as root (no user namespace), else
        `ids`, else the caller's subordinate ids (read now: `idmap.for_caller`)."""
        if self.rootful:
            return None
        if self.ids is not None:
            return self.ids
        from .idmap import for_caller

        return for_caller()

    def with_id_map(self) -> "Privilege":
        """This value with the id map read (`id_map`) and kept, so that what a container
        makes with it is removed with the same map."""
        if self.rootful or self.ids is not None:
            return self
        return attrs.evolve(self, ids=self.id_map())

    def default_store_root(self) -> pathlib.Path:
        """``$ISOBOX_ROOT``, else ``/var/lib/isobox`` as root, else ``$XDG_DATA_HOME/isobox``."""
        env = os.environ.get(STORE_ROOT_ENV)
        if env:
            return pathlib.Path(env)
        if self.rootful:
            return pathlib.Path(ROOT_STORE_ROOT)
        xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        return pathlib.Path(xdg) / "isobox"


# -- the runtime directory's base ----------------------------------------------------------


def _runtime_base(rootful: bool) -> Optional[pathlib.Path]:
    """The base ``$ISOBOX_RUNTIME_DIR`` names, else /run as root, else ``$XDG_RUNTIME_DIR``
    (what systemd-logind makes); None without one, or when it is not absolute."""
    base = os.environ.get(RUNTIME_DIR_ENV) or (
        ROOT_RUNTIME_DIR if rootful else os.environ.get("XDG_RUNTIME_DIR")) or None
    return pathlib.Path(base) if base is not None and os.path.isabs(base) else None
