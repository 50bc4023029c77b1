"""A container really is a sandboxed process: real namespaces, mounts and capabilities,
as root and as an unprivileged user (CI runs this file both ways)."""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import isobox

IS_ROOT = os.geteuid() == 0
# Docker's default capabilities (CHOWN ... SETFCAP) as /proc/self/status prints them.
DOCKER_CAPS = 0xA80425FB


def sh(image: isobox.Image, script: str, **options: object) -> isobox.RunResult:
    return isobox.run(image, ["sh", "-c", script], timeout=30, **options)  # type: ignore[arg-type]


def status_field(text: str, field: str) -> str:
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{field} not in {text!r}")


def our_children() -> set:
    """Pids whose parent is this process (fixtures' servers included), from /proc."""
    me = str(os.getpid())
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = f.read().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                continue
            if ppid == me:
                found.add(int(entry))
    return found


@contextlib.contextmanager
def no_new_children():
    """The block leaves no process of ours behind (running or unreaped)."""
    before = our_children()
    yield
    assert our_children() - before == set()


def test_command_runs_and_output_is_collected(busybox_image, store_root):
    result = isobox.run(busybox_image, ["echo", "hello", "world"])
    assert result.exit_code == 0
    assert result.stdout == b"hello world\n"
    assert result.stderr == b""


def test_exit_code_and_stderr_are_reported(busybox_image, store_root):
    result = sh(busybox_image, "echo oops >&2; exit 3")
    assert result.exit_code == 3
    assert result.stderr == b"oops\n"
    with pytest.raises(isobox.ExitStatusError, match="exited with status 3"):
        result.check_returncode()


def test_input_reaches_stdin(busybox_image, store_root):
    assert isobox.run(busybox_image, ["cat"], input=b"fed\n").stdout == b"fed\n"


def test_process_is_pid_1_of_its_own_pid_namespace(busybox_image, store_root):
    result = sh(busybox_image, "echo $$; ls /proc | grep -E '^[0-9]+$' | wc -l")
    pid, count = result.stdout.split()
    assert pid == b"1"
    # sh itself, ls and grep/wc at most: no host process is visible
    assert int(count) <= 4


def test_host_processes_are_invisible(busybox_image, store_root):
    result = sh(busybox_image, f"test -e /proc/{os.getpid()}/cmdline && echo seen || echo hidden; ps -o pid,comm")
    assert result.stdout.startswith(b"hidden\n")
    assert b"python" not in result.stdout and b"pytest" not in result.stdout


def test_hostname_defaults_to_short_id_and_can_be_set(busybox_image, store_root):
    assert sh(busybox_image, "hostname").stdout.strip().decode().isalnum()
    assert sh(busybox_image, "hostname; echo $HOSTNAME", hostname="box1").stdout == b"box1\nbox1\n"
    assert os.uname().nodename != "box1"


def test_root_filesystem_is_an_overlay_of_the_image_only(busybox_image, store_root, tmp_path):
    secret = tmp_path / "host-secret"
    secret.write_text("host data")
    result = sh(busybox_image, f"cat {secret} 2>&1; ls /; grep ' / ' /proc/mounts")
    out = result.stdout.decode()
    assert "host data" not in out
    assert "No such file" in out
    top = set(out.split("\n", 1)[1].split())
    assert {"bin", "etc", "proc", "dev", "sys", "tmp"} <= top
    assert "overlay / overlay" in out
    # nothing of the host's mount table is visible
    mounts = sh(busybox_image, "cat /proc/mounts").stdout.decode()
    for line in mounts.splitlines():
        target = line.split()[1]
        assert target.split("/")[1] in ("", "proc", "dev", "sys") or target in (
            "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"), line


def test_capabilities_are_dockers_default_set(busybox_image, store_root):
    status = sh(busybox_image, "cat /proc/self/status").stdout.decode()
    assert int(status_field(status, "CapBnd"), 16) == DOCKER_CAPS
    assert int(status_field(status, "CapEff"), 16) == DOCKER_CAPS
    assert int(status_field(status, "CapPrm"), 16) == DOCKER_CAPS
    assert int(status_field(status, "CapInh"), 16) == 0
    assert int(status_field(status, "CapAmb"), 16) == 0
    assert status_field(status, "NoNewPrivs") == "1"


