"""The control socket against clients that do not follow the protocol (server.py): every
request gets a reply that says what was wrong, the owner never dies and keeps no fd or
thread of a connection that is over, and its bounds keep `stop` and `kill` served
however many clients wait. Against a real detached container (its supervisor process)."""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import isobox
from isobox.control import server
from isobox.control.client import ContainerHandle, connect
from isobox.control.supervisor import run_detached

from test_cli_run import root, template_store  # noqa: F401 (fixtures: a store with busybox)


@pytest.fixture
def box(root) -> Iterator[ContainerHandle]:  # noqa: F811
    handle = run_detached("busybox", ["sleep", "600"], name="target", store=root)
    try:
        yield handle
    finally:
        handle.remove(force=True)


def _owner(handle: ContainerHandle) -> int:
    """The owner's pid, once it serves (its first client makes its listening socket
    object, one fd for good)."""
    assert ask(handle, b'{"op": "info"}\n')["ok"]  # type: ignore[index]
    pid = handle.info().owner_pid
    assert pid
    # and once the thread that answered has ended: the same threads and fds for a while
    seen = []
    while len(seen) < 5 or len(set(seen[-5:])) > 1:
        seen.append((tuple(_fds(pid)), _threads(pid)))
        time.sleep(0.05)
    return int(pid)


def _fds(pid: int) -> List[str]:
    return sorted(os.listdir(f"/proc/{pid}/fd"))


def _links(pid: int, fds: Any) -> Dict[str, str]:
    out = {}
    for fd in fds:
        try:
            out[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            out[fd] = "(closed)"
    return out


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _settled(pid: int, fds: List[str], threads: int) -> None:
    """The owner is back to what it held before (threads end just after their reply)."""
    deadline = time.monotonic() + 10
    while (_fds(pid), _threads(pid)) != (fds, threads):
        assert time.monotonic() < deadline, (_links(pid, set(_fds(pid)) ^ set(fds)), _threads(pid), threads,
                                             [open(f"/proc/{pid}/task/{t}/comm").read().strip()
                                              for t in os.listdir(f"/proc/{pid}/task")])
        time.sleep(0.02)


def _open(handle: ContainerHandle) -> socket.socket:
    conn = connect(handle.path)
    assert conn is not None
    conn.sock.settimeout(15)
    return conn.sock


def _reply(sock: socket.socket) -> Optional[Dict[str, Any]]:
    data = b""
    while b"\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return json.loads(data.partition(b"\n")[0]) if data else None


def ask(handle: ContainerHandle, payload: bytes, fds: Sequence[int] = (), shut: bool = False) -> Optional[Dict[str, Any]]:
    """Send raw bytes (with fds) on a new connection and read the one reply line."""
    sock = _open(handle)
    try:
        try:
            if fds:
                socket.send_fds(sock, [payload[:1]], list(fds))
                payload = payload[1:]
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the owner stopped reading (a request too long): its reply is already here
        if shut:
            sock.shutdown(socket.SHUT_WR)
        return _reply(sock)
    finally:
        sock.close()


def refused(reply: Optional[Dict[str, Any]], *words: str, error: str = "InvalidOption") -> str:
    assert reply is not None and reply.get("ok") is False, reply
    assert reply["error"] == error, reply
    for word in words:
        assert word in reply["message"], (word, reply)
    return str(reply["message"])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
requests = st.fixed_dictionaries({"op": st.sampled_from(sorted(server.FIELDS))}) | json_values


def test_malformed_requests_each_get_an_error_reply_and_the_owner_keeps_nothing(box):
    pid = _owner(box)
    fds, threads = _fds(pid), _threads(pid)

    @settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(requests)
    def any_json(value: Any) -> None:
        # the valid requests are not for fuzzing: kill, stop and remove would act
        assume(not (isinstance(value, dict) and value.get("op") in server.FIELDS and set(value) <= {"op"}
                    and value["op"] not in ("exec",)))
        refused(ask(box, json.dumps(value).encode() + b"\n"))

    @settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.binary(max_size=64).filter(lambda b: b"\n" not in b))
    def any_bytes(data: bytes) -> None:
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        assume(not (isinstance(doc, dict) and doc.get("op") in server.FIELDS))
        refused(ask(box, data + b"\n"))

    any_json()
    any_bytes()
    assert box.status == "running"
    _settled(pid, fds, threads)


# what each field may be, and wrong values for it
WRONG = {
    "signal": json_values.filter(lambda v: not isinstance(v, (int, str)) or isinstance(v, bool)),
    "timeout": json_values.filter(lambda v: not isinstance(v, (int, float)) or isinstance(v, bool))
    | st.sampled_from([-1, float("inf"), 1e300]),
    "force": json_values.filter(lambda v: not isinstance(v, bool)),
    "argv": json_values.filter(lambda v: not (isinstance(v, list) and v and all(isinstance(a, str) for a in v)))
    | st.just(["a\0b"]),
    "env": json_values.filter(lambda v: v is not None and not isinstance(v, list)) | st.just(["HOME"])
    | st.just(["=x"]),
    "workdir": json_values.filter(lambda v: v is not None and not isinstance(v, str)) | st.just("relative"),
    "user": json_values.filter(lambda v: v is not None and not isinstance(v, str)),
    "tty": json_values.filter(lambda v: not isinstance(v, bool)),
    "tty_size": json_values.filter(lambda v: v is not None and not isinstance(v, list)) | st.just([0, 80])
    | st.just([24]) | st.just([True, 80]) | st.just([1 << 40, 80]),
    "rows": json_values.filter(lambda v: not isinstance(v, int) or isinstance(v, bool)) | st.just(0)
    | st.just(1 << 16),
    "cols": json_values.filter(lambda v: not isinstance(v, int) or isinstance(v, bool)) | st.just(-1),
}


