"""Cold pull + unpack of a 3-layer image with thousands of small files from a local
registry: isobox's `Image.pull` against `podman pull` and `skopeo copy` + `umoci unpack`,
in one run, as medians and ratios; then a re-pull of the cached tag (time and requests).

    sudo /opt/isobox-venv/bin/python benchmarks/bench_pull.py [--rounds 3] [--mib 250]

The image is generated deterministically (about 8k files, text and incompressible bytes
about 1:1, a few large files, symlinks), packed by GNU tar, compressed by gzip -6 and
zstd -3 (two variants of the same layers), and pushed through the registry API to a
docker-registry started as the test fixture does. Everything (registry storage, every
store, podman's and skopeo's temporary files) lives on tmpfs: disk write-back makes
back-to-back runs noisy. Rounds interleave the contenders; each cold pull starts from an
empty store. umoci cannot unpack zstd layers, so skopeo + umoci runs on gzip only.
Requests are counted by a forwarding proxy in front of the registry.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))  # for tests/support/ (no pytest in it)

from support.proxy import CountingProxy  # noqa: E402
from support.registry import Registry  # noqa: E402

from isobox import Image  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IS_ROOT = os.geteuid() == 0


# -- the image -------------------------------------------------------------------------------


def populate(root: Path, seed: int, files: int, size: int) -> Tuple[int, int]:
    """A directory tree like a distribution layer: many small files (log-normal sizes),
    a few big ones to reach ``size`` bytes, some symlinks. Deterministic per seed."""
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz_.0123456789", k=3 + i % 9))
             for i in range(2000)]
    text = bytearray()
    while len(text) < 16 << 20:
        text += b" ".join(rng.choices(words, k=256)) + b"\n"
    noise = rng.randbytes(16 << 20)
    dirs = [root]
    for i in range(max(4, files // 14)):
        parent = rng.choice(dirs)
        dirs.append(parent / f"d{i}")
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    sizes = [min(int(rng.lognormvariate(8.3, 1.4)), 256 << 10) for _ in range(files)]
    while sum(sizes) < size:
        sizes.append(rng.randint(1 << 20, 6 << 20))
    written = 0
    for i, n in enumerate(sizes):
        pool = text if rng.random() < 0.5 else noise
        start = rng.randrange(0, len(pool) - n)
        path = rng.choice(dirs) / f"f{i}{'.txt' if pool is text else '.bin'}"
        path.write_bytes(pool[start:start + n])
        written += n
        if i % 40 == 0:
            os.symlink(path.name, path.with_name(path.name + ".link"))
    return len(sizes), written


def pack(root: Path, out: Path) -> Dict[str, Path]:
    """GNU tar, then gzip -6 and zstd -3 (the tools' defaults) of the same tar."""
    tar = out.with_suffix(".tar")
    subprocess.run(["tar", "--sort=name", "--format=pax", "--numeric-owner", "--owner=0",
                    "--group=0", "--mtime=@1700000000", "-C", str(root), "-cf", str(tar), "."],
                   check=True)
    gz, zst = out.with_suffix(".tar.gz"), out.with_suffix(".tar.zst")
    with open(gz, "wb") as f:
        p1 = subprocess.Popen(["gzip", "-6", "-n", "-c", str(tar)], stdout=f)
    p2 = subprocess.Popen(["zstd", "-3", "-q", "-f", "-o", str(zst), str(tar)])
    assert p1.wait() == 0 and p2.wait() == 0
    return {"tar": tar, "gzip": gz, "zstd": zst}


def sha256_file(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def build_and_push(work: Path, registry: Registry, mib: int) -> Dict[str, object]:
    plan = [(1, 3200, 0.42), (2, 3000, 0.40), (3, 1900, 0.18)]  # seed, files, share of bytes
    layers: List[Dict[str, Path]] = []
    files = size = 0
    for seed, n, share in plan:
        root = work / f"src{seed}"
        count, written = populate(root, seed, n, int(mib * share) << 20)
        files, size = files + count, size + written
        layers.append(pack(root, work / f"layer{seed}"))
        shutil.rmtree(root)
    diff_ids = [sha256_file(layer["tar"]) for layer in layers]
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_raw = json.dumps(config).encode()
    compressed: Dict[str, int] = {}
    for kind, media in (("gzip", "tar+gzip"), ("zstd", "tar+zstd")):
        repo = f"bench/{kind}"
        descs = []
        for layer in layers:
            data = layer[kind].read_bytes()
            descs.append({"mediaType": f"application/vnd.oci.image.layer.v1.{media}",
                          "digest": registry.push_blob(repo, data), "size": len(data)})
        compressed[kind] = sum(d["size"] for d in descs)  # type: ignore[misc]
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": registry.push_blob(repo, config_raw),
                               "size": len(config_raw)},
                    "layers": descs}
        registry.push_manifest(repo, "latest", json.dumps(manifest).encode(), OCI_MANIFEST)
    for layer in layers:
        for path in layer.values():
            path.unlink()
    return {"files": files, "size": size, "compressed": compressed}


