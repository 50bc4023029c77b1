"""The mount plan's order, as a table: for each kind of container (root or rootless, its
own network or the host's, read-only or not, devices, binds, volumes, tmpfs), the ops
that rootfs.RootfsPlan and mounts.plan_mounts build keep the orders the C core relies
on. Pure: planning touches nothing but the test's own directory.

- host trees are opened (open_tree) before pivot_root and attached after it, each attach
  naming an earlier open_tree of the same target;
- Docker's masked and read-only /proc and /sys paths are applied after pivot_root;
- /dev turns nodev only after every node it should carry (they are mounts of their own);
- a read-only root is remounted last, when everything else is in place;
- before pivot_root every op works under the container's mount point, after it none does.

Each order is a check that returns what breaks it, so the last tests can show that each
check fails on a plan that breaks its order.
"""

from __future__ import annotations

import pathlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import attrs
import pytest

from isobox.host import native
from isobox.host.native import Op, lib
from isobox.runtime.devices import DeviceNode
from isobox.runtime.mounts import Bind, Mount, Tmpfs, Volume, plan_mounts
from isobox.runtime.rootfs import DEVICES, MASKED_PATHS, READONLY_PATHS, RootfsPlan

pytestmark = pytest.mark.unit

KIND = {getattr(lib, name): name[len("IB_OP_"):].lower() for name in dir(lib)
        if name.startswith("IB_OP_")}
OVERLAY, PIVOT, OPEN_TREE, ATTACH = (lib.IB_OP_OVERLAY, lib.IB_OP_PIVOT, lib.IB_OP_OPEN_TREE,
                                     lib.IB_OP_ATTACH)
MASK, REMOUNT, MOUNT, BIND = lib.IB_OP_MASK, lib.IB_OP_REMOUNT, lib.IB_OP_MOUNT, lib.IB_OP_BIND
MKDIR_P, TOUCH, CHOWN_IN = lib.IB_OP_MKDIR_P, lib.IB_OP_TOUCH, lib.IB_OP_CHOWN_IN

FUSE = DeviceNode("/dev/fuse", "/dev/fuse", "c", 10, 229, 0o666, 0, 0)
TUN = DeviceNode("/dev/net/tun", "/dev/net/tun", "c", 10, 200, 0o666, 0, 0)
CARD = DeviceNode("/dev/dri/by-path/card0", "/dev/dri/card0", "c", 226, 0, 0o660, 0, 44)
DISK = DeviceNode("/dev/xvda", "/dev/loop0", "b", 7, 0, 0o660, 0, 6)


@attrs.frozen
class Case:
    """One container as the planners see it (what Container._spawn hands them)."""

    root: bool = True  # real root: mknod; rootless: a user namespace, nodes bound from the host
    own_netns: bool = True
    read_only: bool = False
    devices: Tuple[DeviceNode, ...] = ()
    mounts: Tuple[str, ...] = ()  # "dir", "ro-dir", "file", "volume", "tmpfs", "tmpfs-exec"
    etc_files: bool = True  # /etc/hosts, /etc/hostname, /etc/resolv.conf
    workdir: Optional[str] = None


CASES: Dict[str, Case] = {
    "root, nothing asked": Case(etc_files=False),
    "rootless, nothing asked": Case(root=False, etc_files=False),
    "root, Docker's /etc files": Case(),
    "root, read-only": Case(read_only=True),
    "root, read-only, every mount": Case(
        read_only=True, mounts=("dir", "ro-dir", "file", "volume", "tmpfs", "tmpfs-exec"),
        workdir="/srv/app"),
    "rootless, read-only, every mount": Case(
        root=False, read_only=True,
        mounts=("dir", "ro-dir", "file", "volume", "tmpfs", "tmpfs-exec"), workdir="/srv"),
    "rootless, the host's network (sysfs bound)": Case(
        root=False, own_netns=False, mounts=("dir",)),
    "root, devices in nested directories": Case(devices=(FUSE, TUN, CARD, DISK)),
    "rootless, devices and mounts": Case(
        root=False, devices=(FUSE, TUN, CARD), mounts=("file", "volume", "tmpfs")),
    "root, everything": Case(
        read_only=True, own_netns=False, devices=(FUSE, TUN, CARD, DISK),
        mounts=("dir", "ro-dir", "file", "volume", "tmpfs", "tmpfs-exec", "dir"),
        workdir="/work"),
}


