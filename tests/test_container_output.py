"""A container's output: pipes it cannot turn into host files, log files bounded by
Docker's rotation, and a full disk that neither blocks the container nor loses output
silently, nor makes a start or a state file lie (root and rootless where the host lets)."""

from __future__ import annotations

import json
import os
import pathlib
import stat
import subprocess

import pytest

import isobox

from support.host import IS_ROOT


def test_stdout_is_a_pipe_the_container_cannot_reopen_as_a_host_file(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sh", "-c",
                          "echo first; stat -L -c %F /proc/self/fd/1; : > /proc/self/fd/1; "
                          "chmod 4755 /proc/self/fd/1 2>/dev/null; echo second; sleep 30"]) as c:
        c.wait_for_log("second")
        log = c.dir / "stdout.log"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600  # not made setuid through fd 1
        assert c.logs("stdout") == b"first\nfifo\nsecond\n"  # not truncated through fd 1


def test_stdin_from_a_file_reaches_the_container_through_a_pipe(busybox_image, store_root, tmp_path):
    given = tmp_path / "input"
    given.write_bytes(b"line one\nline two\n")
    with open(given, "rb") as f:
        result = isobox.run(busybox_image, ["sh", "-c", "stat -L -c %F /proc/self/fd/0; cat; "
                            "echo tampered > /proc/self/fd/0"], stdin=f, timeout=30)
    assert result.stdout == b"fifo\nline one\nline two\n"
    assert given.read_bytes() == b"line one\nline two\n"


def test_input_of_any_size_is_fed(busybox_image, store_root):
    data = os.urandom(3 << 20)
    result = isobox.run(busybox_image, ["sh", "-c", "cat | wc -c"], input=data, timeout=60)
    assert result.stdout.strip() == str(len(data)).encode()


def test_logs_rotate_as_dockers_do(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sh", "-c", "head -c 500000 /dev/zero | tr '\\0' x"],
                          log_max_size="100k", log_max_files=3) as c:
        assert c.wait() == 0
        names = sorted(p.name for p in c.dir.glob("stdout.log*"))
        sizes = [(c.dir / n).stat().st_size for n in names]
        out = c.logs("stdout")
    assert names == ["stdout.log", "stdout.log.1", "stdout.log.2"]
    assert max(sizes) <= 100_000  # Docker's units: 100k is 100,000 bytes
    assert len(out) == sum(sizes) and out == b"x" * len(out)
    assert len(out) > 200_000


def test_log_options_are_checked_before_the_host_is_touched(busybox_image, store_root):
    with pytest.raises(isobox.InvalidOption):
        isobox.Container(busybox_image, ["true"], log_max_size="ten megs")
    with pytest.raises(isobox.InvalidOption):
        isobox.Container(busybox_image, ["true"], log_max_files=0)


@pytest.fixture
def small_store(tmp_path, monkeypatch):
    """A store on a 4 MiB filesystem of its own."""
    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(root)], check=True)
    monkeypatch.setenv("ISOBOX_ROOT", str(root / "store"))
    yield root / "store"
    subprocess.run(["umount", "-l", str(root)], check=True)


@pytest.mark.skipif(not IS_ROOT, reason="a small filesystem of its own needs root to mount")
def test_a_full_disk_drops_output_but_says_so(busybox_image, small_store):
    with isobox.Container(busybox_image, ["sh", "-c", "head -c 8000000 /dev/zero; echo done >&2"],
                          log_max_size=None) as c:
        assert c.wait(timeout=60) == 0  # never blocked by the full disk
        assert c.log_lost and "No space left on device" in c.log_lost[0]
        assert c.log_lost[0].startswith("stdout:")
        from isobox.runtime.state import read_state

        state = read_state(c.dir)
        assert state.status == "exited" and state.log_lost == c.log_lost


@pytest.mark.skipif(not IS_ROOT, reason="a small filesystem of its own needs root to mount")
def test_a_start_on_a_full_disk_names_the_step_and_path(busybox_image, small_store):
    isobox.Store.open(small_store)
    filler = small_store / "tmp" / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    try:
        with pytest.raises(isobox.ContainerError, match="No space left on device") as info:
            isobox.run(busybox_image, ["true"], timeout=30)
        assert str(small_store) in str(info.value)
        assert [p for p in (small_store / "containers").iterdir() if not p.name.startswith(".")] == []
    finally:
        filler.unlink()
    assert isobox.run(busybox_image, ["echo", "ok"], timeout=30).stdout == b"ok\n"


def test_exec_gets_pipes_only_and_returns_when_its_process_does(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sleep", "60"]) as c:
        r = c.exec(["sh", "-c", "stat -L -c %F /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2 >&2; cat"],
                   stdin=b"fed\n")
        assert r.stderr == b"fifo\nfifo\nfifo\n" and r.stdout == b"fed\n"
        assert c.exec(["sh", "-c", "stat -L -c %F /proc/self/fd/0"]).stdout == b"fifo\n"  # no stdin
        # a process left in the background keeps the pipes open: the exec still returns
        r = c.exec(["sh", "-c", "sleep 50 & echo started"], timeout=20)
        assert r.stdout == b"started\n"
        assert list(c.dir.glob("exec-*")) == []


def test_ps_never_shows_running_for_a_process_that_is_gone(tmp_path):
    # a state file its owner could not rewrite at exit (a full disk), its owner alive
    import fcntl

    from isobox.control.client import ContainerInfo

    cdir = tmp_path / "c"
    cdir.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (cdir / "state.json").write_text(json.dumps({"id": "c", "name": "n", "status": "running",
                                                 "pid": dead.pid, "exit_code": None}))
    fd = os.open(cdir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)  # its owner holds it
    try:
        info = ContainerInfo.from_dir(cdir)
        assert info is not None and info.status == "exited" and info.exit_code is None
        (cdir / "state.json").write_text(json.dumps({"id": "c", "name": "n", "status": "running",
                                                     "pid": os.getpid(), "pid_start": 1}))
        info = ContainerInfo.from_dir(cdir)  # a live pid that another process now has
        assert info is not None and info.status == "exited"
    finally:
        os.close(fd)
