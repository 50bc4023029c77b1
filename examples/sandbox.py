"""A notebook-style sandbox: run code you do not trust and get its output back.

    python examples/sandbox.py

Each snippet runs in a fresh container from ``busybox`` with no network (only a
loopback), a read-only root filesystem, a small tmpfs on /tmp as the only writable place,
and a time limit; the container is removed afterwards, whatever the snippet did. The
snippets are busybox shell and awk (a Python image would take Python snippets the same way).

``busybox`` is pulled from Docker Hub, or from a mirror as with Docker:
``ISOBOX_REGISTRY_MIRROR=http://127.0.0.1:5000`` looks Hub names up there first
(``ISOBOX_INSECURE_REGISTRIES=host:port`` allows plain HTTP to a non-loopback host).
``ISOBOX_ROOT`` sets the store (default /var/lib/isobox as root, else
~/.local/share/isobox).
"""

from __future__ import annotations

import textwrap

import isobox


def run_untrusted(image: isobox.Image, code: str, timeout: float = 5) -> isobox.RunResult:
    """Feed ``code`` to ``sh`` on stdin inside a locked-down, throw-away container."""
    return isobox.run(
        image,
        ["sh", "-s"],
        input=code.encode(),
        timeout=timeout,
        network="none",  # a network namespace of its own: loopback only
        read_only=True,  # the image's files cannot be changed
        mounts=[isobox.Tmpfs("/tmp", size="8m")],  # the only scratch space, 8 MiB
        hostname="sandbox",
    )


def show(title: str, result: isobox.RunResult) -> None:
    print(f"--- {title} (exit {result.exit_code})")
    out = (result.stdout + result.stderr).decode(errors="replace").rstrip()
    print(textwrap.indent(out, "  "))


def main() -> None:
    image = isobox.Image.pull("busybox")

    show("compute something", run_untrusted(image, """
        awk 'BEGIN { for (i = 1; i <= 10; i++) s += i * i; print "sum of squares 1..10 =", s }'
        echo "running as $(id -un) on $(hostname)"
    """))

    show("scratch space in /tmp works", run_untrusted(image, """
        seq 1 1000 > /tmp/numbers && wc -l < /tmp/numbers
    """))

    show("writes anywhere else fail", run_untrusted(image, """
        for f in /etc/passwd /root/x /bin/evil /x; do
            if (echo pwned > $f) 2>/dev/null; then echo "wrote $f"; else echo "cannot write $f"; fi
        done
        touch /etc/passwd 2>&1 || true  # the kernel says why, to root in the container too
    """))

    show("there is no network", run_untrusted(image, """
        echo "interfaces: $(ls /sys/class/net | xargs)"
        nc -w 2 1.1.1.1 80 </dev/null 2>&1 || true
    """))

    show("a full /tmp is an error, not a full disk", run_untrusted(image, """
        dd if=/dev/zero of=/tmp/big bs=1M count=64 2>&1 | grep -v records
    """))

    try:
        run_untrusted(image, "echo started; while :; do :; done", timeout=1)
    except isobox.Timeout as exc:
        print(f"--- an endless loop\n  {exc}")
        print(f"  output before it was killed: {exc.stdout!r}")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
