"""The ``-mcast`` and ``-ucast`` option values: text -> frozen specs. Pure: no sockets, no lookups.

``-mcast [GROUP:PORT][,ttl=N][,if=ADDR]``
    One port on an IPv4 multicast group, as UML's ``eth0=mcast`` and QEMU's
    ``-netdev socket,mcast=`` use it. No value means UML's defaults, 239.192.168.1:1102 with TTL 1.
    ``if=`` names the local IPv4 address of the interface to join and send on.

``-ucast LOCALPORT:REMOTEHOST:REMOTEPORT[,bind=ADDR]``
    One port with a single UDP peer, as UML's ``eth0=ucast`` and QEMU's ``-netdev socket,udp=``
    use it: receive on LOCALPORT (of ADDR, default all addresses), send to REMOTEHOST:REMOTEPORT.
    REMOTEHOST ``any`` takes the first host that sends from REMOTEPORT as the peer.

Errors are ``ValueError`` with a message fit for ``umlswitch: error: argument -mcast: ...``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from umlswitch.digits import is_decimal

DEFAULT_MCAST_GROUP = "239.192.168.1"
DEFAULT_MCAST_PORT = 1102
DEFAULT_MCAST_TTL = 1
ANY_HOST = "any"


@dataclass(frozen=True)
class McastSpec:
    """A multicast segment: the group and port to join, the TTL and interface to send with."""

    group: str = DEFAULT_MCAST_GROUP
    port: int = DEFAULT_MCAST_PORT
    ttl: int = DEFAULT_MCAST_TTL
    interface: str | None = None  # local IPv4 address; None: the kernel's choice

    @property
    def name(self) -> str:
        """The port's name in logs: ``mcast:239.192.168.1:1102``."""
        return f"mcast:{self.group}:{self.port}"

    def __str__(self) -> str:
        """The option value that gives this spec back."""
        text = f"{self.group}:{self.port},ttl={self.ttl}"
        return text + (f",if={self.interface}" if self.interface else "")


@dataclass(frozen=True)
class UcastSpec:
    """A point-to-point UDP peer: our local port, the peer's host and port."""

    local_port: int
    remote_host: str  # an IPv4 address, a host name, or "any" (learn the first sender)
    remote_port: int
    bind: str = "0.0.0.0"

    @property
    def learns_peer(self) -> bool:
        return self.remote_host == ANY_HOST

    @property
    def name(self) -> str:
        """The port's name in logs: ``ucast:1102->127.0.0.1:1103``."""
        return f"ucast:{self.local_port}->{self.remote_host}:{self.remote_port}"

    def __str__(self) -> str:
        text = f"{self.local_port}:{self.remote_host}:{self.remote_port}"
        return text + (f",bind={self.bind}" if self.bind != "0.0.0.0" else "")


def udp_port_number(text: str, what: str) -> int:
    if not is_decimal(text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{what} must be a UDP port number from 1 to 65535, not {text!r}")
    return int(text)


def ipv4_address(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"{what} must be an IPv4 address, not {text!r}") from None


def ttl_value(text: str, low: int) -> int:
    """An IP TTL (hop limit) from ``low`` to 255."""
    if not is_decimal(text) or not low <= int(text) <= 255:
        raise ValueError(f"ttl must be a number from {low} to 255, not {text!r}")
    return int(text)


def parse_options(items: Iterable[str], allowed: tuple[str, ...], spec: str) -> dict[str, str]:
    """``key=value`` items -> dict; unknown, repeated or empty keys are errors."""
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ValueError(
                f"{spec!r}: expected {' or '.join(k + '=...' for k in allowed)}, not {item!r}"
            )
        if key not in allowed:
            raise ValueError(f"{spec!r}: unknown option {key!r} (known: {', '.join(allowed)})")
        if key in options:
            raise ValueError(f"{spec!r}: {key}= given twice")
        options[key] = value
    return options


def parse_mcast(text: str) -> McastSpec:
    """``[GROUP[:PORT]][,ttl=N][,if=ADDR]`` -> McastSpec (empty text: UML's defaults)."""
    head, *rest = text.split(",")
    if "=" in head:  # no group given, only options: "ttl=2"
        head, rest = "", [head, *rest]
    group, port = DEFAULT_MCAST_GROUP, DEFAULT_MCAST_PORT
    if head:
        group, sep, port_text = head.rpartition(":")
        if not sep:
            group, port_text = head, str(DEFAULT_MCAST_PORT)
        address = ipv4_address(group, "the multicast group")
        if not address.is_multicast:
            raise ValueError(
                f"{group} is not a multicast group (expected 224.0.0.0 to 239.255.255.255, "
                f"e.g. {DEFAULT_MCAST_GROUP}:{DEFAULT_MCAST_PORT})"
            )
        group = str(address)
        port = udp_port_number(port_text, "the multicast port")
    options = parse_options(rest, ("ttl", "if"), text)
    ttl = ttl_value(options["ttl"], 0) if "ttl" in options else DEFAULT_MCAST_TTL
    interface = None
    if "if" in options:
        interface = str(ipv4_address(options["if"], "if= (the interface's local address)"))
    return McastSpec(group=group, port=port, ttl=ttl, interface=interface)


def parse_ucast(text: str) -> UcastSpec:
    """``LOCALPORT:REMOTEHOST:REMOTEPORT[,bind=ADDR]`` -> UcastSpec."""
    head, *rest = text.split(",")
    parts = head.split(":")
    if len(parts) != 3 or not all(parts):
        raise ValueError(
            f"expected LOCALPORT:REMOTEHOST:REMOTEPORT (e.g. 1102:127.0.0.1:1103), not {text!r}"
        )
    local_text, host, remote_text = parts
    local_port = udp_port_number(local_text, "LOCALPORT")
    remote_port = udp_port_number(remote_text, "REMOTEPORT")
    try:
        host = str(ipaddress.IPv4Address(host))
    except ValueError:
        if host.lower() == ANY_HOST:
            host = ANY_HOST
        elif not _is_host_name(host):
            raise ValueError(
                f"REMOTEHOST must be an IPv4 address, a host name or 'any', not {host!r}"
            ) from None
    options = parse_options(rest, ("bind",), text)
    bind = str(ipv4_address(options.get("bind", "0.0.0.0"), "bind="))
    return UcastSpec(local_port=local_port, remote_host=host, remote_port=remote_port, bind=bind)


def _is_host_name(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return all(
        0 < len(label) <= 63
        and label.replace("-", "").isalnum()
        and label.isascii()
        and not label.startswith("-")
        for label in labels
    ) and not is_decimal(text.replace(".", ""))


def conflicts(mcast: Iterable[McastSpec], ucast: Iterable[UcastSpec]) -> str | None:
    """Why these ports cannot run side by side in one switch, or None.

    Two ports on the same group and port would each hear the other's frames and send them back
    to the group: a forwarding loop. Two ucast ports on the same local port cannot both bind it.
    """
    seen_groups: set[tuple[str, int]] = set()
    for m in mcast:
        key = (m.group, m.port)
        if key in seen_groups:
            return f"-mcast {m.group}:{m.port} is given twice (one port per group and port)"
        seen_groups.add(key)
    seen_locals: dict[int, list[str]] = {}
    for u in ucast:
        binds = seen_locals.setdefault(u.local_port, [])
        if any(b == u.bind or "0.0.0.0" in (b, u.bind) for b in binds):
            return f"-ucast: two ports receive on local UDP port {u.local_port}"
        binds.append(u.bind)
    return None
