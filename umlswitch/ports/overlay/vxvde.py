"""The vxvde port: one switch port on a vdeplug4 ``vxvde://`` network (``--vxvde``).

vxvde (PROTOCOLS.md §1e, vdeplug4's ``libvdeplug_vxvde.c``) is VXLAN's header on a multicast
group with no switch at all: every endpoint floods to the group and learns where each MAC sits.
We behave as one more endpoint, with its two sockets:

* a *group* socket bound to GROUP:PORT (SO_REUSEADDR: the host's other endpoints bind it too) and
  joined to the group;
* a *peer* socket on an ephemeral port, from which everything is sent: broadcast, multicast and
  unknown or expired destinations to the group, a learned destination unicast to the endpoint's
  (address, port). Endpoints answer on it, so it is read too.

Multicast loopback stays on, so endpoints on this host hear us; our own datagrams come back on
the group socket and are dropped (``own_echo``: the peer socket's source port from an address of
this host). A header-only datagram is a "goodbye": the sender is leaving, and what we learned
behind it is forgotten. We send one to the group when the port closes (shutdown, or removal by
the management console). Everything else (egress by VTEP, learning, split horizon, counters) is
``vxlan.OverlayPort``'s.
"""

from __future__ import annotations

import contextlib
import logging
import socket

from umlswitch import counters
from umlswitch.errors import StartupError
from umlswitch.fabric.fabric import Fabric
from umlswitch.ports.base import Source, ratelog
from umlswitch.ports.overlay.spec import VxvdeSpec
from umlswitch.ports.overlay.vxlan import OverlayPort
from umlswitch.ports.overlay.wire import HEADER_LEN
from umlswitch.ports.udp.base import Address, DatagramHandler, bind, udp_socket, udp_source
from umlswitch.ports.udp.mcast import LocalAddresses, join_group, set_multicast_sending

log = logging.getLogger("umlswitch.vxvde")


class VxvdePort(OverlayPort):
    """A vxvde network as one port: hear the group and the endpoints, send from our own port."""

    kind = "vxvde"

    def __init__(
        self, spec: VxvdeSpec, group_sock: socket.socket, peer_sock: socket.socket
    ) -> None:
        super().__init__(spec.name, spec.vni, ((spec.group, spec.port),), peer_sock)
        self.spec = spec
        self.group_sock = group_sock
        self.peer_sock = peer_sock
        self.own_port: int = peer_sock.getsockname()[1]
        self._local = LocalAddresses()
        self._closed = False

    def _sources(self, fabric: Fabric) -> list[Source]:
        bufsize = fabric.max_frame + HEADER_LEN + 1
        return [
            udp_source(self.group_sock, self, bufsize, self._handler(fabric, from_group=True)),
            udp_source(self.peer_sock, self, bufsize, self._handler(fabric, from_group=False)),
        ]

    def _handler(self, fabric: Fabric, *, from_group: bool) -> DatagramHandler:
        own_port = self.own_port
        local = self._local
        check_header = self.check_header
        deliver = self.deliver
        our_vni = self.vni

        def handle(view: memoryview, size: int, sender: Address) -> None:
            if from_group and sender[1] == own_port and sender[0] in local:
                self.stats.drops[counters.OWN_ECHO] += 1
                return
            vni = check_header(view, size, sender)
            if vni is None:
                return
            if vni != our_vni:
                self.drop(counters.VXLAN_WRONG_VNI, f"VNI {vni}, not {our_vni}", sender, size)
            elif size == HEADER_LEN:
                self._goodbye(sender)
            else:
                deliver(fabric, view, size, sender)

        return handle

    def _goodbye(self, sender: Address) -> None:
        forgotten = self.vteps.forget(sender)
        ratelog.log(
            logging.INFO,
            f"goodbye:{self.id}",
            "port %d (%s): %s:%d left (goodbye); forgot %d MAC(s) behind it",
            self.id,
            self.name,
            sender[0],
            sender[1],
            forgotten,
        )

    def close(self) -> None:
        """Say goodbye to the group (so the others forget us at once), then close."""
        if self._closed:
            return
        self._closed = True
        try:
            self.peer_sock.sendto(self.header, (self.spec.group, self.spec.port))
        except OSError as exc:
            log.debug("port %d (%s): goodbye not sent: %s", self.id, self.name, exc)
        self.peer_sock.close()
        self.group_sock.close()


def open_vxvde_port(spec: VxvdeSpec) -> VxvdePort:
    """Join the group and open the peer socket, or raise StartupError."""
    option = f"--vxvde {spec}"
    with contextlib.ExitStack() as on_error:
        group_sock = on_error.enter_context(udp_socket())
        group_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bind(group_sock, (spec.group, spec.port), option)
        join_group(group_sock, spec.group, None, option, knob=None)
        peer_sock = on_error.enter_context(udp_socket())
        bind(peer_sock, ("0.0.0.0", 0), option)
        try:
            set_multicast_sending(peer_sock, ttl=spec.ttl, loop=True, interface=None)
            peer_sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, spec.ttl)  # as vdeplug4
        except OSError as exc:
            raise StartupError(f"{option}: cannot set up the socket: {exc.strerror}") from None
        on_error.pop_all()
    return VxvdePort(spec, group_sock, peer_sock)
