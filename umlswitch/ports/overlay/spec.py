"""The ``--vxlan`` and ``--vxvde`` option values: text -> frozen specs. Pure: no sockets.

``--vxlan VNI@DEST[:PORT][,local=ADDR][,ttl=N]``
    One VXLAN segment (RFC 7348) as one switch port, interoperating with the Linux kernel's
    ``ip link add ... type vxlan``. DEST is either one IPv4 multicast group (flood and learn, as
    ``type vxlan id VNI group GROUP``) or one or more unicast peers joined by ``+``
    (``42@192.0.2.2+192.0.2.3``: head-end replication, as the kernel's all-zeros FDB entries
    ``bridge fdb append 00:00:00:00:00:00 dev vx0 dst PEER``). ``+`` keeps the peer list apart
    from the ``,``-separated options. PORT is the segment's UDP port, where it listens and where
    it sends: default 4789, the IANA port. The kernel's default, when ``dstport`` is not given,
    is 8472. ``local=`` is the local IPv4 address to listen on and send from (for a group: the
    interface's address); ``ttl=`` the TTL of the datagrams (default: 1 to a group, the system's
    default to peers).

``--vxvde [GROUP][,port=N][,vni=N][,ttl=N]``
    One port on a vdeplug4 ``vxvde://`` network: default group 239.0.0.1, port 14789, VNI 1,
    TTL 1 (``vxvde://GROUP/port=N/vni=N/ttl=N``).

Errors are ``ValueError`` with a message fit for ``umlswitch: error: argument --vxlan: ...``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from umlswitch.digits import is_decimal
from umlswitch.ports.overlay.wire import MAX_VNI
from umlswitch.ports.udp.spec import ipv4_address, parse_options, ttl_value, udp_port_number

DEFAULT_VXLAN_PORT = 4789  # IANA; the one vdeplug4's vxlan:// uses
LINUX_DEFAULT_VXLAN_PORT = 8472  # what `ip link add ... type vxlan` uses without `dstport`
DEFAULT_VXVDE_GROUP = "239.0.0.1"
DEFAULT_VXVDE_PORT = 14789
DEFAULT_VXVDE_VNI = 1
DEFAULT_VXVDE_TTL = 1

VXLAN_SYNTAX = "VNI@DEST[:PORT][,local=ADDR][,ttl=N]"
VXLAN_EXAMPLES = "e.g. 42@239.1.1.1, 42@192.0.2.2+192.0.2.3:4789,local=192.0.2.1"


@dataclass(frozen=True)
class VxlanSpec:
    """A VXLAN segment: its VNI, where it floods (a group or peers), its UDP port, how it sends."""

    vni: int
    group: str | None = None  # a multicast group: flood and learn
    peers: tuple[str, ...] = ()  # unicast peers (when there is no group): head-end replication
    port: int = DEFAULT_VXLAN_PORT
    local: str | None = None  # local IPv4 address; None: any (the route's choice)
    ttl: int | None = None  # None: 1 to a group, the system's default to peers

    @property
    def destination(self) -> str:
        """DEST as given: the group, or the peers joined by ``+``."""
        return self.group if self.group is not None else "+".join(self.peers)

    @property
    def name(self) -> str:
        """The port's name in logs: ``vxlan:42@239.1.1.1:4789``, ``vxlan:42@192.0.2.2+...``."""
        return f"vxlan:{self.vni}@{self.destination}:{self.port}"

    def __str__(self) -> str:
        """The option value that gives this spec back."""
        text = f"{self.vni}@{self.destination}:{self.port}"
        if self.local is not None:
            text += f",local={self.local}"
        return text + (f",ttl={self.ttl}" if self.ttl is not None else "")


@dataclass(frozen=True)
class VxvdeSpec:
    """A vxvde network: group, port, VNI, TTL."""

    group: str = DEFAULT_VXVDE_GROUP
    port: int = DEFAULT_VXVDE_PORT
    vni: int = DEFAULT_VXVDE_VNI
    ttl: int = DEFAULT_VXVDE_TTL

    @property
    def name(self) -> str:
        """The port's name in logs: ``vxvde:1@239.0.0.1:14789``."""
        return f"vxvde:{self.vni}@{self.group}:{self.port}"

    def __str__(self) -> str:
        return f"{self.group},port={self.port},vni={self.vni},ttl={self.ttl}"


def vni_value(text: str) -> int:
    if not is_decimal(text) or int(text) > MAX_VNI:
        raise ValueError(f"the VNI must be a number from 0 to {MAX_VNI}, not {text!r}")
    return int(text)


