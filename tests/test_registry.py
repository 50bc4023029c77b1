"""The registry client against a real docker-registry (anonymous, basic and token auth),
and against the fault server for what a real registry cannot be made to do."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.faults import (
    close_delimited,
    content_length,
    endless,
    ignore_range,
    redirect,
    status,
    truncate,
)
from isobox.images.credentials import Credentials
from isobox.errors import (
    AuthenticationError,
    DigestMismatch,
    InvalidOption,
    NotFound,
    RateLimited,
    RegistryError,
    UnsupportedManifest,
)
from isobox.images.digest import compute
from isobox.images.platform import Platform
from isobox.images.reference import Reference
from isobox.images.http import Challenge, EndpointMemory, RetryPolicy, parse_challenges
from isobox.images.manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
)
from isobox.images.registry import RegistryClient

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=3.0, max_resumes=8)
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


@pytest.fixture(autouse=True)
def _no_host_docker_config(tmp_path, monkeypatch):
    """Credentials come only from what each test sets up, never from the user's config."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    for name in ("DOCKER_AUTH_CONFIG", "ISOBOX_REGISTRY_MIRROR", "ISOBOX_INSECURE_REGISTRIES"):
        monkeypatch.delenv(name, raising=False)


def repo_name(prefix: str = "t") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def client(**kwargs: Any) -> RegistryClient:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("timeout", 10.0)
    return RegistryClient(**kwargs)


def config_for(arch: str, variant: Optional[str] = None) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"architecture": arch, "os": "linux",
                           "rootfs": {"type": "layers", "diff_ids": []}, "config": {}}
    if variant:
        doc["variant"] = variant
    return doc


def layer_desc(digest: str, data: bytes) -> Descriptor:
    return Descriptor(media_type=OCI_LAYER, digest=digest, size=len(data))


# -- resolving and fetching from a real registry ------------------------------------------


def test_resolve_returns_verified_manifest_and_config(registry):
    repo = repo_name()
    layers = [b"first layer", os.urandom(1000)]
    digest, raw = registry.push_image(repo, "v1", layers)
    with client() as c:
        resolved = c.resolve(f"{registry.host}/{repo}:v1", Platform.parse("linux/amd64"))
    assert resolved.digest == digest
    assert resolved.manifest.digest == digest
    assert resolved.manifest.raw == raw
    assert resolved.manifest.media_type == OCI_MANIFEST
    assert [d.size for d in resolved.manifest.layers] == [len(x) for x in layers]
    assert resolved.index is None
    assert resolved.platform == Platform("linux", "amd64")
    assert json.loads(resolved.config)["rootfs"]["type"] == "layers"


def test_resolve_by_digest_pins_the_manifest(registry):
    repo = repo_name()
    digest, raw = registry.push_image(repo, "v1", [b"one"])
    registry.push_image(repo, "v1", [b"two"])  # the tag moves on
    with client() as c:
        resolved = c.resolve(f"{registry.host}/{repo}@{digest}", Platform.parse("linux/amd64"))
    assert resolved.manifest.raw == raw


def test_iter_blob_streams_a_large_layer_intact(registry):
    repo = repo_name()
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = registry.push_blob(repo, data)
    seen: List[int] = []
    with client() as c:
        chunks = list(c.iter_blob(f"{registry.host}/{repo}", layer_desc(digest, data),
                                  progress=seen.append))
    assert b"".join(chunks) == data
    assert len(chunks) > 1
    assert seen[-1] == len(data) and seen == sorted(seen)


def test_sha512_blob_is_verified_with_sha512(registry):
    repo = repo_name()
    data = os.urandom(5000)
    digest = registry.push_blob(repo, data, digest=compute(data, "sha512"))
    assert digest.startswith("sha512:")
    with client() as c:
        assert c.fetch_blob(f"{registry.host}/{repo}", layer_desc(digest, data)) == data


def test_empty_blob_needs_no_request(registry):
    empty = compute(b"")
    with client() as c:
        assert c.fetch_blob("nowhere.invalid/x", Descriptor(OCI_LAYER, empty, 0)) == b""


def test_fetch_blob_refuses_blob_larger_than_max_size(registry):
    repo = repo_name()
    data = b"x" * 100
    digest = registry.push_blob(repo, data)
    with client() as c, pytest.raises(RegistryError, match="more than the 10 allowed"):
        c.fetch_blob(f"{registry.host}/{repo}", layer_desc(digest, data), max_size=10)


def test_head_manifest_follows_the_tag(registry):
    repo = repo_name()
    first, _ = registry.push_image(repo, "latest", [b"a"])
    with client() as c:
        assert c.head_manifest(f"{registry.host}/{repo}") == first
        second, _ = registry.push_image(repo, "latest", [b"b"])
        assert c.head_manifest(f"{registry.host}/{repo}:latest") == second
        with pytest.raises(NotFound):
            c.head_manifest(f"{registry.host}/{repo}:missing")


def test_missing_tag_repository_and_blob_raise_not_found(registry):
    repo = repo_name()
    registry.push_image(repo, "v1", [b"a"])
    absent = compute(b"never pushed")
    with client() as c:
        with pytest.raises(NotFound):
            c.resolve(f"{registry.host}/{repo}:v2")
        with pytest.raises(NotFound):
            c.resolve(f"{registry.host}/{repo_name()}:v1")
        with pytest.raises(NotFound):
            c.fetch_blob(f"{registry.host}/{repo}", Descriptor(OCI_LAYER, absent, 12))


