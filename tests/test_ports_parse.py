"""Published ports as values (net/ports.py): docker-py's ``ports=`` mapping, ``-p`` strings,
their JSON form — property tests, and the same ``-p`` strings given to podman."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import given, settings, strategies as st

import isobox
from isobox.net.ports import PortBinding, PortMap, exposed_bindings, parse_ports, parse_publish
from isobox.runtime.config import ContainerConfig, config_from_json, config_to_json

ports = st.integers(1, 65535)
addresses = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
bindings = st.builds(PortBinding, container_port=ports, protocol=st.sampled_from(["tcp", "udp"]),
                     host_ip=addresses, host_port=st.one_of(st.just(0), ports))


def publish_string(b: PortBinding) -> str:
    """How a user writes b with -p."""
    ip = f"[{b.host_ip}]" if ":" in b.host_ip else b.host_ip
    return f"{ip}:{b.host_port or ''}:{b.container_port}/{b.protocol}"


@pytest.mark.unit
@given(bindings)
def test_a_binding_written_as_p_parses_back_to_itself(b: PortBinding) -> None:
    assert parse_publish(publish_string(b)) == (b,)


@pytest.mark.unit
@given(st.lists(bindings, max_size=5, unique_by=lambda b: (b.host_ip, b.host_port or id(b), b.protocol)))
def test_the_json_form_keeps_every_binding(items: List[PortBinding]) -> None:
    config = ContainerConfig(ports=items, publish_all=True)
    again = config_from_json(json.loads(json.dumps(config_to_json(config))))
    assert again.ports == tuple(items) and again.publish_all
    assert PortMap.from_json(json.loads(json.dumps(PortMap(tuple(items)).to_json()))) == PortMap(tuple(items))


@pytest.mark.unit
@given(st.text(max_size=30))
def test_any_string_is_a_binding_or_an_invalid_option(text: str) -> None:
    try:
        result = parse_publish(text)
    except isobox.InvalidOption:
        return
    assert result and all(isinstance(b, PortBinding) for b in result)


@pytest.mark.unit
@given(ports, st.integers(0, 20), st.integers(1, 65535))
def test_equal_ranges_map_port_by_port(first: int, extra: int, host_first: int) -> None:
    last = min(first + extra, 65535)
    host_last = host_first + (last - first)
    spec = f"{host_first}-{host_last}:{first}-{last}"
    if host_last > 65535:
        with pytest.raises(isobox.InvalidOption):
            parse_publish(spec)
        return
    got = parse_publish(spec)
    assert [(b.host_port, b.container_port) for b in got] == list(zip(range(host_first, host_last + 1),
                                                                         range(first, last + 1)))


@pytest.mark.unit
def test_docker_py_shapes() -> None:
    got = parse_ports({6379: None, "53/udp": 5353, 8080: ("127.0.0.1", 18080), "9000/tcp": [9000, ("::", None)],
                       "5000": ("0.0.0.0",)})
    assert got == (
        PortBinding(6379),
        PortBinding(53, "udp", host_port=5353),
        PortBinding(8080, host_port=18080),
        PortBinding(9000, host_port=9000),
        PortBinding(9000, host_ip="::"),
        PortBinding(5000, host_ip="0.0.0.0"),
    )
    assert all(b.host_ip in ("127.0.0.1", "::", "0.0.0.0") for b in got)


@pytest.mark.unit
@pytest.mark.parametrize("bad", [
    {0: None}, {70000: None}, {"80/sctp": None}, {"abc": None}, {80: "x"}, {80: ("localhost", 80)},
    {80: 70000}, {80: True}, {True: None}, {"80-81": None}, {80: 8080, 81: 8080}, "80", [80],
])
def test_bad_ports_are_refused_before_anything_starts(bad: object) -> None:
    with pytest.raises(isobox.InvalidOption):
        ContainerConfig(ports=bad)  # type: ignore[arg-type]


@pytest.mark.unit
def test_publish_all_takes_the_exposed_ports_not_given_already() -> None:
    got = exposed_bindings(["80/tcp", "53/udp", "9/sctp", "7000-7001/tcp"], [PortBinding(80, host_port=8080)])
    assert got == (PortBinding(53, "udp"), PortBinding(7000), PortBinding(7001))


@pytest.mark.unit
def test_ps_shows_ports_as_docker_does() -> None:
    shown = PortMap((PortBinding(6379, host_port=32768), PortBinding(53, "udp", "::", 5353))).show()
    assert shown == "127.0.0.1:32768->6379/tcp, [::]:5353->53/udp"


# -- the same strings to podman ------------------------------------------------------------------

SPECS = ["80", "8080:80", "127.0.0.1:8080:80", "127.0.0.1::80", "[::1]:8080:80", "::1:8080:80", "80/udp",
         "0", "65536", "8000-8001:80-81", "8000-8010:80", "1.2.3.4:80", "abc", ":80", "80/", "8080:80/UDP",
         "0:80", "80-81", "::80", "1.2.3.4:80:80:80", "localhost:80:80", "0.0.0.0:0:80", "8080-8081:80", "-1",
         "80/tcp/udp", " 80", "80:", "[::1]:80", "[::1]::80", "0.0.0.0:8080:80/udp", "81-80", "80:81-82"]
# where isobox parts from podman, and why
KNOWN = {"80/sctp": "isobox forwards TCP and UDP only"}


def _podman_bindings(tmp: Path, spec: str) -> Optional[Dict[str, List[Tuple[str, str]]]]:
    """What podman 4 makes of ``-p spec`` (``podman create``, nothing run), or None if it
    refuses it. Its configuration, storage and state are private (see test_podman_diff.py)."""
    env = {**os.environ, "CONTAINERS_CONF": str(tmp / "containers.conf"),
           "CONTAINERS_STORAGE_CONF": str(tmp / "storage.conf"), "XDG_RUNTIME_DIR": str(tmp / "run"),
           "TMPDIR": str(tmp), "HOME": str(tmp / "home"), "XDG_DATA_HOME": str(tmp / "data"),
           "XDG_CONFIG_HOME": str(tmp / "config")}
    made = subprocess.run(["podman", "create", "-p", spec, "--rootfs", str(tmp / "root"), "/true"],
                          env=env, capture_output=True, text=True, timeout=120)
    if made.returncode != 0:
        return None
    cid = made.stdout.strip()
    try:
        shown = subprocess.run(["podman", "container", "inspect", "--format", "{{json .HostConfig.PortBindings}}", cid],
                               env=env, capture_output=True, text=True, check=True, timeout=60).stdout
    finally:
        subprocess.run(["podman", "rm", "-f", cid], env=env, capture_output=True, timeout=60)
    return {key: [(b["HostIp"], b["HostPort"]) for b in value] for key, value in json.loads(shown).items()}


@pytest.fixture(scope="module")
def podman_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from fixtures.host import require_tool

    require_tool("podman")
    tmp = Path(subprocess.run(["mktemp", "-d", "/tmp/ibpd-ports.XXXXXX"], capture_output=True, text=True,
                              check=True).stdout.strip())  # podman wants short paths
    for d in ("root", "cni", "home", "data", "config", "run"):
        (tmp / d).mkdir(mode=0o700)
    (tmp / "containers.conf").write_text(
        "[containers]\n"
        'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        f'events_logfile_path = "{tmp}/events.log"\nruntime = "runc"\n'
        "[network]\n"
        f'network_backend = "cni"\nnetwork_config_dir = "{tmp}/cni"\n')
    (tmp / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{tmp}/graph"\nrunroot = "{tmp}/run"\n')
    yield tmp
    subprocess.run(["rm", "-rf", str(tmp)])


def test_p_strings_are_accepted_and_refused_as_podman_does(podman_home: Path) -> None:
    disagree = []
    for spec in SPECS + list(KNOWN):
        theirs = _podman_bindings(podman_home, spec)
        try:
            ours: Optional[Tuple[PortBinding, ...]] = parse_publish(spec)
        except isobox.InvalidOption:
            ours = None
        if spec in KNOWN:
            assert theirs is not None and ours is None, spec
            continue
        if (theirs is None) != (ours is None):
            disagree.append((spec, theirs, ours))
            continue
        if ours is None or theirs is None:
            continue
        # the same container ports, and the same host port where one is given
        assert sorted(theirs) == sorted({b.key for b in ours}), spec
        for b in ours:
            host_ip, host_port = theirs[b.key][0]
            if b.host_port:
                assert int(host_port) == b.host_port, spec
            # podman's default address is every address (shown as "", as is 0.0.0.0);
            # isobox's is 127.0.0.1
            expected = host_ip or ("0.0.0.0" if spec.startswith("0.0.0.0:") else "127.0.0.1")
            assert b.host_ip == expected, spec
    assert disagree == []


def test_containers_without_ports_never_load_the_ports_module() -> None:
    """Its attrs classes cost ~1 ms of each `isobox run`: loaded where ports are published."""
    import sys

    code = ("import sys, json, isobox.runtime.container, isobox.control.client, isobox.cli.manage\n"
            "from isobox.runtime.config import ContainerConfig, config_from_json, config_to_json\n"
            "from isobox.runtime.state import ContainerState\n"
            "c = config_from_json(json.loads(json.dumps(config_to_json(ContainerConfig(name='x')))))\n"
            "ContainerState.from_json(ContainerState(id='1', name='x', status='running').to_json())\n"
            "print(sorted(m for m in sys.modules if m.startswith('isobox.net')))\n"
            "ContainerConfig(ports={80: None})\n"
            "print(sorted(m for m in sys.modules if m.startswith('isobox.net')))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.splitlines() == ["[]", "['isobox.net', 'isobox.net.ports']"]