def _group(text: str, what: str) -> str:
    address = ipv4_address(text, what)
    if not address.is_multicast:
        raise ValueError(f"{text} is not a multicast group (expected 224.0.0.0 to 239.255.255.255)")
    return str(address)


def _peer(address: ipaddress.IPv4Address) -> str:
    if address.is_unspecified or address == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{address} cannot be a VXLAN peer (give the peer host's address)")
    return str(address)


def parse_vxlan(text: str) -> VxlanSpec:
    """``VNI@DEST[:PORT][,local=ADDR][,ttl=N]`` -> VxlanSpec."""
    head, *rest = text.split(",")
    vni_text, at, dest = head.partition("@")
    if not at or not vni_text or not dest:
        raise ValueError(f"expected {VXLAN_SYNTAX} ({VXLAN_EXAMPLES}), not {text!r}")
    vni = vni_value(vni_text)
    port = DEFAULT_VXLAN_PORT
    if ":" in dest:
        dest, port_text = dest.rsplit(":", 1)
        port = udp_port_number(port_text, "the VXLAN port")
    items = dest.split("+")
    if not all(items):
        raise ValueError(f"{text!r}: DEST is a group or peers joined by '+' ({VXLAN_EXAMPLES})")
    addresses = [ipv4_address(item, "each peer (or the group)") for item in items]
    group = None
    peers: tuple[str, ...] = ()
    if any(address.is_multicast for address in addresses):
        if len(addresses) > 1:
            raise ValueError(f"{text!r}: DEST is one multicast group or unicast peers, not both")
        group = str(addresses[0])
    else:
        peers = tuple(_peer(address) for address in addresses)
        duplicates = sorted({p for p in peers if peers.count(p) > 1})
        if duplicates:
            raise ValueError(f"{text!r}: peer {duplicates[0]} is given twice")
    options = parse_options(rest, ("local", "ttl"), text)
    local = None
    if "local" in options:
        address = ipv4_address(options["local"], "local= (a local address)")
        if address.is_multicast or address.is_unspecified:
            raise ValueError(f"local= must be an address of this host, not {address}")
        local = str(address)
    ttl = ttl_value(options["ttl"], 1) if "ttl" in options else None
    return VxlanSpec(vni=vni, group=group, peers=peers, port=port, local=local, ttl=ttl)


def parse_vxvde(text: str) -> VxvdeSpec:
    """``[GROUP][,port=N][,vni=N][,ttl=N]`` -> VxvdeSpec (empty text: vdeplug4's defaults)."""
    head, *rest = text.split(",")
    if "=" in head:  # no group given, only options: "vni=42"
        head, rest = "", [head, *rest]
    group = _group(head, "the vxvde group") if head else DEFAULT_VXVDE_GROUP
    options = parse_options(rest, ("port", "vni", "ttl"), text)
    return VxvdeSpec(
        group=group,
        port=udp_port_number(options.get("port", str(DEFAULT_VXVDE_PORT)), "port="),
        vni=vni_value(options.get("vni", str(DEFAULT_VXVDE_VNI))),
        ttl=ttl_value(options.get("ttl", str(DEFAULT_VXVDE_TTL)), 1),
    )


def overlay_conflicts(vxlan: Iterable[VxlanSpec], vxvde: Iterable[VxvdeSpec]) -> str | None:
    """Why these overlay ports cannot run side by side in one switch, or None.

    Segments on one UDP port share one socket, which tells them apart by VNI: two segments with
    the same VNI and port would be one segment twice, a forwarding loop, and the segments on one
    port must agree on ``local=`` and ``ttl=`` (options of the shared socket). A vxvde network
    given twice would loop too, and a vxvde port cannot also be a VXLAN port.
    """
    sockets: dict[int, VxlanSpec] = {}
    segments: set[tuple[int, int]] = set()
    for spec in vxlan:
        if (spec.port, spec.vni) in segments:
            return f"--vxlan: VNI {spec.vni} on UDP port {spec.port} is given twice"
        segments.add((spec.port, spec.vni))
        first = sockets.setdefault(spec.port, spec)
        if (first.local, first.ttl) != (spec.local, spec.ttl):
            return (
                f"--vxlan: the segments on UDP port {spec.port} share one socket; "
                "give them the same local= and ttl= (or use another port)"
            )
    networks: set[tuple[str, int, int]] = set()
    for vx in vxvde:
        if (vx.group, vx.port, vx.vni) in networks:
            return f"--vxvde {vx.group},port={vx.port},vni={vx.vni} is given twice"
        networks.add((vx.group, vx.port, vx.vni))
        if vx.port in sockets:
            return f"--vxvde port={vx.port} is also a --vxlan port; choose another"
    return None
