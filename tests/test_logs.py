"""Container log files (logs.py): real pipes, real files, real threads, a real full file
system; no container is needed, the writer plays the container's part."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import random
import resource
import subprocess
import sys
import textwrap
import threading
import time
from typing import Callable, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isobox.runtime import logread, logs
from isobox.errors import ContainerError, InvalidOption, StoreError

from fixtures.host import require, require_tool
from support.host import IS_ROOT

SRC = pathlib.Path(logs.__file__).resolve().parents[1]


def kept_length(total: int, max_size: int, max_files: int) -> int:
    """How many of ``total`` written bytes a policy keeps (the module docstring's invariant)."""
    if total <= max_size * max_files:
        return total
    return (max_files - 1) * max_size + (total - 1) % max_size + 1


def pattern(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


class Feed:
    """A container's side of a sink: the write ends of its two pipes."""

    def __init__(self, cdir: pathlib.Path, policy: logs.LogPolicy = logs.LogPolicy()) -> None:
        r1, self.out = os.pipe()
        r2, self.err = os.pipe()
        self.sink = logs.attach(cdir, r1, r2, policy)

    def write(self, data: bytes, fd: int = -1) -> None:
        fd = self.out if fd < 0 else fd
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def close(self) -> None:
        for fd in (self.out, self.err):
            if fd >= 0:
                os.close(fd)
        self.out = self.err = -1

    def finish(self) -> None:
        self.close()
        assert self.sink.finish(timeout=60)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting for {what} after {timeout} s")
        time.sleep(0.002)


def open_fds() -> List[str]:
    return sorted(os.listdir("/proc/self/fd"))


def pump_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "isobox-logs")


def chain(cdir: pathlib.Path, stream: str = "stdout") -> List[str]:
    return sorted(p.name for p in cdir.iterdir() if p.name.startswith(f"{stream}.log"))


# -- the policy -------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("text, size", [
    ("20000", 20000), ("512k", 512_000), ("10m", 10_000_000), ("10M", 10_000_000),
    ("1g", 10**9), ("1.5m", 1_500_000), ("10mb", 10_000_000), ("10 MB", 10_000_000),
    # go-units' FromHumanSize, which Docker uses, ignores the "i": still decimal
    ("10MiB", 10_000_000), ("100b", 100), ("1.1m", 1_100_000),
])
def test_max_size_reads_dockers_units(text, size):
    assert logs.LogPolicy.from_options({"max-size": text}).max_size == size
    assert logs.LogPolicy(max_size=text).max_size == size


@pytest.mark.unit
@pytest.mark.parametrize("text", ["", "m", "-1", "0", "0.1", "10x", "10 m b", "1e6", "10  m", " 10m", "1,5m", "١٠"])
def test_max_size_refuses_what_docker_refuses(text):
    with pytest.raises(InvalidOption, match="max-size"):
        logs.LogPolicy.from_options({"max-size": text})


@pytest.mark.unit
@pytest.mark.parametrize("opts, match", [
    ({"max-file": "0"}, "max_files"), ({"max-file": "three"}, "max-file"), ({"max-file": "1.5"}, "max-file"),
    ({"max-file": "-2"}, "max_files"), ({"mode": "non-blocking"}, "unknown log option 'mode'"),
    ({"compress": "true"}, "unknown log option"),
])
def test_bad_log_options_are_refused_by_name(opts, match):
    with pytest.raises(InvalidOption, match=match):
        logs.LogPolicy.from_options(opts)


@pytest.mark.unit
def test_policy_defaults_are_dockers_local_driver():
    assert logs.LogPolicy.from_options({}) == logs.LogPolicy(max_size=20 * 1024 * 1024, max_files=5)
    assert logs.LogPolicy.from_options({"max-file": "3", "max-size": "1k"}) == logs.LogPolicy(1000, 3)
    assert logs.LogPolicy(max_size=None).bound is None
    with pytest.raises(InvalidOption):
        logs.LogPolicy(max_size=0)
    with pytest.raises(InvalidOption):
        logs.LogPolicy(max_files=True)
    with pytest.raises(InvalidOption):
        logs.LogPolicy(max_size=1.5)  # type: ignore[arg-type]