def test_docker_schema2_manifest_is_accepted(registry):
    repo = repo_name()
    digest, _ = registry.push_image(
        repo, "v1", [b"layer"], media_type=DOCKER_MANIFEST,
        layer_media_type="application/vnd.docker.image.rootfs.diff.tar.gzip",
    )
    with client() as c:
        resolved = c.resolve(f"{registry.host}/{repo}:v1", Platform.parse("linux/amd64"))
    assert resolved.manifest.media_type == DOCKER_MANIFEST
    assert resolved.digest == digest


def test_schema1_manifest_is_refused_with_a_clear_message(registry):
    repo = repo_name()
    registry.push_schema1(repo, "old", b"layer")
    with client() as c, pytest.raises(UnsupportedManifest, match="schema 1"):
        c.resolve(f"{registry.host}/{repo}:old")


def test_artifact_manifest_is_not_run(registry):
    repo = repo_name()
    blob = b'{"not": "an image"}'
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.example.sbom.config+json",
                   "digest": registry.push_blob(repo, blob), "size": len(blob)},
        "layers": [],
    }
    registry.push_manifest(repo, "sbom", json.dumps(doc).encode(), OCI_MANIFEST)
    with client() as c, pytest.raises(UnsupportedManifest, match="not a container image"):
        c.resolve(f"{registry.host}/{repo}:sbom")


def test_single_platform_image_for_another_platform_is_refused(registry):
    repo = repo_name()
    registry.push_image(repo, "v1", [b"l"], config_for("arm64"))
    with client() as c, pytest.raises(NotFound, match="linux/arm64"):
        c.resolve(f"{registry.host}/{repo}:v1", Platform.parse("linux/s390x"))


# -- platform selection from a real index -------------------------------------------------


def push_index(registry, repo: str, entries: List[Dict[str, Any]], media_type: str = OCI_INDEX,
               manifest_type: str = OCI_MANIFEST) -> Dict[str, str]:
    """Push one image per platform entry (plus each entry's manifest) and an index; returns
    {platform string or 'index': digest}."""
    out: Dict[str, str] = {}
    manifests = []
    for i, platform in enumerate(entries):
        arch = platform["architecture"]
        if arch == "unknown":  # an attestation manifest, as buildkit makes
            blob = b'{"predicate": true}'
            doc = {"schemaVersion": 2, "mediaType": manifest_type,
                   "config": {"mediaType": OCI_CONFIG, "digest": registry.push_blob(repo, blob),
                              "size": len(blob)},
                   "layers": []}
            raw = json.dumps(doc).encode()
            digest = registry.push_manifest(repo, compute(raw), raw, manifest_type)
        else:
            digest, raw = registry.push_image(
                repo, f"p{i}", [f"layer for {arch}{i}".encode()],
                config_for(arch, platform.get("variant")), media_type=manifest_type,
            )
        out[json.dumps(platform, sort_keys=True)] = digest
        manifests.append({"mediaType": manifest_type, "digest": digest, "size": len(raw),
                          "platform": platform})
    index = json.dumps({"schemaVersion": 2, "mediaType": media_type,
                        "manifests": manifests}).encode()
    out["index"] = registry.push_manifest(repo, "multi", index, media_type)
    return out


def key(**platform: str) -> str:
    return json.dumps(platform, sort_keys=True)


def test_index_resolves_to_the_requested_platform(registry):
    repo = repo_name()
    digests = push_index(registry, repo, [
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64", "variant": "v8"},
        {"os": "unknown", "architecture": "unknown"},
    ])
    ref = f"{registry.host}/{repo}:multi"
    with client() as c:
        arm = c.resolve(ref, Platform.parse("linux/arm64"))
        amd = c.resolve(ref, Platform.parse("linux/amd64"))
        aarch = c.resolve(ref, Platform.parse("linux/aarch64"))
    assert arm.digest == amd.digest == digests["index"]
    assert arm.index is not None and arm.index.digest == digests["index"]
    assert arm.manifest.digest == digests[key(os="linux", architecture="arm64", variant="v8")]
    assert aarch.manifest.digest == arm.manifest.digest
    assert arm.platform == Platform("linux", "arm64")
    assert amd.manifest.digest == digests[key(os="linux", architecture="amd64")]


def test_index_without_the_platform_lists_what_is_available(registry):
    repo = repo_name()
    push_index(registry, repo, [
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm", "variant": "v7"},
        {"os": "unknown", "architecture": "unknown"},
    ])
    with client() as c, pytest.raises(NotFound) as info:
        c.resolve(f"{registry.host}/{repo}:multi", Platform.parse("linux/s390x"))
    message = str(info.value)
    assert "linux/s390x" in message
    assert "linux/amd64, linux/arm/v7" in message
    assert "unknown" not in message


