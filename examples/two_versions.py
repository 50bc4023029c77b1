"""Two versions of the same runtime, side by side on one machine.

    python examples/two_versions.py

The seed's first point: program A needs runtime 1, program B needs runtime 2, and the
two run at the same time without conflict, because each container sees only the files of
its own image. This pulls ``runtime:1`` and ``runtime:2``, starts one named container
from each, and asks each what it sees while both are running.

The images: ``runtime:N`` is busybox plus a stand-in language runtime in /opt/runtime
(its VERSION, a ``runtime`` script, a lib/ that differs between versions);
tests/fixtures/examples.py builds them with umoci and pushes them to a local registry.
Where they come from is set by the environment, as with Docker:

- ``ISOBOX_REGISTRY_MIRROR=http://127.0.0.1:5000``: Docker Hub names (``runtime:1``)
  are looked up at that registry first (as Docker's ``registry-mirrors``);
- ``ISOBOX_INSECURE_REGISTRIES=host:port``: plain HTTP for a registry that is not on the
  loopback;
- ``RUNTIME_REPOSITORY`` (default ``runtime``): pull ``<it>:1`` and ``<it>:2`` instead;
- ``ISOBOX_ROOT``: the store (default /var/lib/isobox as root, else ~/.local/share/isobox).
"""

from __future__ import annotations

import os

import isobox


def sh(container: isobox.Container, script: str) -> str:
    """Run a shell snippet in a running container (`docker exec`) and return its output."""
    return container.exec(["sh", "-c", script], timeout=30).stdout.decode().strip()


def main() -> None:
    repository = os.environ.get("RUNTIME_REPOSITORY", "runtime")
    v1 = isobox.Image.pull(f"{repository}:1")
    v2 = isobox.Image.pull(f"{repository}:2")
    print(f"pulled {v1.reference} ({v1.digest[:19]}) and {v2.reference} ({v2.digest[:19]})")

    # Both containers run at once; `sleep` keeps them alive while we look inside.
    # init=True gives them a pid 1 that handles signals, so they stop promptly.
    with isobox.Container(v1, ["sleep", "600"], name="app-on-runtime-1", init=True) as a, \
            isobox.Container(v2, ["sleep", "600"], name="app-on-runtime-2", init=True) as b:
        print(f"{a.name}: {a.status}, {b.name}: {b.status}")
        for c in (a, b):
            print(f"[{c.name}]")
            for script in ("runtime --version", "runtime", "echo $RUNTIME_VERSION",
                           "ls /opt/runtime/lib | xargs"):
                print(f"  {script:<28} -> {sh(c, script)}")
            # its own pid namespace: pid 1 is its init, then sleep, then this ps
            ps = c.exec(["ps", "-o", "pid,comm"]).stdout.decode().split()[2:]
            print(f"  {'ps -o pid,comm':<28} -> {' '.join(ps)}")

        # Each has its own filesystem: a write in one is invisible in the other.
        sh(a, "echo installed-by-app-1 > /opt/runtime/lib/extra.sh")
        print(f"{a.name} wrote /opt/runtime/lib/extra.sh; "
              f"{b.name} sees: {sh(b, 'cat /opt/runtime/lib/extra.sh 2>&1 || true')}")
        print(f"{a.name} still sees: {sh(a, 'cat /opt/runtime/lib/extra.sh')}")
    print("both containers removed")

    # The write lived in that container's own upper layer: the image is unchanged.
    fresh = isobox.run(v1, ["ls", "/opt/runtime/lib"]).stdout.decode().split()
    print(f"a fresh container from {v1.reference} sees: {' '.join(fresh)}")


if __name__ == "__main__":
    main()
