"""A counting forward proxy in front of a registry: how tests and the pull benchmark count
manifest and blob downloads, across processes."""

from __future__ import annotations

import http.client
import http.server
import sys
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

if TYPE_CHECKING:
    from .images import TestImage


class CountingProxy:
    """A plain forwarding proxy in front of the real registry that records every request
    as (method, path): how tests count manifest and blob downloads across processes.

    It changes nothing and injects no fault: each request goes to the registry as sent and
    its answer comes back as the registry gave it (bodies read whole; test blobs are small).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream  # "127.0.0.1:PORT"
        self.log: List[Tuple[str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _forward(self) -> None:
                with proxy._lock:
                    proxy.log.append((self.command, self.path.split("?", 1)[0]))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.intercept(self.command, self.path):
                    self.close_connection = True  # dropped: no answer at all
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    conn.putrequest(self.command, self.path, skip_accept_encoding=True)
                    for key, value in self.headers.items():  # repeated headers kept (Accept)
                        if key.lower() not in ("host", "connection", "proxy-connection",
                                               "content-length"):
                            conn.putheader(key, value)
                    if body is not None:
                        conn.putheader("Content-Length", str(len(body)))
                    conn.endheaders(body)
                    resp = conn.getresponse()
                    data = resp.read()
                    proxy.observe(self.command, self.path, resp.status)
                    self.send_response_only(resp.status, resp.reason)
                    for key, value in resp.getheaders():
                        if key.lower() in ("transfer-encoding", "connection", "content-length"):
                            continue
                        value = proxy.header(self.command, self.path, key, value)
                        self.send_header(key, value.replace(proxy.upstream, proxy.host))
                    length_header = resp.getheader("Content-Length")
                    if self.command == "HEAD" and length_header is not None:
                        self.send_header("Content-Length", length_header)
                    else:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)  # a client hanging up is not news

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reference(self, image: "TestImage") -> str:
        """``image``'s reference, reached through this proxy."""
        return image.reference.replace(image.repository.split("/", 1)[0], self.host, 1)

    # -- hooks (FaultProxy's): this proxy changes nothing --------------------------------

    def intercept(self, method: str, path: str) -> bool:
        """True: drop this request instead of forwarding it."""
        return False

    def observe(self, method: str, path: str, status: int) -> None:
        """Called with each answer the registry gave."""

    def header(self, method: str, path: str, key: str, value: str) -> str:
        """An answer's header as passed on."""
        return value

    def clear(self) -> None:
        with self._lock:
            self.log.clear()

    def requests(self, kind: Optional[str] = None) -> List[Tuple[str, str]]:
        """Logged requests; ``kind`` "manifests" or "blobs" keeps only those."""
        with self._lock:
            log = list(self.log)
        if kind is None:
            return log
        return [(m, p) for m, p in log if f"/{kind}/" in p]

    def blob_gets(self, digest: str) -> int:
        return sum(1 for m, p in self.requests("blobs") if m == "GET" and p.endswith(digest))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FaultProxy(CountingProxy):
    """A `CountingProxy` that injects the faults of a push that a real registry cannot be
    made to produce: a connection that stops answering midway (``stall_after``: after
    that many blob uploads completed, every request is held, unanswered, until
    `release`, then dropped), as when a push is killed or the network goes; requests
    dropped without an answer (``drop``: how many more requests of a method, e.g. the
    next PATCH); and a registry lying about the digest it stored a manifest under
    (``lie_about_digests``).
    Everything else is the real registry's answer."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.stall_after: Optional[int] = None
        self.lie_about_digests = False
        self.drop: Dict[str, Set[int]] = {}
        self._seen: Dict[str, int] = {}
        self.completed: List[str] = []  # paths of blob uploads the registry completed
        self.stalled = threading.Event()
        self._released = threading.Event()

    def intercept(self, method: str, path: str) -> bool:
        with self._lock:
            self._seen[method] = self._seen.get(method, 0) + 1
            if self._seen[method] in self.drop.get(method, ()):
                return True
        if not self.stalled.is_set():
            return False
        self._released.wait(60)
        return True

    def observe(self, method: str, path: str, status: int) -> None:
        if method == "PUT" and "/blobs/uploads/" in path and status == 201:
            with self._lock:
                self.completed.append(path)
                if self.stall_after is not None and len(self.completed) >= self.stall_after:
                    self.stalled.set()

    def header(self, method: str, path: str, key: str, value: str) -> str:
        if self.lie_about_digests and method == "PUT" and "/manifests/" in path and \
                key.lower() == "docker-content-digest":
            return "sha256:" + "0" * 64
        return value

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        super().close()