@pytest.mark.unit
@given(n=st.integers(1, 10**6), unit=st.sampled_from(["", "k", "K", "m", "g", "t", "p"]),
       suffix=st.sampled_from(["", "b", "B", "i", "ib", "iB"]), space=st.booleans())
def test_any_docker_size_parses_to_its_decimal_value(n, unit, suffix, space):
    text = f"{n}{' ' if space else ''}{unit}{suffix if unit else suffix.replace('i', '')}"
    mult = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}[unit.lower()]
    assert logs.parse_size(text) == n * mult


@pytest.mark.unit
@given(st.text(max_size=12))
def test_size_parser_answers_any_text_with_a_size_or_invalid_option(text):
    try:
        assert logs.parse_size(text) >= 1
    except InvalidOption:
        pass


# -- writing ----------------------------------------------------------------------------------------


@pytest.mark.unit
def test_output_reaches_the_log_files(tmp_path):
    feed = Feed(tmp_path)
    feed.write(b"hello\n")
    feed.write(b"oops\n", feed.err)
    feed.finish()
    assert logread.read(tmp_path, "stdout") == b"hello\n"
    assert logread.read(tmp_path, "stderr") == b"oops\n"
    assert (tmp_path / "stdout.log").stat().st_mode & 0o777 == 0o600
    assert feed.sink.lost == {}


@pytest.mark.unit
def test_attach_appends_to_the_output_of_an_earlier_run(tmp_path):
    """As Docker does on restart: the live file is appended to, and counts toward max_size."""
    (tmp_path / "stdout.log").write_bytes(b"12345")
    feed = Feed(tmp_path, logs.LogPolicy(max_size=8, max_files=2))
    feed.write(b"6789")
    feed.finish()
    assert (tmp_path / "stdout.log.1").read_bytes() == b"12345678"
    assert (tmp_path / "stdout.log").read_bytes() == b"9"


@pytest.mark.unit
def test_rotation_keeps_max_files_of_max_size_newest_last(tmp_path):
    data = pattern(10_500)
    feed = Feed(tmp_path, logs.LogPolicy(max_size=1000, max_files=4))
    feed.write(data)
    feed.finish()
    assert chain(tmp_path) == ["stdout.log", "stdout.log.1", "stdout.log.2", "stdout.log.3"]
    assert (tmp_path / "stdout.log").read_bytes() == data[10_000:]
    assert (tmp_path / "stdout.log.1").read_bytes() == data[9000:10_000]
    assert (tmp_path / "stdout.log.3").read_bytes() == data[7000:8000]
    assert logread.read(tmp_path, "stdout") == data[7000:]


@pytest.mark.unit
def test_output_of_exactly_max_size_leaves_no_empty_file(tmp_path):
    """Rotation is lazy, as Docker's: it happens for the next byte, not after the last."""
    feed = Feed(tmp_path, logs.LogPolicy(max_size=100, max_files=3))
    feed.write(b"x" * 200)
    feed.finish()
    assert chain(tmp_path) == ["stdout.log", "stdout.log.1"]
    assert (tmp_path / "stdout.log").stat().st_size == 100


@pytest.mark.unit
def test_max_files_one_replaces_the_live_file_instead_of_truncating_it(tmp_path):
    """Docker unlinks and recreates the file with max-file=1: a reader in the middle of it
    reads it to its end."""
    feed = Feed(tmp_path, logs.LogPolicy(max_size=10, max_files=1))
    feed.write(b"0123456789")
    wait_for(lambda: logread.read(tmp_path, "stdout") == b"0123456789", "the first ten bytes")
    with open(tmp_path / "stdout.log", "rb") as reader:
        old = os.fstat(reader.fileno()).st_ino
        feed.write(b"abc")
        feed.finish()
        assert reader.read() == b"0123456789"
    assert chain(tmp_path) == ["stdout.log"]
    assert (tmp_path / "stdout.log").read_bytes() == b"abc"
    assert (tmp_path / "stdout.log").stat().st_ino != old