def test_index_prefers_the_exact_arm_variant(registry):
    repo = repo_name()
    digests = push_index(registry, repo, [
        {"os": "linux", "architecture": "arm", "variant": "v6"},
        {"os": "linux", "architecture": "arm", "variant": "v7"},
    ], media_type=DOCKER_MANIFEST_LIST, manifest_type=DOCKER_MANIFEST)
    ref = f"{registry.host}/{repo}:multi"
    with client() as c:
        v7 = c.resolve(ref, Platform.parse("linux/arm/v7"))
        v6 = c.resolve(ref, Platform.parse("linux/arm/v6"))
        arm64 = c.resolve(ref, Platform.parse("linux/arm64"))
    assert v7.manifest.digest == digests[key(os="linux", architecture="arm", variant="v7")]
    assert v6.manifest.digest == digests[key(os="linux", architecture="arm", variant="v6")]
    assert arm64.manifest.digest == v7.manifest.digest  # arm64 runs 32-bit arm, v7 first


# -- a registry that lies ------------------------------------------------------------------


def test_corrupted_blob_raises_digest_mismatch_before_the_last_chunk(registry):
    repo = repo_name()
    data = os.urandom(600 * 1024)
    digest = registry.push_blob(repo, data)
    registry.corrupt_blob(digest, data[:-1] + bytes([data[-1] ^ 1]))
    received = bytearray()
    with client() as c, pytest.raises(DigestMismatch):
        for chunk in c.iter_blob(f"{registry.host}/{repo}", layer_desc(digest, data)):
            received += chunk
    assert 0 < len(received) < len(data)


def test_descriptor_lying_about_size_raises_digest_mismatch(registry):
    repo = repo_name()
    data = os.urandom(4096)
    digest = registry.push_blob(repo, data)
    ref = f"{registry.host}/{repo}"
    with client() as c:
        for size in (len(data) - 1, len(data) + 1):
            with pytest.raises(DigestMismatch):
                c.fetch_blob(ref, Descriptor(OCI_LAYER, digest, size))


def test_descriptor_lying_about_digest_raises_digest_mismatch(registry):
    repo = repo_name()
    real = registry.push_blob(repo, b"real content")
    # The registry holds other bytes under the claimed digest (same size, so only the hash
    # can tell).
    claimed = registry.push_blob(repo, b"fake content")
    registry.corrupt_blob(claimed, b"real content")
    assert real != claimed
    with client() as c, pytest.raises(DigestMismatch):
        c.fetch_blob(f"{registry.host}/{repo}", Descriptor(OCI_LAYER, claimed, 12))


def test_corrupted_manifest_raises_digest_mismatch(registry):
    repo = repo_name()
    digest, raw = registry.push_image(repo, "v1", [b"layer"])
    registry.corrupt_blob(digest, raw.replace(b'"schemaVersion": 2', b'"schemaVersion":  2'))
    with client() as c:
        with pytest.raises(DigestMismatch):
            c.resolve(f"{registry.host}/{repo}@{digest}")
        with pytest.raises(DigestMismatch):
            c.resolve(f"{registry.host}/{repo}:v1")


def test_oversized_manifest_is_refused(fault_server):
    # docker-registry itself will not serve a manifest over 4 MiB; a hostile one would.
    srv = fault_server()
    srv.add_image("a/b", "v1", b"layer")
    path = "/v2/a/b/manifests/v1"
    srv.script(path, content_length(5 * 1024 * 1024), endless(prefix_with_content=True))
    with client() as c:
        with pytest.raises(RegistryError, match="5242880 bytes, more than"):
            c.resolve(f"{srv.host}/a/b:v1")
        with pytest.raises(RegistryError, match="more than the 4194304 bytes allowed"):
            c.resolve(f"{srv.host}/a/b:v1")
    assert max(srv.wait_endless_done()) < 64 * 1024 * 1024


# -- mirrors and plain HTTP -----------------------------------------------------------------


def test_docker_hub_name_resolves_at_the_mirror(registry, monkeypatch):
    name = f"isobox-test-{uuid.uuid4().hex[:8]}"
    digest, _ = registry.push_image(f"library/{name}", "1.0", [b"from the mirror"])
    monkeypatch.setenv("ISOBOX_REGISTRY_MIRROR", registry.url)
    with client() as c:
        resolved = c.resolve(f"{name}:1.0", Platform.parse("linux/amd64"))
        layer = resolved.manifest.layers[0]
        assert c.fetch_blob(f"{name}:1.0", layer) == b"from the mirror"
        assert c.head_manifest(f"docker.io/library/{name}:1.0") == digest
    assert resolved.digest == digest
    assert resolved.reference == Reference.parse(f"{name}:1.0")


@pytest.fixture
def unreachable_docker_hub(monkeypatch):
    """Docker Hub behind a proxy port nothing listens on: its requests fail at once and
    never leave the machine (whether or not it has a network)."""
    from support.registry import free_port

    proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, proxy)
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return proxy


def test_name_missing_from_the_mirror_says_what_each_registry_answered(
        registry, monkeypatch, unreachable_docker_hub):
    monkeypatch.setenv("ISOBOX_REGISTRY_MIRROR", registry.url)
    name = f"isobox-missing-{uuid.uuid4().hex[:8]}"
    with client() as c, pytest.raises(RegistryError) as info:
        c.resolve(f"{name}:1.0", Platform.parse("linux/amd64"))
    message = str(info.value)
    mirror_part, _, hub_part = message.partition("; then ")
    assert mirror_part.startswith(f"docker.io/library/{name}:1.0: tried the registry mirror "
                                  f"{registry.host} ($ISOBOX_REGISTRY_MIRROR): ")
    assert "manifest not found" in mirror_part and "MANIFEST_UNKNOWN" in mirror_part
    assert hub_part.startswith("Docker Hub (registry-1.docker.io): cannot reach https://"
                               "registry-1.docker.io/v2/")
    assert info.value.__cause__ is not None


