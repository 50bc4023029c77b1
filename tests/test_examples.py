"""The examples run as users run them (`python examples/X.py`), against the local registry
through the mirror setting, print what they claim to show, and leave nothing behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from support.derive import RuntimeImages
from support.images import TestImages

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, registry_url: str, store: Path) -> List[str]:
    """``python examples/NAME`` with Docker Hub names resolved at the local registry and a
    store of its own; its output lines."""
    env = {**os.environ, "ISOBOX_REGISTRY_MIRROR": registry_url, "ISOBOX_ROOT": str(store)}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], env=env, capture_output=True,
                          text=True, timeout=120)
    print(proc.stdout)  # shown by pytest when the test fails
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert proc.stderr == "", proc.stderr
    return proc.stdout.splitlines()


def assert_nothing_left(store: Path) -> None:
    containers = store / "containers"
    left = [p.name for p in containers.iterdir() if p.name not in (".names", ".rootfs")]
    assert left == [], f"containers left in the store: {left}"
    assert list((containers / ".names").iterdir()) == []
    assert list((store / "tmp").iterdir()) == [], "removals left behind"  # waited for at exit


def section(lines: List[str], title: str) -> List[str]:
    """The indented lines under ``--- title`` (sandbox.py's output format)."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"--- {title}"))
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        out.append(line.strip())
    return [lines[start]] + out


def test_two_versions_run_side_by_side_each_seeing_only_its_own_files(
        runtime_images: RuntimeImages, tmp_path: Path) -> None:
    store = tmp_path / "store"
    lines = run_example("two_versions.py", runtime_images.registry_url, store)
    text = "\n".join(lines)
    assert lines[0].startswith("pulled docker.io/library/runtime:1 (sha256:"), text
    assert "app-on-runtime-1: running, app-on-runtime-2: running" in lines, text
    for tag, version in runtime_images.versions.items():
        block = lines[lines.index(f"[app-on-runtime-{tag}]"):][:6]
        libs = " ".join(sorted(runtime_images.libs[tag]))
        said = [tuple(part.strip() for part in line.split(" -> ")) for line in block[1:5]]
        assert said == [
            ("runtime --version", f"v{version}"),
            ("runtime", f"runtime v{version} with modules: {libs}"),
            ("echo $RUNTIME_VERSION", version),
            ("ls /opt/runtime/lib | xargs", libs),
        ], text
        # its own pid namespace: its init and sleep, and the ps itself; nothing of the other
        # container's or the host's processes
        ps = block[5].split("->")[1].split()
        assert ps[:4] == ["1", "init", "2", "sleep"] and ps[5::2] == ["ps"], text
    assert ("app-on-runtime-1 wrote /opt/runtime/lib/extra.sh; app-on-runtime-2 sees: "
            "cat: can't open '/opt/runtime/lib/extra.sh': No such file or directory") in lines, text
    assert "app-on-runtime-1 still sees: installed-by-app-1" in lines, text
    assert lines[-1] == ("a fresh container from docker.io/library/runtime:1 sees: "
                         + " ".join(sorted(runtime_images.libs["1"]))), text
    assert_nothing_left(store)


def test_sandbox_returns_output_and_blocks_writes_and_network(images: TestImages,
                                                               tmp_path: Path) -> None:
    store = tmp_path / "store"
    lines = run_example("sandbox.py", images.registry.url, store)
    text = "\n".join(lines)
    assert section(lines, "compute something") == [
        "--- compute something (exit 0)", "sum of squares 1..10 = 385", "running as root on sandbox"
    ], text
    assert section(lines, "scratch space") == ["--- scratch space in /tmp works (exit 0)", "1000"], text
    assert section(lines, "writes anywhere else") == [
        "--- writes anywhere else fail (exit 0)",
        "cannot write /etc/passwd", "cannot write /root/x", "cannot write /bin/evil",
        "cannot write /x", "touch: /etc/passwd: Read-only file system",
    ], text
    assert section(lines, "there is no network") == [
        "--- there is no network (exit 0)", "interfaces: lo",
        "nc: can't connect to remote host (1.1.1.1): Network is unreachable",
    ], text
    assert section(lines, "a full /tmp") == [
        "--- a full /tmp is an error, not a full disk (exit 0)",
        "dd: error writing '/tmp/big': No space left on device",
    ], text
    loop = section(lines, "an endless loop")
    assert "still running after 1 s" in loop[1] and loop[2] == "output before it was killed: b'started\\n'", text
    assert_nothing_left(store)


def test_service_answers_the_host_and_stops(images: TestImages, tmp_path: Path) -> None:
    store = tmp_path / "store"
    lines = run_example("service.py", images.registry.url, store)
    text = "\n".join(lines)
    assert lines[0].startswith("web: httpd listening on 127.0.0.1:"), text
    port = int(lines[0].split(":")[2].split()[0])
    assert lines[1:5] == [
        "GET / -> 200 '<h1>hello from a container</h1>'",
        "GET /data.txt -> 200 'served from a host directory'",
        "GET /missing -> 404 Not Found",
        "GET /data.txt -> 200 'edited on the host'",
    ], text
    assert lines[5] == "stopped: exit status 143", text  # SIGTERM, forwarded by the init
    assert lines[-1] == "container removed", text
    with pytest.raises(OSError):  # the server is gone with its container
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert_nothing_left(store)


def test_quickstart_pulls_busybox_from_a_local_hub_and_runs_it(tmp_path: Path) -> None:
    """What scripts/demo.sh runs: a local registry (built by umoci from busybox-static)
    stands in for Docker Hub; the example pulls "busybox", runs it, execs into it."""
    env = {k: v for k, v in os.environ.items() if k not in ("ISOBOX_REGISTRY_MIRROR", "ISOBOX_ROOT")}
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.run([sys.executable, str(EXAMPLES / "quickstart.py"), "--local"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("pulled docker.io/library/busybox:latest sha256:")
    assert lines[1].startswith("hello from ")
    assert lines[2] == "uid=0(root) gid=0(root) groups=0(root)"
    assert "quickstart is running; it has logged b'serving\\n'" in lines
    assert lines[-1] == "done: nothing is left running or mounted"
    assert list(tmp_path.iterdir()) == [], "the example left temporary files"