@attrs.frozen
class Plan:
    case: Case
    mountpoint: str
    ops: Tuple[Op, ...]


def build(case: Case, tmp: pathlib.Path, shift_refs: int = 0) -> Plan:
    """The ops for ``case``, with host files under ``tmp``; ``shift_refs`` hands the mount
    planner a wrong first index (to show the checks fail)."""
    host = tmp / "host"
    (host / "dir").mkdir(parents=True)
    (host / "file").write_text("x")
    mountpoint = str(tmp / "container" / "rootfs")
    made: List[Mount] = []
    for i, kind in enumerate(case.mounts):
        target = f"/mnt/{kind}-{i}"
        if kind in ("dir", "ro-dir"):
            made.append(Bind(str(host / "dir"), target, read_only=kind == "ro-dir"))
        elif kind == "file":
            made.append(Bind(str(host / "file"), "/etc/app/config.ini"))
        elif kind == "volume":
            made.append(Volume("data", target))
        else:
            made.append(Tmpfs(target, size="64m", exec=kind == "tmpfs-exec"))
    etc: List[Tuple[str, str]] = []
    if case.etc_files:
        for name in ("hosts", "hostname", "resolv.conf"):
            (host / name).write_text("")
            etc.append((str(host / name), f"/etc/{name}"))
    plan = RootfsPlan(
        layers=[str(tmp / "layer-0"), str(tmp / "layer-1")], upper=str(tmp / "upper"),
        work=str(tmp / "work"), mountpoint=mountpoint, in_userns=not case.root,
        mknod_devices=case.root, devpts_gid=5, own_netns=case.own_netns,
        read_only=case.read_only, devices=case.devices)
    ops = plan.ops(lambda first: plan_mounts(made, etc, tmp / "volumes", first + shift_refs),
                   case.workdir)
    return Plan(case, mountpoint, tuple(ops))


