"""The device policy: Docker's `--device` grammar, nodes resolved from the host, the rules'
semantics checked against the kernel's own v1 devices controller, the eBPF program checked
by an interpreter and by the kernel's cgroup v2 device hook, and what a process in a
container's group can open: /dev/null yes; /dev/kvm, loop-control, a disk no, unless asked."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import stat
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

import isobox
from isobox.host.privilege import Privilege
from isobox.runtime import cgroups, devices
from isobox.runtime.devices import Device, DeviceNode, DeviceRule

from fixtures.host import require
from support.host import IS_ROOT

# --- Docker's --device grammar ---------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("spec, host, path, access", [
    ("/dev/fuse", "/dev/fuse", "/dev/fuse", "rwm"),
    ("/dev/fuse:r", "/dev/fuse", "/dev/fuse", "r"),
    ("/dev/fuse:mr", "/dev/fuse", "/dev/fuse", "rm"),
    ("/dev/sdc:/dev/xvdc", "/dev/sdc", "/dev/xvdc", "rwm"),
    ("/dev/sdc:/dev/xvdc:rw", "/dev/sdc", "/dev/xvdc", "rw"),
    ("/dev/fuse:/fuse:m", "/dev/fuse", "/fuse", "m"),  # Docker allows paths outside /dev
    ("/dev/fuse:/dev/./x/../fuse2", "/dev/fuse", "/dev/fuse2", "rwm"),
])
def test_device_option_follows_dockers_grammar(spec, host, path, access):
    assert Device.parse(spec) == Device(host=host, path=path, access=access)


@pytest.mark.unit
@pytest.mark.parametrize("spec", [
    "", ":/dev/fuse", "dev/fuse", "/dev/fuse:fuse", "/dev/fuse:/dev/fuse:rx",
    "/dev/fuse:/dev/fuse:rr", "/dev/fuse:/dev/fuse:", "/a:/b:rw:x", "/dev/fuse:/",
])
def test_invalid_device_options_are_refused_before_the_host_is_touched(spec):
    with pytest.raises(isobox.InvalidOption):
        Device.parse(spec)


@pytest.mark.unit
def test_device_fields_are_validated():
    with pytest.raises(isobox.InvalidOption, match="host path must be absolute"):
        Device(host="fuse")
    with pytest.raises(isobox.InvalidOption, match="path in the container must be absolute"):
        Device(host="/dev/fuse", path="fuse")
    with pytest.raises(isobox.InvalidOption, match="permissions"):
        Device(host="/dev/fuse", access="")
    assert Device(host="/dev/fuse", access="mwr").access == "rwm"


paths = st.lists(st.text("abcxyz.-_", min_size=1, max_size=6).filter(lambda s: s not in (".", "..")),
                 min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
accesses = st.sets(st.sampled_from("rwm"), min_size=1).flatmap(lambda s: st.permutations(sorted(s))).map("".join)


@pytest.mark.unit
@given(host=paths, path=paths, access=accesses)
def test_device_specs_round_trip(host, path, access):
    assert Device.parse(f"{host}:{path}:{access}") == Device(host=host, path=path, access=access)
    assert Device.parse(f"{host}:{access}") == Device(host=host, access=access)


@pytest.mark.unit
@given(st.text(max_size=30))
def test_any_device_spec_parses_or_raises_invalid_option(spec):
    try:
        Device.parse(spec)
    except isobox.InvalidOption:
        pass


# --- resolving host nodes ----------------------------------------------------------------


@pytest.mark.unit
def test_a_device_node_resolves_to_its_type_and_numbers():
    (node,) = Device.parse("/dev/null:/dev/mynull:rw").resolve()
    st_ = os.stat("/dev/null")
    assert node == DeviceNode(path="/dev/mynull", host="/dev/null", type="c", major=1, minor=3,
                              mode=stat.S_IMODE(st_.st_mode), uid=st_.st_uid, gid=st_.st_gid, access="rw")
    assert node.rule == DeviceRule("c", 1, 3, "rw")


@pytest.mark.unit
def test_a_symlink_to_a_device_is_followed(tmp_path):
    (tmp_path / "n").symlink_to("/dev/null")
    (node,) = Device(host=str(tmp_path / "n"), path="/dev/n").resolve()
    assert (node.type, node.major, node.minor, node.host) == ("c", 1, 3, str(tmp_path / "n"))


@pytest.mark.unit
def test_what_is_not_a_device_is_refused_clearly(tmp_path):
    with pytest.raises(isobox.InvalidOption, match="No such file"):
        Device(host=str(tmp_path / "missing")).resolve()
    (tmp_path / "file").write_text("x")
    with pytest.raises(isobox.InvalidOption, match="is not a device node"):
        Device(host=str(tmp_path / "file")).resolve()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "file").write_text("x")
    with pytest.raises(isobox.InvalidOption, match="holds no device nodes"):
        Device(host=str(tmp_path / "empty")).resolve()


def root_only(why: str) -> None:
    """The device policy is root's: a rootless container's user namespace refuses mknod of
    devices (CAP_MKNOD counts in the initial namespace only) and opening devices on the
    mounts it makes (SB_I_NODEV); the cgroup is not what keeps devices out there."""
    if not IS_ROOT:
        pytest.skip(f"rootless: {why}")


@pytest.mark.unit
def test_a_directory_adds_every_device_below_it(tmp_path):
    root_only("mknod of device nodes needs CAP_MKNOD in the initial user namespace")
    (tmp_path / "snd" / "sub").mkdir(parents=True)
    os.mknod(tmp_path / "snd" / "a", 0o660 | stat.S_IFCHR, os.makedev(116, 1))
    os.chmod(tmp_path / "snd" / "a", 0o660)  # past the umask
    os.mknod(tmp_path / "snd" / "sub" / "b", 0o600 | stat.S_IFBLK, os.makedev(60, 2))
    (tmp_path / "snd" / "readme").write_text("not a device")
    (tmp_path / "snd" / "link").symlink_to("/dev/null")  # not followed below a directory
    nodes = Device(host=str(tmp_path / "snd"), path="/dev/snd", access="rw").resolve()
    assert [(n.path, n.type, n.major, n.minor, n.mode, n.access) for n in nodes] == [
        ("/dev/snd/a", "c", 116, 1, 0o660, "rw"),
        ("/dev/snd/sub/b", "b", 60, 2, 0o600, "rw"),
    ]


# --- the rules ---------------------------------------------------------------------------


@pytest.mark.unit
def test_default_rules_are_dockers_allowlist():
    assert [str(r) for r in devices.policy(devices.DEFAULT_RULES)] == [
        "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
        "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm",
    ]
    rules = devices.DEFAULT_RULES
    assert devices.allows(rules, "c", 1, 3, "rw")
    assert devices.allows(rules, "c", 136, 7, "rw")
    assert devices.allows(rules, "b", 254, 0, "m")
    for kind, major, minor in [("c", 10, 232), ("c", 10, 237), ("b", 7, 0), ("b", 254, 0), ("c", 10, 229)]:
        assert not devices.allows(rules, kind, major, minor, "r"), (kind, major, minor)


@pytest.mark.unit
@pytest.mark.parametrize("line", ["c 1:3 rwm", "b 8:* r", "c *:* m", "b 254:0 w", "a *:* rwm"])
def test_rules_read_and_write_the_kernels_lines(line):
    allow = not line.startswith("a")
    assert str(DeviceRule.from_cgroup(line, allow=allow)) == line


@pytest.mark.unit
@pytest.mark.parametrize("line", ["x 1:3 rwm", "c 1:3", "c 1:3 q", "c 1-3 rwm", "c 4096:0 r",
                                  "c 1:1048576 r", "c -1:0 r"])
def test_malformed_rules_are_refused(line):
    with pytest.raises(isobox.InvalidOption):
        DeviceRule.from_cgroup(line)


@pytest.mark.unit
def test_a_rule_allowing_every_device_is_refused():
    with pytest.raises(isobox.InvalidOption, match="every device"):
        DeviceRule("a")


@pytest.mark.unit
def test_rules_merge_and_deny_as_the_kernel_does():
    r, w = DeviceRule("c", 1, 3, "r"), DeviceRule("c", 1, 3, "w")
    assert devices.policy([r, w]) == (DeviceRule("c", 1, 3, "rw"),)
    # a deny takes access from the rule with exactly its numbers, never from a wildcard
    wild = DeviceRule("c", 1, None, "rw")
    assert devices.policy([wild, DeviceRule("c", 1, 3, "rw", allow=False)]) == (wild,)
    assert devices.policy([r, w, DeviceRule("c", 1, 3, "w", allow=False)]) == (r,)
    assert devices.policy([r, DeviceRule("a", allow=False), w]) == (w,)


# --- the eBPF program, interpreted -------------------------------------------------------


def run_bpf(insns: List[Tuple[int, int, int, int, int]], kind: str, major: int, minor: int, access: str) -> int:
    """A tiny interpreter for the instructions devices.bpf_insns emits, over the context
    struct bpf_cgroup_dev_ctx; anything else it meets fails the test."""
    ctx = [devices.TYPE_CODES[kind] | devices.access_bits(access) << 16, major, minor]
    regs = [0] * 11
    regs[1] = -1  # the context pointer: only loads from it are allowed
    pc, steps = 0, 0
    while True:
        steps += 1
        assert steps < 10_000 and 0 <= pc < len(insns), "runs off the program or loops"
        code, dst, src, off, imm = insns[pc]
        pc += 1
        if code == devices.BPF_LDX_MEM_W:
            assert regs[src] == -1 and off in (0, 4, 8)
            regs[dst] = ctx[off // 4]
        elif code == devices.BPF_ALU32_AND_K:
            regs[dst] = (regs[dst] & imm) & 0xFFFFFFFF
        elif code == devices.BPF_ALU32_RSH_K:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code == devices.BPF_ALU32_MOV_X:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif code == devices.BPF_ALU64_MOV_K:
            regs[dst] = imm
        elif code == devices.BPF_JNE_K:
            if regs[dst] != imm:
                pc += off
        elif code == devices.BPF_JNE_X:
            if regs[dst] != regs[src]:
                pc += off
        elif code == devices.BPF_EXIT:
            return regs[0]
        else:
            raise AssertionError(f"unknown opcode {code:#x}")


def reference(rules: List[DeviceRule], kind: str, major: int, minor: int, access: str) -> bool:
    """security/device_cgroup.c match_exception over the policy's rules, written out again."""
    want = set(access)
    return any(r.type == kind and (r.major is None or r.major == major)
               and (r.minor is None or r.minor == minor) and want <= set(r.access)
               for r in devices.policy(rules))


