"""Published ports as values: `PortBinding`, parsed once from docker-py's ``ports=``
mapping (`parse_ports`) or Docker's ``-p`` strings (`parse_publish`), with their one JSON
form, and how a container's bound ports read back (`PortMap`: docker-py's
``container.ports``, ``docker port`` and ``docker ps``).

The host address defaults to 127.0.0.1, not Docker's 0.0.0.0: a service published for a
test or a notebook is reachable from this machine only, unless "0.0.0.0" (every IPv4
address), "::" (every address) or another address is asked for.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import attrs

from ..errors import InvalidOption

DEFAULT_HOST_IP = "127.0.0.1"
PROTOCOLS = ("tcp", "udp")

# what a key of ``ports=`` and the last part of ``-p`` look like: "80", "80/udp", "8000-8010/tcp"
_CONTAINER_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/([A-Za-z]+))?$")


def _port(value: Any, what: str, zero: bool = False) -> int:
    """A port number (1-65535; 0 too with ``zero``: the kernel chooses)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidOption(f"{what} must be a port number, got {value!r}")
    if isinstance(value, str):
        if not value.isdigit() or not value.isascii():
            raise InvalidOption(f"{what}: invalid port {value!r}")
        value = int(value)
    if not ((0 if zero else 1) <= value <= 65535):
        raise InvalidOption(f"{what}: port {value} is out of range (1-65535)")
    return int(value)


def _check_ip(inst: Any, attr: Any, value: str) -> None:
    import ipaddress  # ~9 ms to import: only where an address is given

    if not isinstance(value, str):
        raise InvalidOption(f"a host address is a string, got {value!r}")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise InvalidOption(f"invalid host address {value!r}: an IPv4 or IPv6 address, "
                            f"such as 127.0.0.1, 0.0.0.0 or ::") from None


def _check_port(inst: Any, attr: Any, value: int) -> None:
    _port(value, attr.name, zero=attr.name == "host_port")


@attrs.frozen
class PortBinding:
    """One published port: the container's ``container_port``/``protocol`` reached from
    ``host_ip``:``host_port`` on the host (``host_port`` 0: a free port the kernel
    chooses when the container starts)."""

    container_port: int = attrs.field(validator=_check_port)
    protocol: str = attrs.field(default="tcp", validator=attrs.validators.in_(PROTOCOLS))
    host_ip: str = attrs.field(default=DEFAULT_HOST_IP, validator=_check_ip)
    host_port: int = attrs.field(default=0, validator=_check_port)

    @property
    def key(self) -> str:
        """Docker's name of the container's side: "6379/tcp"."""
        return f"{self.container_port}/{self.protocol}"

    @property
    def family_v6(self) -> bool:
        return ":" in self.host_ip

    def __str__(self) -> str:
        """As ``docker ps`` shows it: "127.0.0.1:32768->6379/tcp", "[::]:80->80/tcp"."""
        host = f"[{self.host_ip}]" if self.family_v6 else self.host_ip
        return f"{host}:{self.host_port}->{self.key}"

    def to_json(self) -> Dict[str, Any]:
        return {"container_port": self.container_port, "protocol": self.protocol,
                "host_ip": self.host_ip, "host_port": self.host_port}

    @classmethod
    def from_json(cls, doc: Any) -> "PortBinding":
        if not isinstance(doc, dict) or set(doc) - {"container_port", "protocol", "host_ip", "host_port"}:
            raise InvalidOption(f"a published port is an object of container_port, protocol, host_ip, "
                                f"host_port; got {doc!r}")
        try:
            return cls(**doc)
        except TypeError as exc:
            raise InvalidOption(f"a published port: {exc}") from None


