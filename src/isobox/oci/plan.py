"""A bundle's config (`BundleConfig`) as the native core's `Spec`: the same child the
library's `Container` starts (spawn.c), planned here for the spec's shape.

The library's planner (runtime/rootfs.py) builds a root from an overlay of image layers
and adds Docker's mounts; a bundle brings a plain root directory and its own mount list,
so this module plans with the same ops and the same rules, in this order:

  before pivot_root: bind the root directory onto itself (pivot_root needs a mount
    point); then each of ``mounts`` in order, at root + destination, with the directories
    it needs made: the kernel lists mounts in the order they were made (Linux 6.8 keeps a
    namespace's mounts sorted by their unique id), so the container sees them in the
    config's order, and proc and sysfs are mounted while the host's are still visible,
    which a user namespace needs (mount_too_revealing).  Only where the destination's path
    is plain (`_before_pivot_dirs`: no symlink, nothing below a mount of content we did
    not make); otherwise that mount waits until after pivot_root, its destination
    resolved inside the root (spawn.c, "container paths"), its bind source captured as a
    detached tree now (IB_OP_OPEN_TREE) and attached then;
  pivot_root;
  after it, the mounts that waited; the devices (the six every runtime provides, then
    ``linux.devices``): mknod inside the root as root, bound from the host's node inside a
    user namespace; /dev's symlinks (fd, stdin, stdout, stderr, ptmx);
  ``maskedPaths``, ``readonlyPaths``, rootfsPropagation, then the root made read-only if
  asked.
"""

from __future__ import annotations

import os
import posixpath
from typing import Dict, List, Optional, Sequence, Tuple

from ..host import native
from ..host.native import Op, lib
from ..runtime.rootfs import DEVICES, S_IFBLK, S_IFCHR
from ..errors import InvalidOption
from .bundle import BundleConfig, Device, Unsupported

# mount(8)'s flag options (linux/mount.h); each sets (or, with clear=True, clears) bits
MS_SYNCHRONOUS = 16
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_RELATIME = 1 << 21
MS_LAZYTIME = 1 << 25
FLAG_OPTIONS: Dict[str, Tuple[int, bool]] = {
    "ro": (native.MS_RDONLY, False), "rw": (native.MS_RDONLY, True),
    "nosuid": (native.MS_NOSUID, False), "suid": (native.MS_NOSUID, True),
    "nodev": (native.MS_NODEV, False), "dev": (native.MS_NODEV, True),
    "noexec": (native.MS_NOEXEC, False), "exec": (native.MS_NOEXEC, True),
    "sync": (MS_SYNCHRONOUS, False), "async": (MS_SYNCHRONOUS, True),
    "dirsync": (MS_DIRSYNC, False), "mand": (MS_MANDLOCK, False), "nomand": (MS_MANDLOCK, True),
    "atime": (MS_NOATIME, True), "noatime": (MS_NOATIME, False),
    "diratime": (MS_NODIRATIME, True), "nodiratime": (MS_NODIRATIME, False),
    "relatime": (MS_RELATIME, False), "norelatime": (MS_RELATIME, True),
    "strictatime": (native.MS_STRICTATIME, False), "nostrictatime": (native.MS_STRICTATIME, True),
    "lazytime": (MS_LAZYTIME, False), "nolazytime": (MS_LAZYTIME, True),
    "nosymfollow": (MS_NOSYMFOLLOW, False), "symfollow": (MS_NOSYMFOLLOW, True),
    "defaults": (0, False),
}
# propagation (mount_namespaces(7)): the container's tree starts private (spawn.c makes /
# private before the plan), so a mount made shared or slave here has peers only inside the
# container; applied after the mount, or to / after every mount (rootfsPropagation)
MS_REC = 16384
PROPAGATION = {"unbindable": 1 << 17, "private": 1 << 18, "slave": 1 << 19, "shared": 1 << 20}
PROPAGATION_OPTIONS = {**PROPAGATION, **{"r" + k: v | MS_REC for k, v in PROPAGATION.items()}}

NAMESPACE_FLAGS = {
    "pid": native.CLONE_NEWPID, "network": native.CLONE_NEWNET, "mount": native.CLONE_NEWNS,
    "ipc": native.CLONE_NEWIPC, "uts": native.CLONE_NEWUTS, "user": native.CLONE_NEWUSER,
    "cgroup": native.CLONE_NEWCGROUP,
}

DEV_LINKS = (("/dev/fd", "/proc/self/fd"), ("/dev/stdin", "/proc/self/fd/0"),
             ("/dev/stdout", "/proc/self/fd/1"), ("/dev/stderr", "/proc/self/fd/2"))


def mount_options(options: Sequence[str], where: str) -> Tuple[int, List[str], bool, int]:
    """(flags, the filesystem's own options, recursive bind, propagation flags)."""
    flags, data, recursive, propagation = 0, [], False, 0
    for opt in options:
        if opt in FLAG_OPTIONS:
            bits, clear = FLAG_OPTIONS[opt]
            flags = flags & ~bits if clear else flags | bits
        elif opt in ("bind", "rbind"):
            recursive = recursive or opt == "rbind"
        elif opt in PROPAGATION_OPTIONS:
            propagation = PROPAGATION_OPTIONS[opt]
        elif opt in ("remount", "idmap", "ridmap", "tmpcopyup"):
            raise Unsupported(f"config.json: {where}: option {opt!r} is not supported yet")
        else:
            data.append(opt)
    return flags, data, recursive, propagation


