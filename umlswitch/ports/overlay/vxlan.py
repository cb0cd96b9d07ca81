"""VXLAN overlay ports: one VXLAN segment is one switch port (``--vxlan``; vxvde: ``vxvde.py``).

A segment reaches remote tunnel endpoints (VTEPs): the Linux kernel's ``type vxlan`` devices,
other umlswitches, vdeplug4 endpoints. Each datagram is the 8-byte VXLAN header
(``wire.py``) and one ethernet frame.

* **Egress.** A frame the fabric sends to the port goes, encapsulated, to the VTEP its
  destination was learned behind (the port's ``VtepMap``); broadcast, multicast and unknown
  unicast go to the segment's multicast group, or to every peer of its list (head-end
  replication), one datagram per peer. Sends never block: a frame the socket cannot take now
  waits in the port's backlog (drained when the socket is writable).
* **Ingress.** A datagram is checked (header, VNI and, with a peer list, that its sender is a
  peer: anything else is dropped, counted and logged at a bounded rate), its inner source MAC is
  learned with the sender's VTEP, and the frame goes to the fabric as coming from this port.
* **Split horizon.** The fabric never sends a frame back to the port it came from, so what arrived
  from the overlay never goes back into it: a full mesh of switches, or a group of them, does not
  loop. (With no spanning tree, switches on a segment must not also be linked another way.)
* **Sockets.** The segments on one UDP port share one socket (``VxlanSocket``), which tells them
  apart by VNI, as the kernel does. It is bound to that port (4789 by default), on ``local=`` for
  peer lists, on all addresses when a group must be heard; datagrams leave from it, so their
  source port is the VXLAN port too (the kernel does not check source ports). Multicast loopback
  is off: no other socket on this host can share the port, so nobody local needs our copies.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import replace

from umlswitch import counters
from umlswitch.errors import StartupError
from umlswitch.fabric.fabric import Fabric
from umlswitch.fabric.frame import ETH_HEADER_LEN, format_mac
from umlswitch.ports.base import Frame, Port, PortInfo, ReadArea, Source, Unsent, ratelog
from umlswitch.ports.overlay.spec import VxlanSpec
from umlswitch.ports.overlay.vtepmap import Vtep, VtepMap
from umlswitch.ports.overlay.wire import HEADER_LEN, BadHeader, pack_header, parse_header
from umlswitch.ports.udp.base import Address, DatagramHandler, bind, udp_socket, udp_source
from umlswitch.ports.udp.mcast import join_group, set_multicast_sending

log = logging.getLogger("umlswitch.vxlan")

AGE_INTERVAL = 1.0  # seconds between two sweeps of a port's VTEP map
IN_USE_BY = "a VXLAN device of this host (ip -d link show type vxlan) or another switch"

_mac_at = struct.Struct("6s").unpack_from  # a MAC address as ``bytes`` (a dict key) from a buffer
_INNER_SOURCE = HEADER_LEN + 6  # offset of the inner frame's source address in a datagram


class OverlayPort(Port):
    """What VXLAN and vxvde ports share: egress by VTEP, learning ingress, the aging sweep."""

    def __init__(
        self, name: str, vni: int, flood: tuple[Vtep, ...], send_sock: socket.socket
    ) -> None:
        super().__init__(0, name)  # the daemon gives it its number when it attaches it
        self.vni = vni
        self.header = pack_header(vni)
        self.flood = flood  # where broadcast, multicast and unknown unicast go
        self.vteps = VtepMap()
        self._sendmsg = send_sock.sendmsg
        self._send_sock = send_sock
        self._fabric: Fabric | None = None  # set once the data plane serves the port

    # --- egress ---------------------------------------------------------------------------

    def _send(self, frame: Frame) -> None:
        (dst,) = _mac_at(frame)
        vtep = None if dst[0] & 1 else self.vteps.lookup(dst)
        parts = (self.header, frame)
        if vtep is not None:
            self._sendmsg(parts, (), 0, vtep)
            return
        sent = False
        for target in self.flood:  # the group, or every peer (head-end replication)
            try:
                self._sendmsg(parts, (), 0, target)
            except BlockingIOError:
                if not sent:
                    raise  # nothing left yet: the whole frame waits in the backlog
                self.stats.drops[counters.EGRESS_FULL] += 1  # this peer's copy only
            except OSError as exc:  # ENETUNREACH, ... to this peer
                self._send_failed(exc)
            else:
                sent = True
        if not sent:
            raise Unsent

    def egress_fd(self) -> socket.socket:
        return self._send_sock

    # --- ingress --------------------------------------------------------------------------

    def sources(self, fabric: Fabric, area: ReadArea) -> list[Source]:
        self.vteps.max_entries = fabric.table.max_entries
        self._fabric = fabric
        return self._sources(fabric)

    def _sources(self, fabric: Fabric) -> list[Source]:
        """The port's socket(s), and how to read them (calling ``deliver`` for its frames)."""
        raise NotImplementedError

    def periodic(self) -> tuple[float, Callable[[], None]] | None:
        return AGE_INTERVAL, self._sweep

    def deliver(self, fabric: Fabric, view: memoryview, size: int, vtep: Vtep) -> None:
        """Learn where the frame in datagram ``view[:size]`` came from and forward it."""
        frame_size = size - HEADER_LEN
        if frame_size > fabric.max_frame:
            fabric.reject(self, counters.GIANT, frame_size)
            return
        if frame_size >= ETH_HEADER_LEN:  # shorter: the fabric counts a runt
            (src,) = _mac_at(view, _INNER_SOURCE)
            if self.vteps.learn(src, vtep, fabric.now):
                ratelog.log(
                    logging.INFO,
                    f"vtep:{self.id}",
                    "port %d (%s): %s is behind VTEP %s:%d",
                    self.id,
                    self.name,
                    format_mac(src),
                    vtep[0],
                    vtep[1],
                )
        full = fabric.forward(self, view[HEADER_LEN:size])
        if full:
            self.held_by(full)

    def drop(self, reason: str, detail: str, sender: Address, size: int) -> None:
        """Count a datagram dropped before it reached the fabric, and log it (rate-limited)."""
        self.stats.drops[reason] += 1
        ratelog.warning(
            f"{reason}:{self.id}",
            "port %d (%s): dropped %d-byte datagram from %s:%d: %s (%s)",
            self.id,
            self.name,
            size,
            sender[0],
            sender[1],
            detail,
            reason,
        )

    def check_header(self, view: memoryview, size: int, sender: Address) -> int | None:
        """The datagram's VNI, or None after counting why its header is bad."""
        vni = parse_header(view, size)
        if isinstance(vni, BadHeader):
            self.drop(vni.reason, vni.detail, sender, size)
            return None
        return vni

    def _sweep(self) -> None:
        """Expire VTEP map entries, with the switch's aging time (which management may change);
        every AGE_INTERVAL, in the data-plane thread."""
        fabric = self._fabric
        if fabric is None:
            return
        self.vteps.aging = fabric.table.aging
        for mac, vtep in self.vteps.expire(fabric.now):
            log.debug(
                "port %d (%s): %s behind %s:%d expired",
                self.id,
                self.name,
                format_mac(mac),
                vtep[0],
                vtep[1],
            )

    # --- management -----------------------------------------------------------------------

    def describe(self) -> PortInfo:
        return replace(super().describe(), vteps=self.remote_macs())

    def remote_macs(self) -> dict[str, list[str]]:
        """Each remote VTEP (``IP:PORT``) and the MAC addresses learned behind it."""
        behind = self.vteps.remote_macs()
        return {
            f"{ip}:{port}": [format_mac(mac) for mac in behind[(ip, port)]]
            for ip, port in sorted(behind, key=_vtep_order)
        }