@pytest.mark.unit
def test_rotated_files_beyond_a_smaller_policy_go_at_the_first_rotation(tmp_path):
    for i in range(1, 6):
        (tmp_path / f"stdout.log.{i}").write_bytes(b"old")
    (tmp_path / "stdout.log.07").write_bytes(b"not ours")
    feed = Feed(tmp_path, logs.LogPolicy(max_size=4, max_files=3))
    feed.write(b"abcdefgh")
    feed.finish()
    assert chain(tmp_path) == ["stdout.log", "stdout.log.07", "stdout.log.1", "stdout.log.2"]
    assert logread.read(tmp_path, "stdout") == b"oldabcdefgh"


@st.composite
def runs(draw: st.DrawFn) -> Tuple[logs.LogPolicy, int, List[int]]:
    max_size = draw(st.integers(1, 64))
    policy = logs.LogPolicy(max_size=max_size, max_files=draw(st.integers(1, 4)))
    return policy, draw(st.integers(0, max_size)), draw(st.lists(st.integers(0, 200), max_size=12))


@pytest.mark.parametrize("how", [
    pytest.param("splice", marks=pytest.mark.skipif(not hasattr(os, "splice"), reason="Python < 3.10 has no os.splice")),
    "read-pwrite", "writer"])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=runs())
def test_read_returns_exactly_the_suffix_the_policy_keeps(tmp_path_factory, how, run):
    """For any sizes of writes, any policy and any earlier output in the live file (at
    most max_size, as a policy leaves it): read() is the last ``kept_length`` bytes of the
    stream, every rotated file holds exactly max_size bytes, no more than max_files exist."""
    policy, earlier, sizes = run
    cdir = tmp_path_factory.mktemp("c")
    data = pattern(earlier + sum(sizes))
    (cdir / "stdout.log").write_bytes(data[:earlier])
    pos = earlier
    if how == "writer":
        with logs.Writer(cdir, "stdout", policy) as w:
            for n in sizes:
                w.write(data[pos:pos + n])
                pos += n
            assert w.lost is None
    else:
        with pytest.MonkeyPatch.context() as mp:
            if how == "read-pwrite":
                mp.setattr(logs, "_splice", None)  # as on Python 3.9, which has no os.splice
            feed = Feed(cdir, policy)
        for n in sizes:
            feed.write(data[pos:pos + n])
            pos += n
        feed.finish()
        assert feed.sink.lost == {}
        assert all(s.use_splice == (how == "splice") for s in feed.sink._streams)
    assert policy.max_size is not None
    kept = kept_length(len(data), policy.max_size, policy.max_files)
    assert logread.read(cdir, "stdout") == data[len(data) - kept:]
    names = chain(cdir)
    assert len(names) <= policy.max_files
    for name in names:
        size = (cdir / name).stat().st_size
        assert size == policy.max_size if name != "stdout.log" else size <= policy.max_size


