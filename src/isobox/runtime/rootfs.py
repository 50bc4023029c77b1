"""The container's filesystem, as a mount plan the native child walks in order.

Every mount happens inside the child's private mount namespace, so nothing is mounted on
the host and nothing can leak: when the container's last process exits, the kernel drops
the namespace and its mounts with it.

Decisions carried over from runc and BenchExec:
- overlayfs lower dirs are the image's layers (top first), the upper and work dirs are the
  container's own; in a user namespace overlayfs needs `userxattr` (Linux 5.11);
- the overlay is `volatile` (Linux 5.10): its upper layer is never synced, not even at
  unmount, where the syncfs cost ~0.5 ms of every start on a disk store.  A container is
  never mounted again once it stops (there is no restart), so a host crash can lose only
  what a stopped container wrote outside its volumes — CRI-O mounts every container so,
  Podman those run with --rm.  fsync() inside the container does not reach the disk for
  files in the writable layer; data that must survive a crash belongs in a volume;
- `:` and `,` in paths are escaped for overlayfs's legacy option string (only used on
  kernels before 6.8; newer ones get one fsconfig call per layer and no length limit);
- paths stay bytes-safe (os.fsencode with surrogateescape) because mount points may not
  be UTF-8;
- /dev is a fresh tmpfs: device nodes are made with mknod as real root, and bind-mounted
  from the host's /dev inside a user namespace, where mknod is not allowed.

Devices (issue 9: a root container could mknod and open /dev/kvm, loop devices, the
host's disks).  Like Docker, a container may mknod but open only the standard nodes.
Two walls, so that one holds where the other cannot be built:
- the device cgroup (cgroups.py: the v1 devices controller, or a BPF program on v2), as
  Docker and Podman do, where a cgroup can be made;
- nodev on every mount the container can write: the root overlay, /dev itself, binds,
  volumes, the /etc files, tmpfs (already).  The standard nodes, and those `devices=`
  asks for, are each a mount of their own (a bind of the node onto itself, or of the
  host's node inside a user namespace), made before /dev turns nodev, so they stay
  usable; a node the container makes anywhere else cannot be opened.  This holds even
  where no cgroup is writable.  A seccomp rule refusing mknod was the other choice; it
  would break images that make nodes (debootstrap, package scripts), which Docker runs.
"""

from __future__ import annotations

import os
from typing import Callable, List, Optional, Sequence

import attrs

from ..host import native
from .devices import DeviceNode
from .mounts import MountPlan
from ..host.native import Op, lib

# Docker's masked and read-only paths (moby oci/defaults.go).
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# name, major, minor (the devices every OCI runtime provides)
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))

