"""A bundle's config (`BundleConfig`) as the native core's `Spec`: the same child the
library's `Container` starts (spawn.c), planned here for the spec's shape.

The library's planner (runtime/rootfs.py) builds a root from an overlay of image layers
and adds Docker's mounts; a bundle brings a plain root directory and its own mount list,
so this module plans with the same ops and the same rules, in this order:

  before pivot_root: bind the root directory onto itself (pivot_root needs a mount
    point); capture every bind source as a detached tree (IB_OP_OPEN_TREE), and, inside a
    user namespace, the host's device nodes;
  pivot_root;
  after it, each of ``mounts`` in order, its destination resolved inside the root (spawn.c
    "container paths": a symlink in the rootfs cannot send a mount to the host): created
    (MKDIR_P, or TOUCH for a file bind), then mounted (MOUNT) or attached (ATTACH);
  the devices (the six every runtime provides, then ``linux.devices``): mknod inside the
    root and chown as root, bound from the host's node inside a user namespace; /dev's
    symlinks (fd, stdin, stdout, stderr, ptmx);
  ``maskedPaths``, ``readonlyPaths``, then the root made read-only if asked.
"""

from __future__ import annotations

import os
import posixpath
from typing import Dict, List, Optional, Sequence, Tuple

from ..host import native
from ..host.native import Op, lib
from ..runtime.rootfs import DEVICES, S_IFBLK, S_IFCHR
from .bundle import BundleConfig, Device, Mount, Unsupported

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
# propagation: the container's tree is private (spawn.c makes / private); a bind is attached
# from a detached, private copy.  Accepted as the private kinds; shared/slave refused.
PRIVATE_OPTIONS = {"private", "rprivate"}
PROPAGATION_OPTIONS = {"shared", "rshared", "slave", "rslave", "unbindable", "runbindable"}

NAMESPACE_FLAGS = {
    "pid": native.CLONE_NEWPID, "network": native.CLONE_NEWNET, "mount": native.CLONE_NEWNS,
    "ipc": native.CLONE_NEWIPC, "uts": native.CLONE_NEWUTS, "user": native.CLONE_NEWUSER,
    "cgroup": native.CLONE_NEWCGROUP,
}

DEV_LINKS = (("/dev/fd", "/proc/self/fd"), ("/dev/stdin", "/proc/self/fd/0"),
             ("/dev/stdout", "/proc/self/fd/1"), ("/dev/stderr", "/proc/self/fd/2"))


def mount_options(options: Sequence[str], where: str) -> Tuple[int, List[str], bool]:
    """(flags, the filesystem's own options, recursive bind)."""
    flags, data, recursive = 0, [], False
    for opt in options:
        if opt in FLAG_OPTIONS:
            bits, clear = FLAG_OPTIONS[opt]
            flags = flags & ~bits if clear else flags | bits
        elif opt in ("bind", "rbind"):
            recursive = recursive or opt == "rbind"
        elif opt in PRIVATE_OPTIONS:
            pass
        elif opt in PROPAGATION_OPTIONS:
            raise Unsupported(f"config.json: {where}: propagation {opt!r} is not supported yet "
                              "(a container's mounts are private)")
        elif opt in ("remount", "idmap", "ridmap", "tmpcopyup"):
            raise Unsupported(f"config.json: {where}: option {opt!r} is not supported yet")
        else:
            data.append(opt)
    return flags, data, recursive


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

    def capture(source: str, target: str) -> int:
        before.append(Op(lib.IB_OP_OPEN_TREE, f"open {source} for {target}", target, source=source))
        return len(before) - 1

    for i, m in enumerate(cfg.mounts):
        where = f"mounts[{i}] ({m.destination})"
        if m.destination == "/":
            raise Unsupported(f"config.json: {where}: a mount over / is not supported")
        flags, data, _ = mount_options(m.options, where)
        if m.type == "bind" or "bind" in m.options or "rbind" in m.options:
            source = m.source if m.source.startswith("/") else os.path.join(cfg.bundle, m.source)
            if not os.path.exists(source):
                raise Unsupported(f"config.json: {where}: the bind source {source} does not exist")
            ref = capture(source, m.destination)
            after += _make_target(m.destination, os.path.isdir(source))
            after.append(Op(lib.IB_OP_ATTACH, f"mount {source} on {m.destination}", m.destination,
                            ref=ref, flags=flags & (native.MS_RDONLY | native.MS_NOSUID
                                                    | native.MS_NODEV | native.MS_NOEXEC)))
        elif m.type == "cgroup":
            # the host's hierarchy, read-only as asked: what runc mounts without a cgroup
            # namespace; a container's own view (cgroupns) is to come
            ref = capture("/sys/fs/cgroup", m.destination)
            after += _make_target(m.destination, True)
            after.append(Op(lib.IB_OP_ATTACH, f"mount the cgroup hierarchy on {m.destination}",
                            m.destination, ref=ref,
                            flags=flags & (native.MS_RDONLY | native.MS_NOSUID | native.MS_NODEV | native.MS_NOEXEC)))
        elif in_userns and m.type in ("proc", "sysfs") and _plain_dir(root, posixpath.dirname(m.destination)):
            # before pivot_root: in a user namespace the kernel mounts proc and sysfs only
            # where a fully visible one exists in the mount namespace (mount_too_revealing),
            # and pivot_root detaches the host's; the library mounts them here too.  Only
            # there: elsewhere the mounts keep the config's order, as /proc/self/mountinfo
            # shows it
            target = root + m.destination
            before.append(Op(lib.IB_OP_MKDIR, f"create {m.destination}", target, mode=0o555))
            before.append(Op(lib.IB_OP_MOUNT, f"mount {m.type} on {m.destination}", target,
                             source=m.source, fstype=m.type, flags=flags, data=",".join(data) or None))
        else:
            after += _make_target(m.destination, True)
            after.append(Op(lib.IB_OP_MOUNT, f"mount {m.type} on {m.destination}", m.destination,
                            source=m.source, fstype=m.type, flags=flags, data=",".join(data) or None))

    for node in _device_nodes(cfg):
        parent = posixpath.dirname(node.path)
        after.append(Op(lib.IB_OP_MKDIR_P, f"create {parent}", parent, mode=0o755))
        if in_userns:
            host = node.path  # the host's node of the same name
            if not os.path.exists(host):
                raise Unsupported(f"config.json: device {node.path}: no such node on the host to "
                                  "bind in a user namespace")
            ref = capture(host, node.path)
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

    for path in cfg.masked_paths:
        after.append(Op(lib.IB_OP_MASK, f"mask {path}", path, optional=True))
    for path in cfg.readonly_paths:
        after.append(Op(lib.IB_OP_REMOUNT, f"make {path} read-only", path,
                        flags=native.MS_RDONLY, optional=True))
    if cfg.root_readonly:
        after.append(Op(lib.IB_OP_REMOUNT, "make / read-only", "/", flags=native.MS_RDONLY, in_place=True))

    pivot = Op(lib.IB_OP_PIVOT, "pivot_root", root)
    return before + [pivot] + after


def _plain_dir(root: str, path: str) -> bool:
    """Whether ``path`` is a directory of the root reached without a symlink: a plan op
    before pivot_root may use root + path then (spawn.c refuses a symlink in the last
    component itself)."""
    full = os.path.normpath(root + "/" + path)
    return os.path.isdir(full) and os.path.realpath(full) == full


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
