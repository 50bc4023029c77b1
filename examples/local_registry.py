"""A local stand-in for Docker Hub, for machines that cannot reach it.

    with local_registry.busybox_hub():
        isobox.Image.pull("busybox")      # resolved at the local registry

Starts Debian's ``docker-registry`` on a free loopback port with its storage in a
temporary directory, builds a real ``busybox`` image with umoci (an independent OCI tool)
from Debian's busybox-static, pushes it as ``library/busybox:latest`` through the
registry's v2 API, and points isobox's Docker Hub mirror (``ISOBOX_REGISTRY_MIRROR``,
like Docker's ``registry-mirrors``) at it. Everything is removed on exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from typing import Iterator

REGISTRY_CONFIG = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
log:
  level: error
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(method: str, url: str, data: bytes = b"", headers: "dict[str, str] | None" = None) -> "tuple[int, dict[str, str]]":
    req = urllib.request.Request(url, data=data or None, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, dict(resp.headers)


def _build_busybox(layout: pathlib.Path, work: pathlib.Path) -> None:
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    umoci = ["umoci"]
    subprocess.run([*umoci, "init", "--layout", str(layout)], check=True)
    subprocess.run([*umoci, "new", "--image", f"{layout}:busybox"], check=True)
    bundle = work / "bundle"
    subprocess.run([*umoci, "unpack", *rootless, "--image", f"{layout}:busybox", str(bundle)], check=True)
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", rootfs / "bin" / applet)
    (rootfs / "etc").mkdir(exist_ok=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    for d, mode in (("tmp", 0o1777), ("root", 0o700)):
        (rootfs / d).mkdir(exist_ok=True)
        os.chmod(rootfs / d, mode)
    subprocess.run([*umoci, "repack", "--image", f"{layout}:busybox", str(bundle)], check=True)
    subprocess.run([*umoci, "config", "--image", f"{layout}:busybox", "--config.cmd", "sh",
                    "--config.env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   check=True)


def _push(layout: pathlib.Path, url: str, repo: str, tag: str) -> None:
    """Push an OCI layout's tag through the registry's v2 API (monolithic uploads)."""
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "busybox")
    def blob(digest: str) -> bytes:
        return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
    manifest = blob(desc["digest"])
    doc = json.loads(manifest)
    for d in [doc["config"], *doc["layers"]]:
        data = blob(d["digest"])
        assert "sha256:" + hashlib.sha256(data).hexdigest() == d["digest"]
        _, headers = _request("POST", f"{url}/v2/{repo}/blobs/uploads/")
        location = headers["Location"]
        location = location if location.startswith("http") else url + location
        sep = "&" if "?" in location else "?"
        _request("PUT", f"{location}{sep}digest={d['digest']}", data,
                 {"Content-Type": "application/octet-stream"})
    _request("PUT", f"{url}/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": desc["mediaType"]})


@contextlib.contextmanager
def busybox_hub() -> Iterator[str]:
    """A local registry holding library/busybox:latest, used as the Docker Hub mirror."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="isobox-demo-"))
    port = _free_port()
    config = work / "config.yml"
    config.write_text(REGISTRY_CONFIG.format(root=work / "storage", port=port))
    server = subprocess.Popen(["docker-registry", "serve", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    previous = os.environ.get("ISOBOX_REGISTRY_MIRROR")
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                _request("GET", f"{url}/v2/")
                break
            except OSError:
                time.sleep(0.05)
        _build_busybox(work / "oci", work)
        _push(work / "oci", url, "library/busybox", "latest")
        os.environ["ISOBOX_REGISTRY_MIRROR"] = url
        yield url
    finally:
        if previous is None:
            os.environ.pop("ISOBOX_REGISTRY_MIRROR", None)
        else:
            os.environ["ISOBOX_REGISTRY_MIRROR"] = previous
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