S_IFCHR = 0o020000
S_IFBLK = 0o060000
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def escape_overlay(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


@attrs.frozen(eq=False)  # see native.Op
class RootfsPlan:
    """How to build one container's filesystem."""

    layers: Sequence[str]  # lowest first
    upper: str
    work: str
    mountpoint: str
    in_userns: bool
    mknod_devices: bool  # real root: mknod; otherwise bind from the host
    devpts_gid: Optional[int]  # the tty group, when mapped
    own_netns: bool
    read_only: bool = False
    devices: Sequence[DeviceNode] = ()  # `devices=`: each under /dev (Container checks)

    def ops(self, mounts: Optional[Callable[[int], MountPlan]] = None,
            workdir: Optional[str] = None) -> List[Op]:
        """The whole plan. ``mounts(first_index)`` gives the caller's mounts (see
        mounts.plan_mounts); ``workdir`` is created as Docker does when missing."""
        ops = self._before_pivot()
        ops += self._devices()
        extra = mounts(len(ops)) if mounts else MountPlan([], [])
        ops += extra.before
        ops.append(Op(lib.IB_OP_PIVOT, "pivot_root", self.mountpoint))
        for path in MASKED_PATHS:
            ops.append(Op(lib.IB_OP_MASK, f"mask {path}", path, optional=True))
        for path in READONLY_PATHS:
            ops.append(Op(lib.IB_OP_REMOUNT, f"make {path} read-only", path,
                          flags=native.MS_RDONLY, optional=True))
        if workdir and workdir != "/":
            ops.append(Op(lib.IB_OP_MKDIR_P, f"create the working directory {workdir}", workdir, mode=0o755))
        ops += extra.after
        if self.read_only:
            ops.append(Op(lib.IB_OP_REMOUNT, "make / read-only", "/", flags=native.MS_RDONLY,
                          in_place=True))
        return ops

    def _before_pivot(self) -> List[Op]:
        root = self.mountpoint
        ops: List[Op] = [self._overlay()]
        nosuid_noexec_nodev = native.MS_NOSUID | native.MS_NOEXEC | native.MS_NODEV

        ops += [
            Op(lib.IB_OP_MKDIR, "create /proc", root + "/proc", mode=0o555),
            Op(lib.IB_OP_MOUNT, "mount /proc", root + "/proc", "proc", "proc", nosuid_noexec_nodev),
            Op(lib.IB_OP_MKDIR, "create /dev", root + "/dev", mode=0o755),
            Op(
                lib.IB_OP_MOUNT, "mount /dev", root + "/dev", "tmpfs", "tmpfs",
                native.MS_NOSUID | native.MS_STRICTATIME, "mode=755,size=65536k",
            ),
        ]
        for name, major, minor in DEVICES:
            path = f"{root}/dev/{name}"
            if self.mknod_devices:
                ops += [
                    Op(lib.IB_OP_MKNOD, f"mknod /dev/{name}", path,
                       mode=S_IFCHR | 0o666, dev=os.makedev(major, minor)),
                    # a mount of its own: usable once /dev is nodev (see the docstring)
                    Op(lib.IB_OP_BIND, f"bind /dev/{name}", path, source=path),
                ]
            else:
                ops += [
                    Op(lib.IB_OP_TOUCH, f"create /dev/{name}", path, mode=0o666),
                    Op(lib.IB_OP_BIND, f"bind /dev/{name}", path, source=f"/dev/{name}"),
                ]
        devpts = "newinstance,ptmxmode=0666,mode=0620"
        if self.devpts_gid is not None:
            devpts += f",gid={self.devpts_gid}"
        ops += [
            Op(lib.IB_OP_MKDIR, "create /dev/pts", root + "/dev/pts", mode=0o755),
            Op(lib.IB_OP_MOUNT, "mount /dev/pts", root + "/dev/pts", "devpts", "devpts",
               native.MS_NOSUID | native.MS_NOEXEC, devpts),
            Op(lib.IB_OP_SYMLINK, "link /dev/ptmx", root + "/dev/ptmx", source="pts/ptmx"),
            Op(lib.IB_OP_MKDIR, "create /dev/shm", root + "/dev/shm", mode=0o1777),
            Op(lib.IB_OP_MOUNT, "mount /dev/shm", root + "/dev/shm", "shm", "tmpfs",
               nosuid_noexec_nodev, "mode=1777,size=65536k"),
            Op(lib.IB_OP_MKDIR, "create /dev/mqueue", root + "/dev/mqueue", mode=0o755),
            Op(lib.IB_OP_MOUNT, "mount /dev/mqueue", root + "/dev/mqueue", "mqueue", "mqueue",
               nosuid_noexec_nodev),
        ]
        for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            ops.append(Op(lib.IB_OP_SYMLINK, f"link /dev/{link}", f"{root}/dev/{link}", source=target))

        ops.append(Op(lib.IB_OP_MKDIR, "create /sys", root + "/sys", mode=0o555))
        if self.own_netns or not self.in_userns:
            ops.append(Op(lib.IB_OP_MOUNT, "mount /sys", root + "/sys", "sysfs", "sysfs",
                          native.MS_RDONLY | nosuid_noexec_nodev))
        else:
            # sysfs can only be mounted by the owner of the network namespace (sysfs(5)):
            # sharing the host's network in a user namespace means binding the host's /sys.
            ops.append(Op(lib.IB_OP_BIND, "bind /sys", root + "/sys", source="/sys",
                          flags=native.MS_RDONLY | nosuid_noexec_nodev))
        return ops

    def _devices(self) -> List[Op]:
        """The `devices=` nodes, then /dev made nodev (after every node it should carry)."""
        root = self.mountpoint
        ops: List[Op] = []
        made = {"/dev"}
        for node in self.devices:
            parts = node.path.split("/")[2:-1]  # below /dev, without the node's own name
            for i in range(len(parts)):
                parent = "/dev/" + "/".join(parts[:i + 1])
                if parent not in made:
                    made.add(parent)
                    ops.append(Op(lib.IB_OP_MKDIR, f"create {parent}", root + parent, mode=0o755))
            path = root + node.path
            if self.mknod_devices:
                # a node of our own, as runc makes them: the container's root may chmod it,
                # never the host's
                kind = S_IFCHR if node.type == "c" else S_IFBLK
                ops += [
                    Op(lib.IB_OP_MKNOD, f"mknod {node.path}", path, mode=kind | node.mode,
                       dev=os.makedev(node.major, node.minor)),
                    Op(lib.IB_OP_CHOWN_IN, f"chown {node.path}", node.path[len("/dev/"):],
                       source=root + "/dev", dev=(node.uid << 32) | node.gid, mode=node.mode,
                       chmod=True),
                    Op(lib.IB_OP_BIND, f"bind {node.path}", path, source=path),
                ]
            else:
                ops += [
                    Op(lib.IB_OP_TOUCH, f"create {node.path}", path, mode=0o600),
                    Op(lib.IB_OP_BIND, f"bind {node.path}", path, source=node.host),
                ]
        ops.append(Op(lib.IB_OP_REMOUNT, "make /dev nodev", root + "/dev", in_place=True,
                      flags=native.MS_NOSUID | native.MS_NODEV | native.MS_STRICTATIME))
        return ops

    def _overlay(self) -> Op:
        lowers = tuple(reversed(self.layers))  # overlayfs wants the top layer first
        legacy: Optional[str] = (
            "lowerdir=" + ":".join(escape_overlay(p) for p in lowers)
            + f",upperdir={escape_overlay(self.upper)},workdir={escape_overlay(self.work)}"
            + (",userxattr" if self.in_userns else "") + ",volatile"
        )
        if legacy is not None and len(legacy) >= PAGE_SIZE:
            legacy = None  # too long for mount(2); only the per-layer API can do it
        return Op(
            lib.IB_OP_OVERLAY, "mount the root filesystem (overlay)", self.mountpoint,
            strv=lowers, upper=self.upper, work=self.work, data=legacy,
            userxattr=self.in_userns, volatile=True, flags=native.MS_NODEV,
        )
