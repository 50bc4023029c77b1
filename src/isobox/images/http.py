"""HTTP to registries: one session per client, the authentication dance, bounded retries,
redirects that keep credentials at home, and the one place where ``requests`` and
``urllib3`` exceptions become isobox's (`TransportError`, a `RegistryError`, keeping
``__cause__``).

- ``GET /v2/`` learns how the registry wants to be authenticated (``WWW-Authenticate``),
  once per endpoint, and once at all when the caller passes an `EndpointMemory` (the
  store's ``registries.json``): later processes reuse the answer, and ping again only when
  a request through it fails. Bearer: one token per repository scope
  (``repository:<path>:pull``) from the challenge's realm, anonymous or with credentials
  (Basic to the token endpoint; the oauth2 POST with a refresh token when ``docker login``
  stored an identity token), reused until its ``expires_in``; a 401 re-authenticates once.
  Basic: the credentials on every request. Credentials given to the session win; otherwise
  they are looked up as Docker does (`isobox.images.credentials.lookup_credentials`), only
  when a registry asks for them.
- Redirects are followed here, so ``Authorization`` never leaves the registry's own
  origin. Plain HTTP is used only for loopback hosts and ``$ISOBOX_INSECURE_REGISTRIES``.
- Transient failures are retried, bounded (`RetryPolicy`): 429 and 5xx with exponential
  backoff honouring ``Retry-After``; refused, reset or timed-out connections.

What is asked for, and what the answers must be, is `isobox.images.registry`'s job.
"""

from __future__ import annotations

import base64
import email.utils
import ipaddress
import json
import os
import re
import threading
import time
import urllib.parse
import warnings
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import attrs
import requests
import urllib3

from ..errors import AuthenticationError, NotFound, RateLimited, RegistryError
from .credentials import Credentials, lookup_credentials
from .manifest import load_json_object
from .reference import Reference

MAX_TOKEN_RESPONSE = 1024 * 1024
MAX_ERROR_BODY = 64 * 1024
MAX_REDIRECTS = 5
MIN_TOKEN_LIFETIME = 60  # seconds; the token spec's default when expires_in is absent
MAX_REMEMBERED_PARAM = 2048

ENV_INSECURE = "ISOBOX_INSECURE_REGISTRIES"


Body = Union[None, bytes, Callable[[], Iterable[bytes]]]
"""What a request sends: nothing, bytes, or a function making the chunks afresh."""


class TransportError(RegistryError):
    """Raised when a request gets no answer, or its body breaks off (refused, reset, timed
    out): worth a retry."""


@attrs.frozen
class RetryPolicy:
    """Bounds on retrying: ``attempts`` tries per request (and consecutive failed resumes of
    one blob), exponential backoff from ``base_delay`` capped at ``max_delay``; a
    ``Retry-After`` longer than ``max_delay`` is not waited for (RateLimited at once)."""

    attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    base_delay: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    max_delay: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    max_resumes: int = attrs.field(default=20, validator=attrs.validators.ge(0))

    def backoff(self, failures: int) -> float:
        return float(min(self.max_delay, self.base_delay * (2 ** max(0, failures - 1))))


# ---------------------------------------------------------------------------------------
# WWW-Authenticate


@attrs.frozen
class Challenge:
    """One ``WWW-Authenticate`` challenge: scheme (lowercased) and its parameters."""

    scheme: str
    params: Mapping[str, str] = attrs.field(factory=dict, hash=False)


