"""The image's configuration, mounts, exec, TTY and logs behave as `docker run` and
`docker exec` do (Docker's documented rules), as root and rootless."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import threading
import time

import pytest

import isobox
from isobox import Bind, Tmpfs, Volume

from support.host import IS_ROOT


def image_with(rootfs: pathlib.Path, **config: object) -> isobox.Image:
    return isobox.Image.from_directory(rootfs, isobox.ImageConfig(**config))  # type: ignore[arg-type]


# -- Entrypoint and Cmd (https://docs.docker.com/reference/dockerfile/#understand-how-cmd-and-entrypoint-interact)


def test_cmd_runs_when_no_command_is_given(busybox_rootfs, store_root):
    img = image_with(busybox_rootfs, cmd=["echo", "from", "cmd"])
    assert isobox.run(img).stdout == b"from cmd\n"


def test_command_replaces_cmd_and_follows_entrypoint(busybox_rootfs, store_root):
    img = image_with(busybox_rootfs, entrypoint=["echo", "entry"], cmd=["default"])
    assert isobox.run(img).stdout == b"entry default\n"
    assert isobox.run(img, ["given"]).stdout == b"entry given\n"


def test_entrypoint_option_replaces_entrypoint_and_drops_cmd(busybox_rootfs, store_root):
    img = image_with(busybox_rootfs, entrypoint=["echo", "entry"], cmd=["default"])
    assert isobox.run(img, entrypoint=["echo", "new"]).stdout == b"new\n"
    assert isobox.run(img, ["arg"], entrypoint="echo new").stdout == b"new arg\n"


def test_string_command_is_split_not_run_by_a_shell(busybox_image, store_root):
    assert isobox.run(busybox_image, "echo 'a  b' $HOME").stdout == b"a  b $HOME\n"


def test_no_command_at_all_is_a_clear_error(busybox_rootfs):
    with pytest.raises(isobox.InvalidOption, match="no command specified"):
        isobox.Container(image_with(busybox_rootfs))


# -- Env, WorkingDir, User, StopSignal


def test_caller_env_overrides_image_env_by_key(busybox_rootfs, store_root):
    img = image_with(busybox_rootfs, env=["A=image", "B=image", "PATH=/bin"])
    out = isobox.run(img, ["sh", "-c", "echo $A $B $C $PATH"], env={"B": "caller", "C": "new"}).stdout
    assert out == b"image caller new /bin\n"


def test_path_defaults_when_the_image_has_none(busybox_rootfs, store_root):
    out = isobox.run(image_with(busybox_rootfs), ["sh", "-c", "echo $PATH"]).stdout
    assert out == b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"


def test_image_working_dir_is_used_and_created(busybox_rootfs, store_root):
    assert isobox.run(image_with(busybox_rootfs, working_dir="/opt/app"), ["pwd"]).stdout == b"/opt/app\n"


def needs_ids() -> None:
    from isobox.host import idmap

    if not IS_ROOT and idmap.for_caller().single:
        pytest.skip("no /etc/subuid range for this user: only uid 0 exists in its containers")


@pytest.mark.parametrize(
    "user, expected",
    [
        ("app", "uid=1000(app) gid=1000(app) groups=50(staff),1000(app)"),
        ("1000", "uid=1000(app) gid=1000(app) groups=50(staff),1000(app)"),
        ("app:staff", "uid=1000(app) gid=50(staff) groups=50(staff)"),
        ("1000:50", "uid=1000(app) gid=50(staff) groups=50(staff)"),
        ("4242", "uid=4242 gid=0(root) groups=0(root)"),
        ("daemon", "uid=1(daemon) gid=1(daemon) groups=1(daemon)"),
    ],
)
def test_user_forms_resolve_against_the_images_passwd_and_group(busybox_image, store_root, user, expected):
    needs_ids()
    assert isobox.run(busybox_image, ["id"], user=user).stdout.decode().strip() == expected


def test_image_user_is_the_default(busybox_rootfs, store_root):
    needs_ids()
    assert isobox.run(image_with(busybox_rootfs, user="app"), ["id", "-u"]).stdout == b"1000\n"


def test_edits_to_the_user_database_are_seen_by_the_next_start(busybox_rootfs, store_root, tmp_path):
    """passwd and group are cached between starts (users.py): an edit must show, and a
    directory swapped for a symlink to elsewhere must still not be followed."""
    import shutil

    needs_ids()
    root = tmp_path / "root"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    image = isobox.Image.from_directory(root)
    with pytest.raises(isobox.InvalidOption, match="alice"):
        isobox.run(image, ["id", "-u"], user="alice")
    with open(root / "etc" / "passwd", "a") as f:
        f.write("alice:x:1234:1234::/home/alice:/bin/sh\n")
    assert isobox.run(image, ["id", "-u"], user="alice").stdout == b"1234\n"
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(root / "etc", elsewhere)
    shutil.rmtree(root / "etc")
    os.symlink(elsewhere, root / "etc")
    with pytest.raises(isobox.InvalidOption, match="alice"):
        isobox.run(image, ["id", "-u"], user="alice")


def test_unknown_user_name_is_refused_before_start(busybox_image, store_root):
    with pytest.raises(isobox.InvalidOption, match="unable to find user nosuch"):
        isobox.run(busybox_image, ["id"], user="nosuch")


def test_stop_uses_the_images_stop_signal(busybox_rootfs, store_root):
    img = image_with(busybox_rootfs, stop_signal="SIGUSR1")
    with isobox.Container(img, ["sleep", "30"], init=True) as c:
        time.sleep(0.1)
        assert c.stop(timeout=5) == 128 + signal.SIGUSR1


# -- mounts


def test_bind_mount_read_write_and_read_only(busybox_image, store_root, tmp_path):
    host = tmp_path / "shared"
    host.mkdir()
    (host / "in").write_text("from host")
    os.chmod(host, 0o777)
    result = isobox.run(busybox_image, ["sh", "-c", "cat /mnt/in; echo back > /mnt/out"],
                        mounts=[Bind(host, "/mnt")])
    assert result.stdout == b"from host"
    assert (host / "out").read_text() == "back\n"
    result = isobox.run(busybox_image, ["sh", "-c", "echo x > /ro/y 2>&1 || echo refused"],
                        mounts=[Bind(host, "/ro", read_only=True)])
    assert b"Read-only file system" in result.stderr and not (host / "y").exists()


def test_bind_mount_of_a_file(busybox_image, store_root, tmp_path):
    f = tmp_path / "config.ini"
    f.write_text("key=1\n")
    assert isobox.run(busybox_image, ["cat", "/etc/app/config.ini"],
                      mounts=[Bind(f, "/etc/app/config.ini", read_only=True)]).stdout == b"key=1\n"


def test_symlink_in_image_cannot_redirect_a_mount_to_the_host(busybox_rootfs, store_root, tmp_path):
    import shutil

    hostile = tmp_path / "hostile"
    shutil.copytree(busybox_rootfs, hostile, symlinks=True)
    target = tmp_path / "host-target"
    target.mkdir()
    os.symlink(str(target), hostile / "escape")          # absolute: would be the host's path
    os.symlink("../../../../../../" + str(target), hostile / "dotdot")
    src = tmp_path / "src"
    src.mkdir()
    (src / "payload").write_text("x")
    for dest in ("/escape", "/dotdot/sub"):
        try:
            isobox.run(isobox.Image.from_directory(hostile), ["true"], mounts=[Bind(src, dest)])
        except isobox.SetupError:
            pass  # refusing is fine too
    assert list(target.iterdir()) == [], "a mount landed on the host"


def test_named_volume_persists_and_is_shared(busybox_image, store_root):
    isobox.run(busybox_image, ["sh", "-c", "echo kept > /data/file"], mounts=[Volume("vol1", "/data")])
    out = isobox.run(busybox_image, ["cat", "/data/file"], mounts=[Volume("vol1", "/data", read_only=True)])
    assert out.stdout == b"kept\n"
    assert "vol1" in [v.name for v in isobox.volumes()]


def test_prune_removes_the_volumes_no_container_uses_and_only_when_asked(busybox_image, store_root):
    isobox.run(busybox_image, ["sh", "-c", "head -c 100000 /dev/zero > /data/f"], mounts=[Volume("idle", "/data")])
    with isobox.Container(busybox_image, ["sleep", "30"], mounts=[Volume("busy", "/data")]):
        assert isobox.prune().volumes == ()  # volumes hold data: only when asked
        assert [v.name for v in isobox.volumes()] == ["busy", "idle"]
        report = isobox.prune(volumes=True)
        assert report.volumes == ("idle",) and report.reclaimed >= 100000
        assert [v.name for v in isobox.volumes()] == ["busy"]
        # a container of this library has no options.json: its state.json is what counts
        with pytest.raises(isobox.StoreError, match="in use"):
            isobox.remove_volume("busy")
    assert isobox.prune(volumes=True).volumes == ("busy",)
    assert isobox.volumes() == []


def test_removing_a_volume_does_not_wait_for_a_pull(busybox_image, store_root):
    isobox.run(busybox_image, ["true"], mounts=[Volume("old", "/data")])
    store = isobox.Store.open(store_root)
    done = threading.Event()
    with store.in_use():  # what a pull holds from start to end
        worker = threading.Thread(target=lambda: (isobox.remove_volume("old"), done.set()), daemon=True)
        worker.start()
        assert done.wait(10), "remove_volume waited for the pull"
    assert isobox.volumes() == []


def test_volumes_of_a_container_whose_owner_died_are_not_in_use(busybox_image, store_root):
    isobox.run(busybox_image, ["true"], mounts=[Volume("orphan", "/data")])
    stale = store_root / "containers" / ("e" * 64)
    stale.mkdir()
    (stale / "lock").touch()  # nobody holds it: its owner is gone
    (stale / "state.json").write_text(json.dumps({"volumes": ["orphan"]}))
    try:
        assert isobox.prune(volumes=True).volumes == ("orphan",)
    finally:
        shutil.rmtree(stale)


def test_prune_keeps_every_volume_when_a_containers_state_cannot_be_read(busybox_image, store_root):
    isobox.run(busybox_image, ["true"], mounts=[Volume("kept", "/data")])
    odd = store_root / "containers" / ("f" * 64)
    odd.mkdir()
    (odd / "state.json").write_text("{not json")  # no lock yet: a container being created
    try:
        report = isobox.prune(volumes=True)
        assert report.volumes == () and any("keeping every volume" in w for w in report.warnings)
        assert [v.name for v in isobox.volumes()] == ["kept"]
    finally:
        shutil.rmtree(odd)


def test_tmpfs_mount_with_size_and_noexec(busybox_image, store_root):
    out = isobox.run(busybox_image, ["sh", "-c", "grep ' /scratch ' /proc/mounts; cp /bin/busybox /scratch/b; /scratch/b true || echo noexec"],
                     mounts=[Tmpfs("/scratch", size="4m")]).stdout.decode()
    assert "tmpfs /scratch tmpfs rw,nosuid,nodev,noexec" in out and "size=4096k" in out
    assert out.strip().endswith("noexec")


@pytest.mark.unit
def test_mount_options_are_validated(tmp_path):
    with pytest.raises(isobox.InvalidOption):
        Bind("relative", "/x")
    with pytest.raises(isobox.InvalidOption):
        Bind(tmp_path, "relative")
    with pytest.raises(isobox.InvalidOption):
        Tmpfs("/proc/x")
    with pytest.raises(isobox.InvalidOption):
        Volume("bad/name", "/x")


def test_etc_hosts_hostname_and_resolv_conf_are_provided(busybox_image, store_root):
    out = isobox.run(busybox_image, ["sh", "-c", "cat /etc/hostname; grep -c localhost /etc/hosts; test -f /etc/resolv.conf && echo resolv"],
                     hostname="web1").stdout
    assert out.split() == [b"web1", b"2", b"resolv"]


def test_host_network_shares_the_hosts_interfaces(busybox_image, store_root):
    """network="host" joins the caller's network namespace itself (docker run --network
    host). Compared by the namespace's identity, the device and inode of /proc/PID/ns/net
    (namespaces(7): equal for two processes exactly when they share it), not by listing
    interfaces, which any other program (podman, a VPN) may add or remove meanwhile."""
    host = os.stat("/proc/self/ns/net")
    probe = ["stat", "-L", "-c", "%d:%i", "/proc/self/ns/net"]
    shared = isobox.run(busybox_image, probe, network="host").stdout.decode().strip()
    assert shared == f"{host.st_dev}:{host.st_ino}"
    assert isobox.run(busybox_image, probe).stdout.decode().strip() not in ("", shared)  # "none": its own


# -- exec, tty, stdin, logs


def test_exec_joins_the_running_container(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sh", "-c", "echo hi > /tmp/mark; sleep 30"], hostname="joined") as c:
        time.sleep(0.2)
        r = c.exec(["sh", "-c", "cat /tmp/mark; hostname; echo $$; ps -o pid,comm | wc -l"])
        lines = r.stdout.split()
        assert lines[:3] == [b"hi", b"joined", b"2"] or lines[:2] == [b"hi", b"joined"]
        status = c.exec(["cat", "/proc/self/status"]).stdout.decode()
        assert "NoNewPrivs:\t1" in status
        assert "CapBnd:\t00000000a80425fb" in status


def test_exec_env_workdir_user_and_stdin(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sleep", "30"], env={"A": "container"}) as c:
        r = c.exec(["sh", "-c", "echo $A $B; pwd"], env={"B": "exec"}, workdir="/tmp")
        assert r.stdout == b"container exec\n/tmp\n"
        assert c.exec(["cat"], stdin=b"piped").stdout == b"piped"
        assert c.exec(["sh", "-c", "exit 7"]).exit_code == 7
        if IS_ROOT or not isobox_single_map():
            assert c.exec(["id", "-un"], user="app").stdout == b"app\n"


def isobox_single_map() -> bool:
    from isobox.host import idmap

    return idmap.for_caller().single


def test_exec_timeout_kills_the_exec_not_the_container(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        with pytest.raises(isobox.Timeout):
            c.exec(["sleep", "30"], timeout=0.3)
        assert c.status == "running"
        assert c.exec(["true"]).exit_code == 0


def test_exec_missing_command_is_command_not_found(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        with pytest.raises(isobox.CommandNotFound):
            c.exec(["nope"])


def test_exec_cannot_see_the_host_interpreter(busybox_image, store_root):
    """While joining, the helper is a copy of the Python process: it must not be reachable
    through /proc from the container (CVE-2019-5736)."""
    with isobox.Container(busybox_image, ["sleep", "30"], init=True) as c:
        r = c.exec(["sh", "-c", "readlink /proc/1/exe || echo hidden; cat /proc/1/cmdline | wc -c"])
        assert b"python" not in r.stdout
        assert r.stdout.startswith(b"hidden")


def test_exec_with_tty_gets_a_terminal(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        r = c.exec(["sh", "-c", "tty; test -t 0 && echo interactive; echo $TERM"], tty=True)
        assert r.stdout.split() == [b"/dev/pts/0", b"interactive", b"xterm"]


def read_terminal(master: int) -> bytes:
    """Everything a terminal's master gives until the other side is closed (EIO)."""
    data = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk


