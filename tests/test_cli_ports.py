"""``isobox run -p/-P``, ``isobox port`` and the PORTS column of ``isobox ps``, run as a user
would (``python -m isobox``), through a detached container's supervisor. As root and
rootless."""

from __future__ import annotations

import json
import re
import socket

from test_cli_run import isobox_cmd, ok, ps, root, template_store  # noqa: F401 (fixtures)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(address):  # type: ignore[no-untyped-def]
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(b"GET /passwd HTTP/1.0\r\n\r\n")
        return b"".join(iter(lambda: s.recv(65536), b""))


def test_run_p_port_and_ps(root):  # noqa: F811
    chosen = free_port()
    ok("run", "-d", "--name", "web", "-p", "80", "-p", f"127.0.0.1:{chosen}:81", "-p", "53/udp",
       "busybox", "sh", "-c", "httpd -p 81 -h /etc; exec httpd -f -p 80 -h /etc")
    listed = ok("port", "web").splitlines()
    assert len(listed) == 3
    m = re.fullmatch(r"80/tcp -> 127\.0\.0\.1:(\d+)", listed[0])
    assert m, listed
    port = int(m.group(1))
    assert listed[1] == f"81/tcp -> 127.0.0.1:{chosen}"
    assert re.fullmatch(r"53/udp -> 127\.0\.0\.1:\d+", listed[2])
    assert ok("port", "web", "80") == f"127.0.0.1:{port}\n" == ok("port", "web", "80/tcp")
    ok("exec", "web", "sh", "-c", "while ! netstat -ltn | grep -q :80; do sleep 0.05; done")
    assert b"root:x:0:0" in http_get(("127.0.0.1", port))
    assert b"root:x:0:0" in http_get(("127.0.0.1", chosen))
    row = ps()[0]
    assert row[-1] == "web"
    assert row[-2] == f"127.0.0.1:{port}->80/tcp, 127.0.0.1:{chosen}->81/tcp, " + listed[2].split(" -> ")[1] + "->53/udp"
    doc = json.loads(ok("inspect", "web"))[0]
    assert doc["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}], "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(chosen)}],
        "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert doc["NetworkSettings"]["Ports"]["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    proc = isobox_cmd("port", "web", "8080")
    assert proc.returncode == 125 and b"no public port '8080/tcp' published for web" in proc.stderr
    ok("rm", "-f", "web")
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", chosen))


def test_ps_shows_no_ports_column_value_without_any(root):  # noqa: F811
    ok("run", "-d", "--name", "quiet", "busybox", "sleep", "30")
    header = ok("ps").splitlines()[0].split()
    assert header == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    assert ok("port", "quiet") == ""
    ok("rm", "-f", "quiet")


def test_bad_p_is_refused_before_anything_runs(root):  # noqa: F811
    for spec, message in (("80/", "an empty protocol"), ("::1:8080:80", "brackets"), ("0:80", "out of range"),
                          ("80/sctp", "not supported")):
        proc = isobox_cmd("run", "--rm", "-p", spec, "busybox", "true")
        assert proc.returncode == 125, (spec, proc.stderr)
        assert message.encode() in proc.stderr, (spec, proc.stderr)
    proc = isobox_cmd("run", "--rm", "--network", "host", "-p", "80", "busybox", "true")
    assert proc.returncode == 125 and b"network='host'" in proc.stderr


def test_run_publish_all_without_exposed_ports_publishes_nothing(root):  # noqa: F811
    ok("run", "-d", "-P", "--name", "plain", "busybox", "sleep", "30")
    assert ok("port", "plain") == ""
    ok("rm", "-f", "plain")


def test_a_host_port_in_use_is_reported_by_run_and_run_d(root):  # noqa: F811
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for detach in ([], ["-d"]):
            proc = isobox_cmd("run", *detach, "--rm", "-p", f"{port}:80", "busybox", "true")
            assert proc.returncode == 125, proc.stderr
            assert f"publish 80/tcp on 127.0.0.1:{port}: Address already in use".encode() in proc.stderr, proc.stderr
    assert ok("ps", "-a").count("\n") == 1  # the header only: nothing was left


def test_a_foreground_run_publishes_too(root):  # noqa: F811
    import signal
    import time

    from test_cli_run import started

    proc = started("run", "--rm", "--init", "--name", "fg", "-p", "80", "busybox", "httpd", "-f", "-p", "80",
                   "-h", "/etc")
    try:
        deadline = time.monotonic() + 20
        while not (listed := isobox_cmd("port", "fg", "80").stdout.decode().strip()):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        host, _, port = listed.rpartition(":")
        ok("exec", "fg", "sh", "-c", "while ! netstat -ltn | grep -q ':80 '; do sleep 0.05; done")
        assert b"root:x:0:0" in http_get((host, int(port)))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 143  # Ctrl-C stops it: SIGTERM, forwarded by the init
    assert ok("ps", "-a").count("\n") == 1