_TOKEN_CHARS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_challenges(header: str) -> List[Challenge]:
    """Parse RFC 7235 challenges: ``Bearer realm="...",service="...",scope="..."``.

    Several challenges may share one header (comma separated). Parameter names are
    lowercased; quoted values are unescaped. Malformed text yields what parsed so far.
    """
    challenges: List[Challenge] = []
    pos, n = 0, len(header)

    def skip_ws_commas(p: int) -> int:
        while p < n and header[p] in " \t,":
            p += 1
        return p

    def skip_ws(p: int) -> int:
        while p < n and header[p] in " \t":
            p += 1
        return p

    pos = skip_ws_commas(pos)
    while pos < n:
        m = _TOKEN_CHARS.match(header, pos)
        if m is None:
            break
        scheme = m.group(0).lower()
        pos = m.end()
        params: Dict[str, str] = {}
        while True:
            p = skip_ws_commas(pos)
            m = _TOKEN_CHARS.match(header, p)
            if m is None:
                pos = p
                break
            after = skip_ws(m.end())
            if after >= n or header[after] != "=":
                pos = p  # a token not followed by '=' starts the next challenge
                break
            name = m.group(0).lower()
            q = skip_ws(after + 1)
            if q < n and header[q] == '"':
                value_chars = []
                q += 1
                while q < n and header[q] != '"':
                    if header[q] == "\\" and q + 1 < n:
                        q += 1
                    value_chars.append(header[q])
                    q += 1
                q += 1  # closing quote (or end)
                value = "".join(value_chars)
            else:
                # A token by the RFC; servers also send unquoted URLs, so read to the next
                # comma or space.
                end = q
                while end < n and header[end] not in ", \t":
                    end += 1
                value, q = header[q:end], end
            params.setdefault(name, value)
            pos = q
        challenges.append(Challenge(scheme, params))
        pos = skip_ws_commas(pos)
    return challenges


def _pick_challenge(challenges: Sequence[Challenge]) -> Optional[Challenge]:
    for scheme in ("bearer", "basic"):
        for c in challenges:
            if c.scheme == scheme:
                return c
    return None


# ---------------------------------------------------------------------------------------
# Hosts


def _split_host(host: str) -> Tuple[str, Optional[int]]:
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[1:end], host[end + 1 :]
        return name, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        return name, int(port)
    return host, None


def is_loopback(host: str) -> bool:
    name, _ = _split_host(host)
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _parse_insecure(value: Union[None, str, Iterable[str]]) -> Tuple[str, ...]:
    if value is None:
        value = os.environ.get(ENV_INSECURE, "")
    if isinstance(value, str):
        value = value.split(",")
    return tuple(v.strip().lower() for v in value if v and v.strip())


@attrs.frozen
class Endpoint:
    """Where to send a repository's requests: a registry host, how to reach it, and which
    credentials apply there."""

    host: str
    domain: str  # key for credential lookup (docker.io for Docker Hub)
    schemes: Tuple[str, ...]  # tried in order at the first request
    is_mirror: bool = False


# ---------------------------------------------------------------------------------------
# Sessions


@attrs.define
class _EndpointState:
    base: str  # scheme://host
    verify: Union[bool, str]
    challenge: Optional[Challenge]
    remembered: bool = False  # from EndpointMemory, not from a ping in this process