MAJORS = [60, 61, 62]  # "local/experimental use" majors (devices.txt): no driver behind them
MINORS = [0, 1, 2]
rule_strategy = st.builds(
    DeviceRule,
    st.sampled_from("cb"),
    # few numbers, so that rules meet: merged, denied, shadowed by wildcards
    st.sampled_from([None, MAJORS[0], MAJORS[1]]),
    st.sampled_from([None, MINORS[0], MINORS[1]]),
    accesses,
    st.booleans(),
) | st.just(DeviceRule("a", allow=False))
rule_lists = st.lists(rule_strategy, max_size=8)
requests = st.tuples(st.sampled_from("cb"), st.sampled_from(MAJORS), st.sampled_from(MINORS), accesses)


@settings(max_examples=300)
@given(rules=rule_lists, asked=st.lists(requests, min_size=1, max_size=20))
def test_the_bpf_program_decides_as_the_rules_do(rules, asked):
    insns = devices.bpf_insns(rules)
    assert devices.unpack_insns(devices.pack_insns(insns)) == insns
    for kind, major, minor, access in asked:
        verdict = run_bpf(insns, kind, major, minor, access)
        assert verdict == int(reference(rules, kind, major, minor, access)), (kind, major, minor, access)
        assert verdict == int(devices.allows(rules, kind, major, minor, access))


