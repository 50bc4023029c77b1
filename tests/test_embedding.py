"""isobox inside a real application: one that forks (multiprocessing, os.fork) while it
owns containers or starts them from other threads, and one that handles SIGCHLD its own
way (ignores it, or reaps every child with waitpid(-1) as a classic handler and asyncio's
child watchers do). Each scenario runs in a fresh interpreter, as an application would,
with a hang guard (a hang is the failure these tests exist to catch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PRELUDE = textwrap.dedent("""
    import json, os, signal, sys, threading, time
    import isobox
    rootfs = sys.argv[1]
    image = isobox.Image.from_directory(rootfs, isobox.ImageConfig(env=["PATH=/bin"]))
    def done(**result):
        print(json.dumps(result), flush=True)
""")


def run_app(script: str, rootfs, store_root, timeout: float = 120) -> dict:
    """Run PRELUDE + script in a new interpreter; its last stdout line is a JSON result."""
    env = dict(os.environ, ISOBOX_ROOT=str(store_root), PYTHONPATH=os.pathsep.join(sys.path))
    try:
        proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(script), str(rootfs)],
                              capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the application hung: {exc.stderr}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_exit_codes_survive_an_application_that_ignores_sigchld(busybox_rootfs, store_root):
    result = run_app("""
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # children are reaped by the kernel
        r = isobox.run(image, ["sh", "-c", "exit 3"])
        with isobox.Container(image, ["sleep", "30"]) as c:
            e = c.exec(["sh", "-c", "exit 4"]).exit_code
            c.kill(9)
            k = c.wait()
        done(run=r.exit_code, exec=e, killed=k)
    """, busybox_rootfs, store_root)
    assert result == {"run": 3, "exec": 4, "killed": -9}


def test_exit_codes_survive_a_waitpid_minus_one_reaper(busybox_rootfs, store_root):
    result = run_app("""
        reaped = []
        def reap(signum, frame):          # the classic handler, as FastChildWatcher does
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return
                if pid == 0:
                    return
                reaped.append(pid)
        signal.signal(signal.SIGCHLD, reap)
        stop = threading.Event()
        def greedy():                      # and a thread that reaps whatever it can
            while not stop.is_set():
                try:
                    os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.001)
        t = threading.Thread(target=greedy); t.start()
        codes = [isobox.run(image, ["sh", "-c", f"exit {n}"]).exit_code for n in range(1, 6)]
        with isobox.Container(image, ["sleep", "30"]) as c:
            e = c.exec(["sh", "-c", "exit 7"]).exit_code
        stop.set(); t.join()
        done(codes=codes, exec=e)
    """, busybox_rootfs, store_root)
    # the application may reap our children first (an exec'd command has SIGCHLD again);
    # every status is still right: it is read from the pidfd
    assert result == {"codes": [1, 2, 3, 4, 5], "exec": 7}


def test_a_forked_child_can_start_containers_while_the_parent_starts_others(busybox_rootfs, store_root):
    # A fork while another thread is inside a start (the core's lock and the spawner's
    # lock held) must leave the child able to start its own.
    result = run_app("""
        isobox.run(image, ["true"])  # imports done: a fork amid another thread's import
                                     # hangs on Python's own module lock, not isobox's
        stop = threading.Event()
        started = [0]
        def churn():
            while not stop.is_set():
                isobox.run(image, ["true"])
                started[0] += 1
        threads = [threading.Thread(target=churn) for _ in range(2)]
        for t in threads: t.start()
        statuses = []
        for _ in range(15):
            pid = os.fork()
            if pid == 0:
                signal.alarm(30)           # a hang in the child ends it with SIGALRM
                code = isobox.run(image, ["sh", "-c", "exit 5"]).exit_code
                os._exit(code)
            statuses.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        stop.set()
        for t in threads: t.join()
        done(statuses=statuses, parent_started=started[0] > 0)
    """, busybox_rootfs, store_root)
    assert result == {"statuses": [5] * 15, "parent_started": True}


def test_a_forked_child_does_not_hold_up_the_parents_start(busybox_rootfs, store_root):
    # Children forked while a start is in flight live on (here: until the parent has
    # started all its containers); with the start's pipes inherited, the parent's start
    # would wait for them to exit.
    result = run_app("""
        kids = []
        stop = threading.Event()
        def forker():
            while not stop.is_set():
                pid = os.fork()
                if pid == 0:
                    signal.pause()
                    os._exit(0)
                kids.append(pid)
                time.sleep(0.002)
        t = threading.Thread(target=forker); t.start()
        try:
            codes = [isobox.run(image, ["sh", "-c", "exit 2"]).exit_code for _ in range(40)]
        finally:
            stop.set(); t.join()
            for pid in kids:
                os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)
        done(codes=set(codes) == {2}, forks=len(kids) > 0)
    """, busybox_rootfs, store_root, timeout=60)
    assert result == {"codes": True, "forks": True}


def test_a_forked_child_never_acts_as_the_owner(busybox_rootfs, store_root):
    result = run_app("""
        c = isobox.Container(image, ["sleep", "30"]).start()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            seen = {"status": c.status}
            for what, call in (("wait", c.wait), ("remove", c.remove), ("stop", c.stop)):
                try:
                    call()
                    seen[what] = "allowed"
                except isobox.ContainerError as exc:
                    seen[what] = "owned by process" in str(exc)
            with c:                          # leaving the block in the copy removes nothing
                pass
            os.write(w, json.dumps(seen).encode())
            os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        seen = json.loads(os.read(r, 4096))
        state = json.loads((c.dir / "state.json").read_text())
        still = c.status
        c.kill(9)
        code = c.wait()
        c.remove()
        done(child=seen, state=state["status"], after=still, code=code)
    """, busybox_rootfs, store_root)
    assert result == {
        "child": {"status": "running", "wait": True, "remove": True, "stop": True},
        "state": "running", "after": "running", "code": -9,
    }


def test_a_forked_child_does_not_keep_a_dead_owners_container_listed(busybox_rootfs, store_root):
    # The owner holds the container's lock; a forked copy must not keep holding it once
    # the owner is gone (the container died with it).
    result = run_app("""
        import subprocess
        r, w = os.pipe()
        owner = os.fork()
        if owner == 0:
            c = isobox.Container(image, ["sleep", "30"], name="orphan").start()
            kid = os.fork()
            if kid == 0:
                signal.pause()
                os._exit(0)
            os.write(w, f"{kid}\\n".encode())
            signal.pause()
        line = b""
        while not line.endswith(b"\\n"):
            line += os.read(r, 64)
        kid = int(line)
        os.kill(owner, signal.SIGKILL); os.waitpid(owner, 0)
        deadline = time.monotonic() + 20
        names = None
        while time.monotonic() < deadline:
            names = [i.name for i in isobox.containers()]
            if not names:
                break
            time.sleep(0.05)
        os.kill(kid, signal.SIGKILL)
        isobox.run(image, ["true"])  # sweeps what the dead owner left
        done(listed=names)
    """, busybox_rootfs, store_root)
    assert result == {"listed": []}


def test_a_running_container_holds_few_fds_and_the_limit_is_named(busybox_rootfs, store_root):
    result = run_app("""
        import resource
        def fds():
            return len(os.listdir("/proc/self/fd"))
        from isobox.host.remover import wait_for_removals
        isobox.run(image, ["true"])          # the pump, spawner and remover threads exist now
        wait_for_removals()  # each removal in progress holds its directory's fd until done
        before = fds()
        cs = [isobox.Container(image, ["sleep", "60"]).start() for _ in range(10)]
        per_container = (fds() - before) / 10
        for c in cs:
            c.remove(force=True)
        wait_for_removals()
        after = fds()
        # a hard limit that leaves room for a few containers only: a clear error
        resource.setrlimit(resource.RLIMIT_NOFILE, (after + 40, after + 40))
        cs, error = [], None
        try:
            for _ in range(40):
                cs.append(isobox.Container(image, ["sleep", "60"]).start())
        except isobox.ContainerError as exc:
            error = str(exc)
        for c in cs:
            c.remove(force=True)
        done(per_container=per_container, leak=after - before, started=len(cs), error=error)
    """, busybox_rootfs, store_root)
    assert result["per_container"] <= 6 and result["leak"] == 0, result
    assert 0 < result["started"] < 40
    assert "RLIMIT_NOFILE" in result["error"] and "hard limit" in result["error"], result
