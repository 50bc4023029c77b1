"""Extraction speed: isobox's apply_layer against GNU tar, in one run, as ratios.

Builds a deterministic ~70 MB gzip layer (and its zstd twin) with thousands of files,
directories, symlinks and hard links on tmpfs (/dev/shm), then extracts it to tmpfs
with each contender in turn, several rounds, and prints the median times and ratios:

    apply_layer(gzip)  vs  tar -xzf
    apply_layer(zstd)  vs  zstd -dc | tar -x       (when zstd is installed)

apply_layer also hashes the uncompressed stream (the diff_id) and applies whiteouts,
which tar does not; tar gets the same input from the same tmpfs.  Run as root or not:
    python benchmarks/bench_unpack.py [--rounds 5] [--target-mb 70] [--keep]
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Callable, Dict, Iterator, List, Tuple

from isobox.host.fs import remove_tree
from isobox.images.unpack import apply_layer

WORDS = [
    bytes(random.Random(i).choices(b"abcdefghijklmnopqrstuvwxyz_.0123456789", k=3 + i % 9))
    for i in range(2000)
]


def _text(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choices(WORDS, k=256)) + b"\n"
    return bytes(out[:size])


def build_tar(path: str, target_gz: int, seed: int = 1) -> Dict[str, int]:
    """A layer shaped like a real one, in the order a directory walk writes it: a tree of
    directories, mostly small files (text and incompressible bytes, about 2:1 overall),
    a few large ones, symlinks and hard links.  Deterministic for a seed and size."""
    rng = random.Random(seed)
    text_pool = _text(rng, 8 << 20)
    noise_pool = rng.randbytes(8 << 20)
    raw_target = int(target_gz * 2.0)

    # Plan: a directory tree, then files (sizes drawn until the target) spread over it.
    children: Dict[int, List[int]] = {0: []}
    names = {0: "."}
    for d in range(1, 600):
        parent = rng.randrange(0, d) if d > 4 else 0
        children[d] = []
        children[parent].append(d)
        names[d] = f"{names[parent]}/{('usr', 'etc', 'var', 'opt')[d - 1] if d <= 4 else f'd{d}'}"
    contents: Dict[int, List[Tuple[str, int]]] = {d: [] for d in children}
    planned = 0
    while planned < raw_target:
        d = rng.randrange(1, len(children))
        roll = rng.random()
        if roll < 0.03:
            contents[d].append(("symlink", 0))
        elif roll < 0.04:
            contents[d].append(("hardlink", 0))
        else:
            size = 3 << 20 if rng.random() < 0.002 else int(rng.lognormvariate(8.5, 1.5))
            size = min(size, 4 << 20)
            contents[d].append(("file", size))
            planned += size

    counts = {"files": 0, "dirs": 0, "symlinks": 0, "hardlinks": 0}
    files: List[str] = []

    def info(name: str, kind: bytes, size: int = 0, mode: int = 0o644) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.size, ti.mode, ti.mtime = kind, size, mode, 1_700_000_000
        return ti

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        stack = [0]
        while stack:
            d = stack.pop()
            tar.addfile(info(names[d] + "/", tarfile.DIRTYPE, mode=0o755))
            counts["dirs"] += 1
            for i, (kind, size) in enumerate(contents[d]):
                name = f"{names[d]}/{kind[0]}{i}"
                if kind == "file":
                    pool = text_pool if rng.random() < 0.75 else noise_pool
                    start = rng.randrange(0, len(pool) - size + 1)
                    mode = 0o755 if rng.random() < 0.1 else 0o644
                    tar.addfile(info(name, tarfile.REGTYPE, size, mode),
                                io.BytesIO(pool[start : start + size]))
                    files.append(name)
                    counts["files"] += 1
                elif kind == "symlink":
                    ti = info(name, tarfile.SYMTYPE, mode=0o777)
                    ti.linkname = "/" + rng.choice(files)[2:] if files else "/etc"
                    tar.addfile(ti)
                    counts["symlinks"] += 1
                elif files:
                    ti = info(name, tarfile.LNKTYPE)
                    ti.linkname = rng.choice(files)
                    tar.addfile(ti)
                    counts["hardlinks"] += 1
            stack.extend(reversed(children[d]))
    counts["dirs"] -= 1  # the root
    return counts


def chunks_of(path: str, size: int = 64 << 10) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while True:
            data = f.read(size)
            if not data:
                return
            yield data


def timed(work: str, contenders: Dict[str, Callable[[str], None]], rounds: int) -> Dict[str, List[float]]:
    """Runs every contender once per round, interleaved, so that a noisy host (other
    jobs, tmpfs reclaim) weighs on all of them alike."""
    times: Dict[str, List[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            dest = tempfile.mkdtemp(prefix="out-", dir=work)
            start = time.perf_counter()
            run(dest)
            times[name].append(time.perf_counter() - start)
            remove_tree(dest)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--target-mb", type=float, default=70.0)
    parser.add_argument("--dir", default="/dev/shm", help="a tmpfs to work in")
    parser.add_argument("--keep", action="store_true", help="keep the generated layers")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="isobox-bench-", dir=args.dir)
    try:
        tar_path = os.path.join(work, "layer.tar")
        t0 = time.perf_counter()
        counts = build_tar(tar_path, int(args.target_mb * 1e6))
        gz_path = tar_path + ".gz"
        with open(tar_path, "rb") as src, open(gz_path, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
                shutil.copyfileobj(src, gz, 1 << 20)
        zstd = shutil.which("zstd")
        zst_path = tar_path + ".zst"
        if zstd:
            subprocess.run([zstd, "-q", "-3", "-T0", "-f", tar_path, "-o", zst_path], check=True)
        print(
            f"layer: {counts['files']} files, {counts['dirs']} dirs, {counts['symlinks']} "
            f"symlinks, {counts['hardlinks']} hard links; tar {os.path.getsize(tar_path) / 1e6:.1f}"
            f" MB, gzip {os.path.getsize(gz_path) / 1e6:.1f} MB"
            + (f", zstd {os.path.getsize(zst_path) / 1e6:.1f} MB" if zstd else "")
            + f" (built in {time.perf_counter() - t0:.1f}s, uid {os.geteuid()})"
        )

        def shell(cmd: str) -> Callable[[str], None]:
            return lambda d: None if subprocess.run(cmd.format(d=d), shell=True, check=True) else None

        def ours(path: str) -> Callable[[str], None]:
            return lambda d: None if apply_layer(chunks_of(path), d) else None

        contenders: Dict[str, Callable[[str], None]] = {
            "tar -xzf": shell(f"tar -xzf '{gz_path}' -C '{{d}}'"),
            "apply_layer gzip": ours(gz_path),
        }
        if zstd:
            contenders["zstd -dc | tar -x"] = shell(f"{zstd} -dc '{zst_path}' | tar -x -C '{{d}}'")
            contenders["apply_layer zstd"] = ours(zst_path)
        contenders["tar -xf (plain)"] = shell(f"tar -xf '{tar_path}' -C '{{d}}'")
        contenders["apply_layer plain"] = ours(tar_path)
        results = timed(work, contenders, args.rounds)

        med = {k: statistics.median(v) for k, v in results.items()}
        for name, times in results.items():
            print(f"  {name:20s} median {med[name]:.3f}s  (min {min(times):.3f}s, {len(times)} rounds)")
        print("ratios (apply_layer / peer; < 1 is faster):")
        print(f"  gzip : {med['apply_layer gzip'] / med['tar -xzf']:.2f}")
        if zstd:
            print(f"  zstd : {med['apply_layer zstd'] / med['zstd -dc | tar -x']:.2f}")
        print(f"  plain: {med['apply_layer plain'] / med['tar -xf (plain)']:.2f}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            remove_tree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