def clone_flags(cfg: BundleConfig) -> int:
    if "mount" not in cfg.namespaces:
        raise Unsupported("config.json: a container without its own mount namespace is not "
                          "supported (isobox-runtime pivots into the root inside one)")
    flags = 0
    for ns in cfg.namespaces:
        flags |= NAMESPACE_FLAGS[ns]
    return flags


def _device_nodes(cfg: BundleConfig) -> List[Device]:
    nodes = [Device(f"/dev/{name}", "c", major, minor, 0o666, 0, 0) for name, major, minor in DEVICES]
    given = {d.path for d in cfg.devices}
    return [d for d in nodes if d.path not in given] + list(cfg.devices)


def ops(cfg: BundleConfig, in_userns: bool) -> List[Op]:
    """The mount plan for ``cfg``; ``in_userns``: the container has its own user namespace
    (no mknod there: device nodes are the host's, bound)."""
    root = cfg.root
    before: List[Op] = [Op(lib.IB_OP_BIND, f"bind the root {root} onto itself", root, source=root)]
    after: List[Op] = []
    # destinations of the mounts so far whose contents we did not make (a host directory
    # bound in, proc, sysfs ...): a path below one is not known to be plain
    opaque: List[str] = []

    for i, m in enumerate(cfg.mounts):
        where = f"mounts[{i}] ({m.destination})"
        if m.destination == "/":
            raise Unsupported(f"config.json: {where}: a mount over / is not supported")
        flags, data, _, propagation = mount_options(m.options, where)
        bind = m.type in ("bind", "cgroup") or "bind" in m.options or "rbind" in m.options
        if m.type == "cgroup":
            # the host's hierarchy, read-only as asked: what runc mounts without a cgroup
            # namespace; a container's own view (cgroupns) is to come
            source = "/sys/fs/cgroup"
        elif bind:
            source = m.source if m.source.startswith("/") else os.path.join(cfg.bundle, m.source)
            if not os.path.exists(source):
                raise InvalidOption(f"config.json: {where}: the bind source {source} does not exist")
        is_dir = not bind or os.path.isdir(source)
        per_mount = native.MS_RDONLY | native.MS_NOSUID | native.MS_NODEV | native.MS_NOEXEC
        made = _before_pivot_dirs(root, m.destination, is_dir, opaque)
        if made is not None:
            before += made
            target = root + m.destination
            if bind:
                before.append(Op(lib.IB_OP_BIND, f"mount {source} on {m.destination}", target,
                                 source=source, flags=flags & per_mount))
            else:
                before.append(Op(lib.IB_OP_MOUNT, f"mount {m.type} on {m.destination}", target,
                                 source=m.source, fstype=m.type, flags=flags, data=",".join(data) or None))
            if propagation:
                before.append(Op(lib.IB_OP_MOUNT, f"set the propagation of {m.destination}", target,
                                 flags=propagation))
        else:
            # below a symlink or a mount of content we did not make: resolved inside the
            # root after pivot_root (spawn.c, "container paths"), at the cost of the
            # config's order in /proc/self/mountinfo (the kernel lists mounts as made)
            after += _make_target(m.destination, is_dir)
            if bind:
                before.append(Op(lib.IB_OP_OPEN_TREE, f"open {source} for {m.destination}",
                                 m.destination, source=source))
                after.append(Op(lib.IB_OP_ATTACH, f"mount {source} on {m.destination}", m.destination,
                                ref=len(before) - 1, flags=flags & per_mount))
            else:
                after.append(Op(lib.IB_OP_MOUNT, f"mount {m.type} on {m.destination}", m.destination,
                                source=m.source, fstype=m.type, flags=flags, data=",".join(data) or None))
            if propagation:
                after.append(Op(lib.IB_OP_MOUNT, f"set the propagation of {m.destination}",
                                m.destination, flags=propagation))
        if bind or m.type not in ("tmpfs",):
            opaque.append(m.destination)

    for node in _device_nodes(cfg):
        parent = posixpath.dirname(node.path)
        after.append(Op(lib.IB_OP_MKDIR_P, f"create {parent}", parent, mode=0o755))
        if in_userns:
            host = node.path  # the host's node of the same name
            if not os.path.exists(host):
                raise Unsupported(f"config.json: device {node.path}: no such node on the host to "
                                  "bind in a user namespace")
            before.append(Op(lib.IB_OP_OPEN_TREE, f"open {host} for {node.path}", node.path, source=host))
            ref = len(before) - 1
            after.append(Op(lib.IB_OP_TOUCH, f"create {node.path}", node.path, mode=0o600))
            after.append(Op(lib.IB_OP_ATTACH, f"bind {node.path}", node.path, ref=ref))
            continue
        kind = {"c": S_IFCHR, "b": S_IFBLK, "p": 0o010000}[node.type]
        after.append(Op(lib.IB_OP_MKNOD, f"mknod {node.path}", node.path, mode=kind | node.mode,
                        dev=os.makedev(node.major, node.minor)))
        if node.uid or node.gid:  # mknod made it root's, with its mode (the plan's umask is 0)
            after.append(Op(lib.IB_OP_CHOWN_IN, f"chown {node.path}", node.path.lstrip("/"), source="/",
                            dev=(node.uid << 32) | node.gid, mode=node.mode, chmod=True))
    for link, target in DEV_LINKS:
        after.append(Op(lib.IB_OP_SYMLINK, f"link {link}", link, source=target))
    if any(m.destination == "/dev/pts" for m in cfg.mounts):
        after.append(Op(lib.IB_OP_SYMLINK, "link /dev/ptmx", "/dev/ptmx", source="pts/ptmx"))

    for key, value in cfg.sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        after.append(Op(lib.IB_OP_WRITE, f"set the sysctl {key}", path, data=value))
    for path in cfg.masked_paths:
        after.append(Op(lib.IB_OP_MASK, f"mask {path}", path, optional=True))
    for path in cfg.readonly_paths:
        after.append(Op(lib.IB_OP_REMOUNT, f"make {path} read-only", path,
                        flags=native.MS_RDONLY, optional=True))
    if cfg.rootfs_propagation:
        after.append(Op(lib.IB_OP_MOUNT, "set the propagation of /", "/",
                        flags=PROPAGATION_OPTIONS[cfg.rootfs_propagation] | MS_REC))
    if cfg.root_readonly:
        after.append(Op(lib.IB_OP_REMOUNT, "make / read-only", "/", flags=native.MS_RDONLY, in_place=True))

    pivot = Op(lib.IB_OP_PIVOT, "pivot_root", root)
    return before + [pivot] + after