def split_container_port(key: Union[int, str]) -> Tuple[int, int, str]:
    """``6379``, ``"6379"``, ``"53/udp"``, ``"8000-8010/tcp"`` -> (first, last, protocol)."""
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise InvalidOption(f"a container port is an int or a string such as '53/udp', got {key!r}")
    if isinstance(key, int):
        port = _port(key, "container port")
        return port, port, "tcp"
    m = _CONTAINER_PORT.match(key)
    if not m:
        raise InvalidOption(f"invalid container port {key!r}: a port, 'PORT/tcp', 'PORT/udp' or 'FIRST-LAST'")
    first = _port(m.group(1), f"container port {key!r}")
    last = _port(m.group(2), f"container port {key!r}") if m.group(2) else first
    proto = (m.group(3) or "tcp").lower()
    if proto not in PROTOCOLS:
        raise InvalidOption(f"container port {key!r}: protocol {proto!r} is not supported (tcp or udp)")
    if last < first:
        raise InvalidOption(f"container port {key!r}: an empty range")
    return first, last, proto


def _host_side(value: Any, where: str) -> Tuple[str, int]:
    """A value of ``ports=`` (docker-py's): None or a port (0: any), or (address,) or
    (address, port or None)."""
    if value is None:
        return DEFAULT_HOST_IP, 0
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return DEFAULT_HOST_IP, _port(value, f"host port for {where}", zero=True)
    if isinstance(value, tuple) and 1 <= len(value) <= 2 and isinstance(value[0], str):
        port = value[1] if len(value) == 2 else None
        return value[0], 0 if port is None else _port(port, f"host port for {where}", zero=True)
    raise InvalidOption(f"ports[{where!r}]: expected None, a host port, (address, port) or a list "
                        f"of them, got {value!r}")