class EndpointMemory:
    """What each registry's ``GET /v2/`` answered, kept in one small JSON file, so that a
    later process (a re-pull is usually a new one) can skip the ping: a cached re-pull is
    then one HEAD request, plus a token request where a token is needed.

    The file (``registries.json`` under the store root, written through ``write``: the
    store's atomic temp-and-rename) maps ``host[:port]`` to the scheme that answered and
    the challenge (scheme, realm, service), or none for anonymous access. Tokens are never
    written: they are credentials. A stale record costs one failed request: the client
    pings again and rewrites it (see `Session.call`). Concurrent writers may lose
    each other's update; the loser pings again next time. A malformed file is ignored.
    """

    def __init__(self, path: "os.PathLike[str]", write: Callable[[Any, bytes], None]) -> None:
        self.path = path
        self._write = write
        self._lock = threading.Lock()

    def _read(self) -> Dict[str, Any]:
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read(1024 * 1024))
        except (OSError, ValueError, RecursionError):
            return {}
        registries = doc.get("registries") if isinstance(doc, dict) else None
        return dict(registries) if isinstance(registries, dict) else {}

    def get(self, host: str) -> Optional[Tuple[str, Optional[Challenge]]]:
        """(base URL, challenge) remembered for ``host``, or None."""
        entry = self._read().get(host)
        if not isinstance(entry, dict) or not isinstance(entry.get("base"), str):
            return None
        raw = entry.get("challenge")
        if raw is None:
            return entry["base"], None
        if not isinstance(raw, dict) or raw.get("scheme") not in ("bearer", "basic"):
            return None
        params = raw.get("params")
        if not isinstance(params, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
            return None
        return entry["base"], Challenge(raw["scheme"], dict(params))

    def put(self, host: str, base: str, challenge: Optional[Challenge]) -> None:
        """Remember an answer; writes only when it changed."""
        record: Dict[str, Any] = {"base": base, "challenge": None}
        if challenge is not None:
            params = {k: v for k, v in challenge.params.items()
                      if k in ("realm", "service") and len(v) <= MAX_REMEMBERED_PARAM}
            record["challenge"] = {"scheme": challenge.scheme, "params": params}
        with self._lock:
            registries = self._read()
            if registries.get(host) == record:
                return
            registries[host] = record
            data = json.dumps({"registries": registries}, indent=1, sort_keys=True).encode()
            try:
                self._write(self.path, data)
            except Exception:  # noqa: BLE001 - a cache: failing to write it changes nothing
                pass


class Session:
    """The HTTP side of a registry client; safe to share between threads.

    ``credentials`` (a `Credentials` or ``(username, password)``) apply to the references'
    own registries; a mirror endpoint uses what Docker's config holds for the mirror's
    host, so Docker Hub credentials never go to a mirror. ``insecure`` (hosts, default
    ``$ISOBOX_INSECURE_REGISTRIES``) may be reached over plain HTTP (after HTTPS failed);
    loopback hosts always may. ``memory`` remembers what each registry's ``GET /v2/``
    answered across processes (`EndpointMemory`).
    """

    def __init__(
        self,
        credentials: Any = None,
        *,
        insecure: Union[None, str, Iterable[str]] = None,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        memory: Optional[EndpointMemory] = None,
    ) -> None:
        self._memory = memory
        self._credentials: Optional[Credentials] = Credentials.coerce(credentials)
        self._insecure = _parse_insecure(insecure)
        self._timeout = timeout
        self.retry = retry
        self._session = requests.Session()
        # No netrc, no environment-wide auth: Authorization is ours alone. Proxies and CA
        # bundles from the environment are applied per request (see _request_once).
        self._session.trust_env = False
        self._lock = threading.Lock()
        self._states: Dict[str, _EndpointState] = {}
        self._tokens: Dict[Tuple[str, str, Tuple[str, ...]], Tuple[str, float]] = {}
        self._found_credentials: Dict[str, Optional[Credentials]] = {}

    def close(self) -> None:
        self._session.close()

    def allows_plain(self, host: str) -> bool:
        """Whether ``host`` may be reached over plain HTTP (loopback, or listed insecure)."""
        host = host.lower()
        name, _ = _split_host(host)
        return is_loopback(host) or host in self._insecure or name in self._insecure

    def _credentials_for(self, ep: Endpoint) -> Optional[Credentials]:
        if self._credentials is not None and not ep.is_mirror:
            return self._credentials
        with self._lock:
            if ep.domain in self._found_credentials:
                return self._found_credentials[ep.domain]
        found = lookup_credentials(ep.domain)
        with self._lock:
            self._found_credentials[ep.domain] = found
        return found

    def _verify_for(self, ep: Endpoint, scheme: str) -> Union[bool, str]:
        if scheme == "https" and self.allows_plain(ep.host) and "http" in ep.schemes:
            return False  # an insecure registry: TLS without verification first
        return _ca_bundle()

    def _state(self, ep: Endpoint) -> _EndpointState:
        """How to talk to ``ep``: learned once per process, from `EndpointMemory` when it
        remembers the endpoint, else by pinging ``/v2/``."""
        with self._lock:
            state = self._states.get(ep.host)
        if state is not None:
            return state
        remembered = self._memory.get(ep.host) if self._memory is not None else None
        if remembered is not None:
            base, challenge = remembered
            scheme = base.partition("://")[0]
            # Only a base this client would pick itself: a record never downgrades a
            # registry to plain HTTP it may not use.
            if scheme in ep.schemes and base == f"{scheme}://{ep.host}":
                state = _EndpointState(base=base, verify=self._verify_for(ep, scheme),
                                       challenge=challenge, remembered=True)
                with self._lock:
                    self._states[ep.host] = state
                return state
        return self._ping(ep)

    def _ping(self, ep: Endpoint) -> _EndpointState:
        """GET ``/v2/``: picks the scheme and learns the challenge (and remembers both)."""
        last: Optional[BaseException] = None
        for scheme in ep.schemes:
            base = f"{scheme}://{ep.host}"
            verify = self._verify_for(ep, scheme)
            try:
                resp = self._request_once("GET", base + "/v2/", {}, verify)
            except RegistryError as exc:
                last = exc
                continue
            with resp:
                if resp.status_code == 200:
                    challenge = None
                elif resp.status_code == 401:
                    challenges = parse_challenges(resp.headers.get("WWW-Authenticate", ""))
                    challenge = _pick_challenge(challenges)
                    if challenge is None:
                        raise AuthenticationError(
                            f"{ep.host} asks for authentication isobox does not support: "
                            f"{resp.headers.get('WWW-Authenticate')!r}"
                        )
                elif resp.status_code == 429:
                    raise RateLimited(_rate_limit_message(ep.host, resp))
                else:
                    raise RegistryError(
                        f"{base} is not a registry v2 API (GET /v2/ answered HTTP "
                        f"{resp.status_code})"
                    )
            state = _EndpointState(base=base, verify=verify, challenge=challenge)
            with self._lock:
                self._states[ep.host] = state
            self._remember(ep, state)
            return state
        assert last is not None
        raise last

    def _remember(self, ep: Endpoint, state: _EndpointState) -> None:
        if self._memory is not None:
            self._memory.put(ep.host, state.base, state.challenge)

    def _authorization(
        self, ep: Endpoint, state: _EndpointState, ref: Reference, refresh: bool,
        scopes: Tuple[str, ...] = (),
    ) -> Optional[str]:
        challenge = state.challenge
        if challenge is None:
            return None
        creds = self._credentials_for(ep)
        if challenge.scheme == "basic":
            if creds is None or creds.username is None or creds.password is None:
                raise AuthenticationError(
                    f"{ep.host} requires a username and password (basic auth) and none were "
                    "given or found in Docker's config (docker login)"
                )
            if not state.base.startswith("https:") and not self.allows_plain(ep.host):
                raise AuthenticationError(f"refusing to send a password to {state.base}")
            raw = f"{creds.username}:{creds.password}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
        # One token per repository and actions: a 401's own scope parameter names the same
        # scope. A push asks for pull,push (and pull of a repository it mounts blobs from).
        scopes = scopes or (f"repository:{ref.path}:pull",)
        return "Bearer " + self._token(ep, challenge, scopes, creds, refresh)

    def _token(
        self,
        ep: Endpoint,
        challenge: Challenge,
        scopes: Tuple[str, ...],
        creds: Optional[Credentials],
        refresh: bool,
    ) -> str:
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        key = (realm, service, scopes)
        now = time.monotonic()
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and not refresh and cached[1] > now:
                return cached[0]
            self._tokens.pop(key, None)
        realm_url = urllib.parse.urlsplit(realm)
        if realm_url.scheme not in ("http", "https") or not realm_url.netloc:
            raise AuthenticationError(f"{ep.host} names an invalid token realm {realm!r}")
        if realm_url.scheme == "http" and not self.allows_plain(realm_url.netloc):
            raise AuthenticationError(
                f"{ep.host} wants tokens from {realm!r} over plain HTTP; refusing (list the "
                f"host in ${ENV_INSECURE} to allow it)"
            )
        verify = _ca_bundle()
        if creds is not None and creds.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "service": service,
                "scope": " ".join(scopes),
                "client_id": "isobox",
            }
            resp = self._request_once("POST", realm, {}, verify, data=form)
        else:
            headers = {}
            params: List[Tuple[str, str]] = []
            if service:
                params.append(("service", service))
            params += [("scope", s) for s in scopes]
            if creds is not None and creds.username is not None and creds.password is not None:
                raw = f"{creds.username}:{creds.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
                params.append(("account", creds.username))
            url = realm + ("&" if realm_url.query else "?") + urllib.parse.urlencode(params)
            resp = self._request_once("GET", url, headers, verify)
        with resp:
            if resp.status_code in (401, 403):
                detail = _error_detail(resp)
                who = "the credentials" if creds is not None else "anonymous access"
                raise AuthenticationError(
                    f"token server {realm_url.netloc} refused {who} for {ep.domain}"
                    + (f": {detail}" if detail else "")
                )
            if resp.status_code == 429:
                raise RateLimited(_rate_limit_message(realm_url.netloc, resp))
            if resp.status_code != 200:
                raise RegistryError(
                    f"token server {realm_url.netloc} answered HTTP {resp.status_code}"
                )
            body = read(resp, MAX_TOKEN_RESPONSE, decode=True)
        doc = load_json_object(body, "token response")
        token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise AuthenticationError(f"token server {realm_url.netloc} sent no usable token")
        lifetime = doc.get("expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)):
            lifetime = MIN_TOKEN_LIFETIME
        lifetime = max(float(lifetime), MIN_TOKEN_LIFETIME)
        # Renew a little before the server's deadline: clocks and latency differ.
        expiry = now + lifetime - min(10.0, lifetime * 0.1)
        with self._lock:
            self._tokens[key] = (token, expiry)
        return token

    def call(
        self,
        ep: Endpoint,
        ref: Reference,
        method: str,
        url_path: str,
        headers: Mapping[str, str],
        *,
        follow_redirects: bool = True,
        body: "Body" = None,
        scopes: Tuple[str, ...] = (),
        retry_broken: bool = True,
    ) -> requests.Response:
        """One API call with auth (re-authenticating once on 401) and bounded retries of
        429, 5xx and broken connections.

        ``body``: bytes, or a function making the body's chunks afresh for each attempt
        (a push streams a blob from the store). ``scopes``: the token scopes to ask for
        (default: pull of ``ref``'s repository). ``retry_broken=False``: a broken
        connection is TransportError at once (an upload whose state on the server the
        caller must ask about before sending more). ``url_path`` may be an absolute URL
        on the registry's origin (an upload's Location)."""
        state = self._state(ep)
        failures = 0
        reauthed = False
        while True:
            authorization = self._authorization(ep, state, ref, refresh=reauthed, scopes=scopes)
            url = url_path if "://" in url_path else state.base + url_path
            if "://" in url_path and _origin(url_path) != _origin(state.base):
                authorization = None  # an upload Location elsewhere gets no credentials
            try:
                resp, at_origin = self._send(
                    state, method, url, headers, authorization, follow_redirects, body,
                )
            except TransportError:
                if not retry_broken:
                    raise
                if state.remembered:
                    state = self._ping(ep)  # the remembered scheme may be stale: ping once
                    continue
                failures += 1
                if failures >= self.retry.attempts:
                    raise
                time.sleep(self.retry.backoff(failures))
                continue
            if resp.status_code == 401 and at_origin and state.remembered:
                # A remembered answer no longer holds (auth turned on, another realm):
                # the full dance once, as if nothing had been remembered.
                resp.close()
                state = self._ping(ep)
                continue
            if resp.status_code == 401 and at_origin and not reauthed and state.challenge:
                challenges = parse_challenges(resp.headers.get("WWW-Authenticate", ""))
                new = _pick_challenge(challenges)
                resp.close()
                if new is not None:
                    state.challenge = new
                    self._remember(ep, state)
                reauthed = True
                continue
            if resp.status_code == 401 and at_origin and state.challenge is None:
                # The ping said open, this resource says otherwise: learn and retry once.
                new = _pick_challenge(
                    parse_challenges(resp.headers.get("WWW-Authenticate", ""))
                )
                if new is not None and not reauthed:
                    resp.close()
                    state.challenge = new
                    self._remember(ep, state)
                    reauthed = True
                    continue
            if resp.status_code == 429 or resp.status_code in (500, 502, 503, 504):
                failures += 1
                delay = _retry_after(resp)
                wait = self.retry.backoff(failures) if delay is None else delay
                if failures >= self.retry.attempts or wait > self.retry.max_delay:
                    if resp.status_code == 429:
                        message = _rate_limit_message(ep.host, resp)
                        resp.close()
                        raise RateLimited(message)
                    status = resp.status_code
                    resp.close()
                    raise RegistryError(
                        f"{ep.host}: {method} {url_path} answered HTTP {status} "
                        f"{failures} times"
                    )
                resp.close()
                time.sleep(wait)
                continue
            return resp

    def _send(
        self,
        state: _EndpointState,
        method: str,
        url: str,
        headers: Mapping[str, str],
        authorization: Optional[str],
        follow_redirects: bool,
        body: "Body" = None,
    ) -> Tuple[requests.Response, bool]:
        """Send, following redirects ourselves: Authorization goes only to the registry's
        own origin, and never over a downgrade to plain HTTP."""
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            at_origin = _origin(url) == origin
            h = dict(headers)
            if authorization and at_origin:
                h["Authorization"] = authorization
            verify = state.verify if at_origin else _ca_bundle()
            data = body() if callable(body) else body
            resp = self._request_once(method, url, h, verify, data=data)
            if not follow_redirects or resp.status_code not in (301, 302, 303, 307, 308):
                return resp, at_origin
            location = resp.headers.get("Location")
            resp.close()
            if not location:
                raise RegistryError(f"redirect without Location from {url}")
            url = urllib.parse.urljoin(url, location)
            target = urllib.parse.urlsplit(url)
            if target.scheme not in ("http", "https"):
                raise RegistryError(f"refusing redirect to {target.scheme!r} URL")
            if target.scheme == "http" and not self.allows_plain(target.netloc):
                raise RegistryError(f"refusing redirect to plain HTTP {target.netloc}")
        raise RegistryError(f"more than {MAX_REDIRECTS} redirects from {origin}")

    def _request_once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        verify: Union[bool, str],
        *,
        data: Union[None, bytes, Mapping[str, str], Iterable[bytes]] = None,
    ) -> requests.Response:
        host = urllib.parse.urlsplit(url).netloc
        proxies = {} if is_loopback(host) else requests.utils.get_environ_proxies(url)
        # identity: content is hashed as sent. A server that compresses anyway is decoded by
        # urllib3, whose streaming reads bound the decompressed size (>= 2.6).
        h = {"User-Agent": "isobox", "Accept-Encoding": "identity", **headers}
        try:
            with warnings.catch_warnings():
                if verify is False:  # only ever for loopback and listed insecure hosts
                    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                return self._session.request(
                    method,
                    url,
                    headers=h,
                    data=data,
                    stream=True,
                    allow_redirects=False,
                    timeout=self._timeout,
                    verify=verify,
                    proxies=proxies,
                )
        except requests.RequestException as exc:
            raise TransportError(f"cannot reach {url}: {exc}") from exc


