"""Real test images, made by tools that are not isobox, pushed to a real registry.

Built once per session from Debian's busybox-static (``/bin/busybox``) with umoci
(``init``/``new``/``unpack``/``repack``/``config``/``raw add-layer``), GNU tar for the one
layer umoci cannot write (an opaque directory plus files owned by uid 1000), skopeo to
recompress (zstd) and to push. Images (repositories under ``isobox-test/`` unless said):

- ``busybox``: one layer: /bin/busybox, a symlink per applet, /etc/passwd and /etc/group
  (root, app 1000, nobody 65534), /tmp 1777; Cmd ["sh"], Env PATH. Also pushed as
  ``library/busybox:latest`` (for ``Image.pull("busybox")`` through the mirror, see
  `hub_mirror`) and in Docker's media types as ``busybox-docker``.
- ``layered``: busybox plus four layers: umoci repacks with whiteouts of a file and of a
  directory, a hard link to a file of a lower layer (umoci writes both names into the upper
  layer), hard links within a layer, symlinks (relative, absolute, dangling, to a
  directory), a fifo, modes 000/555/600/755; a GNU tar layer with an opaque directory and
  uid 1000 files. Variants: ``layered-zstd`` (skopeo recompressed), ``layered-plain``
  (uncompressed layers, pushed raw: skopeo always compresses for registries) and
  ``layered-mixed`` (gzip, zstd and plain layers in one manifest).
- ``replaced``: busybox plus a directory, then a layer replacing it by a file (umoci then
  writes a whiteout for the old child below the new file: ``data/will-be-file/.wh.x``).
- ``multiarch``: an OCI index of linux/amd64 (the busybox image) and linux/arm64 (the same
  layer, a config saying arm64 with label ``org.isobox.test.arch=arm64``).

Each image comes with what it should contain: ``expected``, the root filesystem umoci
itself unpacks from the same layout (as root with ownership, else ``--rootless``); support/
trees.py compares a pulled image's layers against it file by file.

`build_images` writes only under the directory it is given: skopeo's blob-info cache is
pointed there (``XDG_DATA_HOME``; as root, a private mount namespace puts a tmpfs on
/var/lib). The suite's fixtures (``images``, ``hub_mirror``) are in fixtures/images.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs

from .host import IS_ROOT, need_tool
from .registry import sha256_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = LAYER_TAR + "+gzip"
LAYER_ZSTD = LAYER_TAR + "+zstd"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"


def _run(cmd: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
         cwd: Optional[Path] = None) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=dict(env) if env else None,
                          cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc.stdout


# -- OCI layouts -------------------------------------------------------------------------


@attrs.frozen
class Layout:
    """An OCI image layout directory, read as the spec says (for pushes and assertions)."""

    path: Path

    def blob(self, digest: str) -> bytes:
        algorithm, _, hexpart = digest.partition(":")
        return (self.path / "blobs" / algorithm / hexpart).read_bytes()

    def manifest_digest(self, tag: str) -> str:
        index = json.loads((self.path / "index.json").read_text())
        for desc in index["manifests"]:
            if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return str(desc["digest"])
        raise KeyError(f"{self.path} has no tag {tag}")

    def manifest(self, tag: str) -> Dict[str, Any]:
        return dict(json.loads(self.blob(self.manifest_digest(tag))))

    def config(self, tag: str) -> Dict[str, Any]:
        return dict(json.loads(self.blob(self.manifest(tag)["config"]["digest"])))

    def layer_tar(self, tag: str, index: int) -> bytes:
        """Layer ``index`` uncompressed (gzip via Python, zstd via the zstd tool)."""
        desc = self.manifest(tag)["layers"][index]
        data = self.blob(desc["digest"])
        if desc["mediaType"].endswith("+gzip"):
            return gzip.decompress(data)
        if desc["mediaType"].endswith("+zstd"):
            return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
        return data


class Tools:
    """umoci, skopeo and tar invocations, each isolated from the user's and system's state."""

    def __init__(self, work: Path) -> None:
        self.umoci = need_tool("umoci")
        self.skopeo = need_tool("skopeo")
        self.tar = need_tool("tar")
        self.work = work
        self.env = {
            **os.environ,
            "XDG_DATA_HOME": str(work / "xdg-data"),
            "XDG_CONFIG_HOME": str(work / "xdg-config"),
            "XDG_RUNTIME_DIR": str(work / "xdg-run"),
            "HOME": str(work / "home"),
        }
        for key in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "HOME"):
            Path(self.env[key]).mkdir(parents=True, exist_ok=True, mode=0o700)
        self._private_var_lib = IS_ROOT and self._can_unshare()

    def _can_unshare(self) -> bool:
        unshare = shutil.which("unshare")
        if unshare is None:
            return False
        return subprocess.run([unshare, "-m", "--propagation", "private", "true"],
                              capture_output=True).returncode == 0

    def umoci_cmd(self, *args: str) -> str:
        return _run([self.umoci, *args], env=self.env)

    def skopeo_cmd(self, *args: str) -> str:
        cmd = [self.skopeo, "--insecure-policy", *args]
        if self._private_var_lib:
            # As root skopeo keeps its blob-info cache in /var/lib/containers/cache: give it
            # a throw-away /var/lib in a private mount namespace instead.
            cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                   'mount -t tmpfs tmpfs /var/lib && exec "$@"', "skopeo", *cmd]
        return _run(cmd, env=self.env)

    def push(self, layout: Path, tag: str, dest: str, *, fmt: Optional[str] = None) -> str:
        """skopeo copy oci:LAYOUT:TAG docker://DEST; returns the pushed manifest digest."""
        digest_file = self.work / f"digest-{os.getpid()}"
        args = ["copy", "-q", "--dest-tls-verify=false", "--dest-no-creds",
                "--digestfile", str(digest_file)]
        if fmt:
            args += ["--format", fmt]
        self.skopeo_cmd(*args, f"oci:{layout}:{tag}", f"docker://{dest}")
        return digest_file.read_text().strip()


