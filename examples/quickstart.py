"""Quick start: pull busybox and run it as a container, as `docker run busybox ...` does.

    python examples/quickstart.py           # pulls busybox from Docker Hub
    python examples/quickstart.py --local   # no internet: a local registry stands in for
                                            # Docker Hub (examples/local_registry.py)

The store is ``$ISOBOX_ROOT`` (default /var/lib/isobox as root, else
~/.local/share/isobox); --local uses a temporary one.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import isobox


def main() -> None:
    image = isobox.Image.pull("busybox", progress=None)
    print(f"pulled {image.reference} {image.digest[:19]}... ({len(image.layers)} layer(s))")

    # subprocess.run-like: a fresh container per call, removed afterwards
    result = isobox.run(image, ["sh", "-c", "echo hello from $(hostname); id; ps; ls /"])
    print(result.stdout.decode(), end="")

    # a named, long-running container, from the same image, with exec and logs
    with isobox.Container(image, ["sh", "-c", "echo serving; sleep 60"], name="quickstart") as c:
        print(c.exec(["sh", "-c", "echo in the same container: pid $$ of $(ls /proc | grep -c '^[0-9]')"]).stdout.decode(), end="")
        print(f"{c.name} is {c.status}; it has logged {c.logs()!r}")
        c.stop(timeout=1)
    print("done: nothing is left running or mounted")


if __name__ == "__main__":
    local = "--local" in sys.argv[1:]
    with contextlib.ExitStack() as stack:
        if local:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import local_registry

            store = stack.enter_context(tempfile.TemporaryDirectory(prefix="isobox-quickstart-"))
            os.environ.setdefault("ISOBOX_ROOT", os.path.join(store, "store"))
            stack.enter_context(local_registry.busybox_hub())
        main()
