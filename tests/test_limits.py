"""Resource limits through real cgroups: memory (with OOM reported), pids, CPU; exec'd
processes are held to them too; nothing is left in the cgroup tree."""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import sys

import pytest

import isobox
from isobox.runtime import cgroups

from fixtures.host import require
from support.host import IS_ROOT


def can_limit() -> bool:
    try:
        group = cgroups.Group.create(f"isobox-probe-{os.getpid()}", cgroups.Limits(memory="64m", pids=10, cpus=1))
    except isobox.HostNotSupported:
        return False
    group.remove()
    return True


@pytest.fixture
def limited(store_root):
    # As root a host with cgroups can always limit; without root only a delegated cgroup v2
    # subtree allows it, which this suite's rootless user does not have: then the clear
    # error is what is tested (test_limits_without_cgroup_access_fail_clearly).
    if not IS_ROOT and not can_limit():
        pytest.skip("no cgroup delegated to this user (resource limits need root or delegation)")
    require(can_limit(), "cgroup memory, pids and cpu controllers")
    return store_root


def our_groups(name: str) -> list:
    """Every cgroup directory called name, in every hierarchy."""
    return sorted(set(pathlib.Path("/sys/fs/cgroup").rglob(name)))


def test_memory_limit_kills_and_reports_oom(busybox_image, limited):
    c = isobox.Container(busybox_image, ["sh", "-c", "x=a; while true; do x=$x$x; done"], memory="16m")
    with c:
        assert c.wait(30) == -9
        assert c.oom_killed
    assert our_groups(f"isobox-{c.id}") == []


def test_a_container_within_its_memory_is_not_reported_oom(busybox_image, limited):
    with isobox.Container(busybox_image, ["true"], memory="64m") as c:
        assert c.wait(10) == 0
        assert not c.oom_killed


def test_pids_limit_holds_for_exec_too(busybox_image, limited):
    with isobox.Container(busybox_image, ["sleep", "30"], pids_limit=8) as c:
        out = c.exec(["sh", "-c", "for i in $(seq 20); do sleep 5 & done 2>&1 | grep -c 'fork' ; true"])
        assert int(out.stdout.strip() or b"0") > 0 or b"Resource temporarily unavailable" in out.stderr


def test_cpu_quota_is_set(busybox_image, limited):
    with isobox.Container(busybox_image, ["sleep", "30"], cpus=0.5) as c:
        quotas = [p / "cpu.cfs_quota_us" for p in our_groups(f"isobox-{c.id}")
                  if (p / "cpu.cfs_quota_us").exists()]
        cpu_max = [p / "cpu.max" for p in our_groups(f"isobox-{c.id}") if (p / "cpu.max").exists()]
        assert [q.read_text().strip() for q in quotas] == ["50000"] or \
            [m.read_text().split()[0] for m in cpu_max] == ["50000"]


def test_limits_are_validated_before_the_host_is_touched(busybox_image):
    with pytest.raises(isobox.InvalidOption):
        isobox.Container(busybox_image, ["true"], memory="lots")
    with pytest.raises(isobox.InvalidOption):
        isobox.Container(busybox_image, ["true"], memory="1k")
    with pytest.raises(isobox.InvalidOption):
        isobox.Container(busybox_image, ["true"], cpus=0)
    with pytest.raises(isobox.InvalidOption):
        isobox.Container(busybox_image, ["true"], pids_limit=-2)


def test_limits_without_cgroup_access_fail_clearly(busybox_image, store_root):
    if IS_ROOT or can_limit():
        pytest.skip("this host lets this user create cgroups")
    with pytest.raises(isobox.HostNotSupported, match="resource limits need root or a cgroup v2 subtree delegated"):
        isobox.run(busybox_image, ["true"], memory="64m")


# --- the group every container gets ------------------------------------------------------

FORK_BOMB = r"""
import os, sys
sys.stdin.buffer.read(1)  # the parent moves us into the group first
r, w = os.pipe()
children, err = 0, 0
while children < 500:
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # wait until the bomb is over
        os._exit(0)
    children += 1
os.close(w)
for _ in range(children):
    os.wait()
print(children, err)
"""