@pytest.mark.unit
def test_the_default_program_denies_kvm_and_allows_null():
    insns = devices.bpf_insns(devices.DEFAULT_RULES)
    assert run_bpf(insns, "c", 1, 3, "rw") == 1
    assert run_bpf(insns, "c", 10, 232, "rw") == 0
    assert run_bpf(insns, "c", 10, 232, "m") == 1
    assert run_bpf(insns, "b", 254, 0, "r") == 0


# --- against the kernel ------------------------------------------------------------------

PROBE = r"""
import json, os, sys
sys.stdin.buffer.read(1)  # the parent moves us into the group first
out = []
for op, path, arg in json.loads(sys.argv[1]):
    try:
        if op == "open":
            os.close(os.open(path, arg | os.O_NOCTTY | os.O_CLOEXEC))
        else:
            os.mknod(path, 0o600 | arg[0], os.makedev(arg[1], arg[2]))
            os.unlink(path)
        out.append(0)
    except OSError as e:
        out.append(e.errno)
print(json.dumps(out))
"""


def probe(group: Optional[cgroups.Group], ops: List[Tuple[str, str, object]]) -> List[int]:
    """Run `ops` (open PATH FLAGS / mknod PATH (fmt, major, minor)) in a new process in
    `group` (None: ours); the errno of each, 0 for success."""
    proc = subprocess.Popen([sys.executable, "-c", PROBE, json.dumps(ops)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        if group is not None:
            group.add(proc.pid)
        out, _ = proc.communicate(b"g", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    return json.loads(out)


def require_root_cgroups(layout: cgroups.Layout, what: str) -> None:
    root_only("the device policy is root's (see root_only)")
    if what == "v1":
        require("devices" in layout.v1, "a cgroup v1 devices controller")
    else:
        require(layout.v2 is not None, "a cgroup v2 mount")


@pytest.fixture
def nodes(tmp_path):
    """Nodes made with mknod in a temp dir, as a container's root could: /dev/kvm's numbers
    and a SCSI disk's (8:0, /dev/sda). Whether a driver is behind them does not matter:
    the policy refuses before the driver is asked."""
    root_only("mknod of device nodes needs CAP_MKNOD in the initial user namespace")
    made = {"kvm": (stat.S_IFCHR, 10, 232), "disk": (stat.S_IFBLK, 8, 0)}
    for name, (fmt, major, minor) in made.items():
        os.mknod(tmp_path / name, 0o600 | fmt, os.makedev(major, minor))
    return tmp_path


def container_probe(d: pathlib.Path) -> List[Tuple[str, str, object]]:
    return [
        ("open", "/dev/null", os.O_RDWR),
        ("open", "/dev/zero", os.O_RDONLY),
        ("open", str(d / "kvm"), os.O_RDWR),
        ("open", "/dev/loop-control", os.O_RDWR),
        ("open", str(d / "disk"), os.O_RDONLY),
        ("mknod", str(d / "made"), (stat.S_IFCHR, 10, 232)),
    ]


def v2_only() -> cgroups.Layout:
    return cgroups.Layout({}, cgroups.Layout.read().v2)


@pytest.mark.parametrize("hierarchy", ["v1", "v2"])
def test_the_default_policy_opens_null_but_not_kvm_loop_control_or_a_disk(nodes, hierarchy):
    layout = cgroups.Layout.read() if hierarchy == "v1" else v2_only()
    require_root_cgroups(layout, hierarchy)
    require(os.path.exists("/dev/loop-control"), "/dev/loop-control")
    ops = container_probe(nodes)
    # outside the group, as root, nothing is refused (a node without a driver says ENXIO):
    # the EPERMs below are the policy's
    assert errno.EPERM not in probe(None, ops)
    name = f"isobox-test-devices-{os.getpid()}"
    group = cgroups.Group.for_container(name, cgroups.Limits(), layout=layout)
    assert group is not None and group.devices, group and group.notes
    try:
        assert probe(group, ops) == [0, 0, errno.EPERM, errno.EPERM, errno.EPERM, 0]
    finally:
        group.remove()
    assert not any(pathlib.Path("/sys/fs/cgroup").rglob(name))


@pytest.mark.parametrize("hierarchy", ["v1", "v2"])
def test_a_device_asked_for_opens_with_the_access_asked(nodes, hierarchy):
    layout = cgroups.Layout.read() if hierarchy == "v1" else v2_only()
    require_root_cgroups(layout, hierarchy)
    asked = Device(host=str(nodes / "kvm"), path="/dev/kvm", access="r").resolve()
    group = cgroups.Group.for_container(f"isobox-test-device-{os.getpid()}", cgroups.Limits(),
                                        devices=asked, layout=layout)
    assert group is not None
    try:
        ops = [("open", str(nodes / "kvm"), os.O_RDONLY), ("open", str(nodes / "kvm"), os.O_RDWR),
               ("open", str(nodes / "disk"), os.O_RDONLY)]
        assert probe(group, ops) == [0, errno.EPERM, errno.EPERM]
    finally:
        group.remove()


def test_a_store_that_decided_rootless_loads_no_device_program():
    """The device program follows the container's store's privilege (host/privilege.py),
    not the euid: as root, a group made for a rootless store has none."""
    layout = v2_only()
    require_root_cgroups(layout, "v2")
    name = f"isobox-test-rootless-{os.getpid()}"
    group = cgroups.Group.for_container(name, cgroups.Limits(), layout=layout,
                                        privilege=Privilege(rootful=False))
    try:
        assert group is None or not group.devices
        if group is not None:
            assert any("no device program" in note for note in group.notes), group.notes
    finally:
        if group is not None:
            group.remove()
    assert not any(pathlib.Path("/sys/fs/cgroup").rglob(name))


def line_rules(lines: str) -> List[str]:
    return sorted(l for l in lines.splitlines() if l)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rules=rule_lists)
@example(rules=[DeviceRule("b", 61, 0, "rw"), DeviceRule("b", 61, 0, "m")])  # merged
@example(rules=[DeviceRule("c", 60, None, "rw"), DeviceRule("c", 60, 1, "r", allow=False)])  # no hole
@example(rules=[DeviceRule("c", 60, 1, "rw"), DeviceRule("c", 60, 1, "r", allow=False)])  # taken away
@example(rules=[DeviceRule("c", 60, 1, "r"), DeviceRule("a", allow=False), DeviceRule("b", 60, 1, "w")])
def test_the_policy_is_what_the_kernels_v1_devices_controller_holds(rules):
    """The rules written one by one to a real v1 devices cgroup: the kernel's own list is
    devices.policy's (so v2's program, made from the policy, enforces what v1 does)."""
    layout = cgroups.Layout.read()
    require_root_cgroups(layout, "v1")
    d = layout.v1["devices"] / f"isobox-test-policy-{os.getpid()}"
    d.mkdir()
    try:
        (d / "devices.deny").write_text("a")
        for rule in rules:
            (d / ("devices.allow" if rule.allow else "devices.deny")).write_text(str(rule))
        assert line_rules((d / "devices.list").read_text()) == sorted(str(r) for r in devices.policy(rules))
    finally:
        d.rmdir()


@settings(max_examples=40, deadline=None)
@given(rules=rule_lists)
def test_the_kernel_runs_the_bpf_program_as_the_rules_say(rules):
    """The program attached to a real cgroup v2 group: a process in it opens and makes
    nodes of majors no driver has (ENXIO when allowed, EPERM when denied), for every type,
    major, minor and access, and each verdict is the rules' own."""
    layout = v2_only()
    require_root_cgroups(layout, "v2")
    assert layout.v2 is not None
    d = layout.v2 / f"isobox-test-bpf-{os.getpid()}"
    d.mkdir()
    tmp = tempfile.mkdtemp()
    try:
        assert cgroups.attach_device_program(d, rules) is None
        ops: List[Tuple[str, str, object]] = []
        expected: List[bool] = []
        for kind, fmt in (("c", stat.S_IFCHR), ("b", stat.S_IFBLK)):
            for major in MAJORS:
                for minor in MINORS:
                    node = os.path.join(tmp, f"{kind}{major}.{minor}")
                    os.mknod(node, 0o600 | fmt, os.makedev(major, minor))
                    for access, flags in (("r", os.O_RDONLY), ("w", os.O_WRONLY), ("rw", os.O_RDWR)):
                        ops.append(("open", node, flags))
                        expected.append(reference(rules, kind, major, minor, access))
                    ops.append(("mknod", node + ".m", (fmt, major, minor)))
                    expected.append(reference(rules, kind, major, minor, "m"))
        group = cgroups.Group([d], v2=True)
        got = probe(group, ops)
        want = [(errno.ENXIO if op[0] == "open" else 0) if ok else errno.EPERM for op, ok in zip(ops, expected)]
        assert got == want
    finally:
        d.rmdir()
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
