"""podman with its configuration, storage and state private to a test directory (see
/work/shared/notes/this-machine.md: no systemd, the host's rlimits, crun refuses hybrid
cgroups so runc): how tests use podman as an independent peer (test_podman_diff.py runs
its containers, test_archive_interop.py loads and saves archives with it)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence, Tuple

from .host import IS_ROOT, need_tool


class Podman:
    """podman with private configuration, storage and state (see the shared notes on this
    machine: no systemd, host rlimits, crun refuses hybrid cgroups so runc). Without root
    it is rootless podman, through the same user's subordinate ids as isobox."""

    def __init__(self, work: Path, registry_host: str) -> None:
        self.binary = need_tool("podman")
        need_tool("runc")
        # podman wants a runroot path of at most 50 characters: pytest's tmp paths are longer
        self.runroot = Path(tempfile.mkdtemp(prefix="ibpd-", dir="/tmp"))
        (work / "cni").mkdir()
        conf = work / "containers.conf"
        conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{work}/events.log"\n'
            'runtime = "runc"\n'
            f'tmp_dir = "{self.runroot}/libpod"\n'
            f'volume_path = "{work}/volumes"\n'
            "[network]\n"
            'network_backend = "cni"\n'
            f'network_config_dir = "{work}/cni"\n'
        )
        registries = work / "registries.conf"
        registries.write_text(
            "unqualified-search-registries = []\n"
            f'[[registry]]\nlocation = "{registry_host}"\ninsecure = true\n'
        )
        (work / "auth.json").write_text('{"auths": {}}\n')  # no credentials of the host's
        storage = work / "storage.conf"
        storage.write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{work}/graph"\nrunroot = "{self.runroot}/run"\n'
        )
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(conf),
            "CONTAINERS_REGISTRIES_CONF": str(registries),
            "CONTAINERS_STORAGE_CONF": str(storage),
            "REGISTRY_AUTH_FILE": str(work / "auth.json"),
            "TMPDIR": str(work),
            "XDG_RUNTIME_DIR": str(self.runroot),
            "XDG_CONFIG_HOME": str(work / "config"),
        }
        if not IS_ROOT:
            # rootless podman keeps its caches under the user's data dir: keep them here
            for d in ("home", "data"):
                (work / d).mkdir()
            self.env.update(HOME=str(work / "home"), XDG_DATA_HOME=str(work / "data"))
            os.chmod(self.runroot, 0o700)

    def __call__(self, *args: str, check: bool = True) -> "subprocess.CompletedProcess[str]":
        cmd = [self.binary, *args]
        if args[0] == "pull" and IS_ROOT:
            # podman keeps its blob-info cache in /var/lib/containers/cache whatever the
            # storage root: give the pull a throw-away /var/lib in a private mount namespace
            cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                   'mount -t tmpfs tmpfs /var/lib && exec "$@"', "podman", *cmd]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def run(self, reference: str, command: Sequence[str] = (), *,
            options: Sequence[str] = ()) -> Tuple[int, str, str]:
        proc = self("run", "--rm", "--network", "none", "--pull", "never", *options, reference,
                    *command, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    def close(self) -> None:
        # podman's overlay mounts live in graphroot/overlay; remove them with podman itself
        self("rm", "--all", "--force", check=False)
        self("system", "reset", "--force", check=False)
        # rootless podman leaves a pause process holding its user namespace
        for pidfile in self.runroot.rglob("pause.pid"):
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
            except (ValueError, OSError):
                pass
        shutil.rmtree(self.runroot, ignore_errors=True)


__all__ = ["Podman"]
