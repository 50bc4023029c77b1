"""Registry credentials, found where Docker finds them.

`lookup_credentials(domain)` follows the docker CLI (cli/config/configfile/file.go and
cli/config/credentials/):

1. ``$DOCKER_AUTH_CONFIG``, when set: config.json content in an environment variable;
   an ``auths`` entry for the registry there wins.
2. The config file, ``$DOCKER_CONFIG/config.json`` or else ``~/.docker/config.json``
   (missing: no credentials; malformed: `CredentialsError`).
3. If ``credHelpers`` names a helper for the registry, or ``credsStore`` names a default
   one, that helper alone decides: ``docker-credential-<name> get`` reads the server
   address on stdin and prints ``{"Username": ..., "Secret": ...}``; the username
   ``<token>`` means the secret is an identity token; exiting non-zero with "credentials
   not found in native keychain" means there are none. Docker then ignores ``auths``.
4. Otherwise the ``auths`` entry: ``auth`` (base64 of ``user:password``, which overrides
   ``username``/``password``), ``username``/``password``, ``identitytoken``.

Registries are keyed by server address: ``https://index.docker.io/v1/`` for Docker Hub
(whatever name it was reached by), ``host[:port]`` for the others. An ``auths`` key
matches exactly, or when its host part equals the registry's: ``https://host``,
``http://host/`` and ``host/v2/`` all match ``host``. Docker matches Hub only by the exact
key; we also accept Hub keys written by host (``docker.io``, as podman writes them,
``index.docker.io``, ``registry-1.docker.io``). ``credHelpers`` keys match the same way
(Docker: exactly).
Where Docker would silently ignore a malformed ``$DOCKER_AUTH_CONFIG``, we raise.

Running the credential helper is the only subprocess this module starts, with a timeout.
Nothing here is cached: each lookup reads the configuration afresh.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import pathlib
import re
import shutil
import subprocess
from typing import Any, Mapping, Optional, Tuple, Union

import attrs

from ..errors import CredentialsError, InvalidOption
from .reference import DOCKER_HUB_API_HOST, DOCKER_HUB_DOMAIN, LEGACY_HUB_DOMAIN

DOCKER_HUB_SERVER = "https://index.docker.io/v1/"  # the key `docker login` writes for Hub
_HUB_HOSTS = frozenset({DOCKER_HUB_DOMAIN, LEGACY_HUB_DOMAIN, DOCKER_HUB_API_HOST})
_HELPER_PREFIX = "docker-credential-"
_TOKEN_USERNAME = "<token>"
_NOT_FOUND = "credentials not found in native keychain"
DEFAULT_HELPER_TIMEOUT = 60.0


def _secret_repr(value: Optional[str]) -> str:
    return "None" if value is None else "'***'"


def _optional_text(value: Any) -> Optional[str]:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidOption(f"credentials must be strings, not {type(value).__name__}")
    return value


@attrs.frozen
class Credentials:
    """What to present to a registry: a username and password, an identity token (an
    OAuth2 refresh token, as ``docker login`` stores for Hub), or both.

    Empty strings count as absent. The repr never shows the secrets.
    """

    username: Optional[str] = attrs.field(default=None, converter=_optional_text)
    password: Optional[str] = attrs.field(
        default=None, converter=_optional_text, repr=_secret_repr
    )
    identity_token: Optional[str] = attrs.field(
        default=None, converter=_optional_text, repr=_secret_repr
    )

    def __attrs_post_init__(self) -> None:
        if self.username is None and self.identity_token is None:
            raise InvalidOption("credentials need a username or an identity token")

    @classmethod
    def coerce(cls, value: Union[None, "Credentials", Tuple[str, str]]) -> Optional["Credentials"]:
        """Accept what users pass as ``auth=``: None, `Credentials`, or (username, password)."""
        if value is None or isinstance(value, Credentials):
            return value
        if isinstance(value, (tuple, list)) and len(value) == 2:
            username, password = value
            if isinstance(username, str) and isinstance(password, str):
                return cls(username=username, password=password)
        # The value is not echoed: it may hold a password.
        raise InvalidOption(
            f"auth must be None, Credentials or a (username, password) tuple of strings, "
            f"not {type(value).__name__}"
        )


def server_address(domain: str) -> str:
    """The key Docker stores a registry's credentials under."""
    return DOCKER_HUB_SERVER if domain in _HUB_HOSTS else domain


