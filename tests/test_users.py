"""users.py: Docker's user rules (moby's getUser over runc's GetExecUser), and reading a
running container's /etc/passwd while the container itself swaps what is there.

The attacker is the container: a static program (compiled here from C, run in the
container) that exchanges two names atomically (renameat2 RENAME_EXCHANGE) as fast as
it can, so that a reader that checks a path and then opens it meets the other file.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time
from typing import Iterator, List

import pytest
from hypothesis import given
from hypothesis import strategies as st

import isobox
from isobox.runtime import users
from isobox.runtime.users import ResolvedUser, resolve_user

from fixtures.host import require_tool
from support.host import IS_ROOT

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# app:x:7:7:a comment, not an entry:/:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
short:x:1001:1001
twin:x:1000:50:same uid as app, later:/twin:/bin/sh
bad:x:notanumber:0::/:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """\
root:x:0:
staff:x:50:app,nobody
audio:x:29:app
app:x:1000:app
nogroup:x:65534:nobody
"""


@pytest.fixture
def layers(tmp_path: pathlib.Path) -> List[pathlib.Path]:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    upper.mkdir()
    (lower / "etc" / "passwd").write_text(PASSWD)
    (lower / "etc" / "group").write_text(GROUP)
    return [lower, upper]


@pytest.mark.unit
@pytest.mark.parametrize("spec, expected", [
    # "" and "0": root, with its primary group only (root is listed in no group)
    ("", ResolvedUser(0, 0, (0,), "/root", "root")),
    ("0", ResolvedUser(0, 0, (0,), "/root", "root")),
    ("root", ResolvedUser(0, 0, (0,), "/root", "root")),
    # primary group first, then the groups listing the name; app's own group lists it too,
    # and is counted once (runc hands setgroups a set)
    ("app", ResolvedUser(1000, 1000, (1000, 50, 29), "/home/app", "app")),
    ("1000", ResolvedUser(1000, 1000, (1000, 50, 29), "/home/app", "app")),  # first entry wins
    ("+1000", ResolvedUser(1000, 1000, (1000, 50, 29), "/home/app", "app")),  # Go's Atoi
    ("twin", ResolvedUser(1000, 50, (50,), "/twin", "twin")),
    ("nobody", ResolvedUser(65534, 65534, (65534, 50), "/nonexistent", "nobody")),
    ("short", ResolvedUser(1001, 1001, (1001,), "/", "short")),  # 4 fields are an entry
    # an explicit group: that gid alone
    ("app:audio", ResolvedUser(1000, 29, (29,), "/home/app", "app")),
    ("app:50", ResolvedUser(1000, 50, (50,), "/home/app", "app")),
    ("app:4343", ResolvedUser(1000, 4343, (4343,), "/home/app", "app")),
    ("1000:staff", ResolvedUser(1000, 50, (50,), "/home/app", "app")),
    ("app:audio:ignored", ResolvedUser(1000, 29, (29,), "/home/app", "app")),  # parseLine
    (":staff", ResolvedUser(0, 50, (50,), "/root", "root")),
    # a uid with no entry: gid 0, home /
    ("4242", ResolvedUser(4242, 0, (0,), "/", None)),
    ("4242:audio", ResolvedUser(4242, 29, (29,), "/", None)),
    ("2147483647", ResolvedUser(2147483647, 0, (0,), "/", None)),
])
def test_user_specs_resolve_as_docker_resolves_them(layers, spec, expected):
    assert resolve_user(spec, layers) == expected


@pytest.mark.unit
@pytest.mark.parametrize("spec, message", [
    ("nosuch", "unable to find user nosuch: no matching entries in passwd file"),
    ("#", "unable to find user #"),  # a comment is not an entry
    ("bad", "unable to find user bad"),  # nor is a line whose uid is not a number
    ("app:nosuch", "unable to find group nosuch: no matching entries in group file"),
    ("2147483648", "must be in range 0-2147483647"),
    ("-1", "must be in range"),
    ("app:-1", "must be in range"),
    ("\u00b9", "unable to find user \u00b9"),  # a superscript digit is a name to Go's Atoi
])
def test_what_docker_refuses_is_refused_with_its_words(layers, spec, message):
    with pytest.raises(isobox.InvalidOption, match=message.replace("+", r"\+")):
        resolve_user(spec, layers)


@pytest.mark.unit
@given(st.text(max_size=12))
def test_any_user_spec_resolves_or_raises_invalid_option(tmp_path_factory, spec):
    base = tmp_path_factory.mktemp("spec")
    (base / "etc").mkdir()
    (base / "etc" / "passwd").write_text(PASSWD)
    (base / "etc" / "group").write_text(GROUP)
    try:
        got = resolve_user(spec, [base])
    except isobox.InvalidOption:
        return
    assert 0 <= got.uid <= 0xFFFFFFFE and got.groups[0] == got.gid


@pytest.mark.unit
def test_whiteouts_opaque_directories_and_links_hide_lower_files(layers, tmp_path):
    lower, upper = layers
    (upper / "etc").mkdir()
    os.symlink("/elsewhere", upper / "etc" / "passwd")  # a link: not followed, hides lower
    with pytest.raises(isobox.InvalidOption, match=r"/etc/passwd is a symbolic link"):
        resolve_user("app", layers)
    os.unlink(upper / "etc" / "passwd")
    if IS_ROOT:
        os.mknod(upper / "etc" / "passwd", 0o600 | 0o020000, 0)  # overlayfs's whiteout
        with pytest.raises(isobox.InvalidOption, match="unable to find user app"):
            resolve_user("app", layers)
        os.unlink(upper / "etc" / "passwd")
        ns = "trusted"
    else:
        ns = "user"
    os.setxattr(upper / "etc", f"{ns}.overlay.opaque", b"y")  # the lower etc/ is hidden
    assert resolve_user("4242", layers).name is None
    with pytest.raises(isobox.InvalidOption, match="unable to find user app"):
        resolve_user("app", layers)
    (upper / "etc" / "passwd").write_text("app:x:77:77::/:/bin/sh\n")
    assert resolve_user("app", layers).uid == 77


# -- a container that swaps what its /etc holds --------------------------------------------------------

FLIP_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    for (;;)
        if (renameat2(AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE) != 0) {
            perror("renameat2");
            return 1;
        }
}
"""


