"""A service: start a web server in a container and talk to it from the host.

    python examples/service.py

busybox ``httpd`` serves a host directory, bind-mounted read-only at /www. The container
shares the host's network (``network="host"``: until published ports exist, that is how
the host reaches a server in a container), so the server listens on a free loopback port
the host picked. We wait until the port answers, fetch pages with urllib, and stop it.

``busybox`` is pulled from Docker Hub, or from a mirror as with Docker:
``ISOBOX_REGISTRY_MIRROR=http://127.0.0.1:5000`` looks Hub names up there first
(``ISOBOX_INSECURE_REGISTRIES=host:port`` allows plain HTTP to a non-loopback host).
``ISOBOX_ROOT`` sets the store (default /var/lib/isobox as root, else
~/.local/share/isobox).
"""

from __future__ import annotations

import pathlib
import socket
import tempfile
import time
import urllib.error
import urllib.request

import isobox


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_listening(container: isobox.Container, port: int, timeout: float = 10) -> float:
    """Poll until something accepts connections on the port; seconds it took. Fails early,
    with the server's own words, if the container exits instead."""
    start = time.monotonic()
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return time.monotonic() - start
        except OSError:
            pass
        if container.status != "running":
            raise RuntimeError(f"the server exited ({container.exit_code}): "
                               f"{container.logs().decode(errors='replace')}")
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"nothing listens on port {port} after {timeout} s")
        time.sleep(0.02)


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return f"{response.status} {response.read().decode().strip()!r}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.reason}"


def main() -> None:
    image = isobox.Image.pull("busybox")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        www = pathlib.Path(tmp)
        (www / "index.html").write_text("<h1>hello from a container</h1>\n")
        (www / "data.txt").write_text("served from a host directory\n")
        site = isobox.Bind(www, "/www", read_only=True)
        server = isobox.Container(
            image, ["httpd", "-f", "-v", "-p", f"127.0.0.1:{port}", "-h", "/www"],
            name="web", network="host", mounts=[site],
            init=True,  # a pid 1 that forwards SIGTERM, so stop() does not need SIGKILL
        )
        with server:
            took = wait_until_listening(server, port)
            print(f"{server.name}: httpd listening on 127.0.0.1:{port} after {took:.2f} s")
            for page in ("/", "/data.txt", "/missing"):
                print(f"GET {page} -> {fetch(f'http://127.0.0.1:{port}{page}')}")
            # The host edits the site; the container serves the change (it is a bind mount).
            (www / "data.txt").write_text("edited on the host\n")
            print(f"GET /data.txt -> {fetch(f'http://127.0.0.1:{port}/data.txt')}")
            code = server.stop(timeout=5)
            print(f"stopped: exit status {code}")
            print("server log:", server.logs("stderr").decode(errors="replace").strip() or "(empty)")
    print("container removed")


if __name__ == "__main__":
    main()