def test_a_flood_of_300_mb_stays_within_max_size_times_max_files(tmp_path):
    """A container writing 300 MB as fast as it can (head, another process, plays it):
    at no moment do the files hold more than the policy's bound, and at the end exactly
    what the invariant says."""
    policy = logs.LogPolicy.from_options({"max-size": "10m", "max-file": "3"})
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    sink = logs.attach(tmp_path, r1, r2, policy)
    total = 300_000_000
    writer = subprocess.Popen([require_tool("head"), "-c", str(total), "/dev/zero"], stdout=w1)
    os.close(w1)
    os.close(w2)
    names, largest = set(), 0
    while writer.poll() is None:
        for name in chain(tmp_path):
            names.add(name)
            try:
                largest = max(largest, (tmp_path / name).stat().st_size)
            except FileNotFoundError:
                pass
        time.sleep(0.005)
    assert writer.returncode == 0
    assert sink.finish(timeout=120)
    # no file ever grew past max_size, no name beyond max_files ever appeared
    assert largest <= 10_000_000
    assert names <= {"stdout.log", "stdout.log.1", "stdout.log.2"}
    assert chain(tmp_path) == ["stdout.log", "stdout.log.1", "stdout.log.2"]
    assert len(logread.read(tmp_path, "stdout")) == kept_length(total, 10_000_000, 3) == 30_000_000