def test_non_root_user_has_no_effective_capabilities(busybox_image, store_root):
    idmap = isobox_idmap()
    if not IS_ROOT and idmap.single:
        pytest.skip("no /etc/subuid range for this user: only uid 0 exists in its containers")
    result = sh(busybox_image, "id; cat /proc/self/status", user="app")
    out = result.stdout.decode()
    assert out.startswith("uid=1000(app) gid=1000(app) groups=50(staff),1000(app)")  # the kernel sorts them
    assert int(status_field(out, "CapEff"), 16) == 0
    assert int(status_field(out, "CapBnd"), 16) == DOCKER_CAPS
    assert sh(busybox_image, "id -u; echo $HOME", user="1000:50").stdout == b"1000\n/home/app\n"


def isobox_idmap():
    from isobox.host import idmap

    return idmap.for_caller()


def test_masked_paths_are_unreadable_and_proc_sys_is_read_only(busybox_image, store_root):
    result = sh(busybox_image, textwrap.dedent("""\
        cat /proc/kcore 2>/dev/null | wc -c
        cat /proc/keys 2>/dev/null | wc -c
        ls -A /sys/firmware | wc -l
        echo 1 > /proc/sys/kernel/domainname && echo wrote || echo refused
        grep -c ' /proc/sys proc ro,' /proc/mounts
        touch /sys/kernel/x 2>/dev/null && echo wrote || echo refused
    """))
    assert result.stdout.split() == [b"0", b"0", b"0", b"refused", b"1", b"refused"]


def test_dev_has_the_standard_devices(busybox_image, store_root):
    result = sh(busybox_image, textwrap.dedent("""\
        echo hi > /dev/null && head -c 4 /dev/zero | wc -c && head -c 8 /dev/urandom | wc -c
        ls /dev/pts/ptmx /dev/shm /dev/mqueue >/dev/null && echo ok
        for l in fd stdout ptmx; do readlink /dev/$l; done
    """))
    assert result.stdout.split() == [b"4", b"8", b"ok", b"/proc/self/fd", b"/proc/self/fd/1", b"pts/ptmx"]


def test_network_is_loopback_only_by_default(busybox_image, store_root):
    result = sh(busybox_image, "ls /sys/class/net; cat /sys/class/net/lo/operstate")
    names = result.stdout.split()
    assert names[:-1] == [b"lo"]
    assert names[-1] in (b"unknown", b"up")


def test_writes_stay_in_their_own_container(busybox_image, busybox_rootfs, store_root):
    with isobox.Container(busybox_image, ["sh", "-c", "echo one > /etc/mark; sleep 30"], name="writer") as a:
        with isobox.Container(busybox_image, ["sleep", "30"], name="reader"):
            time.sleep(0.2)
            seen = sh(busybox_image, "cat /etc/mark 2>&1 || echo absent")
            assert b"absent" in seen.stdout
        assert (a.dir / "upper" / "etc" / "mark").read_text() == "one\n"
    assert not (busybox_rootfs / "etc" / "mark").exists()


def test_same_image_runs_as_many_named_containers(busybox_image, store_root):
    containers = [isobox.Container(busybox_image, ["sleep", "30"], name=f"svc-{i}").start() for i in range(5)]
    try:
        assert all(c.status == "running" for c in containers)
        with pytest.raises(isobox.NameConflict, match="svc-2"):
            isobox.Container(busybox_image, ["true"], name="svc-2").start()
    finally:
        for c in containers:
            c.remove(force=True)
    # the name is free again once its container is removed
    isobox.run(busybox_image, ["true"], name="svc-2")