def _before_pivot_dirs(root: str, dest: str, is_dir: bool, opaque: Sequence[str]) -> Optional[List[Op]]:
    """The ops that make ``dest``'s directories (and the file itself, for a file bind) as
    root + path before pivot_root, or None when it must wait until after: a prefix of it is
    a symlink in the bundle's root, or lies below an earlier mount whose content we did not
    make (a host directory bound in, proc).  Before pivot_root, mount(2) follows symlinks
    in the host's view, so only a plain path may be used there; spawn.c refuses a symlink
    in the last component itself.  A prefix below an earlier tmpfs is made here, empty."""
    parts = [p for p in dest.split("/") if p]
    for o in opaque:
        if dest == o or dest.startswith(o.rstrip("/") + "/"):
            return None
    ops: List[Op] = []
    path = ""
    for n, part in enumerate(parts):
        path += "/" + part
        full = root + path
        last = n == len(parts) - 1
        if os.path.islink(full):
            return None
        if last and not is_dir:
            ops.append(Op(lib.IB_OP_TOUCH, f"create {path}", full, mode=0o644))
        else:
            ops.append(Op(lib.IB_OP_MKDIR, f"create {path}", full, mode=0o755))
    return ops


def _make_target(dest: str, is_dir: bool) -> List[Op]:
    if is_dir:
        return [Op(lib.IB_OP_MKDIR_P, f"create {dest}", dest, mode=0o755)]
    parent = posixpath.dirname(dest) or "/"
    return [Op(lib.IB_OP_MKDIR_P, f"create {parent}", parent, mode=0o755),
            Op(lib.IB_OP_TOUCH, f"create {dest}", dest, mode=0o644)]


def spec(cfg: BundleConfig, *, stdio: Tuple[int, int, int], console_sock: int, fifo_dir: int,
         fifo_name: str, cgroup_procs: Tuple[int, ...], seccomp: Optional[bytes],
         set_groups: bool) -> native.Spec:
    """The native spec: the same struct the library's containers are started from."""
    flags = clone_flags(cfg)
    return native.Spec(
        clone_flags=flags,
        ops=tuple(ops(cfg, bool(flags & native.CLONE_NEWUSER))),
        hostname=cfg.hostname,
        loopback_up=bool(flags & native.CLONE_NEWNET),
        rlimits=cfg.rlimits,
        set_ids=True,
        set_groups=set_groups,
        uid=cfg.uid,
        gid=cfg.gid,
        groups=cfg.additional_gids,
        caps=cfg.capabilities,
        cap_sets=cfg.capability_sets,
        userns_root=bool(flags & native.CLONE_NEWUSER),
        no_new_privs=cfg.no_new_privileges,
        stdio=stdio,
        workdir=cfg.cwd,
        argv=cfg.args,
        env=cfg.env,
        path=cfg.env_path(),
        console_sock=console_sock,
        seccomp=seccomp,
        cgroup_procs=cgroup_procs,
        pdeathsig=False,
        umask=0o022 if cfg.umask is None else cfg.umask,
        exec_fifo_dir=fifo_dir,
        exec_fifo=fifo_name,
    )
