"""The ``--slirp`` options: text -> a frozen spec, and the spec -> the helper's ``slirp://`` URL.
Pure: no sockets, no processes.

``--slirp-net ADDR/LEN`` is the virtual network (default 10.0.2.0/24, as QEMU's user network).
A network address (host bits zero) puts the router on its second address, ``.2`` (QEMU's
layout: router .2, DNS proxy .3, DHCP from .15); any other address is the router itself.
``--slirp-forward [HOSTADDR:]HOSTPORT:GUESTADDR:GUESTPORT`` forwards a TCP port of the host
(on 127.0.0.1 unless HOSTADDR says otherwise) to a guest. libvdeplug_slirp(1) takes them as
``slirp:///addr=.../dhcp=.../vnameserver=.../tcpfwd=...``; it separates options with ``/``, so the
prefix length is escaped (``addr=10.0.2.2\\/24``), and it derives the DHCP start and the DNS
address from its own defaults, so both are always given.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from umlswitch.digits import is_decimal

DEFAULT_NET = "10.0.2.0/24"
DEFAULT_ROUTER = ipaddress.IPv4Interface("10.0.2.2/24")
LOOPBACK = "127.0.0.1"
ROUTER_OFFSET = 2  # QEMU's user network: router .2, DNS proxy .3, DHCP from .15
DNS_OFFSET = 3
DHCP_OFFSET = 15
MAX_PREFIX = 27  # the DHCP range from .15 needs a few addresses after it


@dataclass(frozen=True)
class Forward:
    """One TCP port forwarded from the host to a guest."""

    host_addr: str
    host_port: int
    guest_addr: str
    guest_port: int

    def __str__(self) -> str:
        return f"{self.host_addr}:{self.host_port}:{self.guest_addr}:{self.guest_port}"


@dataclass(frozen=True)
class SlirpSpec:
    """The virtual network (``router``: the router's address with the prefix) and forwards."""

    router: ipaddress.IPv4Interface = DEFAULT_ROUTER
    forwards: tuple[Forward, ...] = ()

    @property
    def network(self) -> ipaddress.IPv4Network:
        return self.router.network

    @property
    def dns(self) -> ipaddress.IPv4Address:
        return self.network.network_address + DNS_OFFSET

    @property
    def dhcp_start(self) -> ipaddress.IPv4Address:
        return self.network.network_address + DHCP_OFFSET

    def describe(self) -> str:
        """``net 10.0.2.0/24 router 10.0.2.2`` (and the forwards), for logs and port/print."""
        text = f"net {self.network} router {self.router.ip}"
        return text + "".join(f" fwd {fwd}" for fwd in self.forwards)


def parse_slirp_net(text: str) -> ipaddress.IPv4Interface:
    """``ADDR/LEN`` -> the router's address with the prefix length."""
    try:
        given = ipaddress.IPv4Interface(text)
    except ValueError:
        raise ValueError(f"{text!r}: expected an IPv4 network, e.g. {DEFAULT_NET}") from None
    if "/" not in text or not 8 <= given.network.prefixlen <= MAX_PREFIX:
        raise ValueError(f"{text!r}: give the prefix length, from /8 to /{MAX_PREFIX}")
    if given.ip == given.network.network_address:
        return ipaddress.IPv4Interface(f"{given.ip + ROUTER_OFFSET}/{given.network.prefixlen}")
    return given


def _port(text: str, what: str, whole: str) -> int:
    if not is_decimal(text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{whole!r}: the {what} must be a number from 1 to 65535")
    return int(text)


def _address(text: str, what: str, whole: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"{whole!r}: the {what} must be an IPv4 address, not {text!r}") from None


def parse_forward(text: str) -> Forward:
    """``[HOSTADDR:]HOSTPORT:GUESTADDR:GUESTPORT`` -> Forward (HOSTADDR default 127.0.0.1)."""
    parts = text.split(":")
    if len(parts) == 3:
        parts.insert(0, LOOPBACK)
    if len(parts) != 4:
        raise ValueError(
            f"{text!r}: expected [HOSTADDR:]HOSTPORT:GUESTADDR:GUESTPORT, e.g. 2222:10.0.2.15:22"
        )
    return Forward(
        _address(parts[0], "host address", text),
        _port(parts[1], "host port", text),
        _address(parts[2], "guest address", text),
        _port(parts[3], "guest port", text),
    )


def slirp_problem(spec: SlirpSpec) -> str | None:
    """Why these options cannot work together, or None: a guest outside the network, a host
    port forwarded twice."""
    seen: set[tuple[str, int]] = set()
    for fwd in spec.forwards:
        if ipaddress.IPv4Address(fwd.guest_addr) not in spec.network:
            return f"--slirp-forward {fwd}: {fwd.guest_addr} is not in --slirp-net {spec.network}"
        key = (fwd.host_addr, fwd.host_port)
        if (
            key in seen
            or (("0.0.0.0", fwd.host_port) in seen)
            or (fwd.host_addr == "0.0.0.0" and any(port == fwd.host_port for _, port in seen))
        ):
            return f"--slirp-forward: host port {fwd.host_port} is forwarded twice"
        seen.add(key)
    return None


def slirp_url(spec: SlirpSpec, mtu: int | None = None) -> str:
    """The ``slirp://`` URL that makes libvdeplug_slirp(1) the router ``spec`` describes."""
    router = spec.router
    options = [
        f"addr={router.ip}\\/{router.network.prefixlen}",
        f"dhcp={spec.dhcp_start}",
        f"vnameserver={spec.dns}",
    ]
    if spec.forwards:
        options.append("tcpfwd=" + ",".join(str(fwd) for fwd in spec.forwards))
    if mtu is not None:
        options.append(f"mtu={mtu}")
    return "slirp:///" + "/".join(options)