def _vtep_order(vtep: Vtep) -> tuple[bytes, int]:
    return socket.inet_aton(vtep[0]), vtep[1]


class VxlanPort(OverlayPort):
    """One ``--vxlan`` segment: a VNI, a group or a list of peers, on a shared UDP socket."""

    kind = "vxlan"

    def __init__(self, spec: VxlanSpec, shared: VxlanSocket) -> None:
        if spec.group is not None:
            flood: tuple[Vtep, ...] = ((spec.group, spec.port),)
        else:
            flood = tuple((peer, spec.port) for peer in spec.peers)
        super().__init__(spec.name, spec.vni, flood, shared.sock)
        self.spec = spec
        self.shared = shared
        self._peers = None if spec.group is not None else frozenset(spec.peers)
        self._closed = False
        shared.users += 1

    def _sources(self, fabric: Fabric) -> list[Source]:
        return [self.shared.source(self, fabric)]

    def receive(self, fabric: Fabric, view: memoryview, size: int, sender: Address) -> None:
        """A datagram with this segment's VNI, from ``sender``."""
        host = sender[0]
        if self._peers is not None and host not in self._peers:
            self.drop(counters.WRONG_SOURCE, f"not a peer of {self.spec.destination}", sender, size)
            return
        self.deliver(fabric, view, size, (host, self.spec.port))

    def remote_macs(self) -> dict[str, list[str]]:
        """As ``OverlayPort.remote_macs``, with every peer of the list, even with no MAC yet."""
        learned = super().remote_macs()
        return {**{f"{peer}:{self.spec.port}": [] for peer in self.spec.peers}, **learned}

    def leave(self) -> None:
        super().leave()
        self.shared.forget(self)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.shared.forget(self)
            self.shared.release()


