"""isobox and `podman run` agree on what a process gets from the same image: environment,
arguments (Entrypoint/Cmd rules), working directory, user and groups, umask, exit status.

Both pull one image from the same local registry: podman with ``podman pull`` (its storage
under pytest's tmp dir, its configuration private: see `Podman`), isobox with `Image.pull`.
A probe script in the image prints what its process got; the outputs must be equal, except
for the differences listed in `KNOWN_DIFFERENCES` — each checked to be exactly what it
says, never silently dropped.

As root only: rootless podman needs its own set-up (subuid-mapped storage, a user systemd
or cgroupfs session, a rootless network stack) that this suite does not make.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import attrs
import pytest

import isobox

from support.derive import Deriver
from support.podman import Podman
from support.images import PATH_ENV, TestImages


PROBE = b"""\
#!/bin/sh
# What this process got from the runtime. /proc/$$ is this shell: its environ is exactly
# the environment the runtime passed to execve.
echo "args: $*"
echo "pwd: $(pwd)"
echo "cwd owner and mode: $(stat -c '%u:%g %a' .)"
echo "id: $(id)"
echo "umask: $(umask)"
echo "hostname: $(hostname)"
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/$$/status | tr -s '\\t' ' '
tr '\\0' '\\n' < /proc/$$/environ | sort | sed 's/^/env: /'
exit ${PROBE_EXIT:-0}
"""
PASSWD = (b"root:x:0:0:root:/root:/bin/sh\n"
          b"daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
          b"app:x:1000:1000:app:/home/app:/bin/sh\n"
          b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
# root is a member of no group; app of two besides its own; nobody is listed in its own
# primary group (as initgroups(3) and Docker count it once)
GROUP = (b"root:x:0:\ndaemon:x:1:\naudio:x:29:app,nobody\nstaff:x:50:app\napp:x:1000:\n"
         b"nogroup:x:65534:nobody\n")
ENTRYPOINT = ["/usr/local/bin/probe", "from-entrypoint"]

IMAGE_WORKDIR = "/srv/work"  # the probe image's WorkingDir; not in its layers
IMAGE_ROOT_MODE = "755"  # the mode of "/" in the image's layers (their "./" entries)

# Where podman and isobox differ, and why. Each is checked to be exactly what it says
# (`reconcile`), then the two outputs must be equal. "Docker" below is Docker's documented
# behaviour, which isobox follows (tests/test_docker_run.py).
KNOWN_DIFFERENCES = {
    "container-env": "podman adds container=podman to the environment; Docker sets no such "
                     "variable and neither does isobox",
    "term-env": "podman sets TERM=xterm even without a terminal; Docker sets TERM only with -t, "
                "as isobox does with tty=True",
    "hostname": "each runtime names the container after its own id; both set $HOSTNAME to the "
                "hostname (checked), then both are compared as <hostname>",
    "no-new-privs": "isobox always sets no_new_privs (its own hardening); podman, like Docker, "
                    "only with --security-opt no-new-privileges",
    "root-groups": "with no user given and none in the image, podman gives root no supplementary "
                   "groups; isobox gives the primary group plus the groups listing the user, for "
                   "every user as Docker does (podman too, once --user root is explicit)",
    "created-workdir-owner": "a WorkingDir that podman creates is owned by the container's user; "
                             "Docker and isobox create it owned by root",
    "uid-without-passwd-entry": "for a uid missing from /etc/passwd podman adds an entry named "
                                "after the uid with the working directory as home (so `id` shows "
                                "a name and HOME is the workdir); Docker and isobox use HOME=/ and "
                                "leave /etc/passwd alone",
    "gid-without-group-entry": "for a gid missing from /etc/group podman adds an entry named after "
                               "the gid (so `id` shows gid=4343(4343)); Docker and isobox leave "
                               "/etc/group alone",
    "root-dir-mode": "podman (containers/storage) gives / mode 555 whatever the layers say; "
                     "isobox keeps the mode of the image's top layer (755 here), as Docker does",
}


@attrs.frozen
class Setup:
    podman: Podman
    store: Path  # isobox's store
    references: Mapping[str, str] = attrs.field(hash=False)  # tag -> reference
    pulled: Mapping[str, isobox.Image] = attrs.field(hash=False)


@pytest.fixture(scope="module")
def setup(deriver: Deriver, images: TestImages,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("podman-diff")
    files = {
        "usr/local/bin/probe": (PROBE, 0o755),
        "etc/passwd": (PASSWD, 0o644),
        "etc/group": (GROUP, 0o644),
        "home/app/.profile": (b"", 0o644),
        "usr/local/bin/not-executable": (b"#!/bin/sh\necho no\n", 0o644),
    }
    deriver.derive("probe-base", files=files, config=[
        "--config.env", PATH_ENV, "--config.env", "FOO=image", "--config.env", "EMPTY=",
        "--config.env", "SPACES=a b  c=d",
    ])
    references = {}
    tags: Dict[str, List[str]] = {
        # Entrypoint and Cmd, a working directory that does not exist yet, no user
        "probe": ["--config.entrypoint", ENTRYPOINT[0], "--config.entrypoint", ENTRYPOINT[1],
                  "--config.cmd", "from-cmd", "--config.workingdir", IMAGE_WORKDIR],
        # a User and a WorkingDir of the image; Cmd only
        "probe-user": ["--config.user", "app", "--config.workingdir", "/home/app",
                       "--config.cmd", "/usr/local/bin/probe", "--config.cmd", "cmd-only"],
    }
    for tag, config in tags.items():
        deriver.derive(tag, base="probe-base", config=config)
        references[tag] = deriver.push(tag, "isobox-test/podman-diff", tag)
    podman = Podman(work, images.registry.host)
    try:
        for reference in references.values():
            podman("pull", "-q", "--tls-verify=false", reference)
        store = work / "isobox"
        pulled = {tag: isobox.Image.pull(ref, store=store) for tag, ref in references.items()}
        yield Setup(podman, store, references, pulled)
    finally:
        podman.close()


@attrs.frozen
class Case:
    """One run with the same options for both: isobox's keyword arguments and podman's
    flags for them."""

    id: str
    tag: str = "probe"
    command: Optional[Sequence[str]] = None
    entrypoint: Optional[Sequence[str]] = None
    user: Optional[str] = None
    workdir: Optional[str] = None
    hostname: Optional[str] = None
    env: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    def isobox_options(self) -> Dict[str, object]:
        opts: Dict[str, object] = {}
        for key in ("entrypoint", "user", "workdir", "hostname"):
            value = getattr(self, key)
            if value is not None:
                opts[key] = value
        if self.env:
            opts["env"] = dict(self.env)
        return opts

    def podman_options(self) -> List[str]:
        out: List[str] = []
        if self.entrypoint is not None:  # JSON form: a list; empty: cleared
            out.append("--entrypoint=" + (json.dumps(list(self.entrypoint)) if self.entrypoint else ""))
        for key in ("user", "workdir", "hostname"):
            value = getattr(self, key)
            if value is not None:
                out.append(f"--{key}={value}")
        for key, value in self.env.items():
            out.append(f"--env={key}={value}")
        return out

    def effective(self) -> Tuple[Optional[str], str]:
        """The user (None: none given and none in the image) and working directory."""
        if self.tag == "probe-user":
            return (self.user or "app"), (self.workdir or "/home/app")
        return self.user, (self.workdir or IMAGE_WORKDIR)

    def differences(self) -> List[str]:
        """The known differences this case shows."""
        user, workdir = self.effective()
        names = ["container-env", "term-env", "hostname", "no-new-privs"]
        if user is None:
            names.append("root-groups")
        if workdir == IMAGE_WORKDIR and user not in (None, "root", "0"):
            names.append("created-workdir-owner")
        if user is not None and user.split(":")[0] == "4242":
            names.append("uid-without-passwd-entry")
        if user is not None and user.split(":")[1:2] == ["4343"]:
            names.append("gid-without-group-entry")
        if workdir == "/":
            names.append("root-dir-mode")
        return names


CASES = [
    Case("image-entrypoint-and-cmd"),
    Case("command-replaces-cmd", command=["given", "two words"]),
    Case("entrypoint-drops-cmd", entrypoint=["/usr/local/bin/probe", "new-entrypoint"]),
    Case("entrypoint-and-command", entrypoint=["/usr/local/bin/probe"], command=["x", "y"]),
    Case("entrypoint-cleared", entrypoint=[], command=["/usr/local/bin/probe", "cleared"]),
    Case("user-root-explicit", user="root"),
    Case("user-by-name-with-supplementary-groups", user="app"),
    Case("user-by-uid", user="1000"),
    Case("user-uid-and-gid", user="1000:50"),
    Case("user-name-and-group-name", user="app:audio"),
    Case("user-uid-not-in-passwd", user="4242"),
    Case("user-nobody-listed-in-its-own-primary-group", user="nobody"),
    Case("user-root-by-uid-with-member-less-groups", user="0"),
    Case("user-uid-and-group-name", user="1000:staff"),
    Case("user-name-and-gid", user="daemon:50"),
    Case("user-name-and-gid-not-in-group-file", user="app:4343"),
    Case("user-uid-not-in-passwd-and-group-name", user="4242:audio"),
    Case("user-root-group-override", user="root:staff"),
    Case("workdir-existing", workdir="/tmp", user="daemon"),
    Case("workdir-root", workdir="/"),
    Case("hostname-given", hostname="probe-host"),
    Case("env-overrides-image-env", env={"FOO": "caller", "NEW": "x y", "PATH": "/bin:/usr/bin",
                                          "HOME": "/elsewhere", "EMPTY": "now-set"}),
    Case("exit-status", env={"PROBE_EXIT": "42"}),
    Case("image-user-workdir-and-cmd", tag="probe-user"),
    Case("image-user-overridden-by-root", tag="probe-user", user="root"),
    Case("cmd-only-image-with-command", tag="probe-user", command=["/usr/local/bin/probe", "mine"]),
]

Probe = Dict[str, List[str]]


def split(output: str) -> Probe:
    """Probe output by key ("args", "env", "CapBnd", ...): the values, in order."""
    out: Probe = {}
    for line in output.splitlines():
        key, _, value = line.partition(": ")
        out.setdefault(key, []).append(value)
    return out


def run_both(setup: Setup, case: Case) -> Tuple[Probe, Probe, int, int]:
    ours = isobox.run(setup.pulled[case.tag], case.command, network="none", store=setup.store,
                      **case.isobox_options())  # type: ignore[arg-type]
    code, out, err = setup.podman.run(setup.references[case.tag], case.command or (),
                                      options=case.podman_options())
    assert ours.stderr == b"", ours.stderr
    assert err == "", err
    return split(ours.stdout.decode()), split(out), ours.exit_code, code


def _replace(values: List[str], old: str, new: str) -> List[str]:
    assert old in values, (old, values)
    return [new if v == old else v for v in values]


def reconcile(case: Case, ours: Probe, theirs: Probe) -> None:
    """Check each known difference the case shows, exactly as `KNOWN_DIFFERENCES` says, and
    undo it in podman's output (the runtime-chosen hostname in both)."""
    names = case.differences()
    _, workdir = case.effective()
    our_id = ours["id"][0]
    uid_gid = ":".join(part[4:].split("(")[0] for part in our_id.split()[:2])  # "1000:50"
    for env in ("TERM=xterm", "container=podman"):
        assert env in theirs["env"] and env not in ours["env"], theirs["env"]
        theirs["env"].remove(env)
    for probe in (ours, theirs):
        hostname = probe["hostname"][0]
        assert hostname == (case.hostname or hostname)
        probe["env"] = _replace(probe["env"], f"HOSTNAME={hostname}", "HOSTNAME=<hostname>")
        probe["hostname"] = ["<hostname>"]
    assert (ours.pop("NoNewPrivs"), theirs.pop("NoNewPrivs")) == (["1"], ["0"])
    # both filter (mode 2): Docker's profile in podman, isobox's own (seccomp.py)
    if "root-groups" in names:
        assert our_id == "uid=0(root) gid=0(root) groups=0(root)"
        theirs["id"] = _replace(theirs["id"], "uid=0(root) gid=0(root)", our_id)
    if "created-workdir-owner" in names:
        assert ours["cwd owner and mode"] == ["0:0 755"] and uid_gid != "0:0"
        theirs["cwd owner and mode"] = _replace(theirs["cwd owner and mode"], f"{uid_gid} 755",
                                                "0:0 755")
    if "uid-without-passwd-entry" in names:
        assert our_id.startswith("uid=4242 gid=") and "HOME=/" in ours["env"]
        theirs["id"] = [v.replace("uid=4242(4242) ", "uid=4242 ", 1) for v in theirs["id"]]
        theirs["env"] = _replace(theirs["env"], f"HOME={workdir}", "HOME=/")
    if "gid-without-group-entry" in names:
        assert "gid=4343 groups=4343" in our_id
        theirs["id"] = [v.replace("4343(4343)", "4343") for v in theirs["id"]]
    if "root-dir-mode" in names:
        assert ours["cwd owner and mode"] == [f"0:0 {IMAGE_ROOT_MODE}"]
        theirs["cwd owner and mode"] = _replace(theirs["cwd owner and mode"], "0:0 555",
                                                f"0:0 {IMAGE_ROOT_MODE}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_process_gets_what_podman_gives(setup: Setup, case: Case) -> None:
    ours, theirs, our_code, their_code = run_both(setup, case)
    assert our_code == their_code
    reconcile(case, ours, theirs)
    # everything else is the same: args, pwd, cwd owner and mode, id, umask, capabilities
    # (inheritable, permitted, effective, bounding, ambient) and the whole environment
    assert ours == theirs


@pytest.mark.unit
def test_every_known_difference_is_shown_by_some_case() -> None:
    """None of the listed differences is stale, and none is undone without being listed."""
    assert {name for case in CASES for name in case.differences()} == set(KNOWN_DIFFERENCES)


def test_missing_workdir_option_is_created_where_podman_refuses(setup: Setup) -> None:
    """Docker creates a missing ``-w`` directory (owned by root) and so does isobox; podman
    4.3 refuses to start. Not a difference isobox should copy."""
    code, _, err = setup.podman.run(setup.references["probe"], ["x"],
                                    options=["--workdir=/new/deep/dir", "--user=app"])
    assert code != 0 and 'workdir "/new/deep/dir" does not exist' in err, err
    ours = split(isobox.run(setup.pulled["probe"], ["x"], workdir="/new/deep/dir", user="app",
                            store=setup.store).stdout.decode())
    assert ours["pwd"] == ["/new/deep/dir"] and ours["cwd owner and mode"] == ["0:0 755"]


def test_a_third_user_field_is_ignored_where_podman_refuses(setup: Setup) -> None:
    """Docker reads ``--user`` with runc's parseLine, which takes the first two fields and
    ignores the rest; isobox does the same. podman 4.3 refuses the group "audio:extra"."""
    code, _, err = setup.podman.run(setup.references["probe"], ["x"], options=["--user=app:audio:extra"])
    assert code != 0 and 'unknown group error looking up group "audio:extra"' in err, err
    ours = split(isobox.run(setup.pulled["probe"], ["x"], user="app:audio:extra",
                            store=setup.store).stdout.decode())
    assert ours["id"] == ["uid=1000(app) gid=29(audio) groups=29(audio)"]


def test_missing_and_non_executable_commands(setup: Setup) -> None:
    """podman reports them as exit statuses 127 and 126 (Docker's convention); isobox, a
    library, raises `CommandNotFound` / `CommandNotExecutable` at start instead."""
    image, reference = setup.pulled["probe"], setup.references["probe"]
    code, _, err = setup.podman.run(reference, ["/no/such/command"], options=["--entrypoint="])
    assert code == 127, err
    with pytest.raises(isobox.CommandNotFound):
        isobox.run(image, ["/no/such/command"], entrypoint=[], store=setup.store)
    code, _, err = setup.podman.run(reference, ["/usr/local/bin/not-executable"],
                                    options=["--entrypoint="])
    assert code == 126, err
    with pytest.raises(isobox.CommandNotExecutable):
        isobox.run(image, ["/usr/local/bin/not-executable"], entrypoint=[], store=setup.store)


def test_death_by_signal(setup: Setup) -> None:
    """A container killed by signal N: podman reports 128+N (the shell's convention), isobox
    -N (subprocess's, as its README says). With an init as pid 1, the init exits 128+N in
    both (tini's convention, which podman's catatonit and isobox's init follow)."""
    reference, image = setup.references["probe"], setup.pulled["probe"]
    name = f"isobox-diff-{os.getpid()}"
    setup.podman("run", "-d", "--name", name, "--network", "none", "--entrypoint=", reference,
                 "sleep", "60")
    try:
        setup.podman("kill", "--signal", "KILL", name)
        assert setup.podman("wait", name).stdout.strip() == str(128 + 9)
    finally:
        setup.podman("rm", "--force", name, check=False)
    with isobox.Container(image, ["sleep", "60"], entrypoint=[], store=setup.store) as c:
        c.kill("KILL")
        assert c.wait(timeout=10) == -9

    command = ["sh", "-c", "kill -KILL $$"]  # pid 2 under an init
    code, _, err = setup.podman.run(reference, command, options=["--entrypoint=", "--init"])
    assert code == 128 + 9, err
    ours = isobox.run(image, command, entrypoint=[], init=True, store=setup.store)
    assert ours.exit_code == 128 + 9


def test_read_only_root_cannot_be_written_through_dotdot(setup: Setup) -> None:
    command = ["sh", "-c", "for f in /x /../x /../../x; do touch $f 2>/dev/null && echo wrote $f; done; true"]
    code, out, err = setup.podman.run(setup.references["probe"], command,
                                      options=["--entrypoint=", "--read-only"])
    assert (code, out, err) == (0, "", "")
    ours = isobox.run(setup.pulled["probe"], command, entrypoint=[], read_only=True,
                      store=setup.store)
    assert ours.stdout.decode() == out