def test_blob_missing_from_the_mirror_says_what_each_registry_answered(
        registry, monkeypatch, unreachable_docker_hub):
    monkeypatch.setenv("ISOBOX_REGISTRY_MIRROR", registry.url)
    data = os.urandom(100)
    with client() as c, pytest.raises(RegistryError) as info:
        c.fetch_blob("library/busybox", layer_desc(compute(data), data))
    assert "registry mirror" in str(info.value) and "blob not found" in str(info.value)
    assert "; then Docker Hub (registry-1.docker.io): cannot reach" in str(info.value)


@pytest.mark.unit
def test_mirror_is_tried_before_docker_hub_and_only_for_hub_names():
    with client(mirror="http://127.0.0.1:5999") as c:
        hub = c.endpoints("busybox")
        other = c.endpoints("quay.io/x/y")
    assert [(e.host, e.is_mirror) for e in hub] == [
        ("127.0.0.1:5999", True), ("registry-1.docker.io", False)]
    assert hub[0].schemes == ("http",) and hub[1].schemes == ("https",)
    assert [e.host for e in other] == ["quay.io"]


@pytest.mark.unit
def test_plain_http_only_for_loopback_and_listed_registries(monkeypatch):
    with client() as c:
        assert c.endpoints("example.com/a/b")[0].schemes == ("https",)
        assert c.endpoints("localhost:5000/a")[0].schemes == ("https", "http")
        assert c.endpoints("127.0.0.5:5000/a")[0].schemes == ("https", "http")
    monkeypatch.setenv("ISOBOX_INSECURE_REGISTRIES", "example.com, other.org:5000")
    with client() as c:
        assert c.endpoints("example.com/a/b")[0].schemes == ("https", "http")
        assert c.endpoints("other.org:5000/a")[0].schemes == ("https", "http")
        assert c.endpoints("other.org/a")[0].schemes == ("https",)


@pytest.mark.unit
def test_plain_http_mirror_on_a_remote_host_is_refused():
    with pytest.raises(InvalidOption, match="ISOBOX_INSECURE_REGISTRIES"):
        RegistryClient(mirror="http://mirror.example.com")
    RegistryClient(mirror="http://mirror.example.com", insecure=["mirror.example.com"]).close()
    with pytest.raises(InvalidOption):
        RegistryClient(mirror="https://mirror.example.com/some/path")


@pytest.mark.unit
def test_unreachable_registry_raises_registry_error():
    from support.registry import free_port

    with client() as c, pytest.raises(RegistryError) as info:
        c.resolve(f"127.0.0.1:{free_port()}/a/b:c")
    assert info.value.__cause__ is not None


# -- basic auth ------------------------------------------------------------------------------


def test_basic_auth_with_right_credentials(registry_basic):
    repo = repo_name()
    digest, _ = registry_basic.push_image(repo, "v1", [b"secret layer"])
    with client(credentials=(registry_basic.username, registry_basic.password)) as c:
        resolved = c.resolve(f"{registry_basic.host}/{repo}:v1", Platform.parse("linux/amd64"))
        layer = c.fetch_blob(f"{registry_basic.host}/{repo}", resolved.manifest.layers[0])
    assert resolved.digest == digest and layer == b"secret layer"


def test_basic_auth_with_wrong_or_no_credentials_raises(registry_basic):
    repo = repo_name()
    registry_basic.push_image(repo, "v1", [b"x"])
    ref = f"{registry_basic.host}/{repo}:v1"
    with client(credentials=(registry_basic.username, "wrong")) as c:
        with pytest.raises(AuthenticationError):
            c.resolve(ref)
    with client() as c, pytest.raises(AuthenticationError, match="docker login"):
        c.resolve(ref)


def test_basic_auth_credentials_from_docker_config(registry_basic, tmp_path, monkeypatch):
    repo = repo_name()
    registry_basic.push_image(repo, "v1", [b"x"])
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir(exist_ok=True)
    import base64

    auth = base64.b64encode(f"{registry_basic.username}:{registry_basic.password}".encode())
    (config_dir / "config.json").write_text(
        json.dumps({"auths": {registry_basic.host: {"auth": auth.decode()}}}))
    with client() as c:
        assert c.head_manifest(f"{registry_basic.host}/{repo}:v1")
    # explicit credentials win over the config file
    with client(credentials=("tester", "wrong")) as c, pytest.raises(AuthenticationError):
        c.head_manifest(f"{registry_basic.host}/{repo}:v1")


# -- token auth ------------------------------------------------------------------------------


def test_token_auth_with_credentials_reuses_one_token(registry_token):
    reg = registry_token
    repo = repo_name()
    digest, _ = reg.push_image(repo, "v1", [b"layer one", b"layer two"])
    before = len(reg.token_requests)
    with client(credentials=(reg.username, reg.password)) as c:
        resolved = c.resolve(f"{reg.host}/{repo}:v1", Platform.parse("linux/amd64"))
        blobs = [c.fetch_blob(f"{reg.host}/{repo}", d) for d in resolved.manifest.layers]
        assert c.head_manifest(f"{reg.host}/{repo}:v1") == digest
    assert blobs == [b"layer one", b"layer two"]
    hits = reg.token_requests[before:]
    assert hits == [("GET", (f"repository:{repo}:pull",), reg.username)]


