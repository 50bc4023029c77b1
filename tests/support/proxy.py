"""A counting forward proxy in front of a registry: how tests and the pull benchmark count
manifest and blob downloads, across processes."""

from __future__ import annotations

import http.client
import http.server
import sys
import threading
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

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
                    self.send_response_only(resp.status, resp.reason)
                    for key, value in resp.getheaders():
                        if key.lower() in ("transfer-encoding", "connection", "content-length"):
                            continue
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