def test_kill_reports_the_signal(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        c.kill(signal.SIGKILL)
        assert c.wait(5) == -signal.SIGKILL
        assert c.status == "exited"


def test_stop_escalates_to_sigkill_when_pid1_ignores_sigterm(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        started = time.monotonic()
        assert c.stop(timeout=0.3) == -signal.SIGKILL
        assert time.monotonic() - started < 5


def test_init_forwards_signals_and_reaps_zombies(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sleep", "30"], init=True) as c:
        time.sleep(0.1)
        assert c.stop(timeout=5) == 128 + signal.SIGTERM
    result = sh(busybox_image, "(sleep 0.1 &); sleep 0.4; ps -o stat,pid | grep -c '^Z' || true", init=True)
    assert result.stdout.strip() == b"0"


def test_wait_times_out_without_killing(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        with pytest.raises(isobox.Timeout):
            c.wait(timeout=0.2)
        assert c.status == "running"
    with pytest.raises(isobox.Timeout):
        isobox.run(busybox_image, ["sleep", "30"], timeout=0.3)


def test_environment_workdir_and_path_lookup(busybox_image, store_root):
    result = isobox.run(
        busybox_image, ["sh", "-c", "pwd; echo $PATH; echo $GREETING; echo $HOME"],
        env={"GREETING": "hi"}, workdir="/tmp",
    )
    assert result.stdout.decode().split("\n")[:4] == ["/tmp", "/usr/local/bin:/usr/bin:/bin", "hi", "/root"]


def test_missing_command_raises_command_not_found(busybox_image, store_root):
    with no_new_children(), pytest.raises(isobox.CommandNotFound, match="exec no-such-program: No such file or directory"):
        isobox.run(busybox_image, ["no-such-program"])


def test_missing_working_directory_is_created_as_docker_does(busybox_image, store_root):
    assert isobox.run(busybox_image, ["pwd"], workdir="/srv/app").stdout == b"/srv/app\n"


def test_bad_working_directory_names_the_step(busybox_image, store_root):
    with no_new_children(), pytest.raises(isobox.SetupError, match="chdir to the working directory /etc/passwd: Not a directory") as info:
        isobox.run(busybox_image, ["true"], workdir="/etc/passwd")
    assert info.value.step.startswith("chdir")


def test_unmountable_rootfs_raises_and_leaks_nothing(tmp_path, store_root):
    image = isobox.Image(config=isobox.ImageConfig(cmd=["sh"]), layers=[tmp_path / "missing-layer"])
    with no_new_children(), pytest.raises(isobox.SetupError, match=r"mount the root filesystem \(overlay\): No such file"):
        isobox.run(image, ["true"])


def test_symlinked_proc_in_image_cannot_redirect_a_mount(tmp_path, busybox_rootfs, store_root):
    hostile = tmp_path / "hostile"
    subprocess.run(["cp", "-a", str(busybox_rootfs), str(hostile)], check=True)
    os.symlink("/etc", hostile / "proc")
    image = isobox.Image.from_directory(hostile)
    with pytest.raises(isobox.SetupError, match="mount /proc: Too many levels of symbolic links"):
        isobox.run(image, ["true"])


def test_invalid_options_fail_before_touching_the_host(busybox_image, store_root):
    with pytest.raises(isobox.InvalidOption):
        isobox.Container(busybox_image, ["true"], name="bad name")
    with pytest.raises(isobox.InvalidOption):
        isobox.Container(busybox_image, ["true"], workdir="relative")
    with pytest.raises(isobox.InvalidOption):
        isobox.Container(busybox_image, ["true"], rlimits={"nofiles": 10})
    with pytest.raises(isobox.InvalidOption):
        isobox.Container(isobox.Image(config=isobox.ImageConfig()), None)
    assert not (store_root / "containers").exists() or not any(
        p for p in (store_root / "containers").iterdir() if not p.name.startswith(".")
    )


def test_rlimits_are_applied(busybox_image, store_root):
    assert sh(busybox_image, "ulimit -n", rlimits={"nofile": (256, 512)}).stdout == b"256\n"


def test_exec_gets_the_containers_rlimits(busybox_image, store_root):
    """As `docker exec` (runc exec takes the container's rlimits unless the process says
    otherwise): an exec'd process is held to the container's limits, not the owner's."""
    with isobox.Container(busybox_image, ["sleep", "30"], rlimits={"nofile": (256, 512)}) as c:
        assert c.exec(["sh", "-c", "ulimit -n; ulimit -Hn"]).stdout == b"256\n512\n"


def test_read_only_rootfs_refuses_writes(busybox_image, store_root):
    result = sh(busybox_image, "touch /x 2>&1; echo ok > /dev/shm/y && cat /dev/shm/y", read_only=True)
    assert b"Read-only file system" in result.stdout
    assert result.stdout.endswith(b"ok\n")


OWNER = """
import os, sys, time, isobox
img = isobox.Image.from_directory(sys.argv[1])
c = isobox.Container(img, ["sleep", "300"]).start()
print(c.pid, c.id, flush=True)
time.sleep(300)
"""


def test_container_dies_with_its_owner_and_its_state_is_swept(busybox_rootfs, busybox_image, store_root):
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(busybox_rootfs)], stdout=subprocess.PIPE)
    try:
        assert owner.stdout is not None
        pid_text, cid = owner.stdout.readline().split()
        pid = int(pid_text)
        assert os.path.exists(f"/proc/{pid}")
        assert pathlib.Path(f"/proc/{pid}/mountinfo").read_text().count(" overlay ") >= 1
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}"), "the container outlived its owner"
    # no mount of the container is visible on the host
    assert cid.decode() not in pathlib.Path("/proc/self/mountinfo").read_text()
    assert (store_root / "containers" / cid.decode()).exists()
    isobox.run(busybox_image, ["true"])  # a later start sweeps what the owner left
    assert not (store_root / "containers" / cid.decode()).exists()


def test_container_started_in_a_worker_thread_outlives_the_thread(busybox_image, store_root):
    import threading

    box = []
    t = threading.Thread(target=lambda: box.append(isobox.Container(busybox_image, ["sleep", "30"]).start()))
    t.start()
    t.join()
    c = box[0]
    try:
        time.sleep(0.2)
        assert c.status == "running"
    finally:
        c.remove(force=True)


def test_starting_a_container_leaves_its_owners_attributes_alone(busybox_image, store_root, tmp_path):
    """The child runs in the owner's memory until execve (spawn.c, ib_spawn_shared): what
    it changes in itself must not reach the owner: dumpable (a uid change clears it on
    the shared memory), umask, cwd, rlimits, signal handlers."""
    import ctypes
    import resource

    libc = ctypes.CDLL(None, use_errno=True)
    PR_GET_DUMPABLE = 3
    before = (libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), os.umask(0o022), os.getcwd(),
              resource.getrlimit(resource.RLIMIT_NOFILE), signal.getsignal(signal.SIGINT))
    os.umask(before[1])
    result = sh(busybox_image, "id -u; ulimit -n; umask; pwd", user="1000:1000",
                rlimits={"nofile": (256, 512)}, workdir="/tmp")
    assert result.stdout.split() == [b"1000", b"256", b"0022", b"/tmp"]
    after = (libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), os.umask(0o022), os.getcwd(),
             resource.getrlimit(resource.RLIMIT_NOFILE), signal.getsignal(signal.SIGINT))
    os.umask(after[1])
    assert after == before
    assert before[0] == 1
    # and the next child's namespaces can still be opened (they could not while the
    # shared memory stayed non-dumpable, rootless)
    assert sh(busybox_image, "id -u", user="1000:1000").stdout == b"1000\n"