@pytest.mark.unit
def test_a_flooding_container_does_not_starve_another(tmp_path):
    """One write per ready pipe and round: a pipe that is never empty does not keep the
    pump from another container's output."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    flood = Feed(tmp_path / "a", logs.LogPolicy(max_size=1 << 20, max_files=2))
    quiet = Feed(tmp_path / "b")
    stop = threading.Event()

    def spew() -> None:
        block = b"y" * 65536
        while not stop.is_set():
            flood.write(block)

    t = threading.Thread(target=spew)
    t.start()
    try:
        wait_for(lambda: (tmp_path / "a" / "stdout.log.1").exists(), "the flood to rotate")
        quiet.write(b"still here\n")
        wait_for(lambda: logread.read(tmp_path / "b", "stdout") == b"still here\n",
                 "the quiet container's line while the other floods")
        assert t.is_alive()  # the flood went on the whole time
    finally:
        stop.set()
        t.join()
    flood.finish()
    quiet.finish()


@pytest.mark.unit
def test_hundreds_of_sinks_share_one_thread(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    require(hard >= 3000, f"RLIMIT_NOFILE hard limit {hard} is below the 3000 fds 300 sinks need")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 3000), hard))
    try:
        feeds = []
        for i in range(300):
            d = tmp_path / str(i)
            d.mkdir()
            feeds.append(Feed(d, logs.LogPolicy(max_size=64, max_files=2)))
        for i, feed in enumerate(feeds):
            feed.write(b"%d:" % i + b"z" * (i % 100))
            feed.write(b"e%d" % i, feed.err)
        assert pump_threads() == 1
        for feed in feeds:
            feed.finish()
        for i, feed in enumerate(feeds):
            out = b"%d:" % i + b"z" * (i % 100)
            assert logread.read(tmp_path / str(i), "stdout") == out[-kept_length(len(out), 64, 2):]
            assert logread.read(tmp_path / str(i), "stderr") == b"e%d" % i
        assert pump_threads() == 1
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.unit
def test_finish_times_out_while_a_writer_still_holds_the_pipe(tmp_path):
    feed = Feed(tmp_path)
    feed.write(b"partial")
    assert feed.sink.finish(timeout=0.05) is False
    wait_for(lambda: logread.read(tmp_path, "stdout") == b"partial", "the bytes written so far")
    feed.write(b" and the rest")
    feed.close()
    assert feed.sink.finish(timeout=60) is True
    assert logread.read(tmp_path, "stdout") == b"partial and the rest"


@pytest.mark.unit
def test_close_stops_pumping_and_the_writer_gets_epipe(tmp_path):
    feed = Feed(tmp_path)
    feed.write(b"before")
    feed.sink.close()
    with pytest.raises(BrokenPipeError):
        os.write(feed.out, b"after")
    assert feed.sink.finish(timeout=1) is False
    feed.sink.close()  # twice is fine
    feed.close()


def test_no_fd_or_thread_is_left_behind(tmp_path):
    Feed(tmp_path).finish()  # the pump exists from here on
    fds, threads = open_fds(), threading.active_count()
    for i in range(50):
        d = tmp_path / str(i)
        d.mkdir()
        feed = Feed(d, logs.LogPolicy(max_size=10, max_files=2))
        feed.write(b"a" * 35)
        if i % 3 == 0:
            feed.sink.close()
            feed.close()
        else:
            feed.finish()
        with logs.Writer(d, "stderr", logs.LogPolicy(max_size=3, max_files=1)) as w:
            w.write(b"abcdefg")
        logread.read(d, "stdout")
        list(logread.follow(d, ["stdout", "stderr"], lambda: True))
    # failures close what they were given too
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    with pytest.raises(StoreError, match="missing"):
        logs.attach(tmp_path / "missing", r1, r2)
    os.close(w1)
    os.close(w2)
    assert open_fds() == fds
    assert threading.active_count() == threads
    pump = logs._PUMP
    assert pump is not None and pump.owned <= {pump.epoll.fileno(), pump.null}


@pytest.mark.unit
def test_symlinks_in_the_container_directory_are_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"host file")
    cdir = tmp_path / "c"
    cdir.mkdir()
    (cdir / "stdout.log").symlink_to(outside)
    fds = open_fds()
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    with pytest.raises(StoreError, match=r"open .*stdout\.log: Too many levels of symbolic links"):
        logs.attach(cdir, r1, r2)
    os.close(w1)
    os.close(w2)
    assert open_fds() == fds
    (cdir / "stdout.log").unlink()
    # rotation replaces a planted name, never writes through it
    (cdir / "stdout.log.1").symlink_to(outside)
    (cdir / "stdout.log.2").symlink_to(outside)
    feed = Feed(cdir, logs.LogPolicy(max_size=3, max_files=3))
    feed.write(b"abcdefgh")
    feed.finish()
    assert outside.read_bytes() == b"host file"
    assert not (cdir / "stdout.log.1").is_symlink() and not (cdir / "stdout.log.2").is_symlink()
    assert logread.read(cdir, "stdout") == b"abcdefgh"


# -- losing output ----------------------------------------------------------------------------------

FULL_DISK = textwrap.dedent("""
    import json, os, sys, threading, time
    sys.path.insert(0, sys.argv[2])
    from isobox.runtime import logread, logs
    mnt = sys.argv[1]
    cdir = mnt + "/c"
    os.mkdir(cdir)
    # leave 48 KiB of the 256 KiB tmpfs free
    with open(mnt + "/filler", "wb") as f:
        f.write(b"\\0" * (208 * 1024))
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    sink = logs.attach(cdir, r1, r2, logs.LogPolicy(max_size=None))
    a = os.urandom(200 * 1024)
    b = os.urandom(100 * 1024)

    def write(fd, data):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    write(w1, a)    # never blocks for good: what the disk refuses is drained
    deadline = time.monotonic() + 60
    while os.stat(cdir + "/stdout.log").st_size + sum(l.nbytes for l in sink.lost.values()) < len(a):
        assert time.monotonic() < deadline, "the pump did not account for every byte"
        time.sleep(0.001)
    during = sink.lost["stdout"]
    os.unlink(mnt + "/filler")   # space is back
    write(w1, b)
    os.close(w1)
    os.close(w2)
    ok = sink.finish(60)
    out = logread.read(cdir, "stdout")
    kept = len(a) - during.nbytes
    print(json.dumps({"ok": ok, "errno": during.errno, "step": during.step, "path": during.path,
                      "lost": during.nbytes, "lost_end": sink.lost["stdout"].nbytes, "text": str(during),
                      "same": out == a[:kept] + b, "stderr_lost": "stderr" in sink.lost}))
