"""Quick start: run a container from a busybox root filesystem and show what it sees.

    python examples/quickstart.py
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

import isobox


def busybox_rootfs(dest: pathlib.Path) -> pathlib.Path:
    """A minimal root filesystem from Debian's busybox-static."""
    (dest / "bin").mkdir(parents=True)
    (dest / "etc").mkdir()
    shutil.copy2("/bin/busybox", dest / "bin" / "busybox")
    for applet in subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split():
        if applet != "busybox":
            os.symlink("busybox", dest / "bin" / applet)
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return dest


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("ISOBOX_ROOT", os.path.join(tmp, "store"))
        image = isobox.Image.from_directory(
            busybox_rootfs(pathlib.Path(tmp) / "rootfs"), isobox.ImageConfig(cmd=["sh"])
        )
        result = isobox.run(image, ["sh", "-c", "echo hello from $(hostname); id; ps; ls /"])
        print(result.stdout.decode(), end="")
        print(f"exit code {result.exit_code}")


if __name__ == "__main__":
    main()
