"""Readiness waits (a listening port, a line of output) and the pytest plugin's fixture:
what a test suite needs to start an isolated service and use it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

import isobox


def test_wait_for_port_sees_the_containers_own_network(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sh", "-c", "sleep 0.3; exec httpd -f -p 8080 -h /tmp"]) as c:
        started = time.monotonic()
        c.wait_for_port(8080, timeout=10)
        assert time.monotonic() - started >= 0.25  # it really waited for the server
        # the port is the container's, not the host's: nothing listens there on the host
        from isobox.runtime.wait import listening_ports

        assert 8080 in listening_ports(c.pid)
        assert c.exec(["sh", "-c", "echo GET / | nc 127.0.0.1 8080 | head -1"]).stdout.startswith(b"HTTP/1.")


def test_wait_for_log(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sh", "-c", "sleep 0.2; echo ready to serve >&2; sleep 30"]) as c:
        c.wait_for_log("ready to serve", timeout=10)
        assert b"ready" in c.logs("stderr")


def test_a_service_that_dies_while_waited_for_is_reported_with_its_output(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sh", "-c", "echo config error >&2; exit 3"]) as c:
        with pytest.raises(isobox.ContainerError, match="(?s)exited \\(3\\).*config error"):
            c.wait_for_port(5432, timeout=10)


def test_waiting_times_out(busybox_image, store_root):
    with isobox.Container(busybox_image, ["sleep", "30"]) as c:
        with pytest.raises(isobox.Timeout, match="port 1234"):
            c.wait_for_port(1234, timeout=0.3)
        with pytest.raises(isobox.Timeout):
            c.wait_for_log("never", timeout=0.2)


PLUGIN_TEST = '''
import isobox

def test_service(isobox_container, tmp_path):
    image = isobox.Image.from_directory({rootfs!r})
    c = isobox_container(image, ["sh", "-c", "echo up; exec httpd -f -p 80 -h /tmp"], name="web")
    c.wait_for_port(80)
    assert c.exec(["sh", "-c", "echo GET / | nc 127.0.0.1 80 | head -c 7"]).stdout == b"HTTP/1."

def test_failure_shows_the_containers_output(isobox_container):
    image = isobox.Image.from_directory({rootfs!r})
    c = isobox_container(image, ["sh", "-c", "echo diagnostic-line; sleep 30"])
    c.wait_for_log("diagnostic-line")
    assert False, "fails on purpose"
'''


def test_pytest_plugin_fixture_starts_and_always_removes_containers(busybox_rootfs, tmp_path):
    test_file = tmp_path / "test_uses_plugin.py"
    test_file.write_text(PLUGIN_TEST.format(rootfs=str(busybox_rootfs)))
    store = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        env={**os.environ, "ISOBOX_ROOT": str(store)}, capture_output=True, text=True,
        cwd=tmp_path, timeout=120,
    )
    assert "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
    assert "diagnostic-line" in done.stdout  # the failing test's report carries the output
    left = [p.name for p in (store / "containers").iterdir() if not p.name.startswith(".")]
    assert left == []