""")


def run_in_small_tmpfs(tmp_path: pathlib.Path, script: str) -> dict:
    """Run a script with a 256 KiB tmpfs at argv[1], mounted in a mount namespace of its own
    (and, without root, a user namespace where we are root), so the host never sees it."""
    unshare = require_tool("unshare")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (tmp_path / "script.py").write_text(script)
    os.chmod(tmp_path, 0o755)
    ns = ["--mount"] if IS_ROOT else ["--user", "--map-root-user", "--mount"]
    probe = subprocess.run([unshare, *ns, "true"], capture_output=True, text=True)
    require(probe.returncode == 0, f"cannot make a mount namespace here: {probe.stderr.strip()}")
    proc = subprocess.run(
        [unshare, *ns, "sh", "-c", 'mount -t tmpfs -o size=256k tmpfs "$1" && exec "$2" "$3" "$1" "$4"',
         "sh", str(mnt), sys.executable, str(tmp_path / "script.py"), str(SRC)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_full_disk_drops_output_counts_it_and_resumes_when_space_is_back(tmp_path):
    got = run_in_small_tmpfs(tmp_path, FULL_DISK)
    assert got["ok"]
    assert got["errno"] == errno.ENOSPC and got["step"] == "write"
    assert got["path"].endswith("/c/stdout.log")
    assert 0 < got["lost"] < 200 * 1024
    assert got["lost_end"] == got["lost"]        # nothing of what came after was lost
    assert got["same"]                           # the kept prefix, then all that came after
    assert "bytes of output lost: write" in got["text"] and "No space left on device" in got["text"]
    assert not got["stderr_lost"]


FILE_SIZE_LIMIT = textwrap.dedent("""
    import json, os, resource, sys
    sys.path.insert(0, sys.argv[2])
    from isobox.runtime import logread, logs
    logs._splice = None if sys.argv[3] == "read-pwrite" else logs._splice
    # Python ignores SIGXFSZ, so a write past RLIMIT_FSIZE fails with EFBIG (setrlimit(2))
    resource.setrlimit(resource.RLIMIT_FSIZE, (10000, resource.RLIM_INFINITY))
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    sink = logs.attach(sys.argv[1], r1, r2, logs.LogPolicy(max_size=None))
    data = os.urandom(30000)
    os.write(w1, data)
    os.close(w1)
    os.close(w2)
    ok = sink.finish(60)
    loss = sink.lost["stdout"]
    print(json.dumps({"ok": ok, "errno": loss.errno, "lost": loss.nbytes,
                      "same": logread.read(sys.argv[1], "stdout") == data[:10000]}))