def test_token_auth_one_token_per_repository(registry_token):
    reg = registry_token
    repos = [repo_name(), repo_name()]
    for repo in repos:
        reg.push_image(repo, "v1", [b"x"])
    before = len(reg.token_requests)
    with client(credentials=(reg.username, reg.password)) as c:
        for repo in repos + repos:
            c.head_manifest(f"{reg.host}/{repo}:v1")
    scopes = [hit[1] for hit in reg.token_requests[before:]]
    assert scopes == [(f"repository:{repos[0]}:pull",), (f"repository:{repos[1]}:pull",)]


def test_token_auth_with_wrong_credentials_raises(registry_token):
    reg = registry_token
    repo = repo_name()
    reg.push_image(repo, "v1", [b"x"])
    with client(credentials=(reg.username, "wrong")) as c:
        with pytest.raises(AuthenticationError, match="refused the credentials"):
            c.resolve(f"{reg.host}/{repo}:v1")


def test_token_auth_anonymous_pull_of_public_repository(registry_token):
    reg = registry_token
    repo = repo_name("public")
    digest, _ = reg.push_image(repo, "v1", [b"x"])
    before = len(reg.token_requests)
    with client() as c:
        assert c.resolve(f"{reg.host}/{repo}:v1", Platform.parse("linux/amd64")).digest == digest
    assert [hit[2] for hit in reg.token_requests[before:]] == [None]


def test_token_auth_anonymous_pull_of_private_repository_raises(registry_token):
    reg = registry_token
    repo = repo_name()
    reg.push_image(repo, "v1", [b"x"])
    with client() as c, pytest.raises(AuthenticationError):
        c.resolve(f"{reg.host}/{repo}:v1")


def test_token_auth_with_identity_token_uses_oauth2_refresh_grant(registry_token):
    reg = registry_token
    repo = repo_name()
    digest, _ = reg.push_image(repo, "v1", [b"x"])
    before = len(reg.token_requests)
    with client(credentials=Credentials(identity_token=reg.identity_token)) as c:
        assert c.head_manifest(f"{reg.host}/{repo}:v1") == digest
    assert [hit[0] for hit in reg.token_requests[before:]] == ["POST"]
    with client(credentials=Credentials(identity_token="stale")) as c:
        with pytest.raises(AuthenticationError):
            c.head_manifest(f"{reg.host}/{repo}:v1")


def test_rejected_token_is_renewed_once(registry_token):
    reg = registry_token
    repo = repo_name()
    digest, _ = reg.push_image(repo, "v1", [b"x"])
    before = len(reg.token_requests)
    with client(credentials=(reg.username, reg.password)) as c:
        assert c.head_manifest(f"{reg.host}/{repo}:v1") == digest
        # Revoke the cached token behind the client's back, as an expiring server would.
        for k, (token, expiry) in list(c._http._tokens.items()):
            c._http._tokens[k] = (token[:-8] + "AAAAAAAA", expiry)
        assert c.head_manifest(f"{reg.host}/{repo}:v1") == digest
    assert len(reg.token_requests) - before == 2


def test_expired_token_is_not_reused(registry_token):
    reg = registry_token
    repo = repo_name()
    reg.push_image(repo, "v1", [b"x"])
    before = len(reg.token_requests)
    with client(credentials=(reg.username, reg.password)) as c:
        c.head_manifest(f"{reg.host}/{repo}:v1")
        c.head_manifest(f"{reg.host}/{repo}:v1")
        assert len(reg.token_requests) - before == 1
        # Its expires_in has passed (the client counts it on the monotonic clock).
        for k, (token, _expiry) in list(c._http._tokens.items()):
            c._http._tokens[k] = (token, time.monotonic() - 1)
        c.head_manifest(f"{reg.host}/{repo}:v1")
    assert len(reg.token_requests) - before == 2


# -- faults a real registry cannot produce (fault server) -------------------------------------


def test_429_with_retry_after_is_waited_for(fault_server):
    srv = fault_server()
    digest, _ = srv.add_image("a/b", "v1", b"layer")
    path = "/v2/a/b/manifests/v1"
    srv.script(path, status(429, {"Retry-After": "1"}))
    with client() as c:
        assert c.resolve(f"{srv.host}/a/b:v1", Platform.parse("linux/amd64")).digest == digest
    first, second = srv.requests_for(path)[:2]
    assert second[0] - first[0] >= 0.9


def test_429_beyond_patience_raises_rate_limited_with_the_limits(fault_server):
    srv = fault_server()
    srv.add_image("a/b", "v1", b"layer")
    path = "/v2/a/b/manifests/v1"
    srv.script(path, status(429, {
        "Retry-After": "3600",
        "RateLimit-Limit": "100;w=21600",
        "RateLimit-Remaining": "0;w=21600",
        "docker-ratelimit-source": "203.0.113.7",
    }, b'{"errors":[{"code":"TOOMANYREQUESTS",'
       b'"message":"You have reached your pull rate limit"}]}'))
    with client() as c, pytest.raises(RateLimited) as info:
        c.resolve(f"{srv.host}/a/b:v1")
    message = str(info.value)
    for text in ("100;w=21600", "0;w=21600", "203.0.113.7", "pull rate limit"):
        assert text in message
    assert len(srv.requests_for(path)) == 1