# -- building the images -----------------------------------------------------------------


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """``data`` at ``path`` (parents made), with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def _pseudo_random(size: int, seed: bytes) -> bytes:
    """Deterministic and incompressible (so the layer takes several chunks to stream)."""
    out = bytearray()
    for counter in range((size + 63) // 64):
        out += hashlib.sha512(seed + counter.to_bytes(8, "big")).digest()
    return bytes(out[:size])


def _populate_busybox(rootfs: Path) -> None:
    bindir = rootfs / "bin"
    bindir.mkdir(parents=True)
    shutil.copy2("/bin/busybox", bindir / "busybox")
    os.chmod(bindir / "busybox", 0o755)
    applets = _run(["/bin/busybox", "--list"]).split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", bindir / applet)
    write_file(rootfs / "etc/passwd", PASSWD.encode())
    write_file(rootfs / "etc/group", GROUP.encode())
    for name, mode in (("tmp", 0o1777), ("root", 0o700), ("proc", 0o755), ("sys", 0o755),
                       ("dev", 0o755), ("home", 0o755)):
        (rootfs / name).mkdir()
        os.chmod(rootfs / name, mode)


def _populate_layer2(rootfs: Path) -> None:
    data = rootfs / "data"
    write_file(data / "keep.txt", b"keep\n")
    write_file(data / "remove-me.txt", b"bye\n")
    write_file(data / "gone/a", b"a\n")
    write_file(data / "gone/b/c", b"c\n")
    write_file(data / "hard-original", b"one inode, two names\n")
    write_file(data / "hl-a", b"linked within a layer\n")
    os.link(data / "hl-a", data / "hl-b")
    os.symlink("keep.txt", data / "link-rel")
    os.symlink("/data/keep.txt", data / "link-abs")
    os.symlink("/nonexistent/target", data / "link-dangling")
    os.symlink("../opt/app", data / "link-dir")
    write_file(data / "exec.sh", b"#!/bin/sh\necho hi\n", 0o755)
    write_file(data / "private", b"secret\n", 0o600)
    write_file(data / "readonly-dir/inside", b"x\n")
    os.chmod(data / "readonly-dir", 0o555)
    (data / "locked").mkdir()
    os.chmod(data / "locked", 0o000)
    write_file(data / "empty", b"")
    write_file(data / "big.bin", _pseudo_random(2 << 20, b"big"))
    write_file(data / "name with spaces \u00fc.txt", "unicode \u00fc\n".encode())
    write_file(data / "deep/a/b/c/d/e/f/g/h/file", b"deep\n")
    write_file(data / "will-be-dir", b"a file first\n")
    os.mkfifo(data / "fifo")
    write_file(rootfs / "opt/app/old1", b"old 1\n")
    write_file(rootfs / "opt/app/sub/old2", b"old 2\n")


def _populate_layer3(rootfs: Path) -> None:
    data = rootfs / "data"
    (data / "remove-me.txt").unlink()
    shutil.rmtree(data / "gone")
    os.link(data / "hard-original", data / "hard-link")
    write_file(data / "keep.txt", b"kept, and changed\n")
    (data / "will-be-dir").unlink()
    write_file(data / "will-be-dir/inner", b"now a dir\n")
    (data / "link-rel").unlink()
    os.symlink("exec.sh", data / "link-rel")
    os.chmod(data / "private", 0o640)


def _opaque_tar(tools: Tools, work: Path) -> Path:
    """A layer GNU tar writes: /opt/app made opaque (its old files hidden) with new
    content, and /home/app owned by uid/gid 1000."""
    src = work / "opaque-src"
    write_file(src / "opt/app/.wh..wh..opq", b"")
    write_file(src / "opt/app/new/file", b"replaced the whole directory\n")
    write_file(src / "home/app/.profile", b"export APP=1\n")
    os.chmod(src / "home/app", 0o750)
    out = work / "opaque.tar"
    common = [tools.tar, "--format=pax", "--sort=name", "--numeric-owner", "--mtime=@1700000000",
              "-C", str(src)]
    _run([*common, "--owner=0", "--group=0", "--no-recursion", "-cf", str(out),
          "opt", "opt/app", "opt/app/.wh..wh..opq", "opt/app/new", "opt/app/new/file", "home"])
    _run([*common, "--owner=1000", "--group=1000", "-rf", str(out), "home/app"])
    return out


def _layer_names(tar_bytes: bytes) -> Dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as t:
        return {m.name.lstrip("./") or ".": m for m in t.getmembers()}


def _check_layered(layout: Layout, tag: str) -> None:
    """The layered image really holds what its tests rely on (else the fixture is wrong)."""
    layer3 = _layer_names(layout.layer_tar(tag, 2))
    assert "data/.wh.remove-me.txt" in layer3 and "data/.wh.gone" in layer3, sorted(layer3)
    links = [m for m in layer3.values() if m.islnk()]
    assert {m.name.lstrip("./") for m in links} & {"data/hard-link", "data/hard-original"}, \
        "umoci did not write the cross-layer hard link"
    layer4 = _layer_names(layout.layer_tar(tag, 3))
    assert "opt/app/.wh..wh..opq" in layer4 and layer4["home/app/.profile"].uid == 1000
    layer2 = _layer_names(layout.layer_tar(tag, 1))
    assert layer2["data/hl-b"].islnk() or layer2["data/hl-a"].islnk()
    assert layer2["data/fifo"].isfifo() and layer2["data/locked"].mode & 0o777 == 0


@attrs.frozen
class TestImage:
    """One pushed image and what it must contain."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    name: str  # short name, e.g. "busybox"
    repository: str  # "127.0.0.1:PORT/isobox-test/busybox"
    tag: str
    digest: str  # what the reference points to (the manifest digest here)
    manifest: Mapping[str, Any] = attrs.field(hash=False)
    config: Mapping[str, Any] = attrs.field(hash=False)  # the whole config document
    expected: Path  # root filesystem umoci unpacked from the same image

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def diff_ids(self) -> Tuple[str, ...]:
        return tuple(self.config["rootfs"]["diff_ids"])

    @property
    def layer_digests(self) -> Tuple[str, ...]:
        return tuple(d["digest"] for d in self.manifest["layers"])

    @property
    def layer_media_types(self) -> Tuple[str, ...]:
        return tuple(d["mediaType"] for d in self.manifest["layers"])

    @property
    def config_digest(self) -> str:
        return str(self.manifest["config"]["digest"])


