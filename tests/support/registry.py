"""A real registry: Debian's ``docker-registry`` (CNCF distribution), one process each.

- `Registry`: anonymous pull and push.
- `BasicRegistry`: htpasswd (bcrypt) basic auth; ``.username`` / ``.password``.
- `TokenRegistry`: token auth, with a small real token server (`TokenServer`) that checks
  Basic credentials (GET) or an oauth2 POST (password or refresh_token grant) and issues
  RS256 JWTs signed by a generated key whose self-signed certificate the registry trusts.
  ``.token_requests`` records every hit, so tests can count token reuse.

Each listens on a free loopback port with its own filesystem storage under the directory
it is given (so it runs as root and as any user); ``start()`` and ``stop()`` it. The
suite's fixtures are in fixtures/registry.py.

Pushes go through the raw v2 API (monolithic POST + PUT uploads) with the registry's own
credentials; they never go through isobox.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import json
import os
import secrets
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import requests

from .host import MissingPrerequisite, need_tool

SERVICE = "isobox-test-registry"
ISSUER = "isobox-test-token-server"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Registry:
    """One running docker-registry process and the raw v2 calls tests push content with."""

    username: Optional[str] = None
    password: Optional[str] = None

    def __init__(self, root: Path, auth: Optional[Dict[str, Any]] = None) -> None:
        self.root = root
        self.storage = root / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self._auth_config = auth
        self._process: Optional["subprocess.Popen[bytes]"] = None
        self.port = 0
        self.log_path = root / "registry.log"

    # -- process -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> None:
        binary = need_tool("docker-registry")
        last_log = ""
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = free_port()
            config = {
                "version": "0.1",
                "log": {"level": "warn", "accesslog": {"disabled": True}},
                "storage": {
                    "filesystem": {"rootdirectory": str(self.storage)},
                    "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}},
                },
                "http": {"addr": self.host, "secret": secrets.token_hex(16)},
                # schema1 pushes are off by default in distribution 2.8; tests need one to
                # check that isobox refuses it.
                "compatibility": {"schema1": {"enabled": True}},
            }
            if self._auth_config:
                config["auth"] = self._auth_config
            # JSON is YAML: no PyYAML needed, and paths are quoted correctly.
            config_path = self.root / "config.yml"
            config_path.write_text(json.dumps(config, indent=2))
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            with open(self.log_path, "wb") as log:
                self._process = subprocess.Popen(
                    [binary, "serve", str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.root,
                    env=env,
                )
            if self._wait_ready():
                return
            last_log = self.log_path.read_text(errors="replace")[-3000:]
            self.stop()
        raise RuntimeError(f"docker-registry did not start:\n{last_log}")

    def _wait_ready(self, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                r = requests.get(f"{self.url}/v2/", timeout=2)
                if r.status_code in (200, 401):
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        proc, self._process = self._process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- raw v2 pushes ------------------------------------------------------------------

    def _push_auth(self, repo: str) -> Dict[str, str]:
        """Headers that let the fixture itself push to ``repo``."""
        return {}

    def push_blob(self, repo: str, data: bytes, digest: Optional[str] = None) -> str:
        """Upload ``data`` (monolithic POST + PUT); returns its digest.

        ``digest`` may name another algorithm (``sha512:...``); the registry verifies it.
        """
        digest = digest or sha256_digest(data)
        headers = self._push_auth(repo)
        r = requests.post(f"{self.url}/v2/{repo}/blobs/uploads/", headers=headers, timeout=30)
        assert r.status_code == 202, (r.status_code, r.text)
        location = urllib.parse.urljoin(self.url, r.headers["Location"])
        sep = "&" if "?" in location else "?"
        r = requests.put(
            f"{location}{sep}digest={urllib.parse.quote(digest)}",
            data=data,
            headers={**headers, "Content-Type": "application/octet-stream"},
            timeout=60,
        )
        assert r.status_code == 201, (r.status_code, r.text)
        return digest

    def push_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        """PUT a manifest (or index) under a tag or digest; returns its digest."""
        headers = {**self._push_auth(repo), "Content-Type": media_type}
        r = requests.put(
            f"{self.url}/v2/{repo}/manifests/{ref}", data=data, headers=headers, timeout=30
        )
        assert r.status_code == 201, (r.status_code, r.text)
        digest = r.headers.get("Docker-Content-Digest") or sha256_digest(data)
        assert digest == sha256_digest(data), "registry rewrote the manifest"
        return digest

    def push_image(
        self,
        repo: str,
        tag: str,
        layers: List[bytes],
        config: Optional[Dict[str, Any]] = None,
        *,
        layer_media_type: str = "application/vnd.oci.image.layer.v1.tar",
        media_type: str = "application/vnd.oci.image.manifest.v1+json",
    ) -> Tuple[str, bytes]:
        """Push a config, the given layer blobs and an OCI manifest; returns (digest, raw)."""
        config = config or {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(d) for d in layers]},
            "config": {},
        }
        config_raw = json.dumps(config).encode()
        config_type = (
            "application/vnd.oci.image.config.v1+json"
            if "oci" in media_type
            else "application/vnd.docker.container.image.v1+json"
        )
        doc = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": config_type,
                "digest": self.push_blob(repo, config_raw),
                "size": len(config_raw),
            },
            "layers": [
                {
                    "mediaType": layer_media_type,
                    "digest": self.push_blob(repo, data),
                    "size": len(data),
                }
                for data in layers
            ],
        }
        raw = json.dumps(doc, indent=2).encode()
        return self.push_manifest(repo, tag, raw, media_type), raw

    def push_schema1(self, repo: str, tag: str, layer: bytes) -> str:
        """Push a signed (libtrust JWS) schema1 manifest, the format isobox must refuse."""
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        blob = self.push_blob(repo, layer)
        body = {
            "schemaVersion": 1,
            "name": repo,
            "tag": tag,
            "architecture": "amd64",
            "fsLayers": [{"blobSum": blob}],
            "history": [{"v1Compatibility": json.dumps({"id": "a" * 64, "os": "linux"})}],
        }
        payload = json.dumps(body, indent=3).encode()
        # libtrust signs the payload minus its closing brace, the tail rebuilt from formatTail.
        format_length = len(payload) - 2
        tail = payload[format_length:]
        key = ec.generate_private_key(ec.SECP256R1())
        pub = key.public_key()
        numbers = pub.public_numbers()
        der = pub.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        kid_raw = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
        kid = ":".join(kid_raw[i : i + 4] for i in range(0, len(kid_raw), 4))
        protected = _b64url(
            json.dumps(
                {
                    "formatLength": format_length,
                    "formatTail": _b64url(tail),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            ).encode()
        )
        signing_input = f"{protected}.{_b64url(payload)}".encode()
        r_int, s_int = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = _b64url(r_int.to_bytes(32, "big") + s_int.to_bytes(32, "big"))
        jwk = {
            "crv": "P-256",
            "kid": kid,
            "kty": "EC",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
        }
        signatures = [{"header": {"jwk": jwk, "alg": "ES256"}, "signature": signature,
                       "protected": protected}]
        signed = (
            payload[:format_length]
            + b',\n   "signatures": '
            + json.dumps(signatures, indent=3).encode()
            + tail
        )
        media_type = "application/vnd.docker.distribution.manifest.v1+prettyjws"
        headers = {**self._push_auth(repo), "Content-Type": media_type}
        r = requests.put(
            f"{self.url}/v2/{repo}/manifests/{tag}", data=signed, headers=headers, timeout=30
        )
        assert r.status_code == 201, (r.status_code, r.text)
        return str(r.headers["Docker-Content-Digest"])

    # -- tampering with the registry's own storage --------------------------------------

    def blob_path(self, digest: str) -> Path:
        algorithm, hexpart = digest.split(":", 1)
        return (
            self.storage / "docker/registry/v2/blobs" / algorithm / hexpart[:2] / hexpart / "data"
        )

    def corrupt_blob(self, digest: str, data: bytes) -> None:
        """Replace a stored blob's bytes behind the registry's back (disk rot, a hostile
        registry): the real server then serves ``data`` under ``digest``."""
        path = self.blob_path(digest)
        assert path.is_file(), path
        path.write_bytes(data)


class TokenServer:
    """A real, small Docker token server (distribution's token spec) for ``registry_token``.

    GET with Basic credentials (or none: anonymous pull of ``public/*`` only), or the oauth2
    POST form (grant_type=password or refresh_token). ``requests`` lists every hit as
    ``(method, scopes, user)``; wrong credentials get 401.
    """

    def __init__(self, root: Path, username: str, password: str) -> None:
        try:
            from cryptography import x509
        except ImportError:
            raise MissingPrerequisite("python cryptography is not installed") from None
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.username = username
        self.password = password
        self.refresh_token = "refresh-" + secrets.token_hex(16)
        self.expires_in = 300
        self.requests: List[Tuple[str, Tuple[str, ...], Optional[str]]] = []
        self._lock = threading.Lock()
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = time.time()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime.datetime.fromtimestamp(now - 3600, datetime.timezone.utc))
            .not_valid_after(datetime.datetime.fromtimestamp(now + 86400, datetime.timezone.utc))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.cert_path = root / "token-signer.crt"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.port = free_port()
        self._server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", self.port), self._handler_class()
        )
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def mint(self, scopes: List[str], user: Optional[str]) -> str:
        """A signed token granting ``user`` what it may do within ``scopes``."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3 or parts[0] != "repository":
                continue
            name, wanted = ":".join(parts[1:-1]), parts[-1].split(",")
            if user is not None:
                allowed = [a for a in wanted if a in ("pull", "push", "delete", "*")]
            elif name.startswith("public/"):
                allowed = [a for a in wanted if a == "pull"]
            else:
                allowed = []
            access.append({"type": "repository", "name": name, "actions": allowed})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._cert_der).decode()]}
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def _handler_class(self) -> type:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _answer(self, status: int, doc: Dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _issue(self, method: str, scopes: List[str], user: Optional[str],
                       refresh: bool) -> None:
                with server._lock:
                    server.requests.append((method, tuple(scopes), user))
                token = server.mint(scopes, user)
                doc: Dict[str, Any] = {
                    "token": token,
                    "access_token": token,
                    "expires_in": server.expires_in,
                    "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                if refresh:
                    doc["refresh_token"] = server.refresh_token
                self._answer(200, doc)

            def _refuse(self, method: str, scopes: List[str]) -> None:
                with server._lock:
                    server.requests.append((method, tuple(scopes), "<refused>"))
                self._answer(401, {"details": "incorrect username or password"})

            def do_GET(self) -> None:  # noqa: N802
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                if url.path != "/token" or query.get("service") != [SERVICE]:
                    self._answer(404, {"details": "unknown service"})
                    return
                scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
                header = self.headers.get("Authorization")
                if header is None:
                    self._issue("GET", scopes, None, refresh=False)
                    return
                try:
                    scheme, value = header.split(" ", 1)
                    user, _, password = base64.b64decode(value).decode().partition(":")
                except ValueError:
                    self._refuse("GET", scopes)
                    return
                if scheme.lower() != "basic" or (user, password) != (
                    server.username,
                    server.password,
                ):
                    self._refuse("GET", scopes)
                    return
                refresh = query.get("offline_token") == ["true"]
                self._issue("GET", scopes, user, refresh=refresh)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                if self.path != "/token" or form.get("service") != [SERVICE]:
                    self._answer(404, {"details": "unknown service"})
                    return
                scopes = [s for value in form.get("scope", []) for s in value.split(" ") if s]
                grant = form.get("grant_type", [""])[0]
                if grant == "password" and form.get("username") == [server.username] and (
                    form.get("password") == [server.password]
                ):
                    offline = form.get("access_type") == ["offline"]
                    self._issue("POST", scopes, server.username, refresh=offline)
                elif grant == "refresh_token" and form.get("refresh_token") == [
                    server.refresh_token
                ]:
                    self._issue("POST", scopes, server.username, refresh=True)
                else:
                    self._refuse("POST", scopes)

        return Handler


class BasicRegistry(Registry):
    """docker-registry behind htpasswd basic auth."""

    def __init__(self, root: Path, username: str, password: str) -> None:
        try:
            import bcrypt
        except ImportError:
            raise MissingPrerequisite(
                "python bcrypt is not installed (pip install bcrypt)") from None

        htpasswd = root / "htpasswd"
        root.mkdir(parents=True, exist_ok=True)
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        htpasswd.write_text(f"{username}:{hashed}\n")
        super().__init__(root, {"htpasswd": {"realm": "isobox-test", "path": str(htpasswd)}})
        self.username = username
        self.password = password

    def _push_auth(self, repo: str) -> Dict[str, str]:
        raw = f"{self.username}:{self.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


class TokenRegistry(Registry):
    """docker-registry behind token auth, with its token server."""

    def __init__(self, root: Path, username: str, password: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.token_server = TokenServer(root, username, password)
        auth = {
            "token": {
                "realm": self.token_server.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(self.token_server.cert_path),
            }
        }
        super().__init__(root, auth)
        self.username = username
        self.password = password

    @property
    def token_requests(self) -> List[Tuple[str, Tuple[str, ...], Optional[str]]]:
        return list(self.token_server.requests)

    @property
    def identity_token(self) -> str:
        """A refresh token the server accepts, as `docker login` stores (identitytoken)."""
        return self.token_server.refresh_token

    def start(self) -> None:
        self.token_server.start()
        super().start()

    def stop(self) -> None:
        super().stop()
        self.token_server.stop()

    def _push_auth(self, repo: str) -> Dict[str, str]:
        token = self.token_server.mint([f"repository:{repo}:pull,push"], self.username)
        return {"Authorization": f"Bearer {token}"}


__all__ = ["Registry", "BasicRegistry", "TokenRegistry", "TokenServer", "free_port",
           "sha256_digest"]