def test_persistent_429_gives_up_after_bounded_retries(fault_server):
    srv = fault_server()
    srv.add_image("a/b", "v1", b"layer")
    path = "/v2/a/b/manifests/v1"
    srv.script(path, *[status(429) for _ in range(10)])
    with client() as c, pytest.raises(RateLimited):
        c.resolve(f"{srv.host}/a/b:v1")
    assert len(srv.requests_for(path)) == FAST.attempts


def test_503_then_success_is_retried(fault_server):
    srv = fault_server()
    _, layer = srv.add_image("a/b", "v1", b"layer bytes")
    path = f"/v2/a/b/blobs/{layer}"
    srv.script(path, status(503), status(502))
    with client() as c:
        assert c.fetch_blob(f"{srv.host}/a/b", layer_desc(layer, b"layer bytes")) == b"layer bytes"
    assert len(srv.requests_for(path)) == 3


def test_persistent_500_raises_registry_error(fault_server):
    srv = fault_server()
    srv.add_image("a/b", "v1", b"layer")
    srv.script("/v2/a/b/manifests/v1", *[status(500) for _ in range(10)])
    with client() as c, pytest.raises(RegistryError, match="HTTP 500"):
        c.resolve(f"{srv.host}/a/b:v1")


def test_truncated_body_is_resumed_with_range(fault_server):
    srv = fault_server()
    data = os.urandom(300_000)
    digest = srv.add_blob("a/b", data)
    path = f"/v2/a/b/blobs/{digest}"
    srv.script(path, truncate(100_000), truncate(50_000))
    with client() as c:
        assert c.fetch_blob(f"{srv.host}/a/b", layer_desc(digest, data)) == data
    ranges = [entry[3].get("Range") for entry in srv.requests_for(path)]
    assert ranges == [None, "bytes=100000-", "bytes=150000-"]


def test_resume_on_a_server_that_ignores_range(fault_server):
    srv = fault_server()
    data = os.urandom(200_000)
    digest = srv.add_blob("a/b", data)
    path = f"/v2/a/b/blobs/{digest}"
    srv.script(path, truncate(70_000), ignore_range())
    with client() as c:
        assert c.fetch_blob(f"{srv.host}/a/b", layer_desc(digest, data)) == data


def test_download_that_keeps_breaking_gives_up(fault_server):
    srv = fault_server()
    data = os.urandom(10_000)
    digest = srv.add_blob("a/b", data)
    path = f"/v2/a/b/blobs/{digest}"
    srv.script(path, truncate(10), *[truncate(0) for _ in range(20)])
    with client() as c, pytest.raises(RegistryError, match="kept breaking"):
        c.fetch_blob(f"{srv.host}/a/b", layer_desc(digest, data))
    assert len(srv.requests_for(path)) <= FAST.attempts + 1


def test_redirect_to_another_host_does_not_forward_authorization(fault_server):
    registry_srv = fault_server("127.0.0.1", basic=("user", "pass"))
    storage = fault_server("127.0.0.2")
    data = os.urandom(20_000)
    digest = storage.add_blob("a/b", data)
    path = f"/v2/a/b/blobs/{digest}"
    registry_srv.script(path, redirect(f"{storage.url}{path}"))
    with client(credentials=("user", "pass")) as c:
        assert c.fetch_blob(f"{registry_srv.host}/a/b", layer_desc(digest, data)) == data
    assert "Authorization" in registry_srv.requests_for(path)[0][3]
    (_, _, _, headers), = storage.requests_for(path)
    assert "Authorization" not in headers


def test_redirect_to_plain_http_elsewhere_is_refused(fault_server):
    srv = fault_server()
    digest = compute(b"x")
    srv.script(f"/v2/a/b/blobs/{digest}", redirect("http://cdn.example.com/blob"))
    with client() as c, pytest.raises(RegistryError, match="plain HTTP"):
        c.fetch_blob(f"{srv.host}/a/b", layer_desc(digest, b"x"))


def test_endless_body_is_read_only_up_to_the_declared_size(fault_server):
    srv = fault_server()
    data = os.urandom(50_000)
    digest = srv.add_blob("a/b", data)
    path = f"/v2/a/b/blobs/{digest}"
    srv.script(path, endless(prefix_with_content=True), endless(prefix_with_content=False))
    with client() as c:
        # The right bytes, then more: longer than its descriptor, refused as containerd does.
        with pytest.raises(DigestMismatch, match="longer than the 50000 bytes"):
            c.fetch_blob(f"{srv.host}/a/b", layer_desc(digest, data))
        with pytest.raises(DigestMismatch):
            c.fetch_blob(f"{srv.host}/a/b", layer_desc(digest, data))
    assert max(srv.wait_endless_done(2)) < 64 * 1024 * 1024


# -- sizes: a blob is exactly as long as its descriptor says ---------------------------------


