"""One face for a container (runtime/protocol.py): a `Container` owned here and a
`ContainerHandle` on one a supervisor owns (`run_detached`) answer the same methods with
the same signatures, defaults and results, readiness waits, copies and the terminal
included. Each behaviour is checked on both, as root and rootless."""

from __future__ import annotations

import inspect
import io
import os
import pathlib
import signal
import tarfile
import time
from typing import Any, Callable, Iterator

import pytest

import isobox
from isobox.control.client import ContainerHandle, get_container
from isobox.control.supervisor import run_detached
from isobox.runtime.container import Container
from isobox.runtime.protocol import ContainerProtocol

from test_cli_run import _supervisor_pid, _wait_gone, root, template_store  # noqa: F401 (fixtures)

MEMBERS = sorted(name for name in dir(ContainerProtocol)
                 if not name.startswith("_") and name not in dir(object))


@pytest.mark.unit
def test_the_protocol_lists_the_whole_face():
    assert MEMBERS == sorted([
        "address", "copy_from", "copy_to", "exec", "exit_code", "follow_logs", "get_archive", "host_port",
        "id", "kill", "logs", "name", "pid", "ports", "put_archive", "remove", "resize", "status", "stop",
        "wait", "wait_for_log", "wait_for_port"])


@pytest.mark.unit
@pytest.mark.parametrize("member", MEMBERS)
def test_a_container_and_a_handle_have_one_signature_per_method(member):
    ours, theirs = getattr(Container, member, None), getattr(ContainerHandle, member, None)
    if member in ("id", "name", "pid"):  # attributes of a Container, properties of a handle
        assert isinstance(theirs, property)
        return
    assert ours is not None and theirs is not None, member
    if isinstance(ours, property) or isinstance(theirs, property):
        assert isinstance(ours, property) and isinstance(theirs, property), member
        return

    def shape(fn: Callable[..., Any]) -> Any:
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert shape(ours) == shape(theirs), member


# -- the same behaviour from both sides ---------------------------------------------------------------


Start = Callable[..., ContainerProtocol]


@pytest.fixture(params=["owned here", "detached"])
def start(request: pytest.FixtureRequest, root: pathlib.Path) -> Iterator[Start]:  # noqa: F811
    """Starts a busybox container either as a `Container` of this process or through a
    supervisor (a `ContainerHandle`); every one is removed afterwards."""
    made: list = []

    def go(command: Any, **options: Any) -> ContainerProtocol:
        if request.param == "owned here":
            c: ContainerProtocol = Container(isobox.Image.get("busybox", store=root), command, store=root,
                                             **options).start()
        else:
            c = run_detached("busybox", command, store=root, **options)
        made.append(c)
        return c

    yield go
    for c in made:
        c.remove(force=True)


def test_readiness_waits_work_on_both(start):
    c = start(["sh", "-c", "sleep 0.3; echo serving >&2; exec httpd -f -p 8080 -h /tmp"])
    began = time.monotonic()
    c.wait_for_port(8080, timeout=10)
    assert time.monotonic() - began >= 0.25  # it really waited
    c.wait_for_log("serving", timeout=10)
    with pytest.raises(isobox.Timeout, match="port 1234"):
        c.wait_for_port(1234, timeout=0.3)


def test_published_ports_on_both(start):
    import socket

    c = start(["httpd", "-f", "-p", "80", "-h", "/etc"], ports={80: None, "53/udp": ("127.0.0.1", None)})
    port = c.host_port(80)
    assert c.ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}],
                       "53/udp": [{"HostIp": "127.0.0.1", "HostPort": str(c.host_port("53/udp"))}]}
    assert c.address("80/tcp") == ("127.0.0.1", port)
    c.wait_for_port(80, timeout=10)
    with socket.create_connection(c.address(80), timeout=10) as s:
        s.sendall(b"GET /passwd HTTP/1.0\r\n\r\n")
        assert b"root:x:0:0" in b"".join(iter(lambda: s.recv(65536), b""))
    with pytest.raises(isobox.InvalidOption, match="not published"):
        c.host_port(81)
    c.kill()
    c.wait(timeout=10)
    assert c.ports == {}


def test_a_detached_containers_ports_go_with_its_supervisor(root):  # noqa: F811
    import socket

    handle = run_detached("busybox", ["httpd", "-f", "-p", "80", "-h", "/etc"], ports={80: None}, store=root)
    address = handle.address(80)
    handle.wait_for_port(80, timeout=10)
    socket.create_connection(address, timeout=10).close()
    supervisor = _supervisor_pid(handle.info())
    assert supervisor
    os.kill(supervisor, signal.SIGKILL)
    _wait_gone(supervisor)
    deadline = time.monotonic() + 10
    while True:  # its forwarder died with it (PR_SET_PDEATHSIG): nothing answers there
        try:
            socket.create_connection(address, timeout=5).close()
        except ConnectionRefusedError:
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    while handle.status == "running":  # the container died with it too
        assert time.monotonic() < deadline
        time.sleep(0.02)
    handle.remove()


def test_a_wait_on_a_service_that_dies_reports_its_output(start):
    c = start(["sh", "-c", "echo config error >&2; exit 3"])
    with pytest.raises(isobox.ContainerError, match="(?s)exited \\(3\\).*config error"):
        c.wait_for_port(5432, timeout=10)


