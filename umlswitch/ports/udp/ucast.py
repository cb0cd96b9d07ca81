"""The unicast UDP port: one port per point-to-point peer (UML ``eth0=ucast``, QEMU
``-netdev socket,udp=`` and ``-netdev dgram`` with an inet remote).

One socket, bound to the local port, sends to the peer and receives from it. It is not connected,
so that a datagram from any other address is seen, dropped, counted (``wrong_source``) and logged
at a bounded rate rather than silently refused. With REMOTEHOST ``any`` the first host to send
from REMOTEPORT becomes the peer for as long as the switch runs; until then frames for the port
are dropped and counted (``no_peer``).
"""

from __future__ import annotations

import logging
import socket

from umlswitch import counters
from umlswitch.errors import StartupError
from umlswitch.ports.base import Frame, Unsent, ratelog
from umlswitch.ports.udp.base import Address, UdpPort, bind, udp_socket
from umlswitch.ports.udp.spec import UcastSpec

log = logging.getLogger("umlswitch.ucast")


class UcastPort(UdpPort):
    """A single UDP peer: frames from its address only, frames to it only."""

    kind = "ucast"

    def __init__(self, spec: UcastSpec, sock: socket.socket, remote: Address | None) -> None:
        super().__init__(spec.name, sock)
        self.spec = spec
        self.remote = remote  # None until the first sender is learned (REMOTEHOST any)
        self._sendto = sock.sendto

    def admit(self, sender: Address, size: int) -> bool:
        remote = self.remote
        if sender == remote:
            return True
        if remote is None and sender[1] == self.spec.remote_port:
            self.remote = sender
            log.info(
                "port %d (%s): the peer is %s:%d (the first to send from port %d)",
                self.id,
                self.name,
                sender[0],
                sender[1],
                self.spec.remote_port,
            )
            return True
        self.stats.drops[counters.WRONG_SOURCE] += 1
        expected = f"{remote[0]}:{remote[1]}" if remote else f"any:{self.spec.remote_port}"
        ratelog.warning(
            f"{counters.WRONG_SOURCE}:{self.id}",
            "port %d (%s): dropped %d-byte datagram from %s:%d, not the peer %s (%s)",
            self.id,
            self.name,
            size,
            sender[0],
            sender[1],
            expected,
            counters.WRONG_SOURCE,
        )
        return False

    def _send(self, frame: Frame) -> None:
        remote = self.remote
        if remote is None:
            self.stats.drops[counters.NO_PEER] += 1
            raise Unsent
        self._sendto(frame, remote)  # ECONNREFUSED from an earlier ICMP error, ENETUNREACH, ...

    def egress_fd(self) -> socket.socket:
        return self.recv_sock


def resolve(spec: UcastSpec) -> Address | None:
    """The peer's (IPv4 address, port), None for REMOTEHOST any; StartupError if unknown."""
    if spec.learns_peer:
        return None
    try:
        infos = socket.getaddrinfo(
            spec.remote_host, spec.remote_port, socket.AF_INET, socket.SOCK_DGRAM
        )
    except socket.gaierror as exc:
        raise StartupError(
            f"-ucast {spec}: cannot resolve {spec.remote_host!r}: {exc.strerror}; "
            "give the peer's IPv4 address"
        ) from None
    host, port = infos[0][4][:2]
    return str(host), int(port)


def open_ucast_port(spec: UcastSpec) -> UcastPort:
    """Bind the local port, or raise StartupError."""
    remote = resolve(spec)
    sock = udp_socket()
    bind(sock, (spec.bind, spec.local_port), f"-ucast {spec}")
    return UcastPort(spec, sock, remote)