""")


@pytest.mark.parametrize("how", ["splice", "read-pwrite"])
def test_a_file_size_limit_drops_output_with_efbig(tmp_path, how):
    (tmp_path / "script.py").write_text(FILE_SIZE_LIMIT)
    proc = subprocess.run([sys.executable, str(tmp_path / "script.py"), str(tmp_path), str(SRC), how],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got == {"ok": True, "errno": errno.EFBIG, "lost": 20000, "same": True}


def test_writer_counts_what_the_disk_refuses(tmp_path):
    script = textwrap.dedent("""
        import json, os, sys
        sys.path.insert(0, sys.argv[2])
        from isobox.runtime import logread, logs
        os.mkdir(sys.argv[1] + "/c")
        with open(sys.argv[1] + "/filler", "wb") as f:
            f.write(b"\\0" * (240 * 1024))
        w = logs.Writer(sys.argv[1] + "/c", "stdout", logs.LogPolicy(max_size=None))
        w.write(b"t" * 40000)
        lost = w.lost
        w.close()
        print(json.dumps({"errno": lost.errno, "lost": lost.nbytes,
                          "kept": len(logread.read(sys.argv[1] + "/c", "stdout"))}))
    """)
    got = run_in_small_tmpfs(tmp_path, script)
    assert got["errno"] == errno.ENOSPC
    assert got["lost"] > 0 and got["lost"] + got["kept"] == 40000


# -- reading ----------------------------------------------------------------------------------------


@pytest.mark.unit
def test_read_of_a_container_that_wrote_nothing_is_empty(tmp_path):
    assert logread.read(tmp_path, "stdout") == b""
    with pytest.raises(InvalidOption, match="stream"):
        logread.read(tmp_path, "stdin")
    with pytest.raises(StoreError, match="nowhere"):
        logread.read(tmp_path / "nowhere", "stdout")


@pytest.mark.unit
def test_read_sees_one_consistent_chain_while_the_pump_rotates(tmp_path):
    """Whatever moment read() catches, it returns a contiguous run of the stream."""
    policy = logs.LogPolicy(max_size=100, max_files=3)
    data = b"".join(b"%07d\n" % i for i in range(10000))  # every 8-byte record is unique
    feed = Feed(tmp_path, policy)
    t = threading.Thread(target=feed.write, args=(data,))
    t.start()
    reads = 0
    while t.is_alive() or reads < 10:
        got = logread.read(tmp_path, "stdout")
        if got:
            assert got in data, "read() returned bytes that were never consecutive"
        reads += 1
    t.join()
    feed.finish()


PACED_WRITER = textwrap.dedent("""
    import os, random, select, sys
    sys.path.insert(0, sys.argv[2])
    from isobox.runtime import logread, logs
    max_size, max_files = 97, 12
    data = random.Random(7).randbytes(100_000)
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    sink = logs.attach(sys.argv[1], r1, r2, logs.LogPolicy(max_size, max_files))
    rng = random.Random(3)
    consumed, pos = 0, 0
    progress = os.fdopen(0, "rb", buffering=0)
    pending = b""
    while pos < len(data):
        n = min(rng.randrange(1, 200), len(data) - pos)
        # stay less than max_files - 2 files ahead of the follower: the file it reads is
        # never dropped, however the two run
        while pos + n - consumed > (max_files - 2) * max_size:
            if not select.select([progress], [], [], 60)[0]:
                consumed = len(data)  # a follower that lost its way: write on, the test then fails, not hangs
                break
            got = progress.read(4096)
            if not got:
                consumed = len(data)  # the test is gone
                break
            pending += got
            *lines, pending = pending.split(b"\\n")
            if lines:
                consumed = int(lines[-1])
        view = memoryview(data[pos:pos + n])
        while view:
            view = view[os.write(w1, view):]
        pos += n
    os.close(w1)
    os.close(w2)
    assert sink.finish(60)