def test_kill_defaults_to_sigkill_and_takes_names_and_numbers(start):
    c = start(["sleep", "60"])
    c.kill()
    assert c.wait(10) == -signal.SIGKILL and c.exit_code == -signal.SIGKILL
    d = start(["sh", "-c", "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done"])
    d.wait_for_log("ready", timeout=10)
    d.kill("TERM")
    assert d.wait(10) == 7
    e = start(["sh", "-c", "trap 'exit 8' HUP; echo ready; while :; do sleep 0.05; done"])
    e.wait_for_log("ready", timeout=10)
    e.kill(int(signal.SIGHUP))
    assert e.wait(10) == 8


def test_kill_leaves_a_container_that_exited_alone(start):
    c = start(["sh", "-c", "exit 5"])
    assert c.wait(10) == 5
    c.kill()  # as subprocess leaves a finished process: no error, nothing changes
    c.kill("TERM")
    assert c.wait() == 5 and c.status == "exited"


def test_stop_returns_the_exit_status(start):
    c = start(["sleep", "60"])
    code = c.stop(timeout=1)
    assert isinstance(code, int) and code == -signal.SIGKILL == c.wait()
    assert c.status == "exited"


def test_logs_and_following_them(start):
    c = start(["sh", "-c", "echo one; sleep 0.5; echo two >&2; echo three"])
    followed = c.logs(follow=True)
    assert not isinstance(followed, bytes)
    assert sorted(b"".join(followed).splitlines()) == [b"one", b"three", b"two"]  # it waited for the end
    by_stream: dict = {}
    for stream, chunk in c.follow_logs():
        by_stream[stream] = by_stream.get(stream, b"") + chunk
    assert by_stream == {"stdout": b"one\nthree\n", "stderr": b"two\n"}
    assert c.logs() == b"one\nthree\ntwo\n" and c.logs("stderr") == b"two\n"


def test_exec_takes_the_same_arguments(start, tmp_path):
    c = start(["sleep", "60"])
    result = c.exec("sh -c 'cat; echo err >&2; exit 2'", stdin=b"in\n")
    assert (result.exit_code, result.stdout, result.stderr) == (2, b"in\n", b"err\n")
    fed = tmp_path / "input"
    fed.write_bytes(b"from a file\n")
    with open(fed, "rb") as f:
        assert c.exec(["cat"], stdin=f).stdout == b"from a file\n"
    assert c.exec(["pwd"], workdir="/etc", env={"X": "1"}).stdout == b"/etc\n"
    terminal = c.exec(["sh", "-c", "tty; stty size"], tty=True, tty_size=(30, 100))
    assert terminal.exit_code == 0
    assert terminal.stdout.split() == [b"/dev/pts/0", b"30", b"100"]
    with pytest.raises(isobox.Timeout) as info:
        c.exec(["sh", "-c", "echo before; sleep 30"], timeout=0.5)
    assert info.value.stdout == b"before\n"  # type: ignore[attr-defined]


def test_copies_work_on_both(start, tmp_path):
    src = tmp_path / "hello.txt"
    src.write_text("hello\n")
    c = start(["sleep", "60"], mounts=[isobox.Tmpfs("/scratch")])
    c.copy_to(src, "/scratch")
    c.copy_to(src, "/etc/renamed.txt")
    assert c.exec(["cat", "/scratch/hello.txt", "/etc/renamed.txt"]).stdout == b"hello\nhello\n"
    assert c.exec(["stat", "-c", "%u:%g", "/scratch/hello.txt"]).stdout == b"0:0\n"  # the container's root
    c.exec(["sh", "-c", "mkdir -p /data/sub && echo made > /data/sub/f"])
    out = tmp_path / "out"
    out.mkdir()
    c.copy_from("/data", out)
    assert (out / "data" / "sub" / "f").read_text() == "made\n"
    assert (out / "data" / "sub" / "f").stat().st_uid == os.geteuid()  # the caller's
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("note")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"note"))
    c.put_archive("/scratch", buf.getvalue())
    names = tarfile.open(fileobj=io.BytesIO(c.get_archive("/scratch"))).getnames()
    assert sorted(names) == ["scratch", "scratch/hello.txt", "scratch/note"]
    c.stop(timeout=0)
    with pytest.raises(isobox.ContainerError, match="not running"):
        c.copy_from("/etc/passwd", tmp_path / "p")


def test_resize_reaches_the_containers_terminal(start):
    c = start(["sh", "-c", "trap 'stty size > /tmp/size' WINCH; touch /tmp/ready; while :; do sleep 0.05; done"],
              tty=True)
    deadline = time.monotonic() + 10
    while c.exec(["ls", "/tmp"]).stdout.split() != [b"ready"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    c.resize(31, 101)
    while c.exec(["cat", "/tmp/size"]).stdout != b"31 101\n":
        assert time.monotonic() < deadline, "no SIGWINCH with the new size"
        time.sleep(0.05)
    plain = start(["sleep", "60"])
    with pytest.raises(isobox.ContainerError, match="no terminal"):
        plain.resize(30, 100)


def test_a_handle_whose_owner_was_killed_says_its_status_is_lost(root):  # noqa: F811
    handle = run_detached("busybox", ["sleep", "60"], name="orphan", store=root)
    supervisor = _supervisor_pid(handle.info())
    assert supervisor
    os.kill(supervisor, signal.SIGKILL)
    _wait_gone(supervisor)
    pid = handle.pid
    assert pid is not None
    deadline = time.monotonic() + 10
    while handle.status == "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with pytest.raises(isobox.ExitStatusLost, match="orphan"):
        handle.wait(timeout=5)
    with pytest.raises(isobox.ExitStatusLost):
        handle.stop()
    handle.remove()
    with pytest.raises(isobox.ContainerNotFound):
        get_container("orphan", root)