class VxlanSocket:
    """The UDP socket of the ``--vxlan`` segments on one UDP port; it tells them apart by VNI.

    Each segment gives the data plane a reader of it (``source``): the first one reads the
    socket for all of them, the others take over when it leaves. Datagrams that belong to no
    segment (bad header, unknown VNI) are counted on the segment that reads.
    """

    def __init__(self, sock: socket.socket, port: int) -> None:
        self.sock = sock
        self.port = port
        self.segments: dict[int, VxlanPort] = {}  # VNI -> the running port
        self.users = 0  # ports not closed yet; the last one closes the socket

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0:
            self.sock.close()

    def source(self, port: VxlanPort, fabric: Fabric) -> Source:
        """``port``'s reader of the socket: the data plane reads the socket with the first
        segment's and hands each segment its datagrams; a segment leaving takes its VNI along."""
        self.segments[port.vni] = port
        bufsize = fabric.max_frame + HEADER_LEN + 1
        return udp_source(self.sock, port, bufsize, self._handler(port, fabric))

    def forget(self, port: VxlanPort) -> None:
        if self.segments.get(port.vni) is port:
            del self.segments[port.vni]

    def _handler(self, reader: VxlanPort, fabric: Fabric) -> DatagramHandler:
        segments = self.segments
        check_header = reader.check_header

        def handle(view: memoryview, size: int, sender: Address) -> None:
            vni = check_header(view, size, sender)
            if vni is None:
                return
            port = segments.get(vni)
            if port is None:
                ours = "+".join(str(v) for v in sorted(segments)) or "none"
                reader.drop(
                    counters.VXLAN_WRONG_VNI,
                    f"VNI {vni} (UDP port {self.port} carries VNI {ours})",
                    sender,
                    size,
                )
                return
            port.receive(fabric, view, size, sender)

        return handle


def _open_socket(specs: Sequence[VxlanSpec]) -> VxlanSocket:
    """Bind the UDP socket of ``specs`` (all on one UDP port, with one local= and ttl=)."""
    first = specs[0]
    option = f"--vxlan {first}"
    groups = [spec for spec in specs if spec.group is not None]
    sock = udp_socket()
    # A socket bound to a unicast address does not hear a group: bind all addresses then.
    host = first.local if first.local is not None and not groups else "0.0.0.0"
    bind(sock, (host, first.port), option, users=IN_USE_BY)
    with contextlib.ExitStack() as on_error:
        on_error.callback(sock.close)
        for spec in groups:
            assert spec.group is not None
            join_group(sock, spec.group, spec.local, f"--vxlan {spec}", knob="local")
        try:
            ttl = first.ttl if first.ttl is not None else 1
            set_multicast_sending(sock, ttl=ttl, loop=False, interface=first.local)
            if first.ttl is not None:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, first.ttl)
        except OSError as exc:
            raise StartupError(f"{option}: cannot set up the socket: {exc.strerror}") from None
        on_error.pop_all()
    return VxlanSocket(sock, first.port)


def open_vxlan_ports(specs: Sequence[VxlanSpec]) -> list[VxlanPort]:
    """One port per segment, one socket per UDP port; or StartupError (nothing left open)."""
    by_udp_port: dict[int, list[VxlanSpec]] = {}
    for spec in specs:
        by_udp_port.setdefault(spec.port, []).append(spec)
    with contextlib.ExitStack() as on_error:
        sockets: dict[int, VxlanSocket] = {}
        for udp_port, group in by_udp_port.items():
            shared = sockets[udp_port] = _open_socket(group)
            on_error.callback(shared.sock.close)
        ports = [VxlanPort(spec, sockets[spec.port]) for spec in specs]
        on_error.pop_all()
    return ports