def config_path() -> pathlib.Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json`` (as the docker CLI)."""
    directory = os.environ.get("DOCKER_CONFIG")
    base = pathlib.Path(directory) if directory else pathlib.Path.home() / ".docker"
    return base / "config.json"


def _host_of(key: str) -> str:
    """The ``host[:port]`` an ``auths`` key names (docker's ConvertToHostname)."""
    if "://" in key:
        authority = re.split(r"[/?#]", key.split("://", 1)[1], maxsplit=1)[0]
        authority = authority.rpartition("@")[2]  # drop user info
        if authority.endswith(":"):  # an empty port is no port
            authority = authority[:-1]
        if authority:
            return authority
    return key.partition("/")[0]


def _get(obj: Mapping[str, Any], name: str) -> Any:
    """A JSON object's field as Go's encoding/json finds it: the name matches keys
    case-insensitively, and the last matching key in the document wins."""
    found = None
    wanted = name.lower()
    for key, value in obj.items():
        if key.lower() == wanted:
            found = value
    return found


def _string(value: Any, what: str, source: str) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    raise CredentialsError(f"{source}: {what} must be a string, not {type(value).__name__}")


def _decode_auth(auth: str, key: str, source: str) -> Tuple[str, str]:
    """``auth`` is base64("user:password") (standard alphabet, padded; Go's decoder skips
    newlines). The password loses NUL padding at either end, as Docker trims it."""
    where = f"{source}: auths[{key!r}].auth"
    try:
        raw = base64.b64decode(auth.replace("\r", "").replace("\n", ""), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise CredentialsError(f"{where} is not valid base64 of UTF-8 text ({exc})") from None
    username, colon, password = text.partition(":")
    if not colon or not username:
        raise CredentialsError(f"{where} must encode 'username:password'")
    return username, password.strip("\x00")


def _entry_credentials(entry: Any, key: str, source: str) -> Optional[Credentials]:
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise CredentialsError(f"{source}: auths[{key!r}] must be a JSON object")
    username = _string(_get(entry, "username"), f"auths[{key!r}].username", source)
    password = _string(_get(entry, "password"), f"auths[{key!r}].password", source)
    token = _string(_get(entry, "identitytoken"), f"auths[{key!r}].identitytoken", source)
    auth = _string(_get(entry, "auth"), f"auths[{key!r}].auth", source)
    if auth:
        username, password = _decode_auth(auth, key, source)
    if not username and not token:
        return None  # e.g. the empty placeholder `docker login` writes next to credsStore
    return Credentials(username=username, password=password, identity_token=token)


@attrs.frozen
class DockerConfig:
    """The credential part of a Docker config.json, decoded and checked."""

    auths: Mapping[str, Optional[Credentials]] = attrs.field(factory=dict, hash=False)
    cred_helpers: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    creds_store: Optional[str] = None
    source: str = "<config>"

    @classmethod
    def from_json(cls, text: Union[str, bytes], source: str = "<config>") -> "DockerConfig":
        """Decode config.json content; raise `CredentialsError` naming ``source`` if it is
        malformed. Like Docker, an empty document is an empty config and only the first
        JSON value is read."""
        try:
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            stripped = text.strip()
            doc = json.JSONDecoder().raw_decode(stripped)[0] if stripped else {}
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise CredentialsError(f"{source} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise CredentialsError(f"{source} must hold a JSON object")

        raw_auths = _get(doc, "auths")
        if raw_auths is None:
            raw_auths = {}
        if not isinstance(raw_auths, dict):
            raise CredentialsError(f"{source}: 'auths' must be a JSON object")
        auths = {key: _entry_credentials(entry, key, source) for key, entry in raw_auths.items()}

        raw_helpers = _get(doc, "credHelpers")
        if raw_helpers is None:
            raw_helpers = {}
        if not isinstance(raw_helpers, dict) or not all(
            isinstance(v, str) for v in raw_helpers.values()
        ):
            raise CredentialsError(f"{source}: 'credHelpers' must map registries to names")
        store = _string(_get(doc, "credsStore"), "'credsStore'", source)
        return cls(auths=auths, cred_helpers=raw_helpers, creds_store=store or None, source=source)

    @classmethod
    def load(cls, path: Union[None, str, "os.PathLike[str]"] = None) -> "DockerConfig":
        """Read the config file (default: `config_path()`); a missing one is empty."""
        file = pathlib.Path(path) if path is not None else config_path()
        try:
            data = file.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return cls(source=str(file))
        except OSError as exc:
            raise CredentialsError(f"cannot read {file}: {exc.strerror or exc}") from exc
        return cls.from_json(data, source=str(file))

    def _match(self, keys: Mapping[str, Any], server: str) -> Optional[str]:
        if server in keys:
            return server
        for key in keys:
            host = _host_of(key)
            if host == server or (server == DOCKER_HUB_SERVER and host in _HUB_HOSTS):
                return key
        return None

    def helper_for(self, server: str) -> Optional[str]:
        """The credential helper that holds ``server``'s credentials, if one is configured."""
        key = self._match(self.cred_helpers, server)
        if key is not None and self.cred_helpers[key]:
            return self.cred_helpers[key]
        return self.creds_store

    def find_auth(self, server: str) -> Optional[Credentials]:
        """``server``'s credentials from ``auths`` (ignoring helpers)."""
        key = self._match(self.auths, server)
        return None if key is None else self.auths[key]


def run_credential_helper(
    name: str, server: str, *, timeout: float = DEFAULT_HELPER_TIMEOUT, source: str = "config"
) -> Optional[Credentials]:
    """Ask ``docker-credential-<name>`` for ``server``'s credentials (the
    docker-credential-helpers protocol); None when it has none."""
    if not name or "/" in name or "\0" in name:
        raise CredentialsError(f"{source}: invalid credential helper name {name!r}")
    program = _HELPER_PREFIX + name
    executable = shutil.which(program)
    if executable is None:
        raise CredentialsError(
            f"credential helper {program} (configured in {source}) is not installed or not "
            f"on PATH: install it, or remove it from {source}"
        )
    try:
        proc = subprocess.run(
            [executable, "get"],
            input=server.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        # subprocess.run has killed and reaped the helper before re-raising.
        raise CredentialsError(
            f"credential helper {program} did not answer within {timeout:g}s"
        ) from None
    except OSError as exc:
        raise CredentialsError(f"cannot run credential helper {executable}: {exc}") from exc

    out = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        if out == _NOT_FOUND:
            return None
        status = (
            f"killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exit status {proc.returncode}"
        )
        detail = out or proc.stderr.decode("utf-8", "replace").strip()
        message = f"credential helper {program} failed for {server} ({status})"
        if detail:
            message += f": {detail[:500]}"
        raise CredentialsError(message)

    # Like Docker's client, read the first JSON value. Never echo the output: it is secret.
    try:
        answer = json.JSONDecoder().raw_decode(out)[0]
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise CredentialsError(f"credential helper {program} did not print a JSON object")
    where = f"credential helper {program}"
    username = _string(_get(answer, "Username"), "Username", where)
    secret = _string(_get(answer, "Secret"), "Secret", where)
    if username == _TOKEN_USERNAME:
        return Credentials(identity_token=secret) if secret else None
    if not username:
        return None
    return Credentials(username=username, password=secret)


def lookup_credentials(
    domain: str,
    *,
    config: Optional[DockerConfig] = None,
    timeout: float = DEFAULT_HELPER_TIMEOUT,
) -> Optional[Credentials]:
    """The credentials Docker would use for the registry at ``domain`` (``host[:port]``,
    or any of Docker Hub's names), or None.

    ``config`` replaces the environment's configuration ($DOCKER_AUTH_CONFIG and the config
    file); ``timeout`` bounds a credential helper's answer.
    """
    server = server_address(domain)
    if config is None:
        env_text = os.environ.get("DOCKER_AUTH_CONFIG")
        if env_text:
            found = DockerConfig.from_json(env_text, "$DOCKER_AUTH_CONFIG").find_auth(server)
            if found is not None:
                return found
        config = DockerConfig.load()
    helper = config.helper_for(server)
    if helper:
        return run_credential_helper(helper, server, timeout=timeout, source=config.source)
    return config.find_auth(server)


__all__ = [
    "Credentials",
    "DockerConfig",
    "DOCKER_HUB_SERVER",
    "config_path",
    "lookup_credentials",
    "run_credential_helper",
    "server_address",
]