# ---------------------------------------------------------------------------------------
# Responses


def read(resp: requests.Response, size: int, *, decode: bool) -> bytes:
    """Up to ``size`` bytes more of a streamed body (b"" at its end); TransportError when
    the connection breaks meanwhile."""
    try:
        return bytes(resp.raw.read(size, decode_content=decode) or b"")
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise TransportError(f"reading {resp.url} failed: {exc}") from exc


def raise_unless(resp: requests.Response, ref: Reference, what: str, *statuses: int) -> None:
    """The isobox error for an answer whose status is none of ``statuses`` (a push's
    201 Created, 202 Accepted, 204 No Content), as `raise_for_status` words it."""
    if resp.status_code in statuses:
        return
    if resp.status_code in (200, 206):
        raise RegistryError(f"{ref}: {what}: unexpected HTTP {resp.status_code}")
    if resp.status_code == 416:
        detail = _error_detail(resp)
        raise RegistryError(f"{ref}: {what}: HTTP 416 (range not satisfiable)"
                            + (f": {detail}" if detail else ""))
    raise_for_status(resp, ref, what)


def raise_for_status(resp: requests.Response, ref: Reference, what: str) -> None:
    """The isobox error for a registry's answer that is not a success, naming ``ref``
    and ``what`` was asked for (with the registry's own error message)."""
    status = resp.status_code
    if status in (200, 206):
        return
    detail = _error_detail(resp)
    suffix = f": {detail}" if detail else ""
    if status == 404:
        raise NotFound(f"{ref}: {what} not found{suffix}")
    if status in (401, 403):
        raise AuthenticationError(
            f"{ref}: access denied (HTTP {status}){suffix} — does the repository exist, "
            "and are you logged in (credentials or docker login)?"
        )
    if status == 429:
        raise RateLimited(_rate_limit_message(ref.api_host, resp))
    raise RegistryError(f"{ref}: {what}: HTTP {status}{suffix}")