""")


def test_follow_reads_every_byte_across_rotations_while_they_happen(tmp_path):
    """The writer (another process, so the two truly run at once) rotates a file of 97
    bytes about every write, and never gets more than max_files-2 files ahead of the
    follower: the follower misses nothing, not even bytes that land in a file between
    its last read of it and its rename."""
    (tmp_path / "writer.py").write_text(PACED_WRITER)
    cdir = tmp_path / "c"
    cdir.mkdir()
    progress_r, progress = os.pipe()
    writer = subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), str(cdir), str(SRC)],
                              stdin=progress_r)
    os.close(progress_r)
    got = []
    consumed = 0
    try:
        for stream, chunk in logread.follow(cdir, ["stdout", "stderr"], lambda: writer.poll() is not None,
                                         poll_interval=0.001):
            assert stream == "stdout"
            got.append(chunk)
            consumed += len(chunk)
            try:
                os.write(progress, b"%d\n" % consumed)
            except BrokenPipeError:
                pass  # it is done
    finally:
        os.close(progress)
        writer.wait()
    assert writer.returncode == 0
    assert b"".join(got) == random.Random(7).randbytes(100_000)
    assert len(chain(cdir)) == 12


@pytest.mark.unit
def test_follow_ends_when_done_and_everything_was_read(tmp_path):
    feed = Feed(tmp_path, logs.LogPolicy(max_size=5, max_files=2))
    feed.write(b"abcdefghij")
    feed.write(b"E", feed.err)
    feed.finish()
    got = list(logread.follow(tmp_path, ["stdout", "stderr"], lambda: True))
    assert b"".join(c for s, c in got if s == "stdout") == b"abcdefghij"
    assert b"".join(c for s, c in got if s == "stderr") == b"E"
    # nothing written at all: ends at once
    (tmp_path / "empty").mkdir()
    assert list(logread.follow(tmp_path / "empty", ["stdout"], lambda: True)) == []


@pytest.mark.unit
def test_follow_with_max_files_one_reads_the_replaced_file_to_its_end(tmp_path):
    feed = Feed(tmp_path, logs.LogPolicy(max_size=4, max_files=1))
    done = threading.Event()
    it = logread.follow(tmp_path, ["stdout"], done.is_set, poll_interval=0.001)
    feed.write(b"abcd")
    got = b""
    while got != b"abcd":
        got += next(it)[1]
    feed.write(b"ef")
    feed.finish()
    done.set()
    got += b"".join(c for _, c in it)
    assert got == b"abcdef"


@pytest.mark.unit
def test_follow_ends_when_the_container_directory_is_removed(tmp_path):
    cdir = tmp_path / "c"
    cdir.mkdir()
    feed = Feed(cdir, logs.LogPolicy(max_size=4, max_files=2))
    feed.write(b"abcdef")
    feed.finish()
    it = logread.follow(cdir, ["stdout", "stderr"], lambda: False, poll_interval=0.001)
    got = next(it)[1]
    for p in cdir.iterdir():
        p.unlink()
    cdir.rmdir()
    got += b"".join(c for _, c in it)   # ends although done() never says so
    assert got == b"abcdef"


# -- fork -------------------------------------------------------------------------------------------


def test_a_child_after_fork_has_its_own_pump_and_the_parents_goes_on(tmp_path):
    """Forked while the pump is busy with a flood: the child holds none of the parent's
    pump fds, cannot act on the parent's sinks, and pumps its own; the parent's pump
    goes on as if nothing happened."""
    for name in ("parent", "flood", "child"):
        (tmp_path / name).mkdir()
    parent = Feed(tmp_path / "parent")
    flood = Feed(tmp_path / "flood", logs.LogPolicy(max_size=1 << 20, max_files=2))
    parent.write(b"before fork\n")
    wait_for(lambda: logread.read(tmp_path / "parent", "stdout") == b"before fork\n", "the parent's first line")
    stop = threading.Event()

    def spew() -> None:
        while not stop.is_set():
            flood.write(b"f" * 65536)

    t = threading.Thread(target=spew)
    t.start()
    try:
        wait_for(lambda: (tmp_path / "flood" / "stdout.log.1").exists(), "the flood to rotate")
        theirs = [s.pipe for s in parent.sink._streams + flood.sink._streams]
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                try:
                    parent.sink.finish(0)
                except ContainerError:
                    pass
                else:
                    raise AssertionError("finish acted on the parent's sink")
                parent.sink.close()  # does nothing here
                for fd in theirs:
                    try:
                        os.fstat(fd)
                    except OSError as e:
                        assert e.errno == errno.EBADF
                    else:
                        raise AssertionError(f"the child kept the parent's pipe read end {fd}")
                child = Feed(tmp_path / "child", logs.LogPolicy(max_size=4, max_files=2))
                child.write(b"from the child")
                child.finish()
                out = b"from the child"
                assert logread.read(tmp_path / "child", "stdout") == out[-kept_length(len(out), 4, 2):]
                assert pump_threads() == 1
                code = 0
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        stop.set()
        t.join()
    assert os.waitstatus_to_exitcode(status) == 0
    parent.write(b"after fork\n")
    parent.finish()
    flood.finish()
    assert logread.read(tmp_path / "parent", "stdout") == b"before fork\nafter fork\n"
    assert pump_threads() == 1