# -- the contenders ----------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(cmd: List[str], env: Optional[Dict[str, str]] = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"{os.path.basename(cmd[0])} failed: {last[-300:]}")


class Contenders:
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.conf = scratch / "containers.conf"
        self.conf.write_text(
            '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
            f'image_copy_tmp_dir = "{scratch}/podman-tmp"\n'
            '[network]\nnetwork_backend = "cni"\n')
        (scratch / "podman-tmp").mkdir()
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf), "TMPDIR": str(scratch),
                    "XDG_DATA_HOME": str(scratch / "xdg"), "XDG_RUNTIME_DIR": str(scratch / "run")}
        (scratch / "run").mkdir(mode=0o700)
        self.runroots: Dict[Path, Path] = {}

    def fresh(self, name: str) -> Path:
        path = self.scratch / name
        if path.exists():
            unmount_below(path)
            subprocess.run(["rm", "-rf", str(path)], check=True)
        runroot = self.runroots.pop(path, None)
        if runroot is not None:
            subprocess.run(["rm", "-rf", str(runroot)], check=True)
        path.mkdir()
        return path

    def isobox(self, ref: str, store: Path) -> None:
        Image.pull(ref, store=store)

    def podman(self, ref: str, root: Path) -> None:
        # podman wants a runroot of at most 50 characters: a short tmpfs path per store
        if root not in self.runroots:
            self.runroots[root] = Path(tempfile.mkdtemp(prefix="ibp", dir="/dev/shm"))
        run(["podman", "--root", str(root / "graph"), "--runroot", str(self.runroots[root]),
             "--storage-driver", "overlay", "pull", "-q", "--tls-verify=false", ref], self.env)

    def close(self) -> None:
        for path in self.runroots.values():
            subprocess.run(["rm", "-rf", str(path)])

    def skopeo_umoci(self, ref: str, root: Path) -> None:
        skopeo = ["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                  f"docker://{ref}", f"oci:{root}/oci:latest"]
        if IS_ROOT:  # skopeo's blob-info cache would go to /var/lib/containers: keep it on tmpfs
            skopeo = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                      'mount -t tmpfs tmpfs /var/lib && exec "$@"', "sh", *skopeo]
        run(skopeo, self.env)
        run(["umoci", "unpack", *([] if IS_ROOT else ["--rootless"]), "--image",
             f"{root}/oci:latest", str(root / "bundle")], self.env)