def fork_bomb(group) -> tuple:
    """Fork in a process of `group` until fork fails: (children made, fork's errno)."""
    proc = subprocess.Popen([sys.executable, "-c", FORK_BOMB], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        group.add(proc.pid)
        out, _ = proc.communicate(b"g", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    children, err = map(int, out.split())
    return children, err


def own_cgroups() -> None:
    """As root a host with cgroups always has them; rootless only with a delegated cgroup
    v2 subtree, which this suite's rootless user does not have (then a container gets no
    group, and test_without_cgroup_access_a_container_gets_no_group_and_no_error runs)."""
    if not IS_ROOT and not can_limit():
        pytest.skip("no cgroup delegated to this user (cgroups need root or delegation)")
    require(can_limit(), "cgroup memory, pids and cpu controllers")


def test_a_fork_bomb_stops_at_the_pids_limit():
    own_cgroups()
    group = cgroups.Group.for_container(f"isobox-test-bomb-{os.getpid()}", cgroups.Limits(pids=20))
    assert group is not None and group.pids_max == 20
    try:
        children, err = fork_bomb(group)
    finally:
        group.remove()
    assert (children, err) == (19, errno.EAGAIN)  # 20 with the bomb itself


def test_every_container_group_has_the_default_pids_limit():
    own_cgroups()
    name = f"isobox-test-default-{os.getpid()}"
    group = cgroups.Group.for_container(name, cgroups.Limits())
    assert group is not None
    try:
        assert group.pids_max == cgroups.DEFAULT_PIDS_LIMIT == 2048
        assert [(p / "pids.max").read_text().strip() for p in our_groups(name)
                if (p / "pids.max").exists()] == ["2048"]
        assert group.devices and group.notes == []
    finally:
        group.remove()
    assert our_groups(name) == []


@pytest.mark.parametrize("unlimited", [-1, 0])
def test_pids_limit_minus_one_or_zero_means_none(unlimited):
    limits = cgroups.Limits(pids=unlimited)
    assert limits.pids_max is None and not limits.any
    own_cgroups()
    name = f"isobox-test-unlimited-{os.getpid()}"
    group = cgroups.Group.for_container(name, limits)
    try:
        assert group is not None and group.pids_max is None
        assert not [p for p in our_groups(name) if (p / "pids.max").exists()]
    finally:
        if group is not None:
            group.remove()


@pytest.mark.unit
def test_limits_say_what_is_asked():
    assert cgroups.Limits().pids_max == 2048 and not cgroups.Limits().any
    assert cgroups.Limits(pids=5).pids_max == 5 and cgroups.Limits(pids=5).any
    assert cgroups.Limits(memory="64m").any and cgroups.Limits(cpus=1).any
    with pytest.raises(isobox.InvalidOption, match="pids_limit"):
        cgroups.Limits(pids=-2)


def test_without_cgroup_access_a_container_gets_no_group_and_no_error():
    if IS_ROOT or can_limit():
        pytest.skip("this host lets this user create cgroups")
    name = f"isobox-test-none-{os.getpid()}"
    assert cgroups.Group.for_container(name, cgroups.Limits()) is None
    assert cgroups.Group.for_container(name, cgroups.Limits(pids=-1)) is None
    with pytest.raises(isobox.HostNotSupported, match="delegated"):
        cgroups.Group.for_container(name, cgroups.Limits(pids=10))


def test_a_swept_group_is_gone():
    own_cgroups()
    name = f"isobox-test-sweep-{os.getpid()}"
    group = cgroups.Group.for_container(name, cgroups.Limits(), layout=None)
    assert group is not None and our_groups(name)
    cgroups.sweep(name)  # as the next start does after an owner died
    assert our_groups(name) == []


def test_a_process_enters_its_v1_groups_itself_through_tasks(limited):
    """A container's first process (and an exec'd one) writes "0" to its groups' files
    itself: on v1 that is each hierarchy's `tasks`, where moving oneself skips the global
    lock a move by pid (cgroup.procs) takes and its RCU grace period — ~12 ms of an
    isolated start here (spawn.c: enter_cgroups)."""
    group = cgroups.Group.create(f"isobox-entry-{os.getpid()}", cgroups.Limits(pids=10))
    fds = group.open_entries()
    try:
        names = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds]
        assert names and len(names) == len(group.dirs)
        assert all(name.endswith("/cgroup.procs" if group.v2 else "/tasks") for name in names)
    finally:
        for fd in fds:
            os.close(fd)
        group.remove()


def test_a_container_is_in_its_groups_before_its_command_runs(busybox_image, limited):
    with isobox.Container(busybox_image, ["cat", "/proc/self/cgroup"], pids_limit=50) as c:
        assert c.wait(10) == 0
        lines = c.logs().decode().splitlines()
    # the pids hierarchy on v1, the one group on v2: the command is in it as it starts
    assert [line for line in lines if (":pids:" in line or line.startswith("0::"))
            and line.endswith(f"/isobox-{c.id}")], lines
