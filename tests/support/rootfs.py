"""Root filesystems made from Debian's busybox-static (a real static binary)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

from .host import MissingPrerequisite

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1000:1000:app user:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """\
root:x:0:
daemon:x:1:
tty:x:5:
staff:x:50:app
app:x:1000:
nogroup:x:65534:
"""


def make_busybox_rootfs(dest: pathlib.Path) -> pathlib.Path:
    """busybox, a symlink per applet, /etc/passwd, /etc/group and /etc/hostname in
    ``dest`` (created); returns ``dest``."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        raise MissingPrerequisite("busybox-static is not installed")
    for d in ("bin", "etc", "tmp", "root", "home/app", "usr/bin"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = dest / "bin" / applet
        if applet != "busybox" and not link.exists():
            os.symlink("busybox", link)
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    (dest / "etc" / "hostname").write_text("image\n")
    os.chmod(dest, 0o755)
    return dest