@pytest.fixture(params=list(CASES.values()), ids=list(CASES))
def plan(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Plan:
    return build(request.param, tmp_path)


def describe(ops: Sequence[Op], i: int) -> str:
    return f"op {i} ({KIND[ops[i].kind]} {ops[i].name!r})"


def pivot_at(ops: Sequence[Op]) -> int:
    pivots = [i for i, op in enumerate(ops) if op.kind == PIVOT]
    assert len(pivots) == 1, [describe(ops, i) for i in pivots]
    return pivots[0]


def under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


# -- the checks: each returns what breaks its order ------------------------------------------


def host_trees_cross_pivot(p: Plan) -> List[str]:
    ops, pivot = p.ops, pivot_at(p.ops)
    return ([f"{describe(ops, i)} opens a host tree after pivot_root" for i, op in enumerate(ops)
             if op.kind == OPEN_TREE and i > pivot]
            + [f"{describe(ops, i)} attaches before pivot_root" for i, op in enumerate(ops)
               if op.kind == ATTACH and i < pivot])


def attach_refs(p: Plan) -> List[str]:
    ops, wrong = p.ops, []
    referenced: List[int] = []
    for i, op in enumerate(ops):
        if op.kind != ATTACH:
            continue
        if not 0 <= op.ref < i:
            wrong.append(f"{describe(ops, i)} refers to op {op.ref}, not an earlier one")
        elif ops[op.ref].kind != OPEN_TREE:
            wrong.append(f"{describe(ops, i)} refers to {describe(ops, op.ref)}, not an open_tree")
        elif ops[op.ref].target != op.target:
            wrong.append(f"{describe(ops, i)} attaches {describe(ops, op.ref)}, "
                         "opened for another target")
        referenced.append(op.ref)
    opened = [i for i, op in enumerate(ops) if op.kind == OPEN_TREE]
    if sorted(referenced) != opened:
        wrong.append(f"open_trees {opened} are attached as {sorted(referenced)}, "
                     "not each exactly once")
    return wrong


def proc_paths_before_pivot(p: Plan) -> List[str]:
    ops, pivot = p.ops, pivot_at(p.ops)
    masked = [i for i, op in enumerate(ops) if op.kind == MASK]
    read_only = [i for i, op in enumerate(ops)
                 if op.kind == REMOUNT and op.target in READONLY_PATHS]
    wrong = [f"{describe(ops, i)} comes before pivot_root" for i in masked + read_only if i < pivot]
    if sorted(ops[i].target for i in masked) != sorted(MASKED_PATHS):
        wrong.append(f"masked {[ops[i].target for i in masked]}, not Docker's {MASKED_PATHS}")
    if sorted(ops[i].target for i in read_only) != sorted(READONLY_PATHS):
        wrong.append(f"read-only {[ops[i].target for i in read_only]}, not {READONLY_PATHS}")
    return wrong


def dev_nodev_too_early(p: Plan) -> List[str]:
    ops, dev = p.ops, p.mountpoint + "/dev"
    nodev = [i for i, op in enumerate(ops) if op.kind == REMOUNT and op.target == dev]
    if len(nodev) != 1 or not ops[nodev[0]].flags & native.MS_NODEV:
        return [f"/dev is remounted by {[describe(ops, i) for i in nodev]}, not once nodev"]
    at = nodev[0]
    wrong = [f"{describe(ops, i)} works in /dev after it turned nodev"
             for i, op in enumerate(ops[:pivot_at(ops)])
             if i > at and (under(op.target, dev) or (op.kind == CHOWN_IN and op.source == dev))]
    wrong += [f"{describe(ops, at)} comes after pivot_root"] if at > pivot_at(ops) else []
    nodes = [f"/dev/{name}" for name, _, _ in DEVICES] + [d.path for d in p.case.devices]
    bound = {op.target[len(p.mountpoint):] for op in ops[:at] if op.kind == BIND}
    wrong += [f"{node} is not bound onto itself before /dev turns nodev"
              for node in nodes if node not in bound]
    return wrong


def read_only_root_not_last(p: Plan) -> List[str]:
    ops = p.ops
    remounts = [i for i, op in enumerate(ops) if op.kind == REMOUNT and op.target == "/"]
    if not p.case.read_only:
        return [f"{describe(ops, i)} remounts / though the root is writable" for i in remounts]
    if remounts != [len(ops) - 1]:
        return [f"/ is remounted by {[describe(ops, i) for i in remounts]}, not last "
                f"(op {len(ops) - 1} of {len(ops)})"]
    if not (ops[-1].flags & native.MS_RDONLY and ops[-1].in_place):
        return [f"{describe(ops, len(ops) - 1)} is not an in-place read-only remount"]
    return []


def paths_cross_pivot(p: Plan) -> List[str]:
    """Before pivot_root the host's view (all under the mount point, a host tree opened by
    its host path); after it the container's (nothing names the mount point)."""
    ops, pivot, wrong = p.ops, pivot_at(p.ops), []
    for i, op in enumerate(ops):
        if op.kind == OPEN_TREE:
            continue  # target: the container path it is attached at later
        if op.kind == CHOWN_IN:
            path = op.source or ""  # the target is relative to it
        else:
            path = op.target
        if i <= pivot and not under(path, p.mountpoint):
            wrong.append(f"{describe(ops, i)} works on {path}, outside the mount point")
        if i > pivot and under(path, p.mountpoint):
            wrong.append(f"{describe(ops, i)} names the host's mount point after pivot_root")
    return wrong


def mount_points_made_first(p: Plan) -> List[str]:
    """An attach or a tmpfs lands on a directory or file made after pivot_root, before it."""
    ops, pivot, wrong = p.ops, pivot_at(p.ops), []
    for i, op in enumerate(ops):
        if i > pivot and (op.kind == ATTACH or op.kind == MOUNT):
            if not any(o.kind in (MKDIR_P, TOUCH) and o.target == op.target for o in ops[pivot:i]):
                wrong.append(f"{describe(ops, i)} has no mount point made before it")
            if not op.flags & native.MS_NODEV:
                wrong.append(f"{describe(ops, i)} is not nodev")
    return wrong


CHECKS: Dict[str, Callable[[Plan], List[str]]] = {
    "open_tree before pivot_root, attach after": host_trees_cross_pivot,
    "every attach names an earlier open_tree": attach_refs,
    "masked and read-only /proc paths after pivot_root": proc_paths_before_pivot,
    "/dev nodev after every node it carries": dev_nodev_too_early,
    "a read-only / last": read_only_root_not_last,
    "the mount point before pivot_root only": paths_cross_pivot,
    "mount points made before mounts": mount_points_made_first,
}


# -- the table ---------------------------------------------------------------------------------


def test_the_root_overlay_is_the_first_op_and_pivot_root_enters_it(plan: Plan):
    first = plan.ops[0]
    assert (first.kind, first.target) == (OVERLAY, plan.mountpoint)
    assert first.flags & native.MS_NODEV and first.userxattr == (not plan.case.root)
    assert plan.ops[pivot_at(plan.ops)].target == plan.mountpoint


def test_host_trees_are_opened_before_pivot_root_and_attached_after(plan: Plan):
    assert host_trees_cross_pivot(plan) == []
    asked = len(plan.case.mounts) - sum(m.startswith("tmpfs") for m in plan.case.mounts)
    assert sum(op.kind == OPEN_TREE for op in plan.ops) == asked + 3 * plan.case.etc_files


def test_every_attach_points_back_to_the_open_tree_of_its_target(plan: Plan):
    assert attach_refs(plan) == []


def test_masked_and_read_only_paths_are_applied_after_pivot_root(plan: Plan):
    assert proc_paths_before_pivot(plan) == []


def test_dev_turns_nodev_only_after_every_node_it_carries(plan: Plan):
    assert dev_nodev_too_early(plan) == []


def test_a_read_only_root_is_remounted_last(plan: Plan):
    assert read_only_root_not_last(plan) == []


def test_before_pivot_root_ops_work_under_the_mount_point_and_after_it_never(plan: Plan):
    assert paths_cross_pivot(plan) == []


def test_each_mount_gets_its_mount_point_first_and_is_nodev(plan: Plan):
    assert mount_points_made_first(plan) == []


def test_tmpfs_mounts_are_nosuid_and_noexec_unless_asked(plan: Plan):
    tmpfs = [op for op in plan.ops if op.kind == MOUNT and op.fstype == "tmpfs"
             and not under(op.target, plan.mountpoint)]
    assert len(tmpfs) == sum(m.startswith("tmpfs") for m in plan.case.mounts)
    for op in tmpfs:
        assert op.flags & native.MS_NOSUID
        assert bool(op.flags & native.MS_NOEXEC) == ("exec" not in op.target), op.name


def test_every_op_has_a_name_an_error_can_carry(plan: Plan):
    assert all(op.name and op.kind in KIND for op in plan.ops)


# -- each check can fail -------------------------------------------------------------------


def _moved(ops: Sequence[Op], frm: int, to: int) -> Tuple[Op, ...]:
    moved = list(ops)
    moved.insert(to, moved.pop(frm))
    return tuple(moved)


def _broken(kind: str, p: Plan, tmp: pathlib.Path) -> Plan:
    ops, pivot = p.ops, pivot_at(p.ops)

    def index(wanted: Callable[[Op], bool]) -> int:
        return next(i for i, op in enumerate(ops) if wanted(op))

    if kind == "open_tree before pivot_root, attach after":
        return attrs.evolve(p, ops=_moved(ops, index(lambda o: o.kind == ATTACH), pivot - 1))
    if kind == "every attach names an earlier open_tree":
        return build(p.case, tmp / "shifted", shift_refs=1)
    if kind == "masked and read-only /proc paths after pivot_root":
        return attrs.evolve(p, ops=_moved(ops, index(lambda o: o.kind == MASK), pivot))
    if kind == "/dev nodev after every node it carries":
        nodev = index(lambda o: o.kind == REMOUNT and o.target == p.mountpoint + "/dev")
        return attrs.evolve(p, ops=_moved(ops, nodev, nodev - 1))  # before the last node
    if kind == "a read-only / last":
        return attrs.evolve(p, ops=_moved(ops, len(ops) - 1, len(ops) - 2))
    if kind == "the mount point before pivot_root only":
        proc = index(lambda o: o.name == "mount /proc")
        return attrs.evolve(p, ops=_moved(ops, proc, pivot))
    assert kind == "mount points made before mounts"
    attach = index(lambda o: o.kind == ATTACH)
    return attrs.evolve(p, ops=_moved(ops, attach, pivot + 1))


@pytest.mark.parametrize("check", list(CHECKS))
def test_each_check_fails_on_a_plan_that_breaks_its_order(check: str, tmp_path: pathlib.Path):
    case = CASES["root, everything"]
    good = build(case, tmp_path / "good")
    assert CHECKS[check](good) == []
    assert CHECKS[check](_broken(check, good, tmp_path)) != []
