"""Published ports (issue 11): real services from busybox (httpd, nc) and a static UDP echo
server (probes/udp_echo.c) behind the forwarder (_native/forward.c), reached from the host
through the kernel's free ports on 127.0.0.1 — as root and rootless alike."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import List, Tuple

import pytest

import isobox
from isobox import Bind

from fixtures.host import require_tool

HTTPD = ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 80 -h /www"]


def http_get(address: Tuple[str, int], path: str = "/index.html") -> bytes:
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        return read_all(s)


def read_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def forwarders(parent: int) -> List[int]:
    """Running forwarder processes (not zombies) whose parent is ``parent``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if comm == "isobox-forward" and int(fields[1]) == parent and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def eventually(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "still not so after the timeout"
        time.sleep(0.02)


def port_is_free(address: Tuple[str, int], kind: int = socket.SOCK_STREAM) -> bool:
    """Whether a server could take the port now (SO_REUSEADDR, as servers set it: the
    forwarder's side of finished connections may linger in TIME_WAIT)."""
    with socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
            if kind == socket.SOCK_STREAM:
                s.listen()
        except OSError:
            return False
        return True


@pytest.fixture(scope="session")
def udp_echo(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    gcc = require_tool("gcc")
    out = tmp_path_factory.mktemp("udp-echo") / "udp_echo"
    source = pathlib.Path(__file__).parent / "probes" / "udp_echo.c"
    subprocess.run([gcc, "-static", "-O1", "-Wall", "-Werror", "-o", str(out), str(source)],
                   check=True, capture_output=True)
    os.chmod(out.parent, 0o755)
    return out


# -- TCP ------------------------------------------------------------------------------------------


def test_a_service_with_no_network_is_reachable_through_its_published_port(busybox_image, store_root):
    with isobox.Container(busybox_image, HTTPD, ports={80: None}) as c:
        assert c.config.network == "none"
        port = c.host_port(80)
        assert isinstance(port, int) and port > 0
        assert c.address(80) == ("127.0.0.1", port) == c.address("80/tcp")
        assert c.ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
        c.wait_for_port(80, timeout=10)
        reply = http_get(c.address(80))
        assert reply.startswith(b"HTTP/1.") and reply.endswith(b"\r\n\r\nhello\n")
        # the service itself has no way out: only its loopback exists
        out = c.exec(["sh", "-c", "ls /sys/class/net"]).stdout.split()
        assert out == [b"lo"]


def test_the_mapping_is_known_before_anything_listens(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sleep", "30"], ports={6379: None}) as c:
        assert c.host_port(6379) > 0
        with pytest.raises(isobox.InvalidOption, match="6380/tcp is not published.*6379/tcp"):
            c.host_port(6380)
        with pytest.raises(isobox.InvalidOption, match="not published"):
            c.host_port("6379/udp")


def test_fifty_concurrent_connections(busybox_image, store_root):
    with isobox.Container(busybox_image, HTTPD, ports={80: None}) as c:
        c.wait_for_port(80, timeout=10)
        socks = [socket.create_connection(c.address(80), timeout=20) for _ in range(50)]
        try:
            for i, s in enumerate(socks):  # all open at once, then all asked
                s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            replies = [read_all(s) for s in socks]
        finally:
            for s in socks:
                s.close()
        assert all(r.startswith(b"HTTP/1.") and r.endswith(b"hello\n") for r in replies)


def test_fifty_clients_in_threads(busybox_image, store_root):
    with isobox.Container(busybox_image, HTTPD, ports={80: None}) as c:
        c.wait_for_port(80, timeout=10)
        replies: List[bytes] = []
        threads = [threading.Thread(target=lambda: replies.append(http_get(c.address(80)))) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(replies) == 50 and all(r.endswith(b"hello\n") for r in replies)


def test_half_close_reaches_the_service_and_its_reply_still_arrives(busybox_image, store_root):
    # the server answers only once it has read EOF: the client's shutdown(SHUT_WR)
    with isobox.Container(busybox_image, ["nc", "-l", "-p", "7000", "-e", "wc", "-c"], ports={7000: None}) as c:
        c.wait_for_port(7000, timeout=10)
        with socket.create_connection(c.address(7000), timeout=10) as s:
            payload = os.urandom(3 << 20)
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            assert read_all(s).strip() == str(len(payload)).encode()


def test_a_large_transfer_arrives_whole(busybox_image, store_root):
    # 100 MiB from the service to the client, checked by digest on both sides
    cmd = ["sh", "-c", "head -c 104857600 /dev/urandom > /tmp/blob && md5sum /tmp/blob && "
                       "exec nc -l -p 7001 -e cat /tmp/blob"]
    with isobox.Container(busybox_image, cmd, ports={7001: None}) as c:
        c.wait_for_port(7001, timeout=30)
        import hashlib

        with socket.create_connection(c.address(7001), timeout=30) as s:
            digest = hashlib.md5()
            size = 0
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
        assert size == 100 << 20
        assert c.logs("stdout").split()[0].decode() == digest.hexdigest()


def test_a_connection_before_the_service_listens_is_reset_at_once(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sleep", "30"], ports={80: None}) as c:
        started = time.monotonic()
        # the reset may come before connect() returns (a busy host), or at the first read
        with pytest.raises(ConnectionResetError):
            with socket.create_connection(c.address(80), timeout=10) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                s.recv(1)
        assert time.monotonic() - started < 2


def test_a_container_killed_mid_connection_ends_it_for_the_client(busybox_image, store_root):
    with isobox.Container(busybox_image, ["nc", "-l", "-p", "7000", "-e", "cat"], ports={7000: None}) as c:
        c.wait_for_port(7000, timeout=10)
        with socket.create_connection(c.address(7000), timeout=10) as s:
            s.sendall(b"ping\n")
            assert s.recv(100) == b"ping\n"
            c.kill()
            started = time.monotonic()
            try:
                assert s.recv(100) == b""  # an orderly end, or ...
            except ConnectionResetError:
                pass  # ... a reset: either way at once, never a hang
            assert time.monotonic() - started < 3


def test_two_containers_publishing_the_same_port_get_their_own_host_ports(busybox_image, store_root):
    with isobox.Container(busybox_image, HTTPD, ports={80: None}) as a, \
            isobox.Container(busybox_image, ["sh", "-c", "echo two > /tmp/index.html; exec httpd -f -p 80 -h /tmp"],
                             ports={80: None}) as b:
        assert a.host_port(80) != b.host_port(80)
        a.wait_for_port(80, timeout=10)
        b.wait_for_port(80, timeout=10)
        assert http_get(a.address(80)).endswith(b"hello\n")
        assert http_get(b.address(80)).endswith(b"two\n")


def test_the_port_is_free_again_when_remove_returns(busybox_image, store_root):
    c = isobox.Container(busybox_image, HTTPD, ports={80: None})
    with c:
        c.wait_for_port(80, timeout=10)
        http_get(c.address(80))
        address = c.address(80)
        assert not port_is_free(address)
        assert forwarders(os.getpid())
    assert port_is_free(address)
    assert forwarders(os.getpid()) == []
    # and a new container takes that very port
    with isobox.Container(busybox_image, HTTPD, ports={80: address[1]}) as again:
        again.wait_for_port(80, timeout=10)
        assert http_get(address).endswith(b"hello\n")


def test_a_host_port_in_use_fails_the_start_before_anything_runs(busybox_image, store_root):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        c = isobox.Container(busybox_image, ["sleep", "30"], ports={80: port})
        with pytest.raises(isobox.SetupError, match=f"publish 80/tcp on 127.0.0.1:{port}.*in use") as err:
            c.start()
        assert err.value.errno == 98  # EADDRINUSE
        assert c.status == "removed" and c.pid is None


def test_the_forwarder_ends_with_the_container(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sh", "-c", "httpd -p 80 -h /tmp; sleep 0.5"], ports={80: None}) as c:
        address = c.address(80)
        assert forwarders(os.getpid())
        assert c.wait(timeout=10) == 0
        eventually(lambda: not forwarders(os.getpid()))
        eventually(lambda: port_is_free(address))


def test_the_forwarder_dies_with_its_owner(busybox_rootfs, tmp_path):
    script = textwrap.dedent(f"""
        import isobox, sys, time
        img = isobox.Image.from_directory({str(busybox_rootfs)!r}, isobox.ImageConfig(cmd=["sh"]))
        c = isobox.Container(img, ["httpd", "-f", "-p", "80", "-h", "/tmp"], ports={{80: None}}).start()
        c.wait_for_port(80)
        print(c.host_port(80), c.pid, flush=True)
        time.sleep(60)
    """)
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "ISOBOX_ROOT": str(tmp_path / "store")})
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line, "the owner failed to start its container"
        port = int(line.split()[0])
        assert http_get(("127.0.0.1", port)).startswith(b"HTTP/1.")
        forwarder = forwarders(owner.pid)
        assert len(forwarder) == 1
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    eventually(lambda: _gone_or_zombie(forwarder[0]))
    eventually(lambda: port_is_free(("127.0.0.1", port)))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def _gone_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_the_owner_holds_no_socket_of_the_ports_after_start(busybox_image, store_root):
    def sockets() -> int:
        return sum(os.readlink(f"/proc/self/fd/{fd}").startswith("socket:") for fd in os.listdir("/proc/self/fd")
                   if os.path.exists(f"/proc/self/fd/{fd}"))

    before = sockets()
    with isobox.Container(busybox_image, ["sleep", "30"], ports={80: None, "53/udp": None, 8080: None}):
        assert sockets() == before
        forwarder, = forwarders(os.getpid())
        from support.host import IS_ROOT

        if IS_ROOT:  # a non-dumpable process's fds are root's to list
            held = sorted(os.readlink(f"/proc/{forwarder}/fd/{fd}") for fd in os.listdir(f"/proc/{forwarder}/fd"))
            # its three ports, the container's pidfd and its epoll set: nothing of ours
            assert [h.split(":")[0] for h in held] == ["anon_inode", "anon_inode", "socket", "socket", "socket"]


def test_ports_with_the_hosts_network_are_refused(busybox_image):
    with pytest.raises(isobox.InvalidOption, match="network='host'"):
        isobox.Container(busybox_image, ["true"], network="host", ports={80: None})
    with pytest.raises(isobox.InvalidOption, match="network='host'"):
        isobox.Container(busybox_image, ["true"], network="host", publish_all=True)


def test_publish_all_maps_the_images_exposed_ports(busybox_rootfs, store_root):
    image = isobox.Image.from_directory(busybox_rootfs, isobox.ImageConfig(
        cmd=HTTPD, exposed_ports=["80/tcp", "53/udp"]))
    with isobox.Container(image, publish_all=True, ports={80: ("127.0.0.1", None)}) as c:
        assert sorted(c.ports) == ["53/udp", "80/tcp"]
        assert len(c.ports["80/tcp"]) == 1  # given explicitly: not twice
        c.wait_for_port(80, timeout=10)
        assert http_get(c.address(80)).endswith(b"hello\n")


def test_a_wildcard_address_when_asked(busybox_image, store_root):
    with isobox.Container(busybox_image, HTTPD, ports={80: ("0.0.0.0", None)}) as c:
        assert c.ports["80/tcp"][0]["HostIp"] == "0.0.0.0"
        assert c.address(80)[0] == "127.0.0.1"
        c.wait_for_port(80, timeout=10)
        assert http_get(c.address(80)).endswith(b"hello\n")


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6(), reason="this host has no IPv6 loopback")
def test_ipv6_on_the_host_side(busybox_image, store_root):
    with isobox.Container(busybox_image, HTTPD, ports={80: ("::1", None)}) as c:
        assert c.address(80) == ("::1", c.host_port(80))
        c.wait_for_port(80, timeout=10)
        with socket.create_connection(c.address(80), timeout=10) as s:
            s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            assert read_all(s).endswith(b"hello\n")


def test_a_service_on_ipv6_loopback_only_is_reached_too(busybox_image, store_root):
    # 127.0.0.1 refuses, so the forwarder tries ::1 (the container's loopback has both)
    with isobox.Container(busybox_image, ["httpd", "-f", "-p", "[::1]:80", "-h", "/etc"], ports={80: None}) as c:
        c.wait_for_port(80, timeout=10)
        assert b"root:x:0:0" in http_get(c.address(80), "/passwd")


# -- UDP ------------------------------------------------------------------------------------------


def test_udp_request_and_response(busybox_image, store_root, udp_echo):
    with isobox.Container(busybox_image, ["/udp_echo", "5353"], ports={"53/udp": None, "5353/udp": None},
                          mounts=[Bind(udp_echo, "/udp_echo", read_only=True)]) as c:
        c.wait_for_log("listening", timeout=10)
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        try:
            for i, s in enumerate(clients):  # each client its own flow, answered to itself
                s.settimeout(5)
                for n in range(3):
                    s.sendto(f"ping {i} {n}".encode(), c.address("5353/udp"))
                    assert s.recvfrom(100)[0] == f"echo:ping {i} {n}".encode()
        finally:
            for s in clients:
                s.close()


def test_an_idle_udp_client_loses_its_flow(busybox_image, store_root, udp_echo, monkeypatch):
    from isobox.net import forward

    monkeypatch.setattr(forward, "UDP_IDLE_MS", 200)
    with isobox.Container(busybox_image, ["/udp_echo", "5353"], ports={"5353/udp": None},
                          mounts=[Bind(udp_echo, "/udp_echo", read_only=True)]) as c:
        c.wait_for_log("listening", timeout=10)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)

            def inner_port() -> bytes:
                s.sendto(b"whoami", c.address("5353/udp"))
                return s.recvfrom(100)[0]

            first = inner_port()
            assert first.startswith(b"port:") and inner_port() == first  # one flow while it talks
            time.sleep(1.5)  # idle past the timeout, and past a sweep (each second)
            assert inner_port() != first  # a new socket inside: the old flow was closed


def test_ports_with_an_init_and_a_user(busybox_image, store_root):
    # the init never execs (its namespaces are opened before it runs); the service runs
    # as an ordinary user of the image (rootless: a subordinate id)
    from support.host import IS_ROOT
    from isobox.host import idmap

    user = "app" if IS_ROOT or not idmap.for_caller().single else None
    with isobox.Container(busybox_image, ["httpd", "-f", "-p", "8080", "-h", "/etc"], init=True, user=user,
                          ports={8080: None}) as c:
        c.wait_for_port(8080, timeout=10)
        assert b"root:x:0:0" in http_get(c.address(8080), "/passwd")


def test_too_many_ports_fail_the_start_before_anything_runs(busybox_image, store_root):
    c = isobox.Container(busybox_image, ["true"], ports={port: None for port in range(1000, 1300)})
    with pytest.raises(isobox.InvalidOption, match="300 published ports: a container publishes at most 256"):
        c.start()
    assert c.pid is None


def test_a_fork_of_the_owner_leaves_the_ports_to_it(busybox_image, store_root):
    with isobox.Container(busybox_image, HTTPD, ports={80: None}) as c:
        c.wait_for_port(80, timeout=10)
        pid = os.fork()
        if pid == 0:  # the copy owns nothing: its exit changes nothing
            os._exit(0 if c.ports == {} or c.host_port(80) else 1)
        assert os.waitpid(pid, 0)[1] == 0
        assert http_get(c.address(80)).endswith(b"hello\n")
        address = c.address(80)
    assert port_is_free(address) and forwarders(os.getpid()) == []