def parse_ports(value: Union[None, Mapping[Any, Any], Iterable["PortBinding"]]) -> Tuple[PortBinding, ...]:
    """docker-py's ``ports=``: ``{6379: None, "53/udp": 5353, 8080: ("127.0.0.1", 18080),
    "9000/tcp": [9000, 9001]}`` (a list publishes one container port on several host
    ports); `PortBinding` values pass as they are. Checked as a whole: the same host
    address, port and protocol twice is refused."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        out: List[PortBinding] = []
        for key, target in value.items():
            first, last, proto = split_container_port(key)
            if last != first:
                raise InvalidOption(f"ports: {key!r}: give each container port its own entry")
            targets = target if isinstance(target, list) else [target]
            for t in targets:
                ip, port = _host_side(t, str(key))
                out.append(PortBinding(first, proto, ip, port))
        return check_unique(out)
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidOption(f"ports must be a mapping such as {{6379: None}}, got {value!r}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, PortBinding):
            raise InvalidOption(f"ports must be a mapping or PortBinding values, got {item!r}")
    return check_unique(items)


def check_unique(bindings: Sequence[PortBinding]) -> Tuple[PortBinding, ...]:
    seen = set()
    for b in bindings:
        if b.host_port:
            where = (b.host_ip, b.host_port, b.protocol)
            if where in seen:
                raise InvalidOption(f"host port {b.host_ip}:{b.host_port}/{b.protocol} is published twice")
            seen.add(where)
    return tuple(bindings)


def _range(text: str, what: str) -> Tuple[int, int]:
    first, sep, last = text.partition("-")
    lo = _port(first, what)
    hi = _port(last, what) if sep else lo
    if hi < lo:
        raise InvalidOption(f"{what}: an empty range {text!r}")
    return lo, hi


def parse_publish(spec: str) -> Tuple[PortBinding, ...]:
    """One ``-p`` of ``docker run``/``podman run``: ``[[ip:][hostPort]:]containerPort[/protocol]``
    with ports or ranges of equal length ("8000-8001:80-81"), an empty host port for a
    free one ("127.0.0.1::80", ":80"), an IPv6 address in brackets ("[::1]:8080:80").
    The strings podman 4 accepts, with its errors for the ones it refuses (tests/
    test_ports_parse.py runs both), but sctp (isobox forwards TCP and UDP)."""
    what = f"-p {spec}"
    rest, slash, proto = spec.partition("/")
    if slash:
        if "/" in proto:
            raise InvalidOption(f"{what}: the protocol can be given only once")
        if not proto:
            raise InvalidOption(f"{what}: an empty protocol")
        rest = f"{rest}/{proto.lower()}"
    ip = ""
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0 or not rest[close + 1:].startswith(":"):
            raise InvalidOption(f"{what}: an IPv6 address in brackets is followed by ':'")
        ip, rest = rest[1:close], "_" + rest[close + 1:]  # "_" stands for the address
    parts = rest.split(":")
    if len(parts) > 3:
        raise InvalidOption(f"{what}: the format is [[hostIP:]hostPort:]containerPort (an IPv6 "
                            "address goes in brackets)")
    container = parts[-1]
    host = parts[-2] if len(parts) >= 2 else ""
    if len(parts) == 3:
        ip = ip or parts[0]
        if not ip:
            raise InvalidOption(f"{what}: an empty host address")
    first, last, proto = split_container_port(container)
    count = last - first + 1
    hosts = [0] * count
    if host:
        lo, hi = _range(host, what)
        if hi - lo + 1 != count:
            raise InvalidOption(f"{what}: the host and container port ranges differ in length: "
                                f"{hi - lo + 1} vs {count}")
        hosts = list(range(lo, hi + 1))
    host_ip = ip or DEFAULT_HOST_IP
    return tuple(PortBinding(first + i, proto, host_ip, hosts[i]) for i in range(count))


def exposed_bindings(exposed: Iterable[str], taken: Iterable[PortBinding], host_ip: str = DEFAULT_HOST_IP,
                     ) -> Tuple[PortBinding, ...]:
    """``publish_all`` (``-P``): each of the image's ExposedPorts ("6379/tcp") that
    ``taken`` does not publish already, on a free port of ``host_ip``."""
    done = {b.key for b in taken}
    out: List[PortBinding] = []
    for key in exposed:
        try:
            first, last, proto = split_container_port(key)
        except InvalidOption:
            continue  # an ExposedPorts entry isobox cannot publish (sctp): as podman, skip it
        for port in range(first, last + 1):
            if f"{port}/{proto}" not in done:
                out.append(PortBinding(port, proto, host_ip, 0))
    return tuple(out)


# -- the bound ports, read back ----------------------------------------------------------------


@attrs.frozen
class PortMap:
    """A started container's published ports, with the host ports the kernel chose:
    what ``c.ports``, ``c.host_port`` and ``c.address`` answer, on a `Container` and on a
    `ContainerHandle` alike (its state records them, state.py)."""

    bindings: Tuple[PortBinding, ...] = ()

    def docker(self) -> Dict[str, List[Dict[str, str]]]:
        """docker-py's ``container.ports``: {"6379/tcp": [{"HostIp": "127.0.0.1",
        "HostPort": "32768"}]}."""
        out: Dict[str, List[Dict[str, str]]] = {}
        for b in self.bindings:
            out.setdefault(b.key, []).append({"HostIp": b.host_ip, "HostPort": str(b.host_port)})
        return out

    def find(self, port: Union[int, str], name: str) -> PortBinding:
        first, last, proto = split_container_port(port)
        for b in self.bindings:
            if b.container_port == first and b.protocol == proto:
                return b
        published = ", ".join(sorted({b.key for b in self.bindings})) or "none"
        raise InvalidOption(f"container {name}: port {first}/{proto} is not published (published: {published})")

    def show(self) -> str:
        """``docker ps``'s PORTS column."""
        return ", ".join(str(b) for b in self.bindings)

    def to_json(self) -> List[Dict[str, Any]]:
        return [b.to_json() for b in self.bindings]

    @classmethod
    def from_json(cls, docs: Any) -> "PortMap":
        if docs is None:
            return cls()
        if not isinstance(docs, list):
            raise InvalidOption(f"published ports are a list, got {docs!r}")
        return cls(tuple(PortBinding.from_json(d) for d in docs))


def client_address(binding: PortBinding) -> Tuple[str, int]:
    """Where a client on this host connects: the bound address, or loopback for a
    wildcard one (0.0.0.0, ::) — testcontainers' ``get_container_host_ip``."""
    ip = binding.host_ip
    if ip == "0.0.0.0":
        ip = "127.0.0.1"
    elif ip == "::":
        ip = "::1"
    return ip, binding.host_port