def unmount_below(path: Path) -> None:
    """podman's overlay driver leaves its graph root's overlay/ bind-mounted on itself."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    prefix = str(path) + "/"
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def median(values: List[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mib", type=int, default=250, help="uncompressed size of the image")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="isobox-bench-pull-", dir="/dev/shm"))
    registry = Registry(tmp / "registry")
    proxy: Optional[CountingProxy] = None
    c: Optional[Contenders] = None
    try:
        registry.start()
        print("generating and pushing the image ...", file=sys.stderr)
        facts = build_and_push(tmp, registry, args.mib)
        proxy = CountingProxy(registry.host)
        scratch = tmp / "scratch"
        scratch.mkdir()
        c = Contenders(scratch)
        have_podman = shutil.which("podman") is not None
        have_umoci = shutil.which("skopeo") is not None and shutil.which("umoci") is not None

        results: Dict[Tuple[str, str], List[float]] = {}
        failures: Dict[Tuple[str, str], str] = {}
        contenders: List[Tuple[str, str, Callable[[str, Path], None]]] = []
        for kind in ("gzip", "zstd"):
            contenders.append(("isobox Image.pull", kind, c.isobox))
            if have_podman:
                contenders.append(("podman pull", kind, c.podman))
            if have_umoci and kind == "gzip":
                contenders.append(("skopeo copy + umoci unpack", kind, c.skopeo_umoci))
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
            for name, kind, fn in contenders:
                key = (name, kind)
                if key in failures:
                    continue
                ref = f"{registry.host}/bench/{kind}:latest"
                target = c.fresh("target")
                try:
                    results.setdefault(key, []).append(timed(lambda: fn(ref, target)))
                except Exception as exc:  # a peer that cannot run here is reported, not fatal
                    failures[key] = str(exc)

        # re-pull of a cached tag, through the counting proxy
        repull: Dict[str, Tuple[float, int, str]] = {}
        ref = f"{proxy.host}/bench/gzip:latest"
        store = c.fresh("repull-isobox")
        c.isobox(ref, store)
        proxy.clear()
        t = median([timed(lambda: c.isobox(ref, store)) for _ in range(5)])
        repull["isobox Image.pull"] = (t, len(proxy.requests()) // 5, _kinds(proxy))
        if have_podman and ("podman pull", "gzip") not in failures:
            root = c.fresh("repull-podman")
            c.podman(ref, root)
            proxy.clear()
            t = median([timed(lambda: c.podman(ref, root)) for _ in range(5)])
            repull["podman pull"] = (t, len(proxy.requests()) // 5, _kinds(proxy))

        mode = "root" if IS_ROOT else "rootless"
        comp = facts["compressed"]
        assert isinstance(comp, dict)
        print(f"\ncold pull + unpack: 3 layers, {int(facts['size']) / 2**20:.0f} MiB in "  # type: ignore[call-overload]
              f"{facts['files']} files (gzip {comp['gzip'] / 2**20:.0f} MiB, zstd "
              f"{comp['zstd'] / 2**20:.0f} MiB), local registry, tmpfs, {os.cpu_count()} cpus, "
              f"{mode}; median of {args.rounds}")
        print(f"{'contender':30} {'gzip s':>8} {'x isobox':>9} {'zstd s':>8} {'x isobox':>9}")
        names = list(dict.fromkeys(name for name, _, _ in contenders))
        for name in names:
            cells = []
            for kind in ("gzip", "zstd"):
                key, base = (name, kind), median(results.get(("isobox Image.pull", kind), []))
                if key in failures:
                    cells.append(f"{'failed':>8} {'':>9}")
                elif key not in results:
                    cells.append(f"{'n/a':>8} {'':>9}")
                else:
                    value = median(results[key])
                    cells.append(f"{value:8.2f} {value / base:9.2f}")
            print(f"{name:30} {' '.join(cells)}")
        for (name, kind), why in failures.items():
            print(f"  {name} ({kind}) failed: {why}")
        if have_umoci:
            print("  skopeo copy + umoci unpack: n/a for zstd (umoci 0.4.7 cannot unpack zstd)")

        print("\nre-pull of the cached tag (gzip), median of 5")
        print(f"{'contender':30} {'ms':>8} {'requests':>9}  kinds")
        for name, (t, count, kinds) in repull.items():
            print(f"{name:30} {t * 1000:8.1f} {count:9d}  {kinds}")
    finally:
        if proxy is not None:
            proxy.close()
        if c is not None:
            c.close()
        registry.stop()
        unmount_below(tmp)
        subprocess.run(["rm", "-rf", str(tmp)])


def _kinds(proxy: CountingProxy) -> str:
    """The distinct requests of one re-pull, e.g. "GET /v2/, HEAD manifests"."""
    seen: List[str] = []
    for method, path in proxy.requests():
        kind = "manifests" if "/manifests/" in path else "blobs" if "/blobs/" in path else path
        item = f"{method} {kind}"
        if item not in seen:
            seen.append(item)
    return ", ".join(seen)


if __name__ == "__main__":
    main()
