"""The multicast port: one port for a whole UDP multicast segment (UML ``eth0=mcast``, QEMU
``-netdev socket,mcast=`` and ``-netdev dgram`` with a multicast remote).

It receives as the guests do (PROTOCOLS.md §1d): a socket with SO_REUSEADDR, bound to group:port
and joined to the group, so the switch and same-host guests share the port. It sends from a second
socket bound to an ephemeral port and connected to group:port, with loopback on so same-host
guests hear it. Loopback brings our own frames back too: a datagram whose source port is the send
socket's and whose source address is one of this host's is our echo, dropped and counted
(``own_echo``). The segment is one port, so a frame that came from the group never goes back to it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket

from umlswitch import counters
from umlswitch.errors import StartupError
from umlswitch.ports.udp.base import Address, UdpPort, bind, udp_socket
from umlswitch.ports.udp.spec import McastSpec

log = logging.getLogger("umlswitch.mcast")


class LocalAddresses:
    """Answers "is this IPv4 address one of this host's?" from a small cache.

    An address is local if a socket can be bound to it (with ``ip_nonlocal_bind`` off, the
    default). Only datagrams from our own source port ask, so the cache holds a handful of entries.
    """

    MAX_ENTRIES = 64

    def __init__(self) -> None:
        self._known: dict[str, bool] = {"0.0.0.0": True}

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        known = self._known.get(host)
        if known is None:
            if len(self._known) >= self.MAX_ENTRIES:
                self._known = {"0.0.0.0": True}
            known = self._known[host] = _can_bind(host)
        return known


def _can_bind(host: str) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((host, 0))
    except OSError:
        return False
    finally:
        probe.close()
    return True


class McastPort(UdpPort):
    """A multicast group as one port: receive on the group, send from our own ephemeral port."""

    kind = "mcast"

    def __init__(self, spec: McastSpec, recv_sock: socket.socket, send_sock: socket.socket):
        super().__init__(spec.name, recv_sock)
        self.spec = spec
        self.send_sock = send_sock
        self._send = send_sock.send  # type: ignore[method-assign, assignment]
        self.own_port: int = send_sock.getsockname()[1]
        self._local = LocalAddresses()

    def admit(self, sender: Address, size: int) -> bool:
        if sender[1] == self.own_port and sender[0] in self._local:
            self.stats.drops[counters.OWN_ECHO] += 1
            return False
        return True

    def egress_fd(self) -> socket.socket:
        return self.send_sock

    def close(self) -> None:
        super().close()
        self.send_sock.close()


def no_interface_hint(interface: str | None, knob: str | None = "if") -> str:
    """What to do when a multicast group cannot be joined or reached on ``interface``.

    ``knob`` is the option that names the interface's address (``if=``, ``local=``), if any.
    """
    if interface:
        return f"is {interface} the address of an interface that is up? (see: ip addr)"
    hint = "no interface for multicast: add a route (ip route add 224.0.0.0/4 dev IFACE)"
    return hint + (f" or choose one with {knob}=ADDR" if knob else "")


def join_group(
    sock: socket.socket,
    group: str,
    interface: str | None,
    option: str,
    *,
    knob: str | None = "if",
) -> None:
    """Join ``group`` on ``interface`` (a local address; None: the route's), or StartupError."""
    membership = socket.inet_aton(group) + socket.inet_aton(interface or "0.0.0.0")
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    except OSError as exc:
        hint = no_interface_hint(interface, knob)
        raise StartupError(f"{option}: cannot join group {group}: {exc.strerror}; {hint}") from None


def set_multicast_sending(
    sock: socket.socket, *, ttl: int, loop: bool, interface: str | None
) -> None:
    """The TTL, loopback and (given a local address) interface of the multicast ``sock`` sends."""
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loop))
    if interface:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))


def open_mcast_port(spec: McastSpec) -> McastPort:
    """Join the group and open the send socket, or raise StartupError."""
    option = f"-mcast {spec}"
    group = (spec.group, spec.port)
    with contextlib.ExitStack() as on_error:
        recv_sock = on_error.enter_context(udp_socket())
        recv_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bind(recv_sock, group, option)
        join_group(recv_sock, spec.group, spec.interface, option)
        send_sock = on_error.enter_context(udp_socket(receives=False))
        bind(send_sock, (spec.interface or "0.0.0.0", 0), option)
        try:
            set_multicast_sending(send_sock, ttl=spec.ttl, loop=True, interface=spec.interface)
            send_sock.connect(group)
        except OSError as exc:
            hint = (
                no_interface_hint(spec.interface)
                if exc.errno in (errno.ENETUNREACH, errno.ENODEV, errno.EHOSTUNREACH)
                else "check the group and the interface"
            )
            raise StartupError(
                f"{option}: cannot send to {spec.group}:{spec.port}: {exc.strerror}; {hint}"
            ) from None
        on_error.pop_all()
    return McastPort(spec, recv_sock, send_sock)