def test_a_failed_clone_is_reported_and_leaks_nothing():
    """The spawner thread reports its own clone's failure on the error pipe (spawn.c:
    ib_spawn_shared); CLONE_THREAD without CLONE_SIGHAND makes the kernel refuse it."""
    from isobox.host import native
    from isobox.runtime import spawn

    fds_before = sorted(os.listdir("/proc/self/fd"))
    spec = native.Spec(clone_flags=0x00010000, set_ids=False)  # CLONE_THREAD
    with no_new_children():
        with pytest.raises(isobox.SetupError, match="clone") as info:
            native.spawn_shared(spec, spawn.on_spawner)
    assert info.value.errno == errno.EINVAL
    deadline = time.monotonic() + 5  # the spawner thread closes its ends after the record
    while sorted(os.listdir("/proc/self/fd")) != fds_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(os.listdir("/proc/self/fd")) == fds_before


def test_containers_start_from_many_threads_while_the_owner_allocates(busybox_image, store_root):
    """Starts serialise on the spawner thread while other threads run Python in the
    memory the children share until they exec."""
    import threading

    results: dict = {}

    def worker(n: int) -> None:
        results[n] = [sh(busybox_image, f"echo {n}-{i}").stdout for i in range(6)]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    junk = []
    while any(t.is_alive() for t in threads):
        junk.append([str(i) * 10 for i in range(2000)])  # churn the allocator meanwhile
        if len(junk) > 50:
            junk.clear()
    for t in threads:
        t.join()
    assert results == {n: [f"{n}-{i}\n".encode() for i in range(6)] for n in range(6)}


