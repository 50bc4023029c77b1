"""`Image.pull` against a real registry and images umoci and skopeo made.

Contents are checked file by file against the tree umoci itself unpacks from the same
image (see tests/support/images.py). Request counts come from a forwarding proxy in
front of the registry (`registry_proxy`).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from support.images import LAYER_GZIP, sha256_digest
from support.proxy import CountingProxy
from support.trees import (
    expected_hardlinks,
    hardlink_groups,
    is_opaque,
    is_whiteout,
    merged_view,
    tree,
)
from isobox.errors import DigestMismatch, ImageNotFound, InvalidReference, NotFound
from isobox.images.digest import chain_ids
from isobox.images.image import Image
from isobox.images.platform import Platform
from isobox.images.store import Store


def assert_same_tree(image: Image, expected: Path) -> Dict[str, Tuple[object, Path]]:
    view = merged_view(image.layers)
    got = {rel: entry for rel, (entry, _) in view.items()}
    want = tree(expected)
    if os.geteuid() != 0:
        # Rootless pulls give files their archive owners through the caller's subordinate
        # ids: a directory of another (sub)uid may then be closed to the caller, as in
        # rootless podman. What is inside is checked from a container (test_run_pulled).
        closed = [rel for rel, (entry, path) in view.items() if entry.kind == "dir"
                  and os.lstat(path).st_uid != os.geteuid() and not os.access(path, os.R_OK | os.X_OK)]
        for rel in closed:
            for key in [k for k in want if k.startswith(rel + "/")]:
                del want[key]
    diff = {k: (want.get(k), got.get(k)) for k in set(want) | set(got) if want.get(k) != got.get(k)}
    assert not diff, f"differs from umoci's unpack: {sorted(diff.items())[:10]}"
    return view


def layer_file(image: Image, index: int, rel: str) -> Path:
    return image.layers[index] / rel


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


# -- contents -----------------------------------------------------------------------------


def test_pulled_busybox_matches_umoci_unpack(images, store):
    img = Image.pull(images.busybox.reference, store=store)
    assert_same_tree(img, images.busybox.expected)
    assert img.reference == images.busybox.reference
    assert img.digest == images.busybox.digest
    assert img.platform == "linux/amd64"
    assert img.config.cmd == ("sh",)
    assert any(e.startswith("PATH=") for e in img.config.env)
    assert img.size > 1_000_000  # the busybox binary, unpacked
    assert len(img.layers) == 1 and img.layers[0] == store.layer_path(images.busybox.diff_ids[0])
    assert os.readlink(img.layers[0] / "bin/sh") == "busybox"


@pytest.mark.parametrize("variant", ["layered", "layered_zstd", "layered_plain", "layered_mixed",
                                     "busybox_docker"])
def test_every_compression_and_media_type_unpacks_to_the_same_tree(images, store, variant):
    image = getattr(images, variant)
    img = Image.pull(image.reference, store=store)
    assert_same_tree(img, image.expected)
    assert [store.layer_path(d) for d in image.diff_ids] == list(img.layers)


def test_whiteout_hides_lower_file(images, store):
    img = Image.pull(images.layered.reference, store=store)
    view = merged_view(img.layers)
    assert "data/remove-me.txt" not in view and "data/gone" not in view and "data/gone/b/c" not in view
    assert (img.layers[1] / "data/remove-me.txt").read_text() == "bye\n"
    for name in ("data/remove-me.txt", "data/gone"):
        path = layer_file(img, 2, name)
        assert is_whiteout(path, os.lstat(path)), name


def test_opaque_directory_hides_lower_contents(images, store):
    img = Image.pull(images.layered.reference, store=store)
    view = merged_view(img.layers)
    assert "opt/app/old1" not in view and "opt/app/sub" not in view
    assert "opt/app/new/file" in view
    assert is_opaque(layer_file(img, 3, "opt/app"))
    assert not (img.layers[3] / "opt/app/.wh..wh..opq").exists()


def test_hard_links_survive_within_and_across_layers(images, store):
    img = Image.pull(images.layered.reference, store=store)
    view = merged_view(img.layers)
    groups = hardlink_groups({rel: path for rel, (_, path) in view.items()})
    assert groups == expected_hardlinks(images.layered.expected)
    assert ("data/hard-link", "data/hard-original") in groups
    assert ("data/hl-a", "data/hl-b") in groups


def test_symlinks_keep_their_targets(images, store):
    img = Image.pull(images.layered.reference, store=store)
    view = merged_view(img.layers)
    targets = {rel: entry.content for rel, (entry, _) in view.items() if entry.kind == "symlink"}
    assert targets["data/link-rel"] == "exec.sh"  # retargeted by layer 3
    assert targets["data/link-abs"] == "/data/keep.txt"
    assert targets["data/link-dangling"] == "/nonexistent/target"
    assert targets["data/link-dir"] == "../opt/app"


def test_modes_and_special_files_survive(images, store):
    img = Image.pull(images.layered.reference, store=store)
    view = merged_view(img.layers)
    assert view["data/locked"][0].mode == 0o000
    assert view["data/readonly-dir"][0].mode == 0o555
    assert view["data/private"][0].mode == 0o640  # chmod-only change in layer 3
    assert view["data/exec.sh"][0].mode == 0o755
    assert view["data/fifo"][0].kind == "fifo"
    assert view["tmp"][0].mode == 0o1777


def test_pulled_config_is_the_images(images, store):
    img = Image.pull(images.layered.reference, store=store)
    assert img.config.user == "app"
    assert img.config.working_dir == "/data"
    assert img.config.labels == {"org.isobox.test": "layered"}
    assert img.config.cmd == ("sh",)


def test_directory_replaced_by_a_file(images, store):
    img = Image.pull(images.replaced.reference, store=store)
    assert_same_tree(img, images.replaced.expected)


# -- the cache ------------------------------------------------------------------------------


def test_shared_layer_is_fetched_and_extracted_once(images, store, registry_proxy):
    proxy = registry_proxy
    busybox = Image.pull(proxy.reference(images.busybox), store=store)
    base = busybox.layers[0]
    inode = base.stat().st_ino
    layered = Image.pull(proxy.reference(images.layered), store=store)
    assert layered.layers[0] == base and base.stat().st_ino == inode
    assert proxy.blob_gets(images.busybox.layer_digests[0]) == 1
    assert images.layered.layer_digests[0] == images.busybox.layer_digests[0]
    # zstd variant: other blobs, same diff_ids: nothing to download, nothing to extract
    Image.pull(proxy.reference(images.layered_zstd), store=store)
    assert not [d for d in images.layered_zstd.layer_digests if proxy.blob_gets(d)]
    assert sorted(os.listdir(store.layers / "sha256")) == sorted(
        [d[7:] for d in images.layered.diff_ids] + [d[7:] + ".json" for d in images.layered.diff_ids])


def test_second_pull_of_a_cached_tag_costs_one_head(images, store, registry_proxy):
    ref = registry_proxy.reference(images.layered)
    first = Image.pull(ref, store=store)
    registry_proxy.clear()
    again = Image.pull(ref, store=store)
    assert again == first
    assert registry_proxy.requests("manifests") == [
        ("HEAD", "/v2/isobox-test/layered/manifests/latest")]
    assert registry_proxy.requests("blobs") == []


def test_cached_re_pull_in_a_new_process_is_one_request(images, store, registry_proxy):
    # The registry's answer to GET /v2/ is remembered in the store, so a later process
    # (a re-pull usually is one) does not ask again.
    ref = registry_proxy.reference(images.layered)
    Image.pull(ref, store=store)
    registry_proxy.clear()
    proc = subprocess.run([sys.executable, "-m", "isobox", "--root", str(store.root), "pull",
                           "-q", ref], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    assert registry_proxy.requests() == [("HEAD", "/v2/isobox-test/layered/manifests/latest")]
    remembered = json.loads((store.root / "registries.json").read_text())
    assert remembered["registries"][registry_proxy.host] == {
        "base": f"http://{registry_proxy.host}", "challenge": None}  # loopback: plain HTTP


@pytest.fixture
def token_proxy(registry_token):
    """A CountingProxy in front of the token-auth registry (the token server is reached
    directly, and counts its own requests)."""
    proxy = CountingProxy(registry_token.host)
    try:
        yield proxy
    finally:
        proxy.close()


def test_cached_re_pull_from_a_token_registry_is_one_token_and_one_head(
        registry_token, token_proxy, store):
    repo = "isobox-test/token-cached"
    registry_token.push_image(repo, "latest", [_tar(("f", b"token"))])
    ref = f"{token_proxy.host}/{repo}:latest"
    auth = (registry_token.username, registry_token.password)
    Image.pull(ref, store=store, auth=auth)
    token_proxy.clear()
    tokens_before = len(registry_token.token_requests)
    Image.pull(ref, store=store, auth=auth)  # a new client: nothing cached in memory
    assert token_proxy.requests() == [("HEAD", f"/v2/{repo}/manifests/latest")]
    new_tokens = registry_token.token_requests[tokens_before:]
    assert [(m, scopes) for m, scopes, _ in new_tokens] == [
        ("GET", (f"repository:{repo}:pull",))]


def test_stale_remembered_answer_falls_back_to_the_full_dance_once(
        registry, registry_token, token_proxy, store):
    # The proxy's host first fronts an anonymous registry, then one that wants tokens:
    # what was remembered (anonymous) no longer holds.
    repo = "isobox-test/moved-auth"
    token_proxy.upstream = registry.host
    registry.push_image(repo, "latest", [_tar(("f", b"before"))])
    ref = f"{token_proxy.host}/{repo}:latest"
    auth = (registry_token.username, registry_token.password)
    first = Image.pull(ref, store=store, auth=auth)
    token_proxy.upstream = registry_token.host
    after, _ = registry_token.push_image(repo, "latest", [_tar(("f", b"after"))])
    token_proxy.clear()
    second = Image.pull(ref, store=store, auth=auth)
    assert second.digest == after != first.digest
    log = token_proxy.requests()
    assert log[:4] == [("HEAD", f"/v2/{repo}/manifests/latest"), ("GET", "/v2/"),
                       ("HEAD", f"/v2/{repo}/manifests/latest"),
                       ("GET", f"/v2/{repo}/manifests/latest")]
    assert log.count(("GET", "/v2/")) == 1
    remembered = json.loads((store.root / "registries.json").read_text())
    assert remembered["registries"][token_proxy.host]["challenge"]["scheme"] == "bearer"


def test_offline_pull_and_get_cost_no_request(images, store, registry_proxy):
    ref = registry_proxy.reference(images.busybox)
    with pytest.raises(ImageNotFound):
        Image.pull(ref, store=store, offline=True)
    with pytest.raises(ImageNotFound):
        Image.get(ref, store=store)
    pulled = Image.pull(ref, store=store)
    registry_proxy.clear()
    assert Image.pull(ref, store=store, offline=True) == pulled
    assert Image.get(ref, store=store) == pulled
    assert registry_proxy.requests() == []


def test_pull_if_missing_takes_a_stored_image_without_any_request(images, store, registry_proxy):
    ref = registry_proxy.reference(images.multiarch)
    pulled = Image.pull(ref, store=store)
    repo = ref.rsplit(":", 1)[0]
    registry_proxy.clear()
    asked: List[str] = []
    for name in (ref, f"{repo}@{images.multiarch.digest}", f"{repo}@{pulled.digest}"):
        found = Image.pull(name, if_missing=True, on_pull=lambda: asked.append(name), store=store)
        assert found.digest == pulled.digest and found.layers == pulled.layers
    assert registry_proxy.requests() == [] and asked == []


def test_pull_if_missing_pulls_what_is_not_stored(images, store, registry_proxy):
    ref = registry_proxy.reference(images.busybox)
    asked: List[str] = []
    img = Image.pull(ref, if_missing=True, on_pull=lambda: asked.append(ref), store=store)
    assert asked == [ref]
    assert img.digest == images.busybox.digest and Image.get(ref, store=store) == img
    assert ("GET", "/v2/isobox-test/busybox/manifests/latest") in registry_proxy.requests("manifests")


def test_pull_if_missing_takes_the_platform_pulled_as_get_does(images, store, registry_proxy):
    ref = registry_proxy.reference(images.multiarch)
    arm = Image.pull(ref, platform="linux/arm64", store=store)
    registry_proxy.clear()
    assert Image.pull(ref, if_missing=True, store=store) == arm == Image.get(ref, store=store)
    assert registry_proxy.requests() == []
    host = Image.pull(ref, if_missing=True, platform="linux/amd64", store=store)  # not stored
    assert host.platform == "linux/amd64" and registry_proxy.requests("manifests")


def test_stored_digest_reference_costs_no_request(images, store, registry_proxy):
    pulled = Image.pull(registry_proxy.reference(images.multiarch), store=store)
    registry_proxy.clear()
    repo = registry_proxy.reference(images.multiarch).rsplit(":", 1)[0]
    by_index = Image.pull(f"{repo}@{images.multiarch.digest}", store=store)
    by_manifest = Image.pull(f"{repo}@{pulled.digest}", store=store)
    assert registry_proxy.requests() == []
    assert by_index.digest == by_manifest.digest == pulled.digest
    assert by_index.layers == pulled.layers
    assert by_index.reference == f"{repo}@{images.multiarch.digest}"


def test_moved_tag_is_pulled_again(images, store, registry):
    repo = "isobox-test/moving"
    oci = "application/vnd.oci.image.manifest.v1+json"
    for image in (images.busybox, images.layered):  # the blobs, pushed to this repository
        registry.push_blob(repo, images.layout.blob(image.config_digest))
        for digest in image.layer_digests:
            registry.push_blob(repo, images.layout.blob(digest))
    before = registry.push_manifest(repo, "v1", json.dumps(dict(images.busybox.manifest)).encode(), oci)
    ref = f"{registry.host}/{repo}:v1"
    first = Image.pull(ref, store=store)
    assert first.digest == before and len(first.layers) == 1
    after = registry.push_manifest(repo, "v1", json.dumps(dict(images.layered.manifest)).encode(), oci)
    second = Image.pull(ref, store=store)
    assert second.digest == after != before
    assert len(second.layers) == 4
    assert Image.get(ref, store=store) == second
    assert [r.digest for r in store.records()] == sorted([before, after])
    store.prune()  # the old manifest is untagged now
    assert [r.digest for r in store.records()] == [after]


def test_platform_is_chosen_from_an_index(images, store):
    multi = images.multiarch
    host = Image.pull(multi.reference, store=store)
    assert host.digest == multi.platforms["linux/amd64"].digest and host.platform == "linux/amd64"
    arm = Image.pull(multi.reference, platform="linux/arm64", store=store)
    assert arm.digest == multi.platforms["linux/arm64"].digest
    assert arm.platform == "linux/arm64"
    assert arm.config.labels["org.isobox.test.arch"] == "arm64"
    assert arm.layers == host.layers  # the same layer, stored once
    assert Image.get(multi.reference, store=store).digest == host.digest  # the host's first
    assert Image.get(multi.reference, platform="linux/arm64/v8", store=store).digest == arm.digest
    with pytest.raises(NotFound, match="platform"):
        Image.pull(multi.reference, platform="linux/s390x", store=store)


def test_get_falls_back_to_the_platform_pulled(images, store):
    arm = Image.pull(images.multiarch.reference, platform=Platform.parse("linux/arm64"), store=store)
    assert Image.get(images.multiarch.reference, store=store) == arm
    with pytest.raises(ImageNotFound):
        Image.get(images.multiarch.reference, platform="linux/amd64", store=store)


def test_hub_name_pulls_from_the_mirror(hub_mirror, store):
    img = Image.pull("busybox", store=store)
    assert img.reference == "docker.io/library/busybox:latest"
    assert img.digest == hub_mirror.hub_busybox.digest
    assert_same_tree(img, hub_mirror.hub_busybox.expected)
    assert Image.get("docker.io/library/busybox", store=store) == img


def test_store_root_comes_from_isobox_root(images, tmp_path, monkeypatch):
    monkeypatch.setenv("ISOBOX_ROOT", str(tmp_path / "env-root"))
    img = Image.pull(images.busybox.reference)
    assert str(img.layers[0]).startswith(str(tmp_path / "env-root"))


@pytest.mark.unit
def test_bad_reference_is_refused_before_any_request(store):
    with pytest.raises(InvalidReference):
        Image.pull("not a reference!", store=store)


def test_progress_reports_bytes_per_layer(images, store):
    events: Dict[str, List[Tuple[int, int]]] = {}
    Image.pull(images.layered.reference, store=store,
               progress=lambda digest, done, total: events.setdefault(digest, []).append((done, total)))
    sizes = {d["digest"]: d["size"] for d in images.layered.manifest["layers"]}
    assert set(events) == set(sizes)
    for digest, seen in events.items():
        assert seen[-1] == (sizes[digest], sizes[digest])
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    # cached layers are reported once, complete
    again: Dict[str, List[Tuple[int, int]]] = {}
    Image.pull(images.layered_zstd.reference, store=store,
               progress=lambda digest, done, total: again.setdefault(digest, []).append((done, total)))
    assert all(len(v) == 1 and v[0][0] == v[0][1] for v in again.values())


def test_repeated_layer_is_stacked_once(images, store, registry):
    layer = images.layout.blob(images.busybox.layer_digests[0])
    diff_id = images.busybox.diff_ids[0]
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": [diff_id, diff_id]}}
    registry.push_image("isobox-test/twice", "latest", [layer, layer], config,
                        layer_media_type=LAYER_GZIP)
    img = Image.pull(f"{registry.host}/isobox-test/twice:latest", store=store)
    assert img.layers == (store.layer_path(diff_id),)


# -- verification ------------------------------------------------------------------------------


def assert_nothing_kept(store: Store, *diff_ids: str) -> None:
    assert store.records() == [] and store.tags() == []
    for diff_id in diff_ids:
        assert not store.layer_path(diff_id).exists()
    assert list(store.tmp.iterdir()) == []


def _tar(*members: Tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_config_lying_about_diff_id_keeps_nothing(store, registry):
    layer = _tar(("file", b"real content\n"))
    lie = sha256_digest(b"some other layer")
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [lie]}}
    registry.push_image("isobox-test/lying", "latest", [layer], config)
    with pytest.raises(DigestMismatch, match="image config says"):
        Image.pull(f"{registry.host}/isobox-test/lying:latest", store=store)
    assert_nothing_kept(store, lie, sha256_digest(layer))
    assert not any(store.blobs.rglob("*"))


def test_config_with_fewer_diff_ids_than_layers_is_refused(store, registry):
    layers = [_tar(("a", b"a")), _tar(("b", b"b"))]
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layers[0])]}}
    registry.push_image("isobox-test/short-config", "latest", layers, config)
    with pytest.raises(DigestMismatch, match="2 layers"):
        Image.pull(f"{registry.host}/isobox-test/short-config:latest", store=store)
    assert_nothing_kept(store)


def test_diff_id_that_is_a_path_is_refused(store, registry):
    layer = _tar(("a", b"a"))
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": ["sha256:../../../../tmp/x"]}}
    registry.push_image("isobox-test/path-diff-id", "latest", [layer], config)
    with pytest.raises(DigestMismatch):
        Image.pull(f"{registry.host}/isobox-test/path-diff-id:latest", store=store)
    assert_nothing_kept(store)


def test_layer_served_with_wrong_bytes_keeps_nothing(store, registry):
    good = _tar(("file", b"good\n"))
    digest, _ = registry.push_image("isobox-test/rotten", "latest", [good])
    layer_digest = sha256_digest(good)
    evil = _tar(("file", b"evil\n"))
    assert len(evil) == len(good)
    registry.corrupt_blob(layer_digest, evil)
    with pytest.raises(DigestMismatch):
        Image.pull(f"{registry.host}/isobox-test/rotten:latest", store=store)
    assert_nothing_kept(store, layer_digest)


def test_layer_hard_linking_into_a_lower_layer_is_keyed_by_chain_id(store, registry):
    """A hard link whose target only a lower layer holds (as no Docker-built image has, but
    the format allows): extracted on top of the lower layer and stored by chain ID."""
    lower = _tar(("etc/data", b"shared\n"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("etc/alias")
        info.type = tarfile.LNKTYPE
        info.linkname = "etc/data"
        t.addfile(info)
    upper = buf.getvalue()
    registry.push_image("isobox-test/cross-link", "latest", [lower, upper])
    img = Image.pull(f"{registry.host}/isobox-test/cross-link:latest", store=store)
    diff_ids = [sha256_digest(lower), sha256_digest(upper)]
    assert img.layers == (store.layer_path(diff_ids[0]), store.layer_path(chain_ids(diff_ids)[1]))
    assert (img.layers[1] / "etc/alias").read_text() == "shared\n"
    record = store.read_image(img.digest)
    assert record is not None and record.layers[1].chain_id == chain_ids(diff_ids)[1]
    # stored and found again without a download
    assert Image.pull(f"{registry.host}/isobox-test/cross-link:latest", store=store,
                      offline=True) == img
    store.remove(reference=img.reference)
    assert not any((store.layers / "sha256").iterdir())


# -- several processes at once, and crashes ------------------------------------------------------

PULL_SCRIPT = """
import sys, time
from isobox.images.image import Image
ref, root = sys.argv[1], sys.argv[2]
block = sys.argv[3] if len(sys.argv) > 3 else None
def progress(digest, done, total):
    if digest == block and 0 < done < total:
        open(root + ".blocked", "w").close()
        time.sleep(3600)
