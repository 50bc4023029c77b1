"""The seccomp filter in a real container: a static probe (tests/probes/seccomp_probe.c,
built here with the system's gcc) makes the syscalls themselves and prints the errno
each got, with the filter and without it (``seccomp=False``), as root and rootless (CI
runs this file both ways)."""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
from typing import Dict

import pytest

import isobox
from isobox import Bind

from fixtures.host import require, require_tool

SOURCE = pathlib.Path(__file__).parent / "probes" / "seccomp_probe.c"

ORDINARY = {  # still work under the filter: what the kernel itself answers
    "getpid": 0, "read": errno.EBADF, "write": 0, "socket_inet": 0, "socket_unix": 0,
    "personality_query": 0, "clone_plain": 0, "cachestat": errno.EBADF,
    "removexattrat": errno.ENOENT,
}
REFUSED = {  # Docker's profile refuses these (issue 9): EPERM, its defaultErrnoRet
    "personality_addr_no_randomize": errno.EPERM, "fanotify_init": errno.EPERM,
    "process_madvise": errno.EPERM, "pidfd_getfd": errno.EPERM, "migrate_pages": errno.EPERM,
    "set_mempolicy_home_node": errno.EPERM, "quotactl_fd": errno.EPERM,
    "socket_vsock": errno.EPERM, "socket_alg": errno.EPERM,
    "socket_inet_high_bits": errno.EPERM,  # AF_INET with bit 32 set: compared on 64 bits
    "unshare_fs": errno.EPERM, "clone_newuser": errno.EPERM,
    # the profile's clone3 rule, so that libc falls back to clone
    "clone3": errno.ENOSYS,
    # newer than removexattrat (466), the newest syscall the profile names
    "open_tree_attr": errno.ENOSYS, "file_getattr": errno.ENOSYS,
}


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The probe, built once a session."""
    require(os.uname().machine == "x86_64", "the probe's expectations are written for x86_64")
    gcc = require_tool("gcc")
    out = tmp_path_factory.mktemp("seccomp-probe") / "probe"
    subprocess.run([gcc, "-static", "-O1", "-Wall", "-Werror", "-o", str(out), str(SOURCE)],
                   check=True, capture_output=True)
    os.chmod(out.parent, 0o755)
    return out


def run_probe(image: isobox.Image, probe: pathlib.Path, *args: str, **options: object) -> Dict[str, int]:
    result = isobox.run(image, ["/probe", *args], mounts=[Bind(probe, "/probe", read_only=True)],
                        timeout=30, **options)  # type: ignore[arg-type]
    assert result.exit_code == 0, result
    return {name: int(err) for name, err in (line.split() for line in result.stdout.decode().splitlines())}


def test_filter_refuses_what_docker_refuses_and_lets_the_rest_through(busybox_image, store_root, probe):
    got = run_probe(busybox_image, probe)
    assert {k: got[k] for k in ORDINARY} == ORDINARY
    assert {k: got[k] for k in REFUSED} == REFUSED
    assert got["x32_getpid"] == errno.ENOSYS  # as a kernel built without x32 answers


def test_without_the_filter_the_kernel_answers_them(busybox_image, store_root, probe):
    got = run_probe(busybox_image, probe, seccomp=False)
    assert {k: got[k] for k in ORDINARY} == ORDINARY
    for name, err in REFUSED.items():
        assert got[name] != err, (name, got[name])


def test_a_syscall_through_another_abi_kills_the_process(busybox_image, store_root, probe):
    mounts = [Bind(probe, "/probe", read_only=True)]
    script = ["sh", "-c", "/probe int80; echo status=$?"]
    unconfined = isobox.run(busybox_image, script, mounts=mounts, seccomp=False, timeout=30)
    require(unconfined.stdout.startswith(b"int80 "),
            "this kernel has no i386 emulation, so no process can make such a syscall")
    assert unconfined.stdout.endswith(b"status=0\n")
    filtered = isobox.run(busybox_image, script, mounts=mounts, timeout=30)
    assert filtered.stdout == b"status=159\n"  # 128 + SIGSYS: SECCOMP_RET_KILL_PROCESS