@attrs.frozen
class MultiPlatformImage:
    """An index pushed as ``reference``; ``platforms`` maps "os/arch" to its image."""

    repository: str
    tag: str
    digest: str  # the index digest
    index: Mapping[str, Any] = attrs.field(hash=False)
    platforms: Mapping[str, TestImage] = attrs.field(hash=False)

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


@attrs.frozen
class TestImages:

    __test__ = False  # not a test class, whatever pytest thinks of the name
    registry: Any
    busybox: TestImage
    busybox_docker: TestImage
    hub_busybox: TestImage  # library/busybox on the local registry
    layered: TestImage
    layered_zstd: TestImage
    layered_plain: TestImage
    layered_mixed: TestImage
    replaced: TestImage  # a directory replaced by a file (umoci's whiteout below the file)
    multiarch: MultiPlatformImage
    layout: Layout  # the umoci layout (tags busybox, layered, busybox-arm64)


class _Builder:
    def __init__(self, work: Path, registry: Any) -> None:
        self.work = work
        self.registry = registry
        self.tools = Tools(work)
        self.layout = Layout(work / "oci")

    def unpack(self, tag: str, bundle: Path, *, expected: bool = False) -> Path:
        # The expected tree keeps ownership when we can (root); bundles to repack are
        # always rootless so that root and unprivileged runs build the same images.
        flags = [] if expected and IS_ROOT else ["--rootless"]
        self.tools.umoci_cmd("unpack", *flags, "--image", f"{self.layout.path}:{tag}", str(bundle))
        return bundle / "rootfs"

    def repack(self, tag: str, bundle: Path) -> None:
        self.tools.umoci_cmd("repack", "--image", f"{self.layout.path}:{tag}", str(bundle))

    def build(self) -> TestImages:
        oci = str(self.layout.path)
        t = self.tools
        t.umoci_cmd("init", "--layout", oci)
        t.umoci_cmd("new", "--image", f"{oci}:busybox")
        bundle = self.work / "b-busybox"
        _populate_busybox(self.unpack("busybox", bundle))
        self.repack("busybox", bundle)
        t.umoci_cmd("config", "--image", f"{oci}:busybox", "--config.cmd", "sh",
                    "--config.env", PATH_ENV, "--config.label", "org.isobox.test=busybox",
                    "--architecture", "amd64", "--os", "linux")

        # layered: four more layers on busybox
        t.umoci_cmd("tag", "--image", f"{oci}:busybox", "layered")
        bundle = self.work / "b-layer2"
        _populate_layer2(self.unpack("layered", bundle))
        self.repack("layered", bundle)
        bundle = self.work / "b-layer3"
        _populate_layer3(self.unpack("layered", bundle))
        self.repack("layered", bundle)
        t.umoci_cmd("raw", "add-layer", "--image", f"{oci}:layered",
                    str(_opaque_tar(t, self.work)))
        t.umoci_cmd("config", "--image", f"{oci}:layered", "--config.workingdir", "/data",
                    "--config.user", "app", "--config.label", "org.isobox.test=layered")
        _check_layered(self.layout, "layered")

        # replaced: a directory replaced by a file; umoci then writes a whiteout for the old
        # directory's child *below* the new file (data/will-be-file/.wh.x)
        t.umoci_cmd("tag", "--image", f"{oci}:busybox", "replaced")
        bundle = self.work / "b-replaced1"
        write_file(self.unpack("replaced", bundle) / "data/will-be-file/x", b"in a dir first\n")
        self.repack("replaced", bundle)
        bundle = self.work / "b-replaced2"
        rootfs = self.unpack("replaced", bundle)
        shutil.rmtree(rootfs / "data/will-be-file")
        write_file(rootfs / "data/will-be-file", b"now a file\n")
        self.repack("replaced", bundle)
        assert "data/will-be-file/.wh.x" in _layer_names(self.layout.layer_tar("replaced", 2))

        # arm64 twin of busybox: same layer, another config
        t.umoci_cmd("config", "--image", f"{oci}:busybox", "--tag", "busybox-arm64",
                    "--architecture", "arm64", "--config.label", "org.isobox.test.arch=arm64")

        expected_busybox = self.unpack("busybox", self.work / "expected-busybox", expected=True)
        expected_layered = self.unpack("layered", self.work / "expected-layered", expected=True)
        expected_replaced = self.unpack("replaced", self.work / "expected-replaced", expected=True)

        host = self.registry.host
        busybox = self.push("busybox", f"{host}/isobox-test/busybox", "latest", expected_busybox)
        hub = self.push("busybox", f"{host}/library/busybox", "latest", expected_busybox)
        docker = self.push("busybox", f"{host}/isobox-test/busybox-docker", "latest",
                           expected_busybox, fmt="v2s2")
        layered = self.push("layered", f"{host}/isobox-test/layered", "latest", expected_layered)
        replaced = self.push("replaced", f"{host}/isobox-test/replaced", "latest",
                             expected_replaced)

        zlayout = Layout(self.work / "oci-zstd")
        t.skopeo_cmd("copy", "-q", "--dest-compress", "--dest-compress-format", "zstd",
                     f"oci:{oci}:layered", f"oci:{zlayout.path}:layered")
        assert set(d["mediaType"] for d in zlayout.manifest("layered")["layers"]) == {LAYER_ZSTD}
        layered_zstd = self.push("layered", f"{host}/isobox-test/layered-zstd", "latest",
                                 expected_layered, layout=zlayout)
        assert set(layered_zstd.layer_media_types) == {LAYER_ZSTD}, "skopeo pushed gzip"

        plain = self.raw_push("layered-plain", layered, [None] * len(layered.layer_digests),
                              zlayout, expected_layered)
        kinds: List[Optional[str]] = ["zstd", None, "gzip", "zstd"]
        mixed = self.raw_push("layered-mixed", layered, kinds, zlayout, expected_layered)
        multi = self.push_index(expected_busybox)
        return TestImages(
            registry=self.registry, busybox=busybox, busybox_docker=docker, hub_busybox=hub,
            layered=layered, layered_zstd=layered_zstd, layered_plain=plain,
            layered_mixed=mixed, replaced=replaced, multiarch=multi, layout=self.layout,
        )

    def push(self, tag: str, repository: str, dest_tag: str, expected: Path, *,
             layout: Optional[Layout] = None, fmt: Optional[str] = None) -> TestImage:
        layout = layout or self.layout
        digest = self.tools.push(layout.path, tag, f"{repository}:{dest_tag}", fmt=fmt)
        repo_path = repository.split("/", 1)[1]
        manifest = self._fetch_manifest(repo_path, digest)
        config = json.loads(self._fetch_blob(repo_path, manifest["config"]["digest"]))
        return TestImage(name=repo_path.rsplit("/", 1)[-1], repository=repository, tag=dest_tag,
                         digest=digest, manifest=manifest, config=config, expected=expected)

    def raw_push(self, name: str, base: TestImage, kinds: Sequence[Optional[str]],
                 zlayout: Layout, expected: Path) -> TestImage:
        """Push base's layers as gzip/zstd/plain (None) blobs through the registry API:
        skopeo compresses every layer it pushes to a registry."""
        repo = f"isobox-test/{name}"
        layers = []
        for i, kind in enumerate(kinds):
            if kind == "gzip":
                data, media_type = self.layout.blob(base.layer_digests[i]), LAYER_GZIP
            elif kind == "zstd":
                desc = zlayout.manifest("layered")["layers"][i]
                data, media_type = zlayout.blob(desc["digest"]), LAYER_ZSTD
            else:
                data, media_type = self.layout.layer_tar("layered", i), LAYER_TAR
                assert sha256_digest(data) == base.diff_ids[i]
            layers.append({"mediaType": media_type, "digest": self.registry.push_blob(repo, data),
                           "size": len(data)})
        config_raw = self.layout.blob(base.config_digest)
        self.registry.push_blob(repo, config_raw)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": dict(base.manifest["config"]), "layers": layers}
        raw = json.dumps(manifest).encode()
        digest = self.registry.push_manifest(repo, "latest", raw, OCI_MANIFEST)
        return TestImage(name=name, repository=f"{self.registry.host}/{repo}", tag="latest",
                         digest=digest, manifest=manifest, config=base.config, expected=expected)

    def push_index(self, expected: Path) -> MultiPlatformImage:
        host = self.registry.host
        repository = f"{host}/isobox-test/multiarch"
        amd64 = self.push("busybox", repository, "amd64", expected)
        arm64 = self.push("busybox-arm64", repository, "arm64", expected)
        assert arm64.config["architecture"] == "arm64" and amd64.config["architecture"] == "amd64"
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": img.digest,
                 "size": len(json.dumps(img.manifest)), "platform": platform}
                for img, platform in ((amd64, {"os": "linux", "architecture": "amd64"}),
                                      (arm64, {"os": "linux", "architecture": "arm64",
                                               "variant": "v8"}))
            ],
        }
        for entry, img in zip(index["manifests"], (amd64, arm64)):  # exact sizes, as pushed
            entry["size"] = len(self._fetch_manifest_raw("isobox-test/multiarch", img.digest))
        raw = json.dumps(index, indent=2).encode()
        digest = self.registry.push_manifest("isobox-test/multiarch", "latest", raw, OCI_INDEX)
        return MultiPlatformImage(repository=repository, tag="latest", digest=digest, index=index,
                                  platforms={"linux/amd64": amd64, "linux/arm64": arm64})

    def _fetch_manifest_raw(self, repo: str, ref: str) -> bytes:
        import requests

        accept = ", ".join([OCI_MANIFEST, OCI_INDEX,
                            "application/vnd.docker.distribution.manifest.v2+json"])
        r = requests.get(f"{self.registry.url}/v2/{repo}/manifests/{ref}",
                         headers={"Accept": accept}, timeout=30)
        r.raise_for_status()
        return r.content

    def _fetch_manifest(self, repo: str, ref: str) -> Dict[str, Any]:
        return dict(json.loads(self._fetch_manifest_raw(repo, ref)))

    def _fetch_blob(self, repo: str, digest: str) -> bytes:
        import requests

        r = requests.get(f"{self.registry.url}/v2/{repo}/blobs/{digest}", timeout=30)
        r.raise_for_status()
        return r.content


def build_images(work: Path, registry: Any) -> TestImages:
    """Build the test images (see the module docstring) under ``work`` and push them to
    ``registry`` (a started support.registry.Registry)."""
    return _Builder(work, registry).build()


__all__ = ["TestImage", "TestImages", "MultiPlatformImage", "Layout", "Tools", "build_images",
           "write_file", "sha256_digest", "OCI_MANIFEST", "OCI_INDEX", "LAYER_TAR", "LAYER_GZIP",
           "LAYER_ZSTD", "PATH_ENV"]