@pytest.fixture(scope="session")
def flipper(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A static program that exchanges two paths in a loop, to run in a container."""
    cc = require_tool("cc")
    work = tmp_path_factory.mktemp("flip")
    (work / "flip.c").write_text(FLIP_C)
    subprocess.run([cc, "-static", "-O2", "-o", str(work / "flip"), str(work / "flip.c")], check=True)
    return work / "flip"


@pytest.fixture
def host_passwd(tmp_path: pathlib.Path) -> pathlib.Path:
    """A directory on the host holding a passwd the container must never be able to feed
    us (standing in for the host's /etc: app is 4321 there)."""
    d = tmp_path / "host-etc"
    d.mkdir()
    (d / "passwd").write_text("app:x:4321:4321::/:/bin/sh\n")
    (d / "group").write_text("app:x:4321:\n")
    os.chmod(tmp_path, 0o755)
    return d


def _attack(c: isobox.Container, flipper: pathlib.Path, setup: str, a: str, b: str) -> None:
    c.copy_to(flipper, "/flip")
    r = c.exec(["sh", "-c", setup + f" && (/flip {a} {b} >/dev/null 2>&1 &) && echo started"])
    assert r.stdout == b"started\n", r


def test_exec_never_reads_a_host_file_through_a_directory_swapped_for_a_symlink(
        busybox_image, store_root, flipper, host_passwd):
    """The container's etc/ in its upper directory, exchanged over and over with a
    symlink to a host directory. The container cannot rename its own /etc (it holds the
    bind mounts of /etc/hosts and friends), so the exchange is made directly in the upper
    directory, as a container could make it wherever a directory of its own is read."""
    with isobox.Container(busybox_image, ["sleep", "60"]) as c:
        c.exec(["sh", "-c", "echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd"])  # etc/ in upper
        upper = c.dir / "upper"
        os.symlink(host_passwd, upper / "etc.link")
        layers = list(c.image.layers) + [upper]
        flip = subprocess.Popen([str(flipper), str(upper / "etc"), str(upper / "etc.link")])
        try:
            seen, refused = set(), 0
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                try:
                    seen.add(resolve_user("app", layers).uid)
                except isobox.InvalidOption as exc:  # etc/ was the link: refused, not followed
                    assert "symbolic link" in str(exc), exc
                    refused += 1
        finally:
            flip.kill()
            flip.wait()
        assert 4321 not in seen, "the host's passwd was read through the container's symlink"
        assert seen == {1000} and refused > 0
        if not (upper / "etc").is_dir():
            os.rename(upper / "etc.link", upper / "etc.tmp")
            os.rename(upper / "etc", upper / "etc.link")
            os.rename(upper / "etc.tmp", upper / "etc")


def test_exec_never_blocks_on_a_fifo_swapped_in_for_passwd(busybox_image, store_root, flipper, tmp_path):
    # resolve in a child process, so that a reader that blocks fails the test (it would
    # hang in open(2) on the FIFO) instead of hanging it
    setup = "cat /etc/passwd > /etc/passwd.new && mv /etc/passwd.new /etc/passwd && mkfifo /etc/passwd.fifo"
    with isobox.Container(busybox_image, ["sleep", "60"]) as c:
        _attack(c, flipper, setup, "/etc/passwd", "/etc/passwd.fifo")
        layers = [str(p) for p in c.image.layers] + [str(c.dir / "upper")]
        reader = textwrap.dedent(f"""
            import pathlib, sys, time
            import isobox
            from isobox.runtime.users import resolve_user
            layers = [pathlib.Path(p) for p in {layers!r}]
            uids, refused, deadline = set(), 0, time.monotonic() + 4
            while time.monotonic() < deadline:
                try:
                    uids.add(resolve_user("app", layers).uid)
                except isobox.InvalidOption as exc:
                    assert "FIFO" in str(exc), exc
                    refused += 1
            print(sorted(uids), refused > 0)
        """)
        try:
            out = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, timeout=30,
                                 env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        except subprocess.TimeoutExpired:
            pytest.fail("reading the container's /etc/passwd blocked on a FIFO the container swapped in")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[1000] True"
