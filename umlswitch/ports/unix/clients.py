"""Client ports of the unix-socket family: each client's own data socket, and the shared one.

Every client that completes a v1/v3 handshake gets its own SOCK_DGRAM socket (``ClientPort``),
bound to a fresh abstract name (the full 108 bytes, zero-padded, as UML sends with the full
sockaddr length) or, for libvdeplug clients, a pathname beside the control socket, and
**connected to the client's own address before the reply**, so the kernel delivers to it only
what that client sends. Its ingress (``ClientPort.sources``, run in the data-plane thread) reads
a frame at a time, or a batch per system call (``recvmmsg``) while its queue is long, and its
egress sends a batch per call (``sendmmsg``), see ``ports/vectorio.py``. v0 clients (and the
``-unix CTL DATA`` form) share one data socket (``SharedDataSocket``) on which senders are
identified by their full address; datagrams from unregistered senders are dropped and counted,
never flooded.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
from dataclasses import replace

from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.fabric import Fabric
from umlswitch.ports.base import (
    BATCH,
    Frame,
    Port,
    PortInfo,
    ReadArea,
    Source,
    count_receive_error,
    ratelog,
    read_datagrams,
)
from umlswitch.ports.unix import control
from umlswitch.ports.vectorio import BatchSender

log = logging.getLogger("umlswitch.unix")

_TRUNC = socket.MSG_TRUNC  # a read returns the datagram's real length: giants are measured


def describe_address(address: bytes | str | None) -> str:
    """A readable form of a unix address: ``@name`` for abstract ones (garbage shown as hex)."""
    if not address:  # recvfrom gives None for an unbound sender
        return "(unbound socket)"
    if isinstance(address, str):
        return address
    name = address[1:]
    prefix, _, rest = name.partition(b"\0")
    if prefix and prefix.isascii() and prefix.decode("ascii").isprintable():
        return "@" + prefix.decode("ascii") + ("…" if rest.strip(b"\0") else "")
    name = name.rstrip(b"\0")
    return "@" + name[:16].hex() + ("…" if len(name) > 16 else "")


NAME_NUMBERS = itertools.count(1)


def abstract_name(tag: str) -> bytes:
    """A fresh 108-byte abstract socket name (leading NUL, zero padding to the full length)."""
    name = f"\0umlswitch-{os.getpid()}-{tag}-{next(NAME_NUMBERS)}".encode()
    return name.ljust(control.SUN_PATH_LEN, b"\0")


class ClientPort(Port):
    """A client with its own data socket, connected to the client's address."""

    kind = "unix"
    stp_edge = True  # a guest: an edge port of the spanning tree (forwards at once)

    def __init__(
        self,
        port_id: int,
        name: str,
        sock: socket.socket,
        path: str | None = None,
    ) -> None:
        super().__init__(port_id, name)
        self.sock = sock
        self.path = path  # our pathname socket file, removed on close
        self.owner: int | None = None  # uid owning the client's pathname socket (vde clients)
        self.local_address: bytes = sock.getsockname()
        if isinstance(self.local_address, str):
            self.local_address = os.fsencode(self.local_address)
        # Port.send_nowait, the hot path, calls the socket's own send with no method in between.
        self._send = sock.send  # type: ignore[method-assign, assignment]
        self._fd = sock.fileno()
        self._sender: BatchSender | None = None  # the data plane's, once it serves the port

    def send_batch(self, batch: FrameBatch, indices: list[int]) -> bool:
        # One sendmmsg for the batch's frames, unless there is nothing to gain (one frame) or
        # the backlog must go first. What the kernel did not take goes straight into the
        # backlog: the receiver's queue is full, another send would only fail.
        sender = self._sender
        if sender is None or len(indices) < 2 or self.backlog or not batch.address:
            return super().send_batch(batch, indices)
        try:
            sent = sender.send(self._fd, batch, indices)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._send_failed(exc)  # that frame is lost; the others go one by one
            return super().send_batch(batch, indices[1:])
        if sent:
            stats = self.stats
            stats.tx_frames += sent
            lengths = batch.lengths
            first = indices[0]
            if indices[sent - 1] - first == sent - 1:  # consecutive slots: summed in C
                stats.tx_bytes += sum(lengths[first : first + sent])
            else:
                stats.tx_bytes += sum([lengths[i] for i in indices[:sent]])
        enqueue = self._enqueue
        frame = batch.frame
        full = False
        for index in indices[sent:]:
            full = enqueue(frame(index))
        return full

    def egress_fd(self) -> socket.socket:
        return self.sock

    def sources(self, fabric: Fabric, area: ReadArea) -> list[Source]:
        self._sender = area.sender
        return [Source(self.sock, ClientReader(self, fabric, area), self)]

    def describe(self) -> PortInfo:
        return replace(super().describe(), data_socket=describe_address(self.local_address))

    def close(self) -> None:
        self.sock.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None