img = Image.pull(ref, store=root, progress=progress if block else None)
print(img.digest)
"""


def test_concurrent_pulls_download_each_layer_once(images, store, registry_proxy):
    ref = registry_proxy.reference(images.layered)
    procs = [subprocess.Popen([sys.executable, "-c", PULL_SCRIPT, ref, str(store.root)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
        assert out.strip() == images.layered.digest
    for digest in images.layered.layer_digests:
        assert registry_proxy.blob_gets(digest) == 1, digest
    assert_same_tree(Image.get(ref, store=store), images.layered.expected)
    assert list(store.tmp.iterdir()) == []


def test_concurrent_pulls_from_threads_download_each_layer_once(images, store, registry_proxy):
    from concurrent.futures import ThreadPoolExecutor

    ref = registry_proxy.reference(images.layered_zstd)
    with ThreadPoolExecutor(4) as pool:
        pulled = list(pool.map(lambda _: Image.pull(ref, store=store), range(4)))
    assert len({(p.digest, p.layers) for p in pulled}) == 1
    for digest in images.layered_zstd.layer_digests:
        assert registry_proxy.blob_gets(digest) == 1, digest


def test_killed_pull_leaves_nothing_that_is_used(images, store, registry_proxy):
    ref = registry_proxy.reference(images.layered)
    big = images.layered.layer_digests[1]  # the layer with data/big.bin
    proc = subprocess.Popen([sys.executable, "-c", PULL_SCRIPT, ref, str(store.root), big],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    marker = Path(str(store.root) + ".blocked")
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.5)  # let the other layers finish and be committed
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    big_diff_id = images.layered.diff_ids[1]
    assert store.records() == [] and store.tags() == []
    assert not store.has_layer(big_diff_id)
    assert any(store.tmp.iterdir())  # the half-extracted layer, as garbage
    with pytest.raises(ImageNotFound):
        Image.get(ref, store=store)

    registry_proxy.clear()
    img = Image.pull(ref, store=store)
    assert_same_tree(img, images.layered.expected)
    assert registry_proxy.blob_gets(big) == 1
    assert list(store.tmp.iterdir()) == []  # the next pull swept what the killed one left
    store.prune()
    assert_same_tree(Image.get(ref, store=store), images.layered.expected)


# -- removal ---------------------------------------------------------------------------------------


def test_remove_keeps_layers_other_images_use(images, store):
    busybox = Image.pull(images.busybox.reference, store=store)
    layered = Image.pull(images.layered.reference, store=store)
    removed = Image.remove(images.layered.reference, store=store)
    assert removed == (images.layered.reference,)
    assert busybox.layers[0].is_dir()
    assert not any(p.exists() for p in layered.layers[1:])  # mode 000 dirs included
    with pytest.raises(ImageNotFound):
        Image.get(images.layered.reference, store=store)
    with pytest.raises(ImageNotFound):
        Image.remove(images.layered.reference, store=store)
    assert [i.reference for i in Image.list(store=store)] == [images.busybox.reference]


def test_remove_by_id_prefix_removes_every_tag(images, store):
    a = Image.pull(images.busybox.reference, store=store)
    b = Image.pull(images.multiarch.reference, store=store)
    assert a.digest == b.digest  # the same manifest under two names
    removed = Image.remove(a.digest[7:19], store=store)
    assert set(removed) == {images.busybox.reference, images.multiarch.reference, a.digest}
    assert Image.list(store=store) == [] and not a.layers[0].exists()


def test_prune_keeps_layers_of_containers_and_tagged_images(images, store):
    layered = Image.pull(images.layered.reference, store=store)
    (store.containers / "c1").mkdir()
    store.hold_layers("c1", layered.layers)
    Image.remove(images.layered.reference, store=store)
    assert all(p.is_dir() for p in layered.layers)  # a container still uses them
    store.release_layers("c1")
    report = store.prune()
    assert set(report.layers) == set(images.layered.diff_ids)
    assert not any(p.exists() for p in layered.layers)