def test_container_with_tty_and_window_size(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sh", "-c", "sleep 0.3; stty size; tty"], tty=True) as c:
        assert c.pty is not None
        c.resize(33, 101)
        data = read_terminal(c.pty)
        assert c.wait(5) == 0
    assert data.split() == [b"33", b"101", b"/dev/pts/0"]


def test_stdin_true_keeps_stdin_open(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sh", "-c", "read line; echo got $line"], stdin=True) as c:
        assert c.stdin is not None
        time.sleep(0.2)
        assert c.status == "running"
        c.stdin.write(b"hello\n")
        c.stdin.close()
        assert c.wait(5) == 0
        assert c.logs("stdout") == b"got hello\n"


def test_logs_follow_yields_output_as_it_comes(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sh", "-c", "echo one; sleep 0.5; echo two >&2; echo three"]) as c:
        chunks = []
        started = time.monotonic()
        for chunk in c.logs(follow=True):
            chunks.append((time.monotonic() - started, chunk))
        assert b"".join(ch for _, ch in chunks).split() == [b"one", b"two", b"three"] or \
            sorted(b"".join(ch for _, ch in chunks).split()) == [b"one", b"three", b"two"]
        assert chunks[0][0] < 0.4  # the first line came before the container finished
        assert c.logs("stderr") == b"two\n"
        assert c.logs("stdout") == b"one\nthree\n"


def test_wait_distinguishes_signal_death_from_exit_code(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sh", "-c", "exit 137"]) as c:
        assert c.wait(5) == 137
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        c.kill("KILL")
        assert c.wait(5) == -9


def test_terminal_has_its_size_before_the_command_starts(busybox_image, store_root):
    with isobox.Container(busybox_image, ["stty", "size"], tty=True, tty_size=(40, 120)) as c:
        assert c.pty is not None
        data = read_terminal(c.pty)
        assert c.wait(5) == 0
    assert data.split() == [b"40", b"120"]
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        assert c.exec(["stty", "size"], tty=True, tty_size=(25, 90)).stdout.split() == [b"25", b"90"]
        assert c.exec(["stty", "size"], tty=True).stdout.split() == [b"24", b"80"]