def test_more_layers_than_one_mount_option_can_hold(busybox_rootfs, store_root, tmp_path):
    """overlayfs's legacy option string is limited to a page; isobox adds layers one by
    one (fsconfig "lowerdir+") so long layer lists still mount."""
    layers = [busybox_rootfs]
    deep = tmp_path / ("long-directory-name-" * 8)
    for i in range(60):
        layer = deep / f"layer-{i:03d}"
        (layer / "layers").mkdir(parents=True)
        (layer / "layers" / f"{i:03d}").write_text(str(i))
        layers.append(layer)
    total = sum(len(str(p)) + 1 for p in layers)
    assert total > 4096
    image = isobox.Image(config=isobox.ImageConfig(cmd=["sh"]), layers=layers)
    result = isobox.run(image, ["sh", "-c", "ls /layers | wc -l; cat /layers/059"])
    assert result.stdout == b"60\n59"


def test_read_only_root_cannot_be_written_through_dotdot(busybox_image, store_root):
    out = sh(busybox_image, "for f in /x /../x /../../x; do touch $f 2>/dev/null && echo wrote $f; done; true",
             read_only=True)
    assert out.stdout == b""


def test_init_holds_no_capabilities_and_no_host_command_line(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sleep", "30"], init=True) as c:
        out = c.exec(["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; grep -E 'Cap(Eff|Prm)' /proc/1/status"])
        text = out.stdout.decode()
        assert text.split()[0] == "init"
        assert "python" not in text and "pytest" not in text
        assert "CapPrm:\t0000000000000000" in text and "CapEff:\t0000000000000000" in text


def test_init_holds_none_of_its_owners_file_descriptors(busybox_image, store_root, tmp_path):
    """The init is a copy of the Python process that never execs: it must not keep our
    files open (a pipe it held would never report EOF to us)."""
    r, w = os.pipe()
    try:
        with isobox.Container(busybox_image, ["sleep", "30"], init=True) as c:
            os.close(w)
            w = -1
            # every write end is closed unless the init still holds its copy
            import select

            assert select.select([r], [], [], 2)[0] == [r]
            assert os.read(r, 1) == b""
            assert c.status == "running"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


DEEP_TREE = 'd=/tmp/n; i=0; while [ $i -lt 1500 ]; do d=$d/d; i=$((i+1)); done; mkdir -p $d'


def test_a_tree_deeper_than_the_fd_limit_does_not_stop_removal(busybox_image, store_root):
    """A container can nest directories deeper than Python recurses and than an
    unprivileged user's 1024 fds: removing it still removes them all."""
    c = isobox.Container(busybox_image, ["sh", "-c", DEEP_TREE]).start()
    assert c.wait(60) == 0
    cdir = c.dir
    c.remove()
    assert not cdir.exists()


def test_a_deep_tree_of_another_user_in_the_container_does_not_stop_removal(busybox_image, store_root):
    """Rootless, files of the container's other users belong to subordinate ids, which
    only a helper in a user namespace may remove (the native walk, IB_OP_RMTREE): it too
    copes with any depth."""
    if not IS_ROOT and isobox_idmap().single:
        pytest.skip("no /etc/subuid range for this user: only uid 0 exists in its containers")
    c = isobox.Container(busybox_image, ["sh", "-c", DEEP_TREE], user="1000").start()
    assert c.wait(60) == 0
    cdir = c.dir
    c.remove()
    assert not cdir.exists()
