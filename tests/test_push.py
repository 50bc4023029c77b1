"""`Image.push` and ``isobox push`` against the real registry (docker-registry): the v2
upload protocol (monolithic and chunked uploads, HEAD skips, cross-repository mounts),
push scopes from a real token server, credentials as a pull finds them, manifests and
indexes as stored (digests kept), and a push interrupted midway then run again.

Request logs come from a forwarding proxy (support/proxy.py); the two faults a real
registry cannot produce (a connection that stops answering, a lie about a digest) come
from its FaultProxy. What other tools make of a pushed image: skopeo, at the end."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest

from isobox.errors import AuthenticationError, DigestMismatch
from isobox.images import push as push_module
from isobox.images.image import Image
from isobox.images.store import Store
from support.images import Tools
from support.proxy import FaultProxy
from test_cli_pull import isobox
from test_pull import assert_same_tree


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


@pytest.fixture
def fault_proxy(images) -> Iterator[FaultProxy]:
    proxy = FaultProxy(images.registry.host)
    try:
        yield proxy
    finally:
        proxy.close()


def fresh_name(host: str, what: str = "app") -> str:
    return f"{host}/pushed/{what}-{uuid.uuid4().hex[:8]}:1"


def uploads(log: List[tuple]) -> List[tuple]:
    return [(m, p) for m, p in log if "/blobs/uploads/" in p]


def test_push_then_pull_keeps_the_digest_and_tree(images, store, tmp_path):
    img = Image.pull(images.layered.reference, store=store)
    target = fresh_name(images.registry.host)
    assert img.push(target) == img.digest
    back = Image.pull(target, store=tmp_path / "other")
    assert back.digest == img.digest and back.id == img.id
    assert_same_tree(back, images.layered.expected)


def test_blobs_the_registry_has_are_skipped(images, store, registry_proxy):
    img = Image.pull(images.busybox.reference, store=store)
    target = fresh_name(registry_proxy.host)
    img.push(target)
    first = uploads(registry_proxy.requests())
    assert [m for m, _ in first].count("POST") == 2  # config and layer
    registry_proxy.clear()
    assert img.push(target) == img.digest
    assert uploads(registry_proxy.requests()) == []
    assert [m for m, p in registry_proxy.requests("blobs")] == ["HEAD", "HEAD"]
    assert ("PUT", f"/v2/{target.split('/', 1)[1].rsplit(':', 1)[0]}/manifests/1") in registry_proxy.requests()


def test_a_blob_of_another_repository_of_the_registry_is_mounted(images, store, registry_proxy):
    img = Image.pull(registry_proxy.reference(images.layered), store=store)
    registry_proxy.clear()
    img.push(fresh_name(registry_proxy.host))
    log = registry_proxy.requests()
    assert [m for m, _ in uploads(log)] == ["POST"] * (1 + len(images.layered.layer_digests))
    assert not any(m in ("PUT", "PATCH") for m, p in log if "/blobs/" in p)


def test_large_blobs_go_in_chunks(images, store, registry_proxy, monkeypatch, tmp_path):
    monkeypatch.setattr(push_module, "CHUNK_SIZE", 300_000)
    monkeypatch.setattr(push_module, "MONOLITHIC_MAX", 100_000)
    img = Image.pull(images.layered.reference, store=store)
    target = fresh_name(registry_proxy.host)
    img.push(target)
    patches = [p for m, p in registry_proxy.requests() if m == "PATCH"]
    biggest = max(d["size"] for d in images.layered.manifest["layers"])
    assert len(patches) >= biggest // 300_000
    assert Image.pull(target, store=tmp_path / "other").digest == img.digest


def test_a_broken_chunk_continues_where_the_registry_says_the_upload_stands(
        images, store, fault_proxy, monkeypatch, tmp_path):
    monkeypatch.setattr(push_module, "CHUNK_SIZE", 300_000)
    monkeypatch.setattr(push_module, "MONOLITHIC_MAX", 100_000)
    monkeypatch.setattr(push_module, "MAX_PARALLEL_BLOBS", 1)
    img = Image.pull(images.layered.reference, store=store)
    fault_proxy.drop["PATCH"] = {1, 3}  # the first of a blob, and one in its middle
    target = fresh_name(fault_proxy.host)
    img.push(target)
    log = fault_proxy.requests()
    statuses = [p for m, p in log if m == "GET" and "/blobs/uploads/" in p]
    assert len(statuses) == 2  # one question where the upload stands per broken PATCH
    sizes = [d["size"] for d in images.layered.manifest["layers"]]
    chunks = sum(-(-size // 300_000) for size in sizes if size > 100_000)
    # each dropped PATCH sent again once, from where it stood: nothing else twice
    assert len([p for m, p in log if m == "PATCH"]) == chunks + 2
    assert [m for m, p in uploads(log)].count("POST") == 1 + len(images.layered.layer_digests)
    assert Image.pull(target, store=tmp_path / "other").digest == img.digest


def test_a_multi_platform_image_is_pushed_with_its_index(images, store, tmp_path):
    Image.pull(images.multiarch.reference, platform="linux/arm64", store=store)
    amd = Image.pull(images.multiarch.reference, platform="linux/amd64", store=store)
    target = fresh_name(images.registry.host, "multi")
    assert amd.push(target) == images.multiarch.digest
    arm = Image.pull(target, platform="linux/arm64", store=tmp_path / "other")
    assert arm.digest == images.multiarch.platforms["linux/arm64"].digest


def test_push_with_token_auth_asks_for_the_push_scope(images, store, registry_token):
    img = Image.pull(images.busybox.reference, store=store)
    target = fresh_name(registry_token.host)
    path = target.split("/", 1)[1].rsplit(":", 1)[0]
    with pytest.raises(AuthenticationError):
        img.push(target)
    img.push(target, auth=(registry_token.username, registry_token.password))
    scopes = {s for _, ss, user in registry_token.token_requests if user == registry_token.username
              for s in ss}
    assert f"repository:{path}:pull,push" in scopes
    back = Image.pull(target, auth=(registry_token.username, registry_token.password),
                      store=store.root.parent / "other")
    assert back.digest == img.digest


def test_push_finds_credentials_as_pull_does(images, store, registry_basic, tmp_path, monkeypatch):
    img = Image.pull(images.busybox.reference, store=store)
    raw = f"{registry_basic.username}:{registry_basic.password}".encode()
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker/config.json").write_text(json.dumps(
        {"auths": {registry_basic.host: {"auth": base64.b64encode(raw).decode()}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    target = fresh_name(registry_basic.host)
    assert img.push(target) == img.digest


def test_a_registry_lying_about_the_digest_is_refused(images, store, fault_proxy):
    fault_proxy.lie_about_digests = True
    img = Image.pull(images.busybox.reference, store=store)
    with pytest.raises(DigestMismatch, match="stored the manifest"):
        img.push(fresh_name(fault_proxy.host))


def test_an_interrupted_push_run_again_uploads_only_what_is_missing(images, tmp_path, fault_proxy):
    """The push is really interrupted: its process is killed while the proxy holds its
    requests, after two blobs were uploaded whole."""
    root = tmp_path / "root"
    assert isobox("pull", "-q", images.layered.reference, root=root).returncode == 0
    target = fresh_name(fault_proxy.host)
    fault_proxy.stall_after = 2
    proc = subprocess.Popen([sys.executable, "-m", "isobox", "--root", str(root), "push", "-q", images.layered.reference, target],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert fault_proxy.stalled.wait(60), "the push never completed two uploads"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()
    done = [p.rsplit("digest=", 1)[1].replace("%3A", ":") for p in fault_proxy.completed]
    assert len(done) >= 2
    fault_proxy.release()
    fault_proxy.stalled.clear()
    fault_proxy.stall_after = None
    fault_proxy.clear()
    fault_proxy.completed.clear()
    again = isobox("push", "-q", images.layered.reference, target, root=root)
    assert again.returncode == 0, again.stderr
    total = 1 + len(images.layered.layer_digests)
    resent = [p.rsplit("digest=", 1)[1].replace("%3A", ":") for p in fault_proxy.completed]
    assert len(resent) == total - len(done) and not set(resent) & set(done)
    assert Image.pull(target, store=tmp_path / "other").digest == images.layered.digest


def test_cli_push_and_skopeo_reads_what_was_pushed(images, tmp_path):
    root = tmp_path / "root"
    assert isobox("pull", "-q", images.layered_zstd.reference, root=root).returncode == 0
    target = fresh_name(images.registry.host)
    proc = isobox("push", images.layered_zstd.reference, target, root=root)
    assert proc.returncode == 0, proc.stderr
    assert f"digest: {images.layered_zstd.digest}" in proc.stdout
    tools = Tools(tmp_path / "tools")
    info = json.loads(tools.skopeo_cmd("inspect", "--tls-verify=false", f"docker://{target}"))
    assert info["Digest"] == images.layered_zstd.digest
    tools.skopeo_cmd("copy", "-q", "--src-tls-verify=false", "--preserve-digests",
                     f"docker://{target}", f"dir:{tmp_path / 'copy'}")
    assert sorted(os.listdir(tmp_path / "copy")) == sorted(
        ["manifest.json", "version"] + [d.partition(":")[2] for d in
                                        (images.layered_zstd.config_digest,
                                         *images.layered_zstd.layer_digests)])
    missing = isobox("push", "example.com/not/stored:1", root=root)
    assert missing.returncode == 125 and "not in the store" in missing.stderr