class SharedPort(Port):
    """A client reached through the shared data socket, identified by its full address.

    The shared socket is not connected, so it cannot tell when this client's queue has room
    again: the backlog is retried every ``RETRY_INTERVAL`` instead.
    """

    kind = "unix"
    stp_edge = True  # a guest: an edge port of the spanning tree (forwards at once)

    def __init__(self, port_id: int, name: str, shared: SharedDataSocket, address: bytes | str):
        super().__init__(port_id, name)
        self.address = address
        self._shared = shared

    def _send(self, frame: Frame) -> None:
        self._shared.sock.sendto(frame, self.address)

    def close(self) -> None:
        self._shared.unregister(self)


class SharedDataSocket:
    """The one data socket of uml_switch's v0 / ``-unix CTL DATA`` form."""

    def __init__(self, sock: socket.socket, path: str, fabric: Fabric) -> None:
        self.sock = sock
        self.path = path
        self.fabric = fabric
        self.unknown_senders = 0
        self._ports: dict[bytes | str, SharedPort] = {}

    def register(self, port: SharedPort) -> None:
        self._ports[port.address] = port

    def unregister(self, port: SharedPort) -> None:
        if self._ports.get(port.address) is port:
            del self._ports[port.address]

    def is_registered(self, address: bytes | str) -> bool:
        return address in self._ports

    def source(self) -> Source:
        """The shared socket's reader, for the data plane (no port of its own: never held)."""
        fabric = self.fabric
        max_frame = fabric.max_frame
        ports = self._ports

        def handle(view: memoryview, size: int, address: bytes | str | None) -> None:
            port = ports.get(address) if address else None
            if port is None:
                self.unknown_senders += 1
                ratelog.warning(
                    "unknown-sender",
                    "data socket %s: dropped %d-byte frame from unregistered sender %s",
                    self.path,
                    size,
                    describe_address(address),
                )
            else:
                full = fabric.receive(port, view, size)
                if full:
                    port.held_by(full)

        def on_error(exc: OSError) -> None:
            ratelog.warning("shared-recv", "data socket %s: receive failed: %s", self.path, exc)

        buf = bytearray(max_frame + 1)
        sock = self.sock

        def read() -> None:
            read_datagrams(sock, buf, handle, on_error)

        return Source(sock, read, None)


class ClientReader:
    """A client port's ingress, called by the data-plane loop when its socket is readable.

    A port is read a frame at a time (``recv_into``, then the fabric, then the egress send): a
    guest's socket takes ten frames, and a receiver on the other core drains them while the
    switch reads the next, where a batch would overflow it into the backlog (closed loop, window
    16, against batches: 1.10-1.34x frames/s). A port whose queue outruns a whole round of such
    reads is read a batch at a time from then on (``recvmmsg`` into the plane's shared
    ``FrameBatch``, ``Fabric.forward_batch``, one ``sendmmsg`` per egress port), until a batch
    comes back short: the open loop with 4 pairs ran 1.25x faster that way than frame by frame.
    A round stops early once the port is held (its frames filled a receiver's backlog).
    """

    __slots__ = ("area", "bulk", "fabric", "port")

    def __init__(self, port: ClientPort, fabric: Fabric, area: ReadArea) -> None:
        self.port = port
        self.fabric = fabric
        self.area = area
        self.bulk = False

    def __call__(self) -> None:
        port = self.port
        fabric = self.fabric
        try:
            receiver = self.area.receiver
            if self.bulk and receiver is not None:
                got = receiver.receive(port._fd)
                full = ()
                if got > 1:
                    full = fabric.forward_batch(port, receiver.batch)
                elif got:
                    full = fabric.receive(port, receiver.batch.view, receiver.batch.lengths[0])
                if full:
                    port.held_by(full)
                if got < receiver.capacity:
                    self.bulk = False
                return
            receive = fabric.receive  # the pipeline is re-composed between rounds only
            recv_into = port.sock.recv_into
            single, view = self.area.single, self.area.view
            for _ in range(BATCH):
                full = receive(port, view, recv_into(single, 0, _TRUNC))
                if full:
                    port.held_by(full)
                    return
            self.bulk = True  # its queue outran a round of single reads
        except BlockingIOError:
            pass
        except OSError as exc:
            count_receive_error(port, exc)
