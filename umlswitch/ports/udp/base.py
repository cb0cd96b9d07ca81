"""What the UDP port kinds share: the ingress loop that sees each sender, and socket set-up.

A UDP port's peer sends raw ethernet frames, one per datagram, with no header (UML ``eth0=mcast``
and ``eth0=ucast``, QEMU ``-netdev socket``/``dgram``). Unlike a unix client's connected socket,
a UDP socket hears anybody, so the ingress asks the port, for every datagram, whether its
sender is admitted (``UdpPort.admit``) before the frame goes to the fabric. The VXLAN overlay
ports (``overlay/vxlan.py``, ``overlay/vxvde.py``) read with the same batched reader,
``udp_reader``, and a handler of their own that checks and strips the VXLAN header. The readers
run in the data-plane thread. Set-up
failures are ``StartupError`` with one line naming the option and what to do; the daemon reports
it and exits 1.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from umlswitch.errors import StartupError, bind_hint
from umlswitch.fabric.fabric import Fabric
from umlswitch.ports.base import (
    RCVBUF,
    Port,
    ReadArea,
    Source,
    count_receive_error,
    read_datagrams,
)

Address = tuple[str, int]


class UdpPort(Port):
    """A port reached over UDP. Subclasses decide whose datagrams are frames of this port."""

    def __init__(self, name: str, recv_sock: socket.socket) -> None:
        super().__init__(0, name)  # the daemon gives it its number when it attaches it
        self.recv_sock = recv_sock

    def admit(self, sender: Address, size: int) -> bool:
        """Whether a datagram of ``size`` bytes from ``sender`` is a frame of this port."""
        raise NotImplementedError

    def sources(self, fabric: Fabric, area: ReadArea) -> list[Source]:
        max_frame = fabric.max_frame
        admit = self.admit

        def handle(view: memoryview, size: int, sender: Address) -> None:
            # Runts are counted by the fabric, giants there too (MSG_TRUNC: the real length).
            if admit(sender, size):
                full = fabric.receive(self, view, size)
                if full:
                    self.held_by(full)

        return [udp_source(self.recv_sock, self, max_frame + 1, handle)]

    def close(self) -> None:
        self.recv_sock.close()


DatagramHandler = Callable[[memoryview, int, Address], None]


def udp_source(sock: socket.socket, port: Port, bufsize: int, handle: DatagramHandler) -> Source:
    """The UDP ports' ingress: ``base.read_datagrams``, with a receive error (such as
    ECONNREFUSED after an ICMP error) counted on ``port`` and logged at a bounded rate; the port
    stays up."""
    buf = bytearray(bufsize)

    def on_error(exc: OSError) -> None:
        count_receive_error(port, exc, "; the port stays up")

    def read() -> None:
        read_datagrams(sock, buf, handle, on_error)

    return Source(sock, read, port)


def udp_socket(*, receives: bool = True) -> socket.socket:
    """A non-blocking IPv4 UDP socket; one that ``receives`` gets a large receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if receives:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    return sock


def bind(
    sock: socket.socket,
    address: Address,
    option: str,
    *,
    users: str = "another switch or a guest",
) -> None:
    """Bind ``sock``, or close it and raise StartupError saying what to do.

    ``users`` says who else is likely to hold the port, for the message.
    """
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        host, port = address
        hint = bind_hint(exc, "UDP", host, port, users)
        raise StartupError(f"{option}: cannot bind {host}:{port}: {exc.strerror}; {hint}") from None