def push_manifest_with_sizes(registry, repo, layer, config_delta=0, layer_delta=0):
    """A manifest whose descriptors announce the blobs' sizes plus the deltas (the real
    registry does not check descriptor sizes when a manifest is pushed)."""
    config = json.dumps(config_for("amd64") | {
        "rootfs": {"type": "layers", "diff_ids": [compute(layer)]}}).encode()
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": OCI_CONFIG, "digest": registry.push_blob(repo, config),
                      "size": len(config) + config_delta},
           "layers": [{"mediaType": OCI_LAYER, "digest": registry.push_blob(repo, layer),
                       "size": len(layer) + layer_delta}]}
    return registry.push_manifest(repo, "v1", json.dumps(doc).encode(), OCI_MANIFEST), config


@pytest.mark.parametrize("delta", [-1, 1, 4096])
def test_layer_whose_size_differs_from_its_descriptor_is_refused(registry, tmp_path, delta):
    from isobox.images.image import Image

    repo = repo_name()
    layer = os.urandom(3000)
    push_manifest_with_sizes(registry, repo, layer, layer_delta=delta)
    with pytest.raises(DigestMismatch) as info:
        Image.pull(f"{registry.host}/{repo}:v1", store=tmp_path / "store")
    assert str(info.value).endswith(
        f"blob {compute(layer)} is 3000 bytes, not the {3000 + delta} its descriptor says")


@pytest.mark.parametrize("delta", [-1, 1])
def test_config_whose_size_differs_from_its_descriptor_is_refused(registry, delta):
    repo = repo_name()
    _, config = push_manifest_with_sizes(registry, repo, b"layer", config_delta=delta)
    with client() as c, pytest.raises(DigestMismatch) as info:
        c.resolve(f"{registry.host}/{repo}:v1", Platform.parse("linux/amd64"))
    assert str(info.value).endswith(
        f"blob {compute(config)} is {len(config)} bytes, not the {len(config) + delta} "
        "its descriptor says")


@pytest.mark.parametrize("delta", [-1, 1])
def test_index_entry_whose_size_differs_from_its_manifest_is_refused(registry, delta):
    repo = repo_name()
    manifest_digest, raw = registry.push_image(repo, "child", [os.urandom(64)])
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(raw) + delta,
         "platform": {"os": "linux", "architecture": "amd64"}}]}
    registry.push_manifest(repo, "multi", json.dumps(index).encode(), OCI_INDEX)
    with client() as c, pytest.raises(DigestMismatch) as info:
        c.resolve(f"{registry.host}/{repo}:multi", Platform.parse("linux/amd64"))
    assert f"is {len(raw)} bytes, not the {len(raw) + delta}" in str(info.value)


def test_close_delimited_blob_of_the_right_size_is_accepted(fault_server):
    srv = fault_server()
    data = os.urandom(70_000)
    digest = srv.add_blob("a/b", data)
    srv.script(f"/v2/a/b/blobs/{digest}", close_delimited())
    with client() as c:
        assert c.fetch_blob(f"{srv.host}/a/b", layer_desc(digest, data)) == data


def test_close_delimited_blob_longer_than_its_descriptor_is_refused(fault_server):
    # The descriptor's digest covers the first bytes; the body goes on without a
    # Content-Length to say where it should end (a real registry always sends one).
    srv = fault_server()
    data = os.urandom(70_000)
    digest = srv.add_blob("a/b", data)
    srv.script(f"/v2/a/b/blobs/{digest}", close_delimited(b"trailing"))
    with client() as c, pytest.raises(DigestMismatch, match="longer than the 70000 bytes"):
        c.fetch_blob(f"{srv.host}/a/b", layer_desc(digest, data))


def test_close_delimited_blob_shorter_than_its_descriptor_is_refused(fault_server):
    srv = fault_server()
    data = os.urandom(70_000)
    digest = srv.add_blob("a/b", data)
    srv.script(f"/v2/a/b/blobs/{digest}", close_delimited())
    with client() as c, pytest.raises(DigestMismatch, match="is 70000 bytes, not the 70005"):
        c.fetch_blob(f"{srv.host}/a/b", Descriptor(OCI_LAYER, digest, 70_005))


def test_close_delimited_manifest_longer_than_its_index_entry_is_refused(fault_server):
    srv = fault_server()
    manifest_digest, _ = srv.add_image("a/b", "child", b"layer")
    size = len(srv.content[f"/v2/a/b/manifests/{manifest_digest}"])
    srv.add_manifest("a/b", "multi", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": size,
         "platform": {"os": "linux", "architecture": "amd64"}}]})
    srv.script(f"/v2/a/b/manifests/{manifest_digest}", close_delimited(b" " * 100_000))
    with client() as c, pytest.raises(DigestMismatch, match=f"longer, not the {size} bytes"):
        c.resolve(f"{srv.host}/a/b:multi", Platform.parse("linux/amd64"))


def test_content_length_larger_than_descriptor_is_refused(fault_server):
    srv = fault_server()
    data = b"y" * 1000
    digest = srv.add_blob("a/b", data)
    srv.script(f"/v2/a/b/blobs/{digest}", content_length(5000))
    with client() as c, pytest.raises(DigestMismatch, match="is 5000 bytes, not the 1000"):
        c.fetch_blob(f"{srv.host}/a/b", layer_desc(digest, data))


