"""Start-to-exit of /bin/true in a container from a busybox root filesystem on disk:
isobox in-process through the API, against crun, runc, bwrap, podman and the
unshare+chroot floor, in one run, reported as medians and ratios to isobox.

    sudo /opt/isobox-venv/bin/python benchmarks/bench_start.py [--runs 200]

Everything lives on a tmpfs (disk write-back makes back-to-back runs noisy), and isobox is
measured once more with its store on the disk (--disk-dir, the root filesystem by default),
where the default store lives. Peers are
timed as shell loops (one `sh` forks each run) and isobox as a Python loop, each run
doing the whole life of a container: create, start, wait, remove. "isolated starts" are
single starts 50 ms apart, as an application or a test makes them (back-to-back loops
share warm kernel state). isobox runs with its full isolation (overlay root, /proc, /dev, /sys, masked paths, new network namespace).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))  # for tests/support/ (no pytest in it)

import isobox  # noqa: E402
from support.rootfs import make_busybox_rootfs  # noqa: E402

CRUN_HYBRID_FIX = "umount /sys/fs/cgroup/unified 2>/dev/null;"  # see shared notes: crun 1.8 refuses hybrid mode


def oci_bundle(root: str, rootfs: str) -> str:
    bundle = os.path.join(root, "bundle")
    os.makedirs(bundle)
    subprocess.run(["runc", "spec", "--bundle", bundle], check=True)
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["root"] = {"path": rootfs, "readonly": True}
    cfg["process"]["args"] = ["/bin/true"]
    cfg["process"]["terminal"] = False
    with open(path, "w") as f:
        json.dump(cfg, f)
    return bundle


def time_shell_loop(command: str, runs: int, prefix: str = "", wrapper: Sequence[str] = ()) -> Optional[float]:
    """Time batches of 10 runs in one shell and take the median per-run time."""
    batch = 10
    script = f'{prefix} for i in $(seq {batch}); do {command} >/dev/null 2>&1 || exit 1; done'
    samples = []
    for _ in range(max(1, runs // batch)):
        start = time.perf_counter()
        done = subprocess.run([*wrapper, "sh", "-c", script])
        if done.returncode != 0:
            return None
        samples.append((time.perf_counter() - start) / batch)
    return statistics.median(samples)


GAP = 0.05  # seconds of idleness before each isolated start


def time_shell_each(command: str, runs: int, gap: float = GAP) -> Optional[float]:
    """Median of single runs `gap` apart, each timed by bash itself ($EPOCHREALTIME)."""
    script = (f'for i in $(seq {runs}); do sleep {gap}; s=$EPOCHREALTIME; '
              f'{command} >/dev/null 2>&1 || exit 1; e=$EPOCHREALTIME; echo "$s $e"; done')
    done = subprocess.run(["bash", "-c", script], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        return None
    return statistics.median(float(e) - float(s) for s, e in (line.split() for line in done.stdout.splitlines()))


def time_isolated(fn: Callable[[], object], runs: int, gap: float = GAP) -> float:
    """Median of single starts `gap` apart: what one `isobox.run` of an application or a
    test costs, where back-to-back starts share warm caches and kernel state (an RCU
    grace period a writer started moments ago is one the next need not wait for)."""
    fn()
    samples = []
    for _ in range(runs):
        time.sleep(gap)
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def time_python(fn: Callable[[], object], runs: int) -> float:
    for _ in range(5):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--disk-dir", default="/var/tmp",
                        help="a directory on the disk that holds the default store (default /var/tmp)")
    args = parser.parse_args()
    runs = args.runs

    tmp = tempfile.mkdtemp(prefix="isobox-bench-", dir="/dev/shm")
    try:
        rootfs = str(make_busybox_rootfs(pathlib.Path(tmp) / "rootfs"))
        for d in ("proc", "dev", "sys"):
            os.makedirs(os.path.join(rootfs, d), exist_ok=True)
        os.environ["ISOBOX_ROOT"] = os.path.join(tmp, "store")
        image = isobox.Image.from_directory(rootfs)
        results: Dict[str, Optional[float]] = {}

        results["isobox (in-process)"] = time_python(lambda: isobox.run(image, ["/bin/true"]), runs)

        isolated_runs = max(20, runs // 4)
        results["isobox, isolated starts"] = time_isolated(
            lambda: isobox.run(image, ["/bin/true"]), isolated_runs)

        # the default store lives on the disk (/var/lib/isobox, ~/.local/share/isobox): the
        # same image and run with the store on the root filesystem instead of a tmpfs
        disk = tempfile.mkdtemp(prefix="isobox-bench-", dir=args.disk_dir)
        try:
            disk_store = isobox.Store.open(os.path.join(disk, "store"))
            results["isobox, store on disk"] = time_python(
                lambda: isobox.run(image, ["/bin/true"], store=disk_store), runs)
        finally:
            subprocess.run(["rm", "-rf", disk])

        # flat in the number of running containers from the same image?
        running = [isobox.Container(image, ["sleep", "600"]).start() for _ in range(50)]
        time.sleep(3)  # let the kernel finish setting up their namespaces before timing
        try:
            results["isobox, 50 running"] = time_python(lambda: isobox.run(image, ["/bin/true"]), runs)
        finally:
            for c in running:
                c.remove(force=True)

        if shutil.which("unshare"):
            results["unshare+chroot (floor)"] = time_shell_loop(
                f"unshare -m -p -f -u -i -n chroot {rootfs} /bin/true", runs)
        if shutil.which("bwrap"):
            results["bwrap --unshare-all"] = time_shell_loop(
                f"bwrap --unshare-all --ro-bind {rootfs} / --proc /proc --dev /dev /bin/true", runs)
            results["bwrap, isolated starts"] = time_shell_each(
                f"bwrap --unshare-all --ro-bind {rootfs} / --proc /proc --dev /dev /bin/true",
                max(20, runs // 4))
        if os.geteuid() == 0 and shutil.which("runc"):
            bundle = oci_bundle(tmp, rootfs)
            state = os.path.join(tmp, "runc-state")
            results["runc run"] = time_shell_loop(
                f"runc --root {state} run --bundle {bundle} b$i", runs)
            if shutil.which("crun"):
                cstate = os.path.join(tmp, "crun-state")
                results["crun run"] = time_shell_loop(
                    f"crun --root {cstate} run --bundle {bundle} c$i", runs, prefix=CRUN_HYBRID_FIX,
                    wrapper=("unshare", "-m", "--propagation", "private"))
        if os.geteuid() == 0 and shutil.which("podman"):
            results["podman run --network=none"] = podman_time(tmp, rootfs, max(20, runs // 5))

        base = results["isobox (in-process)"]
        assert base
        print(f"start-to-exit of /bin/true, median of {runs} runs (tmpfs, {os.cpu_count()} cpus, "
              f"{'root' if os.geteuid() == 0 else 'rootless'})")
        print(f"{'runtime':32} {'ms':>8} {'x isobox':>9}")
        for name, value in results.items():
            if value is None:
                print(f"{name:32} {'failed':>8}")
            else:
                print(f"{name:32} {value * 1000:8.2f} {value / base:9.2f}")
    finally:
        subprocess.run(["rm", "-rf", tmp])


def podman_time(tmp: str, rootfs: str, runs: int) -> Optional[float]:
    """podman with private config files (see shared notes: no systemd, host rlimits)."""
    conf = os.path.join(tmp, "containers.conf")
    with open(conf, "w") as f:
        f.write('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
                '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n'
                '[network]\nnetwork_backend = "cni"\n')
    storage = os.path.join(tmp, "storage.conf")
    with open(storage, "w") as f:
        f.write(f'[storage]\ndriver = "overlay"\nrunroot = "{tmp}/podman-run"\ngraphroot = "{tmp}/podman-graph"\n')
    env = f"CONTAINERS_CONF={conf} CONTAINERS_STORAGE_CONF={storage}"
    return time_shell_loop(f"env {env} podman run --rm --network=none --rootfs {rootfs} /bin/true", runs)


if __name__ == "__main__":
    main()