def test_a_wrong_value_for_any_field_is_named(box):
    pid = _owner(box)
    fds, threads = _fds(pid), _threads(pid)
    fields = [(op, field) for op, names in server.FIELDS.items() for field in names]

    @settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(fields).flatmap(lambda of: st.tuples(st.just(of), WRONG[of[1]])))
    def check(case: Any) -> None:
        (op, field), value = case
        doc: Dict[str, Any] = {"op": op, field: value}
        if op == "exec" and field != "argv":
            doc["argv"] = ["true"]
        if op == "resize":  # the other of rows and cols is right
            doc.setdefault("rows", 24)
            doc.setdefault("cols", 80)
        pipes = [os.pipe() for _ in range(3)] if op == "exec" else []
        try:
            fds_sent = [pipes[0][0], pipes[1][1], pipes[2][1]] if pipes else []
            refused(ask(box, json.dumps(doc).encode() + b"\n", fds_sent), repr(field))
        finally:
            for r, w in pipes:
                os.close(r)
                os.close(w)

    check()
    for doc, words in [({"op": "kill", "signal": "NOPE"}, ("unknown signal",)),
                       ({"op": "kill", "signal": 99}, ("'signal'",)),
                       ({"op": "info", "extra": 1}, ("unknown field 'extra'",)),
                       ({"op": "exec"}, ("'argv' is missing",))]:
        refused(ask(box, json.dumps(doc).encode() + b"\n"), *words)
    assert box.status == "running"
    _settled(pid, fds, threads)


def test_fds_where_none_are_expected_are_refused_and_closed(box):
    pid = _owner(box)
    fds, threads = _fds(pid), _threads(pid)
    r, w = os.pipe()
    try:
        refused(ask(box, b'{"op": "info"}\n', [r]), "takes no fds")
        refused(ask(box, b'{"op": "exec", "argv": ["true"]}\n', [r, w]), "three fds", "got 2")
        refused(ask(box, b'{"op": "exec", "argv": ["true"], "tty": true}\n', [r, w, w]), "no fds")
        refused(ask(box, b'{"op": "exec", "argv": ["true"]}\n', [r, w, w, w, w]), "at most 3 fds")
    finally:
        os.close(r)
        os.close(w)
    _settled(pid, fds, threads)


def test_copies_and_resizes_through_the_owner_leave_it_holding_nothing(box, tmp_path):
    pid = _owner(box)
    fds, threads = _fds(pid), _threads(pid)
    src = tmp_path / "f"
    src.write_text("x")
    for _ in range(3):
        box.copy_to(src, "/tmp")
        box.copy_from("/tmp/f", tmp_path / "back")
        with pytest.raises(isobox.ContainerError, match="no terminal"):
            box.resize(30, 100)
    assert (tmp_path / "back").read_text() == "x"
    reply = ask(box, b'{"op": "root"}\n')  # the fd it carries is closed by the owner once sent
    assert reply == {"ok": True}
    _settled(pid, fds, threads)


def test_oversized_truncated_and_half_closed_requests(box):
    pid = _owner(box)
    fds, threads = _fds(pid), _threads(pid)
    refused(ask(box, b"x" * (2 << 20)), "longer than")
    refused(ask(box, b'{"op": "info"', shut=True), "without a newline")
    refused(ask(box, b"", shut=True), "no request")
    reply = ask(box, b'{"op": "info"}\n', shut=True)  # a client that half-closes still hears
    assert reply is not None and reply["ok"] and reply["status"] == "running"
    sock = _open(box)
    sock.close()  # gone before a word
    _settled(pid, fds, threads)
    assert box.status == "running"


def test_a_client_that_sends_nothing_is_answered_after_the_timeout(box):
    sock = _open(box)
    try:
        start = time.monotonic()
        refused(_reply(sock), "no complete request")
        assert time.monotonic() - start >= server.REQUEST_TIMEOUT - 1
    finally:
        sock.close()


def test_waiters_and_idle_clients_are_bounded_and_never_lock_out_stop(box):
    pid = _owner(box)
    fds, threads = _fds(pid), _threads(pid)
    waiters: List[socket.socket] = []
    idle: List[socket.socket] = []
    try:
        for _ in range(server.MAX_WAITERS):
            sock = _open(box)
            sock.sendall(b'{"op": "wait"}\n')
            waiters.append(sock)
        # the owner parks them in its loop (no thread each); past the bound, "busy" (one
        # sent before every earlier one was parked is parked too, and waits on)
        while True:
            sock = _open(box)
            sock.sendall(b'{"op": "wait"}\n')
            if _readable(sock):
                extra = _reply(sock)
                sock.close()
                break
            waiters.append(sock)
            assert len(waiters) < server.MAX_WAITERS + 16
        refused(extra, "busy", f"{server.MAX_WAITERS} clients", error="ContainerError")
        assert _threads(pid) == threads
        for _ in range(server.MAX_READING + 1):
            idle.append(_open(box))
        # the one that waited longest without a request made room for the last
        assert _readable(idle[0])
        refused(_reply(idle[0]), "busy", "no request came", error="ContainerError")
        # still: kill and stop are served
        box.kill("CONT")
        assert box.stop(timeout=1) == -9
        for sock in waiters:
            assert _reply(sock) == {"ok": True, "exit_code": -9}
    finally:
        for sock in waiters + idle:
            sock.close()


def _readable(sock: socket.socket) -> bool:
    import select

    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(2000))


def test_stop_and_kill_are_served_while_execs_run(box):
    procs = [box.exec_start(["sleep", "60"]) for _ in range(8)]
    try:
        box.kill("CONT")
        assert box.stop(timeout=1) == -9
    finally:
        for proc in procs:
            proc.close()