def test_manifest_whose_body_contradicts_content_type_is_refused(fault_server):
    srv = fault_server()
    srv.add_image("a/b", "v1", b"layer")
    srv.content_types["/v2/a/b/manifests/v1"] = OCI_INDEX
    with client() as c, pytest.raises(RegistryError, match="served as"):
        c.resolve(f"{srv.host}/a/b:v1")


# -- WWW-Authenticate parsing ---------------------------------------------------------------


@pytest.mark.unit
def test_parse_docker_hub_challenge():
    header = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
              'scope="repository:library/busybox:pull"')
    assert parse_challenges(header) == [Challenge("bearer", {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull",
    })]


@pytest.mark.unit
def test_parse_several_challenges_and_escapes():
    header = 'Basic realm="a \\"quoted\\" realm", Bearer realm=https://x/token, error=invalid_token'
    challenges = parse_challenges(header)
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[0].params == {"realm": 'a "quoted" realm'}
    assert challenges[1].params == {"realm": "https://x/token", "error": "invalid_token"}


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~",
                 min_size=1, max_size=12)


@pytest.mark.unit
@given(st.lists(st.tuples(_token, st.dictionaries(_token, st.text(max_size=30), max_size=4)),
                min_size=1, max_size=3))
def test_parse_challenges_round_trips(challenges):
    def quote(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    header = ", ".join(
        scheme + (" " + ", ".join(f"{k}={quote(v)}" for k, v in params.items())
                  if params else "")
        for scheme, params in challenges
    )
    parsed = parse_challenges(header)
    expected = [(s.lower(), {k.lower(): v for k, v in reversed(list(p.items()))})
                for s, p in challenges]
    got = [(c.scheme, dict(c.params)) for c in parsed]
    # parameter names are case-insensitive: the first spelling wins
    for (scheme, params), (want_scheme, want_params) in zip(got, expected):
        assert scheme == want_scheme
        assert set(params) == set(want_params)
    assert len(got) == len(expected)


@pytest.mark.unit
@given(st.text(max_size=200))
def test_parse_challenges_never_crashes(header):
    for c in parse_challenges(header):
        assert c.scheme == c.scheme.lower()


# -- descriptors --------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("doc", [
    {"mediaType": OCI_LAYER, "digest": "sha256:" + "a" * 63, "size": 1},
    {"mediaType": OCI_LAYER, "digest": "sha256:" + "A" * 64, "size": 1},
    {"mediaType": OCI_LAYER, "digest": "sha256:" + "a" * 64, "size": -1},
    {"mediaType": OCI_LAYER, "digest": "sha256:" + "a" * 64, "size": True},
    {"mediaType": OCI_LAYER, "digest": "sha256:" + "a" * 64, "size": "1"},
    {"mediaType": 3, "digest": "sha256:" + "a" * 64, "size": 1},
    {"mediaType": OCI_LAYER, "digest": "md5:" + "a" * 32, "size": 1},
    {"mediaType": OCI_LAYER, "digest": "sha256:" + "a" * 64, "size": 1, "urls": "http://x"},
    {"mediaType": OCI_LAYER, "digest": "sha256:" + "a" * 64, "size": 1, "platform": {"os": 1}},
    [],
])
def test_malformed_descriptor_is_a_registry_error(doc):
    with pytest.raises(RegistryError):
        Descriptor.from_oci(doc)


@pytest.mark.unit
def test_descriptor_round_trips_through_oci_json():
    doc = {"mediaType": OCI_LAYER, "digest": "sha512:" + "b" * 128, "size": 7,
           "urls": ["https://x/y"], "annotations": {"a": "b"},
           "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}}
    assert Descriptor.from_oci(doc).to_oci() == doc


# -- remembered endpoints ------------------------------------------------------------------


@pytest.mark.unit
def test_remembered_plain_http_is_not_used_for_a_registry_that_needs_tls(
        tmp_path, unreachable_docker_hub):
    path = tmp_path / "registries.json"
    path.write_text(json.dumps({"registries": {
        "registry.example.com": {"base": "http://registry.example.com", "challenge": None}}}))
    memory = EndpointMemory(path, lambda p, data: Path(p).write_bytes(data))
    with client(memory=memory) as c, pytest.raises(RegistryError) as info:
        c.head_manifest("registry.example.com/a/b:c")
    # It pinged over HTTPS (through the closed proxy) instead of trusting the record.
    assert "cannot reach https://registry.example.com/v2/" in str(info.value)


@pytest.mark.parametrize("content", ["", "{", "[]", '{"registries": []}',
                                     '{"registries": {"HOST": {"base": 5}}}',
                                     '{"registries": {"HOST": {"base": "http://HOST", '
                                     '"challenge": {"scheme": "ntlm"}}}}'])
def test_malformed_remembered_endpoints_are_ignored(registry, tmp_path, content):
    path = tmp_path / "registries.json"
    path.write_text(content.replace("HOST", registry.host))
    memory = EndpointMemory(path, lambda p, data: Path(p).write_bytes(data))
    repo = repo_name()
    digest, _ = registry.push_image(repo, "v1", [os.urandom(32)])
    with client(memory=memory) as c:
        assert c.head_manifest(f"{registry.host}/{repo}:v1") == digest
    remembered = json.loads(path.read_text())["registries"][registry.host]
    assert remembered == {"base": f"http://{registry.host}", "challenge": None}