def is_encoded(resp: requests.Response) -> bool:
    """Whether the body comes with a Content-Encoding (then its length is not the
    content's, and urllib3 decodes it)."""
    return resp.headers.get("Content-Encoding", "identity").lower() not in ("identity", "")


def content_length(resp: requests.Response) -> Optional[int]:
    value = resp.headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _origin(url: str) -> Tuple[str, str]:
    u = urllib.parse.urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    return u.scheme, f"{(u.hostname or '').lower()}:{port}"


def _ca_bundle() -> Union[bool, str]:
    """requests' own environment rule (trust_env is off for auth reasons)."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


def _retry_after(resp: requests.Response) -> Optional[float]:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _rate_limit_message(host: str, resp: requests.Response) -> str:
    parts = []
    for header in ("RateLimit-Limit", "RateLimit-Remaining", "docker-ratelimit-source",
                   "Retry-After"):
        value = resp.headers.get(header)
        if value:
            parts.append(f"{header}: {value}")
    detail = _error_detail(resp)
    text = f"{host} rate limit reached (HTTP 429)"
    if detail:
        text += f": {detail}"
    if parts:
        text += " [" + "; ".join(parts) + "]"
    return text


def _error_detail(resp: requests.Response) -> str:
    """The registry's error message (``{"errors": [{"code", "message"}]}``), bounded."""
    try:
        body = resp.raw.read(MAX_ERROR_BODY, decode_content=True) if resp.raw else b""
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        return ""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    messages = []
    if isinstance(doc, dict):
        for err in doc.get("errors") or []:
            if isinstance(err, dict):
                code, message = err.get("code"), err.get("message")
                text = " ".join(str(x) for x in (code, message) if isinstance(x, str))
                if text:
                    messages.append(text)
        if not messages and isinstance(doc.get("details"), str):
            messages.append(doc["details"])
    return "; ".join(messages)[:500]


__all__ = [
    "Challenge",
    "Endpoint",
    "EndpointMemory",
    "RetryPolicy",
    "Session",
    "TransportError",
    "content_length",
    "is_encoded",
    "is_loopback",
    "parse_challenges",
    "raise_for_status",
    "raise_unless",
    "read",
]
