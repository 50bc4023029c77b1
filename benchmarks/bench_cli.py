"""The ``isobox`` command against its peers, from the shell, in one run, as ratios:

- ``isobox run --rm IMAGE true`` against ``podman run --rm --network=none IMAGE true`` and
  ``crun run`` (a bundle of the same root filesystem: crun does no image work at all);
- ``isobox exec C true`` into a detached container against ``podman exec``.

podman runs with runc, the runtime that works here as installed: its default, crun 1.8,
refuses this host's hybrid cgroups. For reference it is also timed with crun, inside a
private mount namespace without the unified hierarchy (the workaround ``crun run`` gets
too), as podman runs elsewhere; that ratio is printed beside the target's.

    sudo /opt/isobox-venv/bin/python benchmarks/bench_cli.py [--runs 100]

The image (busybox from Debian's busybox-static, one uncompressed layer) is served by a
local docker-registry, and every store (isobox's, podman's) lives on a tmpfs. Both
commands pull it once before timing. Each tool runs as a user runs it: one process per
command, from shell loops, the contenders interleaved batch by batch (the machine may be
shared, and its load then hits all alike). isobox runs with its bytecode cached (as an installed package
has it; the cache goes to a temporary PYTHONPYCACHEPREFIX). Podman gets private config
files (see /work/shared/notes/this-machine.md: no systemd, host rlimits, runc).

The target: ``isobox run`` in at most half of ``podman run``'s time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))  # for tests/support/ (no pytest in it)

from support.registry import Registry, sha256_digest  # noqa: E402
from support.rootfs import make_busybox_rootfs  # noqa: E402

CRUN_HYBRID_FIX = "umount /sys/fs/cgroup/unified 2>/dev/null;"  # crun 1.8 refuses hybrid mode here
BATCH = 10


def layer_tar(rootfs: pathlib.Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(rootfs)), recursive=False)
    return buf.getvalue()


def push_busybox(registry: Registry, rootfs: pathlib.Path) -> str:
    layer = layer_tar(rootfs)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
    }
    registry.push_image("bench/busybox", "latest", [layer], config)
    return f"{registry.host}/bench/busybox:latest"


class Contender:
    """One command timed in batches of BATCH runs in one shell (a fork per run)."""

    def __init__(self, name: str, command: str, env: Dict[str, str], prefix: str = "",
                 wrapper: Sequence[str] = ()) -> None:
        self.name = name
        self.script = f"{prefix} for i in $(seq {BATCH}); do {command} >/dev/null 2>&1 || exit 1; done"
        self.env = env
        self.wrapper = tuple(wrapper)
        self.samples: List[float] = []
        self.failed = False

    def batch(self) -> None:
        if self.failed:
            return
        start = time.perf_counter()
        if subprocess.run([*self.wrapper, "sh", "-c", self.script], env=self.env).returncode != 0:
            self.failed = True
            return
        self.samples.append((time.perf_counter() - start) / BATCH)

    @property
    def median(self) -> Optional[float]:
        return None if self.failed or not self.samples else statistics.median(self.samples)


def rounds(contenders: Sequence[Contender], runs: int) -> None:
    """Batches interleaved round by round, so that a change of the machine's load (it is
    shared) hits every contender alike."""
    for _ in range(max(1, runs // BATCH)):
        for c in contenders:
            c.batch()


def check(cmd: Sequence[str], env: Dict[str, str]) -> None:
    done = subprocess.run(list(cmd), env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")


class Podman:
    """podman with private configuration and storage under ``tmp`` (root only)."""

    def __init__(self, tmp: pathlib.Path, registry: Registry) -> None:
        conf = tmp / "containers.conf"
        conf.write_text('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
                        '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n'
                        '[network]\nnetwork_backend = "cni"\n')
        storage = tmp / "storage.conf"
        storage.write_text(f'[storage]\ndriver = "overlay"\nrunroot = "{tmp}/podman-run"\n'
                           f'graphroot = "{tmp}/podman-graph"\n')
        registries = tmp / "registries.conf"
        registries.write_text(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage),
                    "CONTAINERS_REGISTRIES_CONF": str(registries)}
        crun_conf = tmp / "containers-crun.conf"
        crun_conf.write_text(conf.read_text().replace('runtime = "runc"', 'runtime = "crun"'))
        self.crun_env = {**self.env, "CONTAINERS_CONF": str(crun_conf)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    runs = args.runs
    root = os.geteuid() == 0

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="isobox-bench-cli-", dir="/dev/shm"))
    registry = Registry(tmp / "registry")
    podman: Optional[Podman] = None
    try:
        rootfs = make_busybox_rootfs(tmp / "rootfs")
        registry.start()
        ref = push_busybox(registry, rootfs)

        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(ISOBOX_ROOT=str(tmp / "isobox"), PYTHONPYCACHEPREFIX=str(tmp / "pycache"))
        # the command users type: the console script beside this interpreter (not
        # `python -m isobox`, which also pays for runpy)
        script = os.path.join(os.path.dirname(sys.executable), "isobox")
        isobox = script if os.path.exists(script) else f"{sys.executable} -m isobox"
        check([sys.executable, "-m", "isobox", "pull", "-q", ref], env)
        check([sys.executable, "-m", "isobox", "run", "--rm", ref, "true"], env)  # writes the bytecode

        run_group = [Contender("isobox run --rm", f"{isobox} run --rm {ref} true", env)]
        exec_group = [Contender("isobox exec", f"{isobox} exec bench true", env)]
        if root and shutil.which("crun"):
            for d in ("proc", "dev", "sys"):
                (rootfs / d).mkdir(exist_ok=True)
            bundle = oci_bundle(tmp, rootfs)
            state = tmp / "crun-state"
            run_group.append(Contender(
                "crun run", f"crun --root {state} run --bundle {bundle} c$i", os.environ.copy(),
                prefix=CRUN_HYBRID_FIX, wrapper=("unshare", "-m", "--propagation", "private")))
        if root and shutil.which("podman"):
            podman = Podman(tmp, registry)
            check(["podman", "pull", "-q", ref], podman.env)
            check(["podman", "run", "--rm", "--network=none", ref, "true"], podman.env)
            run_group.append(Contender("podman run --rm --network=none",
                                       f"podman run --rm --network=none {ref} true", podman.env))
            if shutil.which("crun"):
                run_group.append(Contender(
                    "podman run ... (crun)", f"podman run --rm --network=none {ref} true", podman.crun_env,
                    prefix=CRUN_HYBRID_FIX, wrapper=("unshare", "-m", "--propagation", "private")))
            exec_group.append(Contender("podman exec", "podman exec bench true", podman.env))
        rounds(run_group, runs)

        check([sys.executable, "-m", "isobox", "run", "-d", "--name", "bench", ref, "sleep", "600"], env)
        if podman is not None:
            check(["podman", "run", "-d", "--name", "bench", "--network=none", ref, "sleep", "600"], podman.env)
        try:
            rounds(exec_group, runs)
        finally:
            check([sys.executable, "-m", "isobox", "rm", "-f", "bench"], env)
            if podman is not None:
                check(["podman", "rm", "-f", "-t", "0", "bench"], podman.env)

        results: Dict[str, Optional[float]] = {c.name: c.median for c in run_group + exec_group}
        report(results, runs)
    finally:
        if podman is not None:
            subprocess.run(["podman", "rm", "-a", "-f", "-t", "0"], env=podman.env, capture_output=True)
            subprocess.run(["podman", "system", "reset", "-f"], env=podman.env, capture_output=True)
        registry.stop()
        subprocess.run(["rm", "-rf", str(tmp)])


def oci_bundle(tmp: pathlib.Path, rootfs: pathlib.Path) -> pathlib.Path:
    bundle = tmp / "bundle"
    bundle.mkdir()
    subprocess.run(["crun", "spec", "--bundle", str(bundle)], check=True, capture_output=True)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["root"] = {"path": str(rootfs), "readonly": True}
    cfg["process"]["args"] = ["/bin/true"]
    cfg["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


def report(results: Dict[str, Optional[float]], runs: int) -> None:
    print(f"the isobox command against its peers: median per run, interleaved batches of {BATCH} from sh "
          f"(tmpfs, {os.cpu_count()} cpus, {'root' if os.geteuid() == 0 else 'rootless'}, "
          f"{runs} runs)")
    rows: List[Tuple[str, str, str]] = []
    for group, base_name in (("run", "isobox run --rm"), ("exec", "isobox exec")):
        base = results.get(base_name)
        for name, value in results.items():
            if group not in name:
                continue
            if value is None:
                rows.append((name, "failed", ""))
            else:
                rows.append((name, f"{value * 1000:.1f}", f"{value / base:.2f}" if base else ""))
    print(f"{'command':34} {'ms':>8} {'x isobox':>9}")
    for name, ms, ratio in rows:
        print(f"{name:34} {ms:>8} {ratio:>9}")
    ours, theirs = results.get("isobox run --rm"), results.get("podman run --rm --network=none")
    if ours and theirs:
        verdict = "met" if ours <= theirs / 2 else "NOT met"
        print(f"target isobox run <= 0.5 x podman run: {ours / theirs:.2f} x, {verdict}")
    crun_podman = results.get("podman run ... (crun)")
    if ours and crun_podman:
        print(f"for reference, against podman with crun: {ours / crun_podman:.2f} x")
    ours, theirs = results.get("isobox exec"), results.get("podman exec")
    if ours and theirs:
        verdict = "met" if ours <= theirs / 2 else "NOT met"
        print(f"target isobox exec <= 0.5 x podman exec: {ours / theirs:.2f} x, {verdict}")


if __name__ == "__main__":
    main()
