"""A tiny fault-injecting HTTP server that plays a registry badly on purpose.

It exists only for faults a real registry cannot be made to produce: 429 and 5xx answers,
bodies cut short or that never end, servers that ignore ``Range``, redirects to another
host. Everything a registry really does is tested against Debian's docker-registry
(support/registry.py); this server speaks just enough of the v2 API (``/v2/``, blobs and
manifests from memory, optional Basic auth) to carry a fault.

Each request is matched against a script of one-shot faults for its path; when none is
left, the content is served properly (with ``Range`` support). ``log`` records every
request (time, method, path, headers) so tests can see what the client sent. The suite's
fixture (``fault_server``, a factory) is in fixtures/faults.py.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

Action = Callable[["_Handler", bytes], None]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up, as it should on a bad answer

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def _dispatch(self, method: str) -> None:
        fault = self.server.owner
        path = self.path.split("?", 1)[0]
        with fault.lock:
            fault.log.append((time.monotonic(), method, path, dict(self.headers.items())))
        if fault.basic is not None and not self._authorized(fault.basic):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="faults"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with fault.lock:
            script = fault.scripts.get(path)
            action = script.pop(0) if script else None
        if path == "/v2/":
            self.send_simple(200, b"{}", {"Content-Type": "application/json"})
            return
        content = fault.content.get(path)
        if action is not None:
            action(self, content or b"")
            return
        if content is None:
            self.send_simple(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}')
            return
        serve(self, content)

    def _authorized(self, basic: Tuple[str, str]) -> bool:
        expected = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        return self.headers.get("Authorization") == expected

    def send_simple(self, status: int, body: bytes = b"",
                    headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _content_headers(handler: _Handler) -> Dict[str, str]:
    path = handler.path.split("?", 1)[0]
    owner = handler.server.owner
    headers = {"Content-Type": owner.content_types.get(path, "application/octet-stream")}
    digest = owner.digests.get(path)
    if digest:
        headers["Docker-Content-Digest"] = digest
    return headers


def serve(handler: _Handler, content: bytes) -> None:
    """Serve content properly, honouring ``Range: bytes=N-``."""
    headers = _content_headers(handler)
    rng = handler.headers.get("Range")
    if rng and rng.startswith("bytes=") and rng.endswith("-"):
        start = int(rng[6:-1])
        if start >= len(content):
            handler.send_simple(416, b"", {"Content-Range": f"bytes */{len(content)}"})
            return
        headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
        handler.send_simple(206, content[start:], headers)
        return
    handler.send_simple(200, content, headers)


def status(code: int, headers: Optional[Dict[str, str]] = None, body: bytes = b"") -> Action:
    """Answer ``code`` once (429, 503 ...)."""
    return lambda h, _content: h.send_simple(code, body, headers)


def truncate(after: int) -> Action:
    """Announce the whole (remaining) body, send ``after`` bytes of it, drop the connection."""

    def act(h: _Handler, content: bytes) -> None:
        start = 0
        rng = h.headers.get("Range")
        headers = _content_headers(h)
        code = 200
        if rng and rng.startswith("bytes="):
            start = int(rng[6:-1])
            code = 206
            headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
        h.send_response(code)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(content) - start))
        h.end_headers()
        h.wfile.write(content[start : start + after])
        h.wfile.flush()
        h.close_connection = True

    return act


def ignore_range() -> Action:
    """Serve the whole body with 200 even when a Range was asked for."""
    return lambda h, content: h.send_simple(200, content, _content_headers(h))


def redirect(location: str, code: int = 307) -> Action:
    return lambda h, _content: h.send_simple(code, b"", {"Location": location})


def endless(prefix_with_content: bool) -> Action:
    """A close-delimited body (no Content-Length) that never ends: the content (or not),
    then garbage, until the client hangs up (or 30 s / 1 GiB pass: the server stops by
    itself)."""

    def act(h: _Handler, content: bytes) -> None:
        h.send_response(200)
        for k, v in _content_headers(h).items():
            h.send_header(k, v)
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        sent = 0
        deadline = time.monotonic() + 30
        try:
            if prefix_with_content:
                h.wfile.write(content)
                sent += len(content)
            chunk = b"\xee" * 65536
            while sent < (1 << 30) and time.monotonic() < deadline:
                if h.server.owner.stopping.is_set():
                    return
                h.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            return
        finally:
            with h.server.owner.lock:
                h.server.owner.endless_sent.append(sent)

    return act


def content_length(announced: int) -> Action:
    """Announce ``announced`` bytes and send that many (content, padded or cut)."""

    def act(h: _Handler, content: bytes) -> None:
        body = (content + b"\0" * announced)[:announced]
        h.send_simple(200, body, _content_headers(h))

    return act


def close_delimited(extra: bytes = b"") -> Action:
    """The body without Content-Length, ended by closing the connection (HTTP/1.0 style,
    as some proxies and CDNs serve): the content, then ``extra`` bytes. Only a client that
    reads past the announced size can tell a body longer than its descriptor."""

    def act(h: _Handler, content: bytes) -> None:
        h.send_response(200)
        for k, v in _content_headers(h).items():
            h.send_header(k, v)
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        try:
            h.wfile.write(content + extra)
            h.wfile.flush()
        except OSError:
            pass

    return act


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: "FaultServer"


class FaultServer:
    """One misbehaving server on ``address`` (any loopback address), see the module doc."""

    def __init__(self, address: str = "127.0.0.1",
                 basic: Optional[Tuple[str, str]] = None) -> None:
        self.basic = basic
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.scripts: Dict[str, List[Action]] = {}
        self.content: Dict[str, bytes] = {}
        self.content_types: Dict[str, str] = {}
        self.digests: Dict[str, str] = {}
        self.log: List[Tuple[float, str, str, Dict[str, str]]] = []
        self.endless_sent: List[int] = []
        self._server = _Server((address, 0), _Handler)
        self._server.owner = self
        self.host = f"{address}:{self._server.server_address[1]}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def add_blob(self, repo: str, data: bytes, algorithm: str = "sha256") -> str:
        digest = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
        self.content[f"/v2/{repo}/blobs/{digest}"] = data
        return digest

    def add_manifest(self, repo: str, tag: str, doc: Dict[str, object]) -> str:
        raw = json.dumps(doc).encode()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        for ref in (tag, digest):
            path = f"/v2/{repo}/manifests/{ref}"
            self.content[path] = raw
            self.content_types[path] = str(doc["mediaType"])
            self.digests[path] = digest
        return digest

    def add_image(self, repo: str, tag: str, layer: bytes) -> Tuple[str, str]:
        """A minimal runnable-looking image; returns (manifest digest, layer digest)."""
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        layer_digest = self.add_blob(repo, layer)
        doc = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": self.add_blob(repo, config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": len(layer)}],
        }
        return self.add_manifest(repo, tag, doc), layer_digest

    def script(self, path: str, *actions: Action) -> None:
        with self.lock:
            self.scripts.setdefault(path, []).extend(actions)

    def wait_endless_done(self, count: int = 1, timeout: float = 10.0) -> List[int]:
        """Bytes each endless body managed to send before the client hung up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.endless_sent) >= count:
                    return list(self.endless_sent)
            time.sleep(0.02)
        raise AssertionError("endless body still being sent: the client did not hang up")

    def requests_for(self, path: str) -> List[Tuple[float, str, str, Dict[str, str]]]:
        with self.lock:
            return [entry for entry in self.log if entry[2] == path]
