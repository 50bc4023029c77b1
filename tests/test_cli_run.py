"""The ``isobox`` command's run, exec, ps, logs, stop, kill, rm, inspect, doctor and volume,
run as a user would (``python -m isobox`` in a subprocess, ISOBOX_ROOT a tmp dir), with
Docker's flags and exit statuses; terminals through real ptys; detached containers
controlled from other processes. As root and rootless."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pathlib
import pty
import re
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

import isobox
from isobox.cli.environment import env_file as read_env_file
from isobox.cli.format import exit_status
from isobox.cli.run import parse_tmpfs
from isobox.control.client import ContainerInfo, containers, get_container
from isobox.control.supervisor import run_detached

from support.host import IS_ROOT

ID_RE = re.compile(r"^[0-9a-f]{64}$")


# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def template_store(images: Any, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A store with busybox pulled through the Hub mirror, copied for each test."""
    root = tmp_path_factory.mktemp("cli-run-template") / "store"
    env = {**os.environ, "ISOBOX_REGISTRY_MIRROR": images.registry.url}
    proc = subprocess.run([sys.executable, "-m", "isobox", "--root", str(root), "pull", "-q", "busybox"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture
def root(template_store: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
         images: Any) -> Iterator[pathlib.Path]:
    """This test's store (busybox in it), as ISOBOX_ROOT; afterwards every container in it
    is removed, and no supervisor may outlive it."""
    store = tmp_path / "store"
    shutil.copytree(template_store, store, symlinks=True)
    monkeypatch.setenv("ISOBOX_ROOT", str(store))
    monkeypatch.setenv("ISOBOX_REGISTRY_MIRROR", images.registry.url)
    yield store
    left = containers(all=True, store=store)
    supervisors = [_supervisor_pid(i) for i in left]
    for info in left:
        try:
            get_container(info.id, store).remove(force=True)
        except isobox.IsoboxError:
            pass
    for pid in supervisors:
        if pid:
            _wait_gone(pid)


def isobox_cmd(*args: str, input: Optional[bytes] = None, timeout: float = 60,
               env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "isobox", *args], input=input, capture_output=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def ok(*args: str, **kw: Any) -> str:
    proc = isobox_cmd(*args, **kw)
    assert proc.returncode == 0, (proc.returncode, proc.stderr.decode())
    return proc.stdout.decode()


def started(*args: str) -> "subprocess.Popen[bytes]":
    """``isobox ARGS`` in the background (a foreground run seen from other processes)."""
    return subprocess.Popen([sys.executable, "-m", "isobox", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _supervisor_pid(info: ContainerInfo) -> Optional[int]:
    pid = info.options.supervisor_pid if info.options else None
    return int(pid) if pid else None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still alive"
        time.sleep(0.02)


def wait_for(predicate: Any, timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def container_dirs(root: pathlib.Path) -> List[str]:
    folder = root / "containers"
    return [p.name for p in folder.iterdir() if not p.name.startswith(".")] if folder.exists() else []


def ps(*flags: str) -> List[List[str]]:
    """`isobox ps` rows split on runs of 2+ spaces (the header dropped)."""
    lines = ok("ps", *flags).splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


def needs_ids() -> None:
    from isobox.host import idmap

    if not IS_ROOT and idmap.for_caller().single:
        pytest.skip("no /etc/subuid range for this user: only uid 0 exists in its containers")


# -- run: output, exit statuses ------------------------------------------------------------------------


def test_run_streams_stdout_and_stderr_and_exits_with_the_commands_status(root):
    proc = isobox_cmd("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, b"out\n", b"err\n")
    assert container_dirs(root) == []


def test_run_output_arrives_while_the_container_runs(root):
    p = started("run", "--rm", "busybox", "sh", "-c", "echo first; sleep 3; echo second")
    try:
        assert p.stdout is not None
        ready = select.select([p.stdout], [], [], 2.5)[0]
        assert ready, "nothing was printed before the container ended"
        assert p.stdout.readline() == b"first\n"
        assert p.poll() is None
    finally:
        out, _ = p.communicate(timeout=20)
    assert out == b"second\n" and p.returncode == 0


def test_output_order_within_a_stream_is_kept(root):
    script = "i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done"
    out = ok("run", "--rm", "busybox", "sh", "-c", script)
    assert out.split() == [f"line{i}" for i in range(2000)]


@pytest.mark.parametrize("args, status", [
    (["sh", "-c", "exit 0"], 0),
    (["sh", "-c", "exit 42"], 42),
    (["nope-not-here"], 127),
    (["/etc/passwd"], 126),
])
def test_exit_statuses_follow_docker(root, args, status):
    proc = isobox_cmd("run", "--rm", "busybox", *args)
    assert proc.returncode == status, proc.stderr
    if status >= 126:
        assert proc.stderr.startswith(b"isobox: ")
    assert container_dirs(root) == []


@pytest.mark.parametrize("args", [
    ["run", "--no-such-flag", "busybox", "true"],
    ["run", "--rm", "Not//A/Reference", "true"],
    ["run", "--rm", "no-such-image-here", "true"],
    ["run", "--rm", "--network", "bridge", "busybox", "true"],
    ["run", "--rm", "-v", "relative:path:zz", "busybox", "true"],
    ["run", "--rm", "-w", "relative", "busybox", "true"],
    ["run", "--rm", "--tmpfs", "/x:bogus", "busybox", "true"],
    ["run", "--rm", "-u", "nosuchuser", "busybox", "true"],
])
def test_isobox_failures_exit_125(root, args):
    proc = isobox_cmd(*args)
    assert proc.returncode == 125, proc.stderr
    assert proc.stderr
    assert container_dirs(root) == []


def test_death_by_signal_exits_128_plus_n(root):
    p = started("run", "--rm", "--name", "victim", "busybox", "sleep", "30")
    wait_for(lambda: any(r[-1] == "victim" for r in ps()), what="the container to run")
    assert ok("kill", "victim") == "victim\n"
    assert p.wait(timeout=20) == 128 + 9
    assert exit_status(-15) == 143 and exit_status(3) == 3


def test_run_pulls_a_missing_image_with_progress_on_stderr(images, tmp_path, monkeypatch):
    monkeypatch.setenv("ISOBOX_ROOT", str(tmp_path / "fresh"))
    monkeypatch.setenv("ISOBOX_REGISTRY_MIRROR", images.registry.url)
    proc = isobox_cmd("run", "--rm", "busybox", "echo", "hi")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"hi\n"
    err = proc.stderr.decode()
    assert "Unable to find image 'busybox:latest' locally" in err
    assert "Pull complete" in err and "Status: Downloaded newer image for busybox:latest" in err
    again = isobox_cmd("run", "--rm", "busybox", "echo", "hi")
    assert again.stderr == b""  # cached: no pull, no network


def imported_by(*args: str) -> set:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "isobox", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}


def test_commands_import_only_what_they_need(root):
    """The speed of the command is mostly imports: run of a cached image needs no registry
    client, and no socket module until a client connects; the clients of a running
    container (exec, ps) need none of the container machinery."""
    imported = imported_by("run", "--rm", "busybox", "true")
    assert "isobox.runtime.container" in imported  # the check itself works
    assert not {"requests", "urllib3", "isobox.images.registry", "socket", "isobox.control.client"} & imported
    ok("run", "-d", "--name", "svc", "busybox", "sleep", "60")
    for args in (("exec", "svc", "true"), ("ps",)):
        imported = imported_by(*args)
        assert "isobox.control.client" in imported
        assert not {"isobox.runtime.container", "isobox.host.native", "isobox.images.image", "isobox.images.registry"} & imported


# -- run: flags -------------------------------------------------------------------------------------------


def test_env_flags_and_env_file(root, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# comment\n\nFROM_FILE=file value\nOVERRIDDEN=file\nPASSED\n  SPACED=x\n")
    out = ok("run", "--rm", "--env-file", str(env_file), "-e", "OVERRIDDEN=flag", "-e", "FROM_CALLER",
             "-e", "EMPTY=", "busybox", "sh", "-c",
             'echo "$FROM_FILE|$OVERRIDDEN|$PASSED|$FROM_CALLER|${EMPTY-unset}|$SPACED"',
             env={"PASSED": "from env", "FROM_CALLER": "caller"})
    assert out == "file value|flag|from env|caller||x\n"


def test_env_file_missing_is_a_125(root, tmp_path):
    proc = isobox_cmd("run", "--rm", "--env-file", str(tmp_path / "nope"), "busybox", "true")
    assert proc.returncode == 125 and b"env file" in proc.stderr


def test_workdir_user_hostname(root):
    needs_ids()
    out = ok("run", "--rm", "-w", "/srv/app", "-u", "app", "--hostname", "boxy", "busybox",
             "sh", "-c", "pwd; id -un; hostname")
    assert out.split() == ["/srv/app", "app", "boxy"]


def test_user_by_uid_and_gid(root):
    needs_ids()
    assert ok("run", "--rm", "-u", "1000:65534", "busybox", "id", "-u").strip() == "1000"


def test_bind_mount_read_write_and_read_only(root, tmp_path):
    host = tmp_path / "share"
    host.mkdir()
    (host / "in.txt").write_text("from host")
    ok("run", "--rm", "-v", f"{host}:/data", "busybox", "sh", "-c", "cat /data/in.txt > /data/out.txt")
    assert (host / "out.txt").read_text() == "from host"
    proc = isobox_cmd("run", "--rm", "-v", f"{host}:/data:ro", "busybox", "sh", "-c", "echo x > /data/new")
    assert proc.returncode != 0 and b"Read-only file system" in proc.stderr
    assert not (host / "new").exists()


def test_named_volume_outlives_containers_and_volume_commands(root):
    ok("run", "--rm", "-v", "keep:/v", "busybox", "sh", "-c", "echo persisted > /v/f")
    assert ok("run", "--rm", "-v", "keep:/v:ro", "busybox", "cat", "/v/f") == "persisted\n"
    listing = ok("volume", "ls").splitlines()
    assert listing[0].split() == ["DRIVER", "VOLUME", "NAME"] and listing[1].split() == ["local", "keep"]
    ok("run", "--name", "user", "-v", "keep:/v", "busybox", "true")  # kept: uses the volume
    busy = isobox_cmd("volume", "rm", "keep")
    assert busy.returncode == 125 and b"in use" in busy.stderr
    ok("volume", "create", "spare")
    assert "Deleted Volumes:" not in ok("prune")  # volumes only with --volumes, as Docker
    pruned = ok("prune", "--volumes")
    assert "Deleted Volumes:\n  spare\n" in pruned and "keep" not in pruned
    ok("rm", "user")
    assert ok("volume", "rm", "keep") == "keep\n"
    assert ok("volume", "ls", "-q") == ""
    assert isobox_cmd("volume", "rm", "keep").returncode == 125
    name = ok("volume", "create").strip()
    assert ID_RE.match(name) and ok("volume", "ls", "-q") == name + "\n"


def test_tmpfs_with_size_and_read_only_root(root):
    out = ok("run", "--rm", "--read-only", "--tmpfs", "/scratch:size=1m,mode=1770", "busybox", "sh", "-c",
             "echo hi > /scratch/f && cat /scratch/f; stat -c %a /scratch; df -k /scratch | tail -1;"
             " touch /nope 2>&1 || echo root-ro")
    lines = out.splitlines()
    assert lines[0] == "hi" and lines[1] == "1770"
    assert lines[2].split()[1] == "1024"
    assert "Read-only file system" in lines[3] and lines[4] == "root-ro"


def test_entrypoint_replaces_the_images_and_is_not_split(root):
    assert ok("run", "--rm", "--entrypoint", "echo", "busybox", "a", "b") == "a b\n"
    proc = isobox_cmd("run", "--rm", "--entrypoint", "echo two", "busybox")
    assert proc.returncode == 127  # one executable called "echo two", as Docker does
    assert isobox_cmd("run", "--rm", "--entrypoint", "", "busybox").returncode == 125  # nothing to run


def test_init_runs_a_minimal_pid_1(root):
    assert ok("run", "--rm", "busybox", "sh", "-c", "echo $$") == "1\n"
    assert ok("run", "--rm", "--init", "busybox", "sh", "-c", "echo $$") == "2\n"


def test_network_none_and_host(root):
    def interfaces(*flags: str) -> List[str]:
        out = ok("run", "--rm", *flags, "busybox", "cat", "/proc/net/dev")
        return sorted(line.split(":")[0].strip() for line in out.splitlines()[2:])

    assert interfaces() == ["lo"]
    assert interfaces("--network", "none") == ["lo"]
    host = sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:])
    assert interfaces("--network", "host") == host


def test_platform_selects_the_image_variant(root, images):
    ref = images.multiarch.reference
    proc = isobox_cmd("run", "--rm", "--platform", "linux/arm64", ref, "true")
    assert proc.returncode == 0, proc.stderr
    listing = ok("images")
    assert "linux/arm64" in listing
    doc = json.loads(ok("inspect", ref))
    assert doc[0]["Config"]["Labels"]["org.isobox.test.arch"] == "arm64"


def test_name_conflicts_exit_125(root):
    ok("run", "--name", "twin", "busybox", "true")
    proc = isobox_cmd("run", "--rm", "--name", "twin", "busybox", "true")
    assert proc.returncode == 125 and b"already in use" in proc.stderr
    assert isobox_cmd("run", "--rm", "--name", "bad name", "busybox", "true").returncode == 125


# -- stdin and terminals ----------------------------------------------------------------------------


def test_interactive_passes_stdin_and_without_it_stdin_is_empty(root):
    assert ok("run", "--rm", "-i", "busybox", "sh", "-c", "cat; echo end", input=b"piped\n") == "piped\nend\n"
    assert ok("run", "--rm", "busybox", "sh", "-c", "cat; echo end", input=b"ignored\n") == "end\n"


def test_it_without_a_terminal_is_refused(root):
    proc = isobox_cmd("run", "--rm", "-it", "busybox", "true", input=b"")
    assert proc.returncode == 125 and b"not a TTY" in proc.stderr


class Terminal:
    """A real pty: the isobox command's terminal, driven from the master side."""

    def __init__(self, argv: List[str], rows: int = 24, cols: int = 80) -> None:
        self.master, slave = pty.openpty()
        self.set_size(rows, cols)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        self.slave = slave
        self.output = b""

    def set_size(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def read_until(self, pattern: bytes, timeout: float = 10) -> bytes:
        deadline = time.monotonic() + timeout
        while pattern not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {self.output!r}"
            if select.select([self.master], [], [], left)[0]:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    break
                self.output += chunk
        return self.output

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def lflags(self) -> int:
        return int(termios.tcgetattr(self.slave)[3])

    def finish(self, timeout: float = 20) -> int:
        code = self.proc.wait(timeout=timeout)
        while select.select([self.master], [], [], 0.2)[0]:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.output += chunk
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def terminal() -> Iterator[Any]:
    made: List[Terminal] = []

    def make(*args: str, rows: int = 24, cols: int = 80) -> Terminal:
        t = Terminal([sys.executable, "-m", "isobox", *args], rows, cols)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def test_tty_gets_raw_mode_window_size_and_restores_the_terminal(root, terminal):
    # the sleep: the terminal is sized right after the command starts (see the report)
    term = terminal("run", "--rm", "-it", "busybox", "sh", "-c",
                    "sleep 0.3; stty size; tty; echo $TERM; read line; echo got:$line; read again; stty size",
                    rows=37, cols=111)
    before = term.lflags()
    assert before & termios.ECHO and before & termios.ICANON
    term.read_until(b"xterm")
    lflags = term.lflags()
    assert not lflags & termios.ECHO and not lflags & termios.ICANON  # raw while attached
    term.write(b"typed\r")
    term.read_until(b"got:typed")
    term.set_size(50, 132)  # the kernel sends SIGWINCH to the command's process group
    time.sleep(0.3)
    term.write(b"\r")
    out = term.read_until(b"50 132")
    assert term.finish() == 0
    lines = out.replace(b"\r\n", b"\n").split(b"\n")
    assert lines[:3] == [b"37 111", b"/dev/pts/0", b"xterm"]
    assert out.count(b"typed") == 2  # echoed once, by the container's terminal, and printed once
    assert b"\r\n" in out  # the container's terminal translates newlines: nothing cooked ours
    assert term.lflags() == before


def test_tty_passes_ctrl_c_to_the_container_as_a_key(root, terminal):
    term = terminal("run", "--rm", "-it", "busybox", "sh", "-c",
                    "trap 'echo interrupted; exit 5' INT; echo ready; while :; do sleep 0.1; done")
    term.read_until(b"ready")
    term.write(b"\x03")
    term.read_until(b"interrupted")
    assert term.finish() == 5


def test_tty_without_interactive_still_prints(root):
    proc = isobox_cmd("run", "--rm", "-t", "busybox", "sh", "-c", "test -t 1 && echo terminal")
    assert proc.returncode == 0 and proc.stdout == b"terminal\r\n"


# -- Ctrl-C --------------------------------------------------------------------------------------------------


def test_ctrl_c_stops_the_container_and_rm_leaves_nothing(root):
    p = started("run", "--rm", "busybox", "sh", "-c",
                "trap 'echo stopping; exit 7' TERM; echo up; while :; do sleep 0.1; done")
    assert p.stdout is not None
    assert p.stdout.readline() == b"up\n"
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=20)
    assert (p.returncode, out) == (7, b"stopping\n")
    assert container_dirs(root) == []


def test_ctrl_c_kills_after_the_stop_timeout_when_the_signal_is_ignored(root):
    p = started("run", "--stop-timeout", "1", "--name", "stubborn", "busybox", "sleep", "30")
    wait_for(lambda: any(r[-1] == "stubborn" for r in ps()), what="the container to run")
    began = time.monotonic()
    p.send_signal(signal.SIGINT)  # pid 1 without a handler ignores SIGTERM
    assert p.wait(timeout=20) == 137
    assert 0.9 < time.monotonic() - began < 8
    assert ps("-a")[0][4].startswith("Exited (137)")


# -- containers kept after they exit ----------------------------------------------------------------------------


def test_foreground_run_without_rm_keeps_the_exited_container(root):
    assert isobox_cmd("run", "--name", "kept", "busybox", "sh", "-c", "echo said; echo warned >&2; exit 4").returncode == 4
    assert ps() == []
    rows = ps("-a")
    assert len(rows) == 1 and rows[0][-1] == "kept" and rows[0][4].startswith("Exited (4)")
    proc = isobox_cmd("logs", "kept")
    assert (proc.stdout, proc.stderr) == (b"said\n", b"warned\n")
    ok("run", "--rm", "busybox", "true")  # another start sweeps stale state: not this
    assert [r[-1] for r in ps("-a")] == ["kept"]
    assert ok("rm", "kept") == "kept\n"
    assert ps("-a") == [] and container_dirs(root) == []
    ok("run", "--rm", "--name", "kept", "busybox", "true")  # the name is free again


# -- detached containers -----------------------------------------------------------------------------------------


def test_detached_lifecycle_across_processes(root):
    cid = ok("run", "-d", "--name", "web", "-e", "GREETING=hello", "busybox", "sh", "-c",
             "echo started; echo problem >&2; exec sleep 60").strip()
    assert ID_RE.match(cid)
    rows = ps()
    assert rows[0][0] == cid[:12] and rows[0][1] == "busybox" and rows[0][-1] == "web"
    assert rows[0][2].startswith('"sh -c') and rows[0][4].startswith("Up ")
    assert ok("ps", "-q") == cid[:12] + "\n"
    wait_for(lambda: isobox_cmd("logs", "web").stdout == b"started\n", what="the log")
    assert isobox_cmd("logs", cid[:8]).stderr == b"problem\n"
    assert ok("exec", "web", "sh", "-c", "echo $GREETING; cat /proc/1/cmdline | tr '\\0' ' '") == \
        "hello\nsleep 60 "
    assert ok("exec", "-i", "web", "sh", "-c", "tr a-z A-Z", input=b"shout\n") == "SHOUT\n"
    assert ok("exec", "-e", "X=1", "-w", "/tmp", "web", "sh", "-c", "echo $X; pwd") == "1\n/tmp\n"
    assert isobox_cmd("exec", "web", "sh", "-c", "exit 9").returncode == 9
    assert isobox_cmd("exec", "web", "no-such-command").returncode == 127
    doc = json.loads(ok("inspect", "web"))[0]
    assert doc["Id"] == cid and doc["Name"] == "/web" and doc["State"]["Running"] is True
    assert doc["Path"] == "sh" and doc["Config"]["Image"] == "busybox"
    assert "GREETING=hello" in doc["Config"]["Env"]
    supervisor = doc["State"]["Pid"] and _supervisor_pid(containers(store=root)[0])
    assert supervisor and _alive(supervisor)
    assert ok("stop", "-t", "1", "web") == "web\n"  # sleep as pid 1 ignores SIGTERM
    assert ps() == []
    assert ps("-a")[0][4].startswith("Exited (137)")
    _wait_gone(supervisor)  # the exited container is state on disk only
    assert isobox_cmd("logs", "web").stdout == b"started\n"
    assert isobox_cmd("exec", "web", "true").returncode == 125
    assert ok("rm", "web") == "web\n"
    assert container_dirs(root) == [] and isobox_cmd("logs", "web").returncode == 125


def test_detached_prints_the_id_only_once_running_and_setup_errors_exit_like_run(root):
    proc = isobox_cmd("run", "-d", "busybox", "nope-not-here")
    assert proc.returncode == 127 and proc.stdout == b"" and b"nope-not-here" in proc.stderr
    ok("run", "-d", "--name", "taken", "busybox", "sleep", "30")
    proc = isobox_cmd("run", "-d", "--name", "taken", "busybox", "sleep", "30")
    assert proc.returncode == 125 and b"already in use" in proc.stderr
    assert len(container_dirs(root)) == 1


def test_detached_rm_removes_itself_and_leaves_nothing(root):
    cid = ok("run", "-d", "--rm", "busybox", "sh", "-c", "sleep 0.3").strip()
    assert ID_RE.match(cid)
    wait_for(lambda: container_dirs(root) == [], what="the container to remove itself")
    assert ps("-a") == []


def test_rm_force_stops_a_running_detached_container_and_its_supervisor(root):
    ok("run", "-d", "--name", "doomed", "busybox", "sleep", "60")
    info = containers(store=root)[0]
    supervisor, pid = _supervisor_pid(info), info.pid
    assert supervisor and pid and _alive(pid)
    refused = isobox_cmd("rm", "doomed")
    assert refused.returncode == 125 and b"running" in refused.stderr
    assert ok("rm", "-f", "doomed") == "doomed\n"
    _wait_gone(pid)
    _wait_gone(supervisor)
    assert container_dirs(root) == []


def test_detached_container_that_exits_is_kept_until_removed(root):
    ok("run", "-d", "--name", "short", "busybox", "sh", "-c", "echo bye; exit 3")
    info = wait_for(lambda: [i for i in containers(all=True, store=root) if i.status == "exited"],
                    what="the container to exit")[0]
    assert info.exit_code == 3
    supervisor = _supervisor_pid(info)
    assert supervisor
    _wait_gone(supervisor)
    assert ps("-a")[0][4].startswith("Exited (3)")
    assert ok("logs", "short") == "bye\n"
    assert ok("stop", "short") == "short\n"  # stopping an exited container is fine (Docker)
    assert isobox_cmd("kill", "short").returncode == 125  # killing one is not
    ok("rm", "short")
    assert container_dirs(root) == []


def test_kill_with_a_signal_and_init(root):
    ok("run", "-d", "--init", "--name", "gentle", "busybox", "sleep", "60")
    assert ok("kill", "-s", "TERM", "gentle") == "gentle\n"
    handle = get_container("gentle", root)
    assert handle.wait(10) == 143  # init exits 128+N for its child's signal
    assert isobox_cmd("kill", "-s", "NOSUCHSIG", "gentle").returncode == 125
    ok("rm", "gentle")


def test_detached_tty_output_is_logged(root):
    ok("run", "-d", "-t", "--name", "term", "busybox", "sh", "-c", "sleep 0.3; tty; stty size; sleep 60")
    wait_for(lambda: b"24 80" in isobox_cmd("logs", "term").stdout, what="the tty's output")
    assert isobox_cmd("logs", "term").stdout.split() == [b"/dev/pts/0", b"24", b"80"]
    ok("rm", "-f", "term")


def test_detached_interactive_keeps_stdin_open(root):
    ok("run", "-d", "-i", "--name", "reader", "busybox", "sh", "-c", "cat; echo eof")
    time.sleep(0.5)
    assert ps()[0][-1] == "reader"  # cat still waits for input
    ok("rm", "-f", "reader")


def test_logs_follow_streams_until_the_container_exits(root):
    ok("run", "-d", "--name", "talker", "busybox", "sh", "-c", "echo one; sleep 1; echo two >&2; echo three")
    began = time.monotonic()
    proc = isobox_cmd("logs", "-f", "talker")
    assert time.monotonic() - began > 0.5  # it waited for the container
    assert proc.stdout == b"one\nthree\n" and proc.stderr == b"two\n"
    ok("rm", "talker")


def test_exec_into_a_foreground_container_from_another_process(root):
    p = started("run", "--rm", "--name", "fg", "busybox", "sh", "-c", "echo $$ > /tmp/pid; exec sleep 60")
    wait_for(lambda: isobox_cmd("exec", "fg", "cat", "/tmp/pid").stdout == b"1\n", what="exec")
    assert ok("stop", "-t", "1", "fg") == "fg\n"
    assert p.wait(timeout=20) == 137
    assert container_dirs(root) == []


def test_control_socket_is_0600_whatever_the_umask(root):
    cid = subprocess.run([sys.executable, "-m", "isobox", "run", "-d", "busybox", "sleep", "60"],
                         capture_output=True, text=True, timeout=60, preexec_fn=lambda: os.umask(0)).stdout.strip()
    sock = root / "containers" / cid / "control.sock"
    assert os.lstat(sock).st_mode == 0o140600  # a socket, rw for its owner only


@pytest.mark.skipif(not IS_ROOT, reason="connecting as another uid needs root")
def test_control_socket_refuses_other_users_even_when_they_can_connect(root):
    cid = ok("run", "-d", "busybox", "sleep", "60").strip()
    cdir = root / "containers" / cid
    os.chmod(cdir / "control.sock", 0o666)  # past the first wall, the peer's uid is checked
    os.chmod(cdir, 0o711)
    dfd = os.open(cdir, os.O_PATH | os.O_DIRECTORY)
    client = ("import json, socket, sys; s = socket.socket(socket.AF_UNIX);"
              f"s.connect('/proc/self/fd/{dfd}/control.sock'); s.sendall(b'{{\"op\": \"info\"}}\\n');"
              "sys.stdout.write(s.makefile().readline())")
    try:
        proc = subprocess.run([sys.executable, "-c", client], user=65534, group=65534, pass_fds=[dfd],
                              capture_output=True, text=True, timeout=30)
    finally:
        os.close(dfd)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"ok": False, "error": "ContainerError", "message": "permission denied"}
    assert get_container(cid, root).status == "running"


def test_exec_tty_through_a_real_terminal(root, terminal):
    ok("run", "-d", "--name", "box", "busybox", "sleep", "60")
    term = terminal("exec", "-it", "box", "sh", "-c", "sleep 0.3; tty; stty size; read x; echo got:$x; exit 6",
                    rows=30, cols=90)
    term.read_until(b"30 90")
    term.write(b"key\r")
    term.read_until(b"got:key")
    assert term.finish() == 6
    assert term.output.replace(b"\r\n", b"\n").split(b"\n")[:3] == [b"/dev/pts/0", b"30 90", b"key"]
    ok("rm", "-f", "box")


def test_a_terminal_that_reports_0x0_gets_the_default_size(root, terminal):
    """`script` and some CI terminals report 0 rows and 0 columns: podman (and Docker)
    proceed, and so does isobox, with 24x80; a resize to 0x0 keeps the size it had."""
    term = terminal("run", "--rm", "-it", "busybox", "sh", "-c",
                    "sleep 0.3; stty size; read x; stty size", rows=0, cols=0)
    term.read_until(b"24 80")
    term.set_size(0, 0)  # SIGWINCH to 0x0
    time.sleep(0.3)
    term.write(b"\r")
    assert term.finish() == 0, term.output
    assert term.output.replace(b"\r\n", b"\n").split(b"\n").count(b"24 80") == 2
    ok("run", "-d", "--name", "zero", "busybox", "sleep", "60")
    term = terminal("exec", "-it", "zero", "sh", "-c", "sleep 0.3; stty size", rows=0, cols=0)
    assert term.finish() == 0, term.output
    assert b"24 80" in term.output
    ok("rm", "-f", "zero")


# What the container does with the stdio it is given: reopen it through /proc/self/fd
# with truncation, and change its mode (chmod follows the magic link to the file).
HOSTILE = ("echo from-exec; : > /proc/self/fd/1; chmod 600 /proc/self/fd/1; "
           "chmod 666 /proc/self/fd/0 /proc/self/fd/2; echo after; true")


def test_exec_hands_the_container_pipes_never_the_callers_files(root, tmp_path):
    ok("run", "-d", "--name", "thief", "busybox", "sleep", "60")
    log = tmp_path / "caller.log"
    log.write_text("precious\n")
    os.chmod(log, 0o640)
    null_ctime = os.stat(os.devnull).st_ctime_ns
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        proc = subprocess.run([sys.executable, "-m", "isobox", "exec", "thief", "sh", "-c", HOSTILE],
                              stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(fd)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text() == "precious\nfrom-exec\nafter\n"  # appended, never truncated
    assert stat.S_IMODE(log.stat().st_mode) == 0o640
    assert os.stat(os.devnull).st_ctime_ns == null_ctime  # our /dev/null was not handed over either
    ok("rm", "-f", "thief")


def test_the_library_exec_hands_the_container_pipes_never_the_callers_files(root, tmp_path):
    handle = run_detached("busybox", ["sleep", "60"], name="thief2", store=root)
    try:
        log = tmp_path / "caller.log"
        log.write_text("precious\n")
        os.chmod(log, 0o640)
        null_ctime = os.stat(os.devnull).st_ctime_ns
        fds = open_fds()
        out = os.open(log, os.O_WRONLY | os.O_APPEND)
        try:
            with handle.exec_start(["sh", "-c", HOSTILE], stdio=(-1, out, out)) as proc:
                assert proc.wait(30) == 0
        finally:
            os.close(out)
        assert log.read_text() == "precious\nfrom-exec\nafter\n"
        assert stat.S_IMODE(log.stat().st_mode) == 0o640
        result = handle.exec(["sh", "-c", HOSTILE + "; cat"], stdin=b"input\n")
        assert (result.exit_code, result.stdout) == (0, b"from-exec\nafter\ninput\n")
        assert handle.exec(["sh", "-c", HOSTILE]).stdout == b"from-exec\nafter\n"
        assert os.stat(os.devnull).st_ctime_ns == null_ctime
        assert open_fds() == fds
    finally:
        handle.remove(force=True)


def test_the_server_refuses_stdio_that_is_not_a_pipe_or_a_socket(root, tmp_path):
    """Defense in depth, for clients other than isobox's own: a file, a terminal or a
    named FIFO given as an exec's stdio would let the container reopen or chmod it."""
    from isobox.control.client import connect

    handle = run_detached("busybox", ["sleep", "60"], name="strict", store=root)
    try:
        victim = tmp_path / "victim"
        victim.write_text("precious\n")
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        r, w = os.pipe()
        cases = [("a regular file", os.open(victim, os.O_RDWR)),
                 ("a named FIFO", os.open(fifo, os.O_RDWR)),
                 ("a device", os.open(os.devnull, os.O_RDWR))]
        try:
            for kind, fd in cases:
                conn = connect(handle.path)
                assert conn is not None
                conn.send({"op": "exec", "argv": ["sh", "-c", ": > /proc/self/fd/1"]}, [r, fd, w])
                reply = conn.recv(timeout=10)
                conn.close()
                assert reply is not None and not reply["ok"], (kind, reply)
                assert reply["error"] == "InvalidOption" and "stdout" in reply["message"] \
                    and kind in reply["message"], reply
        finally:
            for _, fd in cases:
                os.close(fd)
            os.close(r)
            os.close(w)
        assert victim.read_text() == "precious\n"
    finally:
        handle.remove(force=True)


def test_exec_user(root):
    needs_ids()
    ok("run", "-d", "--name", "users", "busybox", "sleep", "60")
    assert ok("exec", "-u", "app", "users", "id", "-un") == "app\n"
    ok("rm", "-f", "users")


def _first_container_dir(root: pathlib.Path, name: str) -> pathlib.Path:
    """The state directory of the first container whose ``name`` file appears, polled
    tightly: the tests below signal an owner in the first moments it is visible."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for d in (root / "containers").glob("*/" + name):
            return d.parent
        time.sleep(0.0005)
    raise AssertionError(f"no container dir with {name}")


def test_ctrl_c_as_soon_as_the_container_is_listed_stops_it(root):
    """A Ctrl-C from the moment `ps` lists the container takes the stop path (stop signal,
    SIGKILL after the timeout: 137), never an interrupt that leaves its status unknown."""
    p = started("run", "--stop-timeout", "1", "--name", "early", "busybox", "sleep", "30")
    cdir = _first_container_dir(root, "state.json")
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=20) == 137, p.stderr.read() if p.stderr else b""
    assert ps("-a")[0][4].startswith("Exited (137)")
    assert cdir.exists()


def test_sigterm_as_soon_as_the_supervisor_is_recorded_stops_the_container(root):
    """The supervisor handles SIGTERM from the moment its pid is on record."""
    proc = started("run", "-d", "--stop-timeout", "1", "--name", "early", "busybox", "sleep", "60")
    cdir = _first_container_dir(root, "options.json")
    pid = int(json.loads((cdir / "options.json").read_text())["supervisor_pid"])
    os.kill(pid, signal.SIGTERM)
    proc.wait(timeout=20)
    _wait_gone(pid)
    assert ps("-a")[0][4].startswith("Exited (137)")


def test_a_container_that_just_ended_shows_the_status_its_owner_records(root):
    """Between a detached container's end and its supervisor's record of it (here: the
    supervisor stopped for a moment), a reader waits for the record instead of showing an
    exit code of None."""
    ok("run", "-d", "--name", "brief", "busybox", "sh", "-c", "sleep 0.5; exit 4")
    info = containers(store=root)[0]
    supervisor = _supervisor_pid(info)
    assert supervisor and info.pid
    os.kill(supervisor, signal.SIGSTOP)
    try:
        wait_for(lambda: not _alive(info.pid), what="the container to end")  # a zombie now
        threading.Timer(0.5, os.kill, (supervisor, signal.SIGCONT)).start()
        seen = containers(all=True, store=root)[0]
    finally:
        os.kill(supervisor, signal.SIGCONT)
    assert (seen.status, seen.exit_code) == ("exited", 4)


def test_commands_on_unknown_containers_exit_125(root):
    for args in (["exec", "ghost", "true"], ["logs", "ghost"], ["stop", "ghost"], ["kill", "ghost"],
                 ["rm", "ghost"], ["inspect", "ghost"]):
        proc = isobox_cmd(*args)
        assert proc.returncode == 125, args
        assert b"ghost" in proc.stderr


def test_stop_and_rm_accept_several_containers_and_report_each(root):
    ok("run", "-d", "--name", "a1", "busybox", "sleep", "60")
    ok("run", "-d", "--name", "a2", "busybox", "sleep", "60")
    proc = isobox_cmd("rm", "-f", "a1", "ghost", "a2")
    assert proc.returncode == 125
    assert proc.stdout == b"a1\na2\n" and b"ghost" in proc.stderr
    assert container_dirs(root) == []


def test_supervisor_stops_its_container_on_sigterm_and_keeps_it(root):
    ok("run", "-d", "--stop-timeout", "1", "--name", "svc", "busybox", "sleep", "60")
    info = containers(store=root)[0]
    supervisor = _supervisor_pid(info)
    assert supervisor
    os.kill(supervisor, signal.SIGTERM)
    _wait_gone(supervisor)
    assert info.pid is not None
    _wait_gone(info.pid)  # reaped by the supervisor, or killed at its exit (PDEATHSIG)
    assert ps("-a")[0][4].startswith("Exited (137)")


# -- inspect, doctor ---------------------------------------------------------------------------------------------


def test_inspect_image_and_missing_objects(root, images):
    doc = json.loads(ok("inspect", "busybox"))
    assert len(doc) == 1
    image = doc[0]
    assert image["RepoTags"] == ["busybox:latest"]
    assert image["Config"]["Cmd"] == ["sh"]
    assert image["RootFS"]["Layers"] == list(images.hub_busybox.diff_ids)
    assert image["Id"] == images.hub_busybox.config_digest
    proc = isobox_cmd("inspect", "busybox", "nothing-here")
    assert proc.returncode == 125 and len(json.loads(proc.stdout)) == 1


def test_inspect_container_reports_options(root, tmp_path):
    ok("run", "--name", "opts", "--read-only", "--init", "-v", f"{tmp_path}:/h:ro", "--tmpfs", "/t:size=1m",
       "-w", "/tmp", "--hostname", "hn", "busybox", "true")
    doc = json.loads(ok("inspect", "opts"))[0]
    assert doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 0
    assert doc["HostConfig"]["ReadonlyRootfs"] is True and doc["HostConfig"]["Init"] is True
    assert doc["HostConfig"]["Binds"] == [f"{tmp_path}:/h:ro"]
    assert doc["HostConfig"]["Tmpfs"] == {"/t": "size=1m,mode=1777"}
    assert doc["Config"]["WorkingDir"] == "/tmp" and doc["Config"]["Hostname"] == "hn"
    assert doc["Mounts"][0]["RW"] is False
    options = containers(all=True, store=root)[0].path / "options.json"
    assert options.stat().st_mode & 0o077 == 0  # the environment may hold secrets
    ok("rm", "opts")


def test_doctor_prints_the_report(root):
    proc = isobox_cmd("doctor")
    report = isobox.doctor()
    assert proc.returncode == (0 if report.ok else 1)
    assert proc.stdout.decode().strip() == str(report).strip()


# -- the library side -------------------------------------------------------------------------------------------


def open_fds() -> List[str]:
    return sorted(os.listdir("/proc/self/fd"))


def test_library_detached_container_and_handles(root):
    fds = open_fds()
    handle = run_detached("busybox", ["sh", "-c", "echo ready; sleep 60"], name="lib", store=root)
    try:
        assert handle.name == "lib" and handle.status == "running"
        assert [i.name for i in containers(store=root)] == ["lib"]
        result = handle.exec(["sh", "-c", "cat; echo err >&2; exit 2"], stdin=b"in\n")
        assert (result.exit_code, result.stdout, result.stderr) == (2, b"in\n", b"err\n")
        with pytest.raises(isobox.Timeout):
            handle.exec(["sleep", "30"], timeout=0.3)
        # the client let go of it: its owner killed it
        wait_for(lambda: b"sleep 30" not in handle.exec(["ps", "-o", "args"]).stdout, what="the exec to die")
        with pytest.raises(isobox.CommandNotFound):
            handle.exec(["nope"])
        with pytest.raises(isobox.Timeout):
            handle.wait(0.2)
        assert handle.stop(timeout=1) == -9
        assert handle.wait() == -9 and handle.status == "exited"
        assert handle.logs() == b"ready\n"
    finally:
        handle.remove(force=True)
    assert handle.status == "removed"
    with pytest.raises(isobox.ContainerNotFound):
        get_container("lib", root)
    assert open_fds() == fds


def test_library_containers_cannot_be_controlled_from_other_processes_but_are_listed(root):
    image = isobox.Image.get("busybox", store=root)
    with isobox.Container(image, ["sleep", "30"], name="owned", store=root) as c:
        info = [i for i in containers(store=root) if i.name == "owned"][0]
        assert info.id == c.id and info.owner_pid == os.getpid()
        proc = isobox_cmd("stop", "owned")
        assert proc.returncode == 125 and b"owned by process" in proc.stderr
        assert c.status == "running"


def test_a_detached_containers_options_keep_their_shape_from_the_caller_to_its_record(root):
    """What run_detached is given becomes a ContainerConfig once, in the caller: its JSON
    form goes to the supervisor and into options.json, and reads back equal."""
    from isobox.runtime.config import ContainerConfig, config_from_json

    asked = dict(env={"A": "1"}, hostname="shape", init=True, mounts=[isobox.Tmpfs("/scratch", size="1m")],
                 log_max_size="1m", log_max_files=2, rlimits={"nofile": (64, 128)}, workdir="/tmp")
    handle = run_detached("busybox", "sleep 60", name="shape", store=root, stdin=True, **asked)
    try:
        recorded = handle.info().options
        assert recorded is not None and recorded.detached and recorded.stdin and recorded.image == "busybox"
        assert config_from_json(recorded.config) == ContainerConfig.from_options("sleep 60", name="shape", **asked)
        assert handle.exec(["sh", "-c", "grep 'open files' /proc/1/limits; echo $A; hostname"]).stdout.split() \
            == [b"Max", b"open", b"files", b"64", b"128", b"files", b"1", b"shape"]
    finally:
        handle.remove(force=True)


def test_a_bad_option_of_a_detached_container_fails_before_a_supervisor_starts(root):
    with pytest.raises(isobox.InvalidOption, match="pids_limit"):
        run_detached("busybox", ["true"], store=root, pids_limit="many")
    with pytest.raises(isobox.InvalidOption, match="unknown rlimit"):
        run_detached("busybox", ["true"], store=root, rlimits={"nofiles": 1})
    assert container_dirs(root) == []


def test_id_prefixes_must_be_unique(root):
    a = ok("run", "--name", "p1", "busybox", "true").strip() or containers(all=True, store=root)[0].id
    ids = [i.id for i in containers(all=True, store=root)]
    assert get_container(ids[0][:5], root).id == ids[0]
    with pytest.raises(isobox.ContainerNotFound, match="no such container"):
        get_container("zz-nothing", root)


# -- parsers -------------------------------------------------------------------------------------------------------

keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00"), max_size=20)


@pytest.mark.unit
@given(st.lists(st.tuples(keys, values), max_size=8))
def test_env_file_lines_are_taken_verbatim(tmp_path_factory, pairs):
    path = tmp_path_factory.mktemp("envfile") / "env"
    path.write_bytes(("".join(f"{k}={v}\n" for k, v in pairs) + "# not a variable\n\n").encode())
    assert read_env_file(str(path)) == [f"{k}={v}" for k, v in pairs]


@pytest.mark.unit
@given(st.integers(0, 1 << 20), st.sampled_from(["", "k", "m", "g"]), st.integers(0, 0o7777), st.booleans())
def test_tmpfs_options_parse(size, unit, mode, exec_):
    spec = f"/mnt/t:size={size}{unit},mode={mode:o},{'exec' if exec_ else 'noexec'},nosuid"
    t = parse_tmpfs(spec)
    assert (t.target, t.size, t.mode, t.exec) == ("/mnt/t", f"{size}{unit}", mode, exec_)


@pytest.mark.unit
@given(st.text(max_size=30))
def test_tmpfs_parser_only_raises_isobox_errors(text):
    try:
        parse_tmpfs(text)
    except isobox.IsoboxError:
        pass



def test_run_limits_and_seccomp_flags(root):
    """--security-opt seccomp=unconfined turns the filter off; --memory reaches the
    container's cgroup (as root: the OOM killer ends it, exit 137)."""
    assert ok("run", "--rm", "--security-opt", "seccomp=unconfined", "busybox",
              "grep", "^Seccomp:", "/proc/self/status") == "Seccomp:\t0\n"
    bad = isobox_cmd("run", "--rm", "--security-opt", "apparmor=x", "busybox", "true")
    assert bad.returncode == 125 and b"seccomp=unconfined" in bad.stderr
    if os.geteuid() == 0:
        oom = isobox_cmd("run", "--rm", "-m", "16m", "--pids-limit", "20", "--cpus", "1",
                         "busybox", "sh", "-c", "x=a; while true; do x=$x$x; done")
        assert oom.returncode == 128 + 9, oom
    assert container_dirs(root) == []


QUICK_EXIT = """
import atexit, sys, threading, time
class Finalized:
    def __del__(self):
        print("finalized", flush=True)
keep = Finalized()  # freed only by the interpreter's teardown
atexit.register(lambda: print("atexit ran", flush=True))
if sys.argv[1] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.3), print("late thread", flush=True))).start()
sys.argv = ["isobox", "--root", sys.argv[2], "images"]
from isobox.cli import entry
print("before", end="")  # unflushed: the quick exit must flush it
entry()
"""


@pytest.mark.parametrize("case", ["plain", "thread"])
def test_the_command_exits_quickly_but_keeps_what_an_exit_owes(case, tmp_path):
    """cli.entry skips the interpreter's teardown with os._exit: stdout is still flushed,
    atexit handlers still run, and a non-daemon thread is still waited for (by the
    ordinary exit, which then also tears down)."""
    done = subprocess.run([sys.executable, "-c", QUICK_EXIT, case, str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("beforeREPOSITORY")
    assert "atexit ran" in done.stdout
    assert ("late thread" in done.stdout) == (case == "thread")
    assert ("finalized" in done.stdout) == (case == "thread")  # teardown only when waited


def test_the_command_collects_garbage_at_a_commands_pace():
    """cli.entry sets the collector's threshold (cli.GC_THRESHOLD) before the command runs,
    and a long command's cyclic garbage is still collected."""
    probe = ("import gc, sys, isobox.cli as cli\n"
             "def main():\n"
             "    seen = gc.get_stats()[0]['collections']\n"
             "    for _ in range(3 * cli.GC_THRESHOLD):\n"
             "        a = []; a.append(a)\n"
             "    print(gc.get_threshold()[0], gc.get_stats()[0]['collections'] - seen)\n"
             "    return 0\n"
             "cli.main = main\n"
             "cli.entry()\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    threshold, collections = map(int, done.stdout.split())
    assert threshold == 50_000
    assert 1 <= collections <= 4  # ~3 for 150k cycles, not ~200 at the default pace


def test_a_killed_supervisors_container_stays_listed_as_exited_until_rm(root):
    ok("run", "-d", "--name", "orphan", "busybox", "sh", "-c", "echo before; sleep 60")
    info = containers(store=root)[0]
    wait_for(lambda: get_container("orphan", root).logs() == b"before\n", what="output")
    supervisor = _supervisor_pid(info)
    os.kill(supervisor, signal.SIGKILL)
    _wait_gone(supervisor)
    wait_for(lambda: info.pid is not None and not _alive(info.pid), what="the container to die")
    rows = ps("-a")
    assert [r[-1] for r in rows] == ["orphan"] and rows[0][4].startswith("Exited (?)"), rows
    assert ok("logs", "orphan") == "before\n"
    assert ps() == []  # not running
    ok("run", "--rm", "busybox", "true")  # another start sweeps what dead owners left ...
    assert [r[-1] for r in ps("-a")] == ["orphan"]  # ... but not a kept container
    assert ok("rm", "orphan") == "orphan\n"
    assert ps("-a") == [] and container_dirs(root) == []


def test_run_takes_devices_pids_limit_and_log_options(root):
    out = ok("run", "--rm", "--device", "/dev/null:/dev/mynull", "--pids-limit", "-1",
             "--log-opt", "max-size=1k", "--log-opt", "max-file=2", "busybox",
             "sh", "-c", "echo x > /dev/mynull && echo ok")
    assert out == "ok\n"
    cid = ok("run", "-d", "--log-opt", "max-size=1k", "--log-opt", "max-file=2", "busybox",
             "sh", "-c", "yes | head -c 5000").strip()
    wait_for(lambda: get_container(cid, root).status == "exited", what="exit")
    assert ok("logs", cid) == "y\n" * 1000  # 2 files of 1k (Docker's decimal units)
    bad = isobox_cmd("run", "--rm", "--log-opt", "max-age=1d", "busybox", "true")
    assert bad.returncode == 125 and b"unknown log option" in bad.stderr
