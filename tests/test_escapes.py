"""A hostile image must not get out: paths the image (or a caller) chooses are resolved
inside the container's root, never through our file descriptors or /proc's magic links
(the CVE-2024-21626 and CVE-2019-5736 classes), and read-only stays read-only all the way
down. Root and rootless (CI runs this file both ways)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import threading

import pytest

import isobox

from support.host import IS_ROOT
from support.rootfs import make_busybox_rootfs


@pytest.fixture
def host_dir(tmp_path: pathlib.Path):
    """A host directory with a secret in it, held open by this process as a directory fd
    (as an application, or isobox's own pull, holds directory fds)."""
    d = tmp_path / "host"
    d.mkdir()
    (d / "secret").write_text("host secret\n")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    yield d, fd
    os.close(fd)


@pytest.fixture
def hostile_rootfs(tmp_path: pathlib.Path) -> pathlib.Path:
    return make_busybox_rootfs(tmp_path / "hostile")


def image(rootfs: pathlib.Path, **config: object) -> isobox.Image:
    return isobox.Image.from_directory(
        rootfs, isobox.ImageConfig(env=["PATH=/bin"], cmd=["sh"], **config))  # type: ignore[arg-type]


LOOK = "pwd; cat secret; ls ../../..; touch escaped"


def assert_untouched(host: pathlib.Path) -> None:
    assert sorted(p.name for p in host.iterdir()) == ["secret"]


def test_image_workdir_through_an_inherited_fd_is_refused(hostile_rootfs, host_dir, store_root):
    host, fd = host_dir
    img = image(hostile_rootfs, working_dir=f"/proc/self/fd/{fd}")
    with pytest.raises(isobox.SetupError, match="working directory"):
        isobox.run(img, ["sh", "-c", LOOK], timeout=30)
    assert_untouched(host)


def test_caller_workdir_through_an_inherited_fd_is_refused(busybox_image, host_dir, store_root):
    host, fd = host_dir
    with pytest.raises(isobox.SetupError, match="working directory"):
        isobox.run(busybox_image, ["sh", "-c", LOOK], workdir=f"/proc/self/fd/{fd}", timeout=30)
    assert_untouched(host)


def test_workdir_symlink_to_a_magic_link_is_refused(hostile_rootfs, host_dir, store_root):
    host, fd = host_dir
    os.symlink(f"/proc/self/fd/{fd}", hostile_rootfs / "work")
    img = image(hostile_rootfs, working_dir="/work")
    with pytest.raises(isobox.SetupError, match="working directory /work"):
        isobox.run(img, ["sh", "-c", LOOK], timeout=30)
    assert_untouched(host)


def test_workdir_under_proc_self_cwd_is_refused(busybox_image, store_root):
    # /proc/self/cwd is a magic link too, even where it leads back inside
    with pytest.raises(isobox.SetupError, match="working directory"):
        isobox.run(busybox_image, ["pwd"], workdir="/proc/self/cwd", timeout=30)


def test_ordinary_workdir_symlinks_are_followed_inside_the_root(hostile_rootfs, store_root):
    (hostile_rootfs / "srv" / "app").mkdir(parents=True)
    os.symlink("/srv/app", hostile_rootfs / "work")
    os.symlink("../../..", hostile_rootfs / "srv" / "up")  # ".." stops at the root
    img = image(hostile_rootfs, working_dir="/work")
    assert isobox.run(img, ["pwd"], timeout=30).stdout == b"/srv/app\n"
    assert isobox.run(img, ["sh", "-c", "pwd -P; ls"], workdir="/srv/up", timeout=30).stdout.startswith(b"/\n")


def test_exec_workdir_through_an_inherited_fd_is_refused(busybox_image, host_dir, store_root):
    host, fd = host_dir
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        with pytest.raises(isobox.SetupError, match="working directory"):
            c.exec(["sh", "-c", LOOK], workdir=f"/proc/self/fd/{fd}", timeout=30)
        assert c.exec(["true"]).exit_code == 0
    assert_untouched(host)


def test_exec_default_workdir_from_the_image_is_resolved_inside(hostile_rootfs, host_dir, store_root):
    # the first process runs elsewhere; exec takes the image's WorkingDir by default
    host, fd = host_dir
    (hostile_rootfs / "ok").mkdir()
    img = image(hostile_rootfs, working_dir="/ok")
    with isobox.Container(img, ["sleep", "30"]) as c:
        c.exec(["sh", "-c", f"rmdir /ok && ln -s /proc/self/fd/{fd} /ok"])
        with pytest.raises(isobox.SetupError, match="working directory /ok"):
            c.exec(["sh", "-c", LOOK], timeout=30)
    assert_untouched(host)


def test_no_fd_of_the_owner_reaches_the_container(busybox_image, host_dir, store_root):
    host, fd = host_dir
    os.set_inheritable(fd, True)  # even one the owner marked inheritable
    try:
        result = isobox.run(busybox_image, ["ls", "/proc/self/fd"], timeout=30)
    finally:
        os.set_inheritable(fd, False)
    assert sorted(int(n) for n in result.stdout.split()) == [0, 1, 2, 3]  # 3: ls's own


def test_a_concurrent_pull_does_not_lend_its_fds(busybox_image, store_root, tmp_path):
    # The trial: containers started while another thread holds directory fds
    # (as isobox's own pull does) never start in one of them.
    dirs = []
    for i in range(8):
        d = tmp_path / f"layer{i}"
        d.mkdir()
        (d / "secret").write_text("layer\n")
        dirs.append(d)
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            fds = [os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for d in dirs]
            for f in fds:
                os.close(f)

    t = threading.Thread(target=churn)
    t.start()
    try:
        for n in range(3, 40):
            try:
                isobox.run(busybox_image, ["sh", "-c", "cat secret && touch escaped"],
                           workdir=f"/proc/self/fd/{n}", timeout=30)
            except isobox.SetupError:
                pass
    finally:
        stop.set()
        t.join()
    for d in dirs:
        assert sorted(p.name for p in d.iterdir()) == ["secret"]


def test_entrypoint_proc_self_exe_is_refused(busybox_image, store_root):
    with pytest.raises(isobox.SetupError, match="magic links"):
        isobox.run(busybox_image, ["/proc/self/exe", "-c", "print('host interpreter')"], timeout=30)


def test_script_interpreter_proc_self_exe_is_refused(hostile_rootfs, store_root):
    script = hostile_rootfs / "entry"
    script.write_text("#!/proc/self/exe\nprint('host interpreter')\n")
    script.chmod(0o755)
    (hostile_rootfs / "nested").write_text("#!/entry\n")
    (hostile_rootfs / "nested").chmod(0o755)
    img = image(hostile_rootfs, entrypoint=["/entry"])
    with pytest.raises(isobox.SetupError, match="magic links"):
        isobox.run(img, timeout=30)
    with pytest.raises(isobox.SetupError, match="magic links"):
        isobox.run(img, entrypoint=["/nested"], timeout=30)
    # relative to the working directory, as the kernel resolves it
    (hostile_rootfs / "rel").write_text("#!proc/self/exe\n")
    (hostile_rootfs / "rel").chmod(0o755)
    with pytest.raises(isobox.SetupError, match="magic links"):
        isobox.run(img, entrypoint=["/rel"], workdir="/", timeout=30)


def test_path_lookup_skips_magic_links_and_says_so(hostile_rootfs, store_root):
    (hostile_rootfs / "evil").mkdir()
    os.symlink("/proc/self/exe", hostile_rootfs / "evil" / "tool")
    img = isobox.Image.from_directory(hostile_rootfs, isobox.ImageConfig(env=["PATH=/evil:/bin"]))
    with pytest.raises(isobox.SetupError, match="magic links"):
        isobox.run(img, ["tool"], timeout=30)
    # a later PATH entry with the real thing wins, as execvp goes on
    os.symlink("/bin/busybox", hostile_rootfs / "bin" / "tool")
    assert isobox.run(img, ["sh", "-c", "echo ok"], timeout=30).stdout == b"ok\n"


def test_exec_of_a_script_swapped_to_proc_self_exe_is_refused(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        c.exec(["sh", "-c", "printf '#!/proc/self/exe\\n' > /bin/evil && chmod +x /bin/evil"])
        with pytest.raises(isobox.SetupError, match="magic links"):
            c.exec(["/bin/evil"], timeout=30)


def test_mount_destination_through_a_magic_link_is_refused(hostile_rootfs, host_dir, tmp_path, store_root):
    host, fd = host_dir
    os.symlink(f"/proc/self/fd/{fd}", hostile_rootfs / "data")
    src = tmp_path / "src"
    src.mkdir()
    img = image(hostile_rootfs)
    for mount in (isobox.Bind(str(src), "/data/sub"), isobox.Tmpfs("/data/sub"),
                  isobox.Volume("v1", "/data/sub")):
        with pytest.raises(isobox.SetupError):
            isobox.run(img, ["true"], mounts=[mount], timeout=30)
        assert_untouched(host)


def test_file_mount_destination_through_a_magic_link_is_refused(hostile_rootfs, host_dir, tmp_path, store_root):
    host, fd = host_dir
    os.symlink(f"/proc/self/fd/{fd}", hostile_rootfs / "data")
    src = tmp_path / "file"
    src.write_text("mine\n")
    with pytest.raises(isobox.SetupError, match="/data"):
        isobox.run(image(hostile_rootfs), ["true"], mounts=[isobox.Bind(str(src), "/data/file")], timeout=30)
    assert_untouched(host)


def mounts_below(text: str, prefix: str) -> list:
    """(mount point, options) of every mount at or below prefix, from mountinfo."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or not fields[0].isdigit():
            continue
        if fields[4] == prefix or fields[4].startswith(prefix.rstrip("/") + "/"):
            out.append((fields[4], fields[5]))
    return out


@pytest.mark.skipif(not IS_ROOT, reason="an unprivileged user cannot mount a submount on the host")
def test_read_only_bind_is_read_only_all_the_way_down(busybox_image, tmp_path, store_root):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src / "sub")], check=True)
    try:
        result = isobox.run(
            busybox_image, ["sh", "-c", "cat /proc/self/mountinfo; echo x > /data/sub/f; echo rc=$?"],
            mounts=[isobox.Bind(str(src), "/data", read_only=True)], timeout=30)
    finally:
        subprocess.run(["umount", str(src / "sub")], check=True)
    mounts = mounts_below(result.stdout.decode(), "/data")
    assert [m for m, _ in mounts] == ["/data", "/data/sub"]
    assert all(opts.split(",")[0] == "ro" for _, opts in mounts), mounts
    assert b"rc=1" in result.stdout


def test_host_network_sys_is_read_only_all_the_way_down(busybox_image, store_root):
    result = isobox.run(busybox_image, ["cat", "/proc/self/mountinfo"], network="host", timeout=30)
    mounts = mounts_below(result.stdout.decode(), "/sys")
    assert mounts and all(opts.split(",")[0] == "ro" for _, opts in mounts), mounts
    for _, opts in mounts:
        assert {"nosuid", "nodev", "noexec"} <= set(opts.split(",")), mounts


# -- host devices ------------------------------------------------------------------------------


OPEN = "for n in $NODES; do if (exec 3<>$n) 2>/dev/null; then echo opened $n; else echo refused $n; fi; done"


@pytest.mark.skipif(not IS_ROOT, reason="mknod is the real root's (a user namespace refuses it)")
def test_a_root_container_opens_no_device_it_makes(busybox_image, tmp_path, store_root):
    # kvm (10:232), loop-control (10:237), a disk (8:0), and null's own numbers (1:3):
    # made in the image's root, /dev, a tmpfs, a volume and a bind, none opens
    bind = tmp_path / "bind"
    bind.mkdir()
    nodes = []
    script = ""
    for place in ("/tmp", "/dev", "/t", "/v", "/b"):
        for name, kind, major, minor in (("kvm", "c", 10, 232), ("loop", "c", 10, 237),
                                         ("disk", "b", 8, 0), ("null2", "c", 1, 3)):
            script += f"mknod {place}/{name} {kind} {major} {minor} || echo mknod failed; "
            nodes.append(f"{place}/{name}")
    result = isobox.run(
        busybox_image, ["sh", "-c", script + OPEN], env={"NODES": " ".join(nodes)},
        mounts=[isobox.Tmpfs("/t"), isobox.Volume("devs", "/v"), isobox.Bind(str(bind), "/b")],
        timeout=30)
    out = result.stdout.decode()
    assert "mknod failed" not in out  # mknod itself is allowed, as in Docker
    assert [line for line in out.splitlines() if line.startswith("opened")] == []
    assert len(out.splitlines()) == len(nodes)


def test_the_standard_devices_still_work(busybox_image, store_root):
    result = isobox.run(busybox_image, ["sh", "-c",
                        "echo x > /dev/null && head -c 4 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c "
                        "&& (echo x > /dev/full; echo full=$?) && ls /dev/pts/ptmx"], timeout=30)
    assert result.stdout == b"4\n4\nfull=1\n/dev/pts/ptmx\n", result.stderr
    with isobox.Container(busybox_image, ["sh"], tty=True) as c:
        c.exec(["sh", "-c", "exit 0"])  # and a terminal works (a pts from the container's own devpts)


@pytest.mark.skipif(not IS_ROOT, reason="the host's device nodes here are root's (mode 0600)")
def test_devices_option_adds_a_host_device(busybox_image, store_root):
    result = isobox.run(busybox_image, ["sh", "-c", "ls -l /dev/kvm /dev/lc; " + OPEN
                                        + "; (exec 3</dev/lc) && echo read-ok"],
                        env={"NODES": "/dev/kvm /dev/lc"},
                        devices=["/dev/kvm", isobox.Device("/dev/loop-control", "/dev/lc", "r")],
                        timeout=30)
    out = result.stdout.decode()
    assert "opened /dev/kvm" in out and "refused /dev/lc" in out and "read-ok" in out, out
    assert "10, 232" in out and "10, 237" in out


def test_devices_option_binds_the_host_node_rootless_too(busybox_image, store_root):
    result = isobox.run(busybox_image, ["sh", "-c", "echo x > /dev/mynull && echo ok"],
                        devices=["/dev/null:/dev/mynull"], timeout=30)
    assert result.stdout == b"ok\n", result.stderr


def test_devices_outside_dev_and_bad_specs_are_refused_before_the_host_is_touched(busybox_image, store_root):
    with pytest.raises(isobox.InvalidOption, match="under /dev only"):
        isobox.Container(busybox_image, ["true"], devices=["/dev/null:/opt/null"])
    with pytest.raises(isobox.InvalidOption, match="not a device"):
        isobox.Container(busybox_image, ["true"], devices=["/etc/passwd"])
    with pytest.raises(isobox.InvalidOption):
        isobox.Container(busybox_image, ["true"], devices=["/dev/null:/dev/x:rwz"])


@pytest.mark.skipif(not IS_ROOT, reason="rootless without cgroup delegation gets no pids limit (doctor says so)")
def test_a_container_gets_a_default_pids_limit(busybox_image, store_root):
    def pids_max(pid: int) -> str:
        for line in pathlib.Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "pids" in controllers.split(","):
                limit = pathlib.Path(f"/sys/fs/cgroup/pids{path}/pids.max")
                return limit.read_text().strip() if path != "/" else "no group"
        return "no pids controller"

    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        default = pids_max(c.pid)
    with isobox.Container(busybox_image, ["sleep", "30"], pids_limit=-1) as c:
        unlimited = pids_max(c.pid)
    with isobox.Container(busybox_image, ["sleep", "30"], pids_limit=10) as c:
        asked = pids_max(c.pid)
    assert (default, unlimited, asked) == ("2048", "no group", "10")


# -- hostile image configuration -----------------------------------------------------------


def test_relative_or_odd_image_workdirs_are_checked_at_create(hostile_rootfs, store_root):
    with pytest.raises(isobox.InvalidImage, match="WorkingDir 'srv' is not an absolute path"):
        isobox.Container(image(hostile_rootfs, working_dir="srv"), ["pwd"])
    (hostile_rootfs / "b").mkdir()
    assert isobox.run(image(hostile_rootfs, working_dir="/a/../b/."), ["pwd"], timeout=30).stdout == b"/b\n"


def test_a_bogus_stop_signal_is_refused_at_create_not_at_stop(hostile_rootfs, store_root):
    with pytest.raises(isobox.InvalidImage, match="StopSignal"):
        isobox.Container(image(hostile_rootfs, stop_signal="SIGBOGUS"), ["sleep", "30"])
    with isobox.Container(image(hostile_rootfs, stop_signal="SIGUSR1"), ["sleep", "30"], init=True) as c:
        assert c.stop(timeout=5) == 128 + 10  # the init forwards USR1; sleep dies of it


def test_a_symlink_as_a_file_mount_destination_is_refused(hostile_rootfs, tmp_path, store_root):
    """/etc/hosts & co. are bound over the image's files; an image whose /etc/hosts is a
    symlink (even to a harmless place inside) is refused, as before the bind target was
    looked at without opening it (ELOOP)."""
    (hostile_rootfs / "etc" / "elsewhere").write_text("x\n")
    os.symlink("elsewhere", hostile_rootfs / "etc" / "hosts")
    with pytest.raises(isobox.SetupError, match="hosts"):
        isobox.run(image(hostile_rootfs), ["true"], timeout=30)


def test_bind_targets_the_image_has_are_not_copied_up(hostile_rootfs, store_root):
    """A file the image has where a file is bound (/etc/hostname here, or a caller's
    Bind) is used as the mount point as it is: not opened for writing, which on the
    overlay root copies it into the container's upper directory (an fsync each)."""
    (hostile_rootfs / "etc" / "hosts").write_text("127.0.0.1 image\n")
    (hostile_rootfs / "etc" / "resolv.conf").write_text("")
    assert (hostile_rootfs / "etc" / "hostname").exists()
    for mount_point in ("dev", "proc", "sys"):
        (hostile_rootfs / mount_point).mkdir(exist_ok=True)
    with isobox.Container(image(hostile_rootfs), ["sleep", "30"]) as c:
        upper = c.dir / "upper"
        assert sorted(str(p.relative_to(upper)) for p in upper.rglob("*")) == []
