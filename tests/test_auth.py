"""Registry credentials as Docker finds them: real config files under tmp_path, and real
credential helpers (small executables on PATH speaking the docker-credential-helpers
protocol)."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import stat
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from isobox.images.credentials import (
    DOCKER_HUB_SERVER,
    Credentials,
    DockerConfig,
    config_path,
    lookup_credentials,
    server_address,
)
from isobox.errors import CredentialsError, InvalidOption, RegistryError


WriteConfig = Callable[[Any], pathlib.Path]


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


@pytest.fixture
def docker_config(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> WriteConfig:
    """Write a config.json (a dict as JSON, or raw text) into $DOCKER_CONFIG."""
    directory = tmp_path / "docker-config"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    monkeypatch.delenv("DOCKER_AUTH_CONFIG", raising=False)

    def write(content: Any) -> pathlib.Path:
        path = directory / "config.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    return write


# A credential helper as the docker-credential-helpers project builds them: the action in
# argv, the server URL on stdin, JSON on stdout, "credentials not found in native
# keychain" and exit 1 when it has nothing. Its keychain is a JSON file beside it, and it
# logs every call so tests can check what it was asked.
HELPER_SOURCE = """#!{python}
import json, os, sys, time
me = os.path.abspath(__file__)
server = sys.stdin.read()
with open(me + ".calls", "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "stdin": server}}) + "\\n")
with open(me + ".pid", "w") as f:
    f.write(str(os.getpid()))
with open(me + ".json") as f:
    behaviour = json.load(f)
if behaviour.get("sleep"):
    time.sleep(behaviour["sleep"])
if "raw" in behaviour:
    sys.stdout.write(behaviour["raw"])
    sys.exit(behaviour.get("status", 0))
if sys.argv[1:] != ["get"]:
    print("unknown action")
    sys.exit(1)
keychain = behaviour["keychain"]
if server not in keychain:
    print("credentials not found in native keychain")
    sys.exit(1)
username, secret = keychain[server]
print(json.dumps({{"ServerURL": server, "Username": username, "Secret": secret}}))
"""


class Helpers:
    def __init__(self, bin_dir: pathlib.Path) -> None:
        self.bin_dir = bin_dir

    def make(
        self, name: str, keychain: Optional[Dict[str, Tuple[str, str]]] = None, **behaviour: Any
    ) -> pathlib.Path:
        path = self.bin_dir / f"docker-credential-{name}"
        path.write_text(HELPER_SOURCE.format(python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        behaviour.setdefault("keychain", keychain or {})
        pathlib.Path(f"{path}.json").write_text(json.dumps(behaviour))
        return path

    def calls(self, name: str) -> List[Dict[str, Any]]:
        log = self.bin_dir / f"docker-credential-{name}.calls"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def pid(self, name: str) -> int:
        return int((self.bin_dir / f"docker-credential-{name}.pid").read_text())


@pytest.fixture
def helpers(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Helpers:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return Helpers(bin_dir)


# --- auths ------------------------------------------------------------------------------


@pytest.mark.unit
def test_auth_field_gives_username_and_password(docker_config: WriteConfig) -> None:
    docker_config({"auths": {"registry.example:5000": {"auth": b64("alice:s3cret:with:colons")}}})
    assert lookup_credentials("registry.example:5000") == Credentials("alice", "s3cret:with:colons")


@pytest.mark.unit
def test_username_and_password_fields_are_used(docker_config: WriteConfig) -> None:
    docker_config({"auths": {"registry.example": {"username": "bob", "password": "pw"}}})
    assert lookup_credentials("registry.example") == Credentials("bob", "pw")


@pytest.mark.unit
def test_auth_field_overrides_username_and_password_fields(docker_config: WriteConfig) -> None:
    docker_config(
        {
            "auths": {
                "r.example": {"auth": b64("fromauth:p1"), "username": "field", "password": "p2"}
            }
        }
    )
    assert lookup_credentials("r.example") == Credentials("fromauth", "p1")


@pytest.mark.unit
def test_identity_token_is_returned(docker_config: WriteConfig) -> None:
    docker_config({"auths": {"r.example": {"auth": b64("carol:"), "identitytoken": "refresh-me"}}})
    creds = lookup_credentials("r.example")
    assert creds is not None
    assert (creds.username, creds.password, creds.identity_token) == ("carol", None, "refresh-me")


@pytest.mark.unit
def test_password_nul_padding_is_trimmed_as_docker_does(docker_config: WriteConfig) -> None:
    docker_config({"auths": {"r.example": {"auth": b64("dave:pw\x00\x00")}}})
    assert lookup_credentials("r.example") == Credentials("dave", "pw")


@pytest.mark.unit
def test_placeholder_entry_means_no_credentials(docker_config: WriteConfig) -> None:
    docker_config({"auths": {"r.example": {}, "s.example": None}})
    assert lookup_credentials("r.example") is None
    assert lookup_credentials("s.example") is None


@pytest.mark.unit
def test_json_field_names_match_case_insensitively_like_go(docker_config: WriteConfig) -> None:
    docker_config('{"Auths": {"r.example": {"Username": "erin", "PASSWORD": "pw"}}}')
    assert lookup_credentials("r.example") == Credentials("erin", "pw")


@pytest.mark.unit
@pytest.mark.parametrize(
    "key",
    [
        "registry.example:5000",
        "https://registry.example:5000",
        "http://registry.example:5000/",
        "https://registry.example:5000/v1/",
        "registry.example:5000/v2/",
        "https://user@registry.example:5000/",
    ],
)
def test_keys_written_as_url_or_host_match_the_registry(
    docker_config: WriteConfig, key: str
) -> None:
    docker_config({"auths": {key: {"auth": b64("u:p")}}})
    assert lookup_credentials("registry.example:5000") == Credentials("u", "p")


@pytest.mark.unit
@pytest.mark.parametrize(
    "key",
    ["registry.example:5001", "registry.example", "https://registry.example", "other.example:5000",
     "https://registry.example:50001/", "registry.example:5000.evil.example"],
)
def test_keys_for_other_hosts_or_ports_do_not_match(docker_config: WriteConfig, key: str) -> None:
    docker_config({"auths": {key: {"auth": b64("u:p")}}})
    assert lookup_credentials("registry.example:5000") is None


@pytest.mark.unit
def test_exact_key_wins_over_a_url_key(docker_config: WriteConfig) -> None:
    docker_config(
        {
            "auths": {
                "https://r.example/": {"auth": b64("url:1")},
                "r.example": {"auth": b64("exact:2")},
            }
        }
    )
    assert lookup_credentials("r.example") == Credentials("exact", "2")


@pytest.mark.unit
def test_ipv6_registry_matches_bracketed_keys(docker_config: WriteConfig) -> None:
    docker_config({"auths": {"https://[::1]:5000/": {"auth": b64("six:pw")}}})
    assert lookup_credentials("[::1]:5000") == Credentials("six", "pw")


@pytest.mark.unit
@pytest.mark.parametrize("domain", ["docker.io", "registry-1.docker.io", "index.docker.io"])
def test_docker_hub_is_keyed_by_the_index_server(docker_config: WriteConfig, domain: str) -> None:
    docker_config({"auths": {"https://index.docker.io/v1/": {"auth": b64("hubuser:hubpw")}}})
    assert server_address(domain) == DOCKER_HUB_SERVER
    assert lookup_credentials(domain) == Credentials("hubuser", "hubpw")


@pytest.mark.unit
@pytest.mark.parametrize(
    "key", ["docker.io", "index.docker.io", "https://index.docker.io/v1", "registry-1.docker.io"]
)
def test_docker_hub_keys_written_by_host_are_accepted(docker_config: WriteConfig, key: str) -> None:
    docker_config({"auths": {key: {"auth": b64("hubuser:hubpw")}}})
    assert lookup_credentials("docker.io") == Credentials("hubuser", "hubpw")


@pytest.mark.unit
def test_hub_credentials_are_not_sent_to_other_registries(docker_config: WriteConfig) -> None:
    docker_config({"auths": {"https://index.docker.io/v1/": {"auth": b64("hubuser:hubpw")}}})
    assert lookup_credentials("localhost:5000") is None
    assert lookup_credentials("ghcr.io") is None


# --- where the config comes from ----------------------------------------------------------


@pytest.mark.unit
def test_missing_config_means_no_credentials(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_AUTH_CONFIG", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "does-not-exist"))
    assert lookup_credentials("docker.io") is None
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty"))
    assert lookup_credentials("docker.io") is None


@pytest.mark.unit
@pytest.mark.parametrize("content", ["", "  \n", "{}", '{"auths": null}', '{"auths": {}} trailing'])
def test_empty_config_means_no_credentials(docker_config: WriteConfig, content: str) -> None:
    docker_config(content)
    assert lookup_credentials("docker.io") is None


@pytest.mark.unit
def test_home_docker_config_is_used_without_DOCKER_CONFIG(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.delenv("DOCKER_AUTH_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".docker").mkdir()
    config = {"auths": {"r.example": {"auth": b64("home:pw")}}}
    (tmp_path / ".docker" / "config.json").write_text(json.dumps(config))
    assert config_path() == tmp_path / ".docker" / "config.json"
    assert lookup_credentials("r.example") == Credentials("home", "pw")


@pytest.mark.unit
def test_docker_auth_config_variable_wins_over_the_file(
    docker_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    docker_config(
        {"auths": {"r.example": {"auth": b64("file:pw")}, "s.example": {"auth": b64("file:pw2")}}}
    )
    env = {"auths": {"r.example": {"auth": b64("env:pw")}}}
    monkeypatch.setenv("DOCKER_AUTH_CONFIG", json.dumps(env))
    assert lookup_credentials("r.example") == Credentials("env", "pw")
    assert lookup_credentials("s.example") == Credentials("file", "pw2")  # falls back


@pytest.mark.unit
def test_malformed_docker_auth_config_variable_raises(
    docker_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    docker_config({})
    monkeypatch.setenv("DOCKER_AUTH_CONFIG", "{not json")
    with pytest.raises(CredentialsError, match=r"\$DOCKER_AUTH_CONFIG is not valid JSON"):
        lookup_credentials("r.example")


@pytest.mark.unit
def test_explicit_config_replaces_the_environment(
    docker_config: WriteConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    docker_config({"auths": {"r.example": {"auth": b64("env-file:pw")}}})
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"auths": {"r.example": {"auth": b64("explicit:pw")}}}))
    found = lookup_credentials("r.example", config=DockerConfig.load(other))
    assert found == Credentials("explicit", "pw")


SECRET = "hunter2-do-not-print"
AUTH = '{"auths": {"r.example": {"auth": "%s"}}}'


@pytest.mark.unit
@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{", "is not valid JSON"),
        ("[]", "must hold a JSON object"),
        ('{"auths": []}', "'auths' must be a JSON object"),
        ('{"auths": {"r.example": "x"}}', "must be a JSON object"),
        ('{"auths": {"r.example": {"auth": "!!!!"}}}', "not valid base64"),
        (AUTH % b64("nocolon" + SECRET), "must encode 'username:password'"),
        (AUTH % b64(":" + SECRET), "must encode 'username:password'"),
        (AUTH % base64.b64encode(b"u:\xff" + SECRET.encode()).decode(), "UTF-8"),
        ('{"auths": {"r.example": {"username": 5}}}', "username must be a string"),
        ('{"credHelpers": ["x"]}', "'credHelpers' must map"),
        ('{"credsStore": 3}', "'credsStore' must be a string"),
        (b"\xff\xfe{}", "not valid JSON"),
    ],
)
def test_malformed_config_raises_credentials_error_naming_the_file(
    docker_config: WriteConfig, content: Any, fragment: str
) -> None:
    if isinstance(content, bytes):
        path = docker_config("")
        path.write_bytes(content)
    else:
        path = docker_config(content)
    with pytest.raises(CredentialsError) as info:
        lookup_credentials("r.example")
    message = str(info.value)
    assert fragment in message
    assert str(path) in message
    assert SECRET not in message
    assert isinstance(info.value, RegistryError)


@pytest.mark.unit
def test_unreadable_config_raises_credentials_error(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_AUTH_CONFIG", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").mkdir()  # unreadable as a file, for root and users alike
    with pytest.raises(CredentialsError, match="cannot read .*config.json"):
        lookup_credentials("r.example")


# --- credential helpers --------------------------------------------------------------------


def test_creds_store_helper_is_asked_with_the_server_on_stdin(
    docker_config: WriteConfig, helpers: Helpers
) -> None:
    helpers.make("teststore", {"localhost:5000": ("helper-user", "helper-pw")})
    docker_config({"credsStore": "teststore", "auths": {"localhost:5000": {}}})
    assert lookup_credentials("localhost:5000") == Credentials("helper-user", "helper-pw")
    assert helpers.calls("teststore") == [{"argv": ["get"], "stdin": "localhost:5000"}]


def test_helper_is_asked_for_docker_hub_by_the_index_server(
    docker_config: WriteConfig, helpers: Helpers
) -> None:
    helpers.make("teststore", {DOCKER_HUB_SERVER: ("hub", "pw")})
    docker_config({"credsStore": "teststore"})
    assert lookup_credentials("registry-1.docker.io") == Credentials("hub", "pw")
    assert helpers.calls("teststore")[0]["stdin"] == DOCKER_HUB_SERVER


def test_cred_helpers_entry_overrides_the_default_store(
    docker_config: WriteConfig, helpers: Helpers
) -> None:
    helpers.make(
        "default", {"a.example": ("from-default", "1"), "b.example": ("from-default", "2")}
    )
    helpers.make("special", {"b.example": ("from-special", "3")})
    docker_config({"credsStore": "default", "credHelpers": {"b.example": "special"}})
    assert lookup_credentials("a.example") == Credentials("from-default", "1")
    assert lookup_credentials("b.example") == Credentials("from-special", "3")
    assert [c["stdin"] for c in helpers.calls("special")] == ["b.example"]


def test_token_username_means_identity_token(docker_config: WriteConfig, helpers: Helpers) -> None:
    helpers.make("teststore", {"r.example": ("<token>", "refresh-token")})
    docker_config({"credHelpers": {"r.example": "teststore"}})
    creds = lookup_credentials("r.example")
    assert creds == Credentials(identity_token="refresh-token")
    assert creds is not None and creds.username is None


def test_helper_without_credentials_means_none_and_auths_are_not_used(
    docker_config: WriteConfig, helpers: Helpers
) -> None:
    helpers.make("teststore", {})
    docker_config({"credsStore": "teststore", "auths": {"r.example": {"auth": b64("stale:pw")}}})
    assert lookup_credentials("r.example") is None
    assert len(helpers.calls("teststore")) == 1


@pytest.mark.unit
def test_registry_without_helper_uses_auths(docker_config: WriteConfig, helpers: Helpers) -> None:
    helpers.make("special", {})
    docker_config(
        {
            "credHelpers": {"other.example": "special"},
            "auths": {"r.example": {"auth": b64("file:pw")}},
        }
    )
    assert lookup_credentials("r.example") == Credentials("file", "pw")
    assert helpers.calls("special") == []


@pytest.mark.unit
def test_missing_helper_raises_naming_it_and_the_fix(
    docker_config: WriteConfig, helpers: Helpers
) -> None:
    path = docker_config({"credsStore": "isobox-test-absent"})
    with pytest.raises(CredentialsError) as info:
        lookup_credentials("r.example")
    assert "docker-credential-isobox-test-absent" in str(info.value)
    assert "not installed or not on PATH" in str(info.value)
    assert str(path) in str(info.value)


def test_failing_helper_raises_with_its_message(
    docker_config: WriteConfig, helpers: Helpers
) -> None:
    helpers.make("broken", raw="keychain is locked\n", status=3)
    docker_config({"credsStore": "broken"})
    expected = r"docker-credential-broken failed .*exit status 3.*keychain is locked"
    with pytest.raises(CredentialsError, match=expected):
        lookup_credentials("r.example")


def test_helper_printing_garbage_raises_without_echoing_it(
    docker_config: WriteConfig, helpers: Helpers
) -> None:
    helpers.make("garbage", raw="Username=u Secret=" + SECRET)
    docker_config({"credsStore": "garbage"})
    with pytest.raises(CredentialsError, match="did not print a JSON object") as info:
        lookup_credentials("r.example")
    assert SECRET not in str(info.value)


def test_helper_answer_fields_match_case_insensitively(
    docker_config: WriteConfig, helpers: Helpers
) -> None:
    helpers.make("lower", raw=json.dumps({"username": "u", "secret": "s"}))
    docker_config({"credsStore": "lower"})
    assert lookup_credentials("r.example") == Credentials("u", "s")


def test_slow_helper_is_killed_after_the_timeout(
    docker_config: WriteConfig, helpers: Helpers
) -> None:
    helpers.make("slow", {"r.example": ("u", "p")}, sleep=60)
    docker_config({"credsStore": "slow"})
    with pytest.raises(CredentialsError, match="did not answer within 2s"):
        lookup_credentials("r.example", timeout=2)
    with pytest.raises(ProcessLookupError):  # killed and reaped: no process, no zombie
        os.kill(helpers.pid("slow"), 0)


@pytest.mark.unit
@pytest.mark.parametrize("name", ["../evil", "a/b", "x\x00y"])
def test_helper_names_cannot_be_paths(docker_config: WriteConfig, name: str) -> None:
    docker_config({"credsStore": name})
    with pytest.raises(CredentialsError, match="invalid credential helper name"):
        lookup_credentials("r.example")


# --- Credentials ----------------------------------------------------------------------------


@pytest.mark.unit
def test_credentials_repr_hides_secrets() -> None:
    text = repr(Credentials("user", SECRET, identity_token=SECRET + "-token"))
    assert "user" in text
    assert SECRET not in text


@pytest.mark.unit
def test_coerce_accepts_none_credentials_and_pairs() -> None:
    creds = Credentials("u", "p")
    assert Credentials.coerce(None) is None
    assert Credentials.coerce(creds) is creds
    assert Credentials.coerce(("u", "p")) == creds
    assert Credentials.coerce(["u", "p"]) == creds  # type: ignore[arg-type]


@pytest.mark.unit
@pytest.mark.parametrize(
    "value",
    [
        (SECRET,),
        ("u", SECRET, "x"),
        ("u", 5),
        f"u:{SECRET}",
        {"username": "u", "password": SECRET},
        3,
    ],
)
def test_coerce_refuses_other_values_without_echoing_them(value: Any) -> None:
    with pytest.raises(InvalidOption, match="auth must be None, Credentials or") as info:
        Credentials.coerce(value)
    assert SECRET not in str(info.value)


@pytest.mark.unit
def test_credentials_need_a_username_or_token() -> None:
    with pytest.raises(InvalidOption):
        Credentials(password="only-a-password")
    with pytest.raises(InvalidOption):
        Credentials("", "")
    assert Credentials("u", "").password is None


# --- properties -------------------------------------------------------------------------------

_usernames = st.text(min_size=1).filter(lambda s: ":" not in s)
_passwords = st.text().filter(lambda s: not s.startswith("\x00") and not s.endswith("\x00"))


@pytest.mark.unit
@given(_usernames, _passwords)
def test_auth_field_round_trips_any_username_and_password(username: str, password: str) -> None:
    auth = b64(f"{username}:{password}")
    config = DockerConfig.from_json(json.dumps({"auths": {"r.example": {"auth": auth}}}))
    assert config.find_auth("r.example") == Credentials(username, password)


@pytest.mark.unit
@given(st.one_of(st.text(), st.binary(), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(
            ["auths", "credHelpers", "credsStore", "auth", "username", "r.example", "x"]
        ),
        children, max_size=3),
).map(json.dumps)))
def test_any_config_content_loads_or_raises_credentials_error(content: Any) -> None:
    try:
        config = DockerConfig.from_json(content, source="prop")
    except CredentialsError:
        return
    config.find_auth("r.example")
    config.helper_for("r.example")


_hosts = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?(\.[a-z0-9]{1,5}){0,2}", fullmatch=True)


_spellings = st.sampled_from(["{}", "https://{}", "http://{}/", "{}/v2/", "https://{}/v1/"])


@pytest.mark.unit
@given(_hosts, st.one_of(st.none(), st.integers(1, 65535)), _spellings)
def test_any_spelling_of_a_host_matches_only_that_host(
    host: str, port: Optional[int], spelling: str
) -> None:
    domain = host if port is None else f"{host}:{port}"
    auths = {spelling.format(domain): {"auth": b64("u:p")}}
    config = DockerConfig.from_json(json.dumps({"auths": auths}))
    assert config.find_auth(domain) == Credentials("u", "p")
    assert config.find_auth(domain + "0") is None
    assert config.find_auth("x" + domain) is None
