"""Attach to a switch exactly as a UML guest does, and exchange scapy packets or raw bytes.

The port binds its data socket to a 108-byte abstract name (so its address length is the full 110
bytes, as UML's), sends the 124-byte v3 request on the control socket, reads the 110-byte reply,
and sends frames to the address in it. Detaching closes the control connection.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from itertools import count
from types import TracebackType
from typing import Self

import trio
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from umlswitch.fabric.frame import format_mac, parse_mac
from umlswitch.ports.unix import control
from umlswitch.testing.fence import BROADCAST, check_fence_arrived, fence_frame, is_fence
from umlswitch.testing.match import Match, matches

_tags = count(1)
MAX_FRAME = 65536
# How a harness port reaches the switch: a UML guest's control handshake and datagram socket, or
# one stream connection with QEMU's length framing (to a --stream listener).
TRANSPORTS = ("daemon", "stream")


def _own_address() -> bytes:
    name = f"\0umlswitch-testing-{os.getpid()}-{next(_tags)}".encode()
    return name.ljust(control.SUN_PATH_LEN, b"\0")


def _reply_address(reply: bytes) -> bytes | str:
    (family,) = struct.unpack_from("<H", reply)
    if family != socket.AF_UNIX or len(reply) != control.SOCKADDR_UN_LEN:
        raise ConnectionError(f"bad reply from the switch: {reply[:16].hex()}…")
    path = reply[2:]
    return path if path[:1] == b"\0" else path.split(b"\0", 1)[0].decode()


def _random_mac() -> bytes:
    return bytes([0x02]) + os.urandom(5)


class _Identity:
    """What every harness port has, whatever its transport: a MAC, and frames from it."""

    def __init__(self, mac: str | bytes | None) -> None:
        if mac is None:
            self.mac_bytes = _random_mac()
        elif isinstance(mac, bytes):
            self.mac_bytes = mac
        else:
            self.mac_bytes = parse_mac(mac)

    @property
    def mac(self) -> str:
        """This port's MAC (used as the source of packets sent without one)."""
        return format_mac(self.mac_bytes)

    def ether(self, dst: str = "ff:ff:ff:ff:ff:ff", **fields: object) -> Ether:
        """An ``Ether`` header from this port's MAC."""
        header = Ether(src=self.mac, dst=dst)
        for name, value in fields.items():
            header.setfieldval(name, value)
        return header

    def _bytes(self, frame: Packet | bytes) -> bytes:
        if isinstance(frame, bytes | bytearray | memoryview):
            return bytes(frame)
        if isinstance(frame, Ether) and frame.fields.get("src") is None:
            frame = frame.copy()
            frame.src = self.mac
        return bytes(frame)


class _PortBase(_Identity):
    """A port with a datagram data socket, as a UML guest's."""

    def __init__(self, mac: str | bytes | None) -> None:
        super().__init__(mac)
        self.data = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.data.bind(_own_address())
        self.switch_address: bytes | str = b""


class SyncPort(_PortBase):
    """A blocking port, for scripts and non-trio suites. Use ``attach_sync``."""

    def __init__(self, ctl: str, *, mac: str | bytes | None = None, timeout: float = 5.0) -> None:
        super().__init__(mac)
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.ctl.settimeout(timeout)
            self.ctl.connect(ctl)
            self.ctl.sendall(control.encode_v3(self.data.getsockname()))
            reply = b""
            while len(reply) < control.SOCKADDR_UN_LEN:
                chunk = self.ctl.recv(control.SOCKADDR_UN_LEN - len(reply))
                if not chunk:
                    raise ConnectionError(f"switch at {ctl} closed the connection without a reply")
                reply += chunk
            self.switch_address = _reply_address(reply)
        except BaseException:
            self.close()
            raise

    def send(self, frame: Packet | bytes) -> None:
        """Send one frame (a scapy packet, its Ether src filled in if unset, or raw bytes)."""
        self.data.sendto(self._bytes(frame), self.switch_address)

    def receive_bytes(self, timeout: float = 2.0, match: Match = None) -> bytes:
        """The next frame that passes ``match``; TimeoutError if none comes within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching frame within {timeout} s")
            self.data.settimeout(remaining)
            try:
                raw = self.data.recv(MAX_FRAME)
            except TimeoutError:
                raise TimeoutError(f"no matching frame within {timeout} s") from None
            if match is None or matches(Ether(raw), match):
                return raw

    def receive(self, timeout: float = 2.0, match: Match = None) -> Ether:
        """Like ``receive_bytes``, as a scapy ``Ether``."""
        return Ether(self.receive_bytes(timeout, match))

    def collect(self, duration: float, match: Match = None) -> list[Ether]:
        """Every matching frame that arrives within ``duration`` seconds."""
        frames: list[Ether] = []
        deadline = time.monotonic() + duration
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                frames.append(self.receive(remaining, match))
            except TimeoutError:
                break
        return frames

    def fence(
        self, *receivers: SyncPort, dst: str | bytes = BROADCAST, timeout: float = 5.0
    ) -> list[list[Ether]]:
        """Send a fence frame (``umlswitch.testing.fence``) and read each receiver up to it:
        per receiver, the frames that arrived before the fence (all that will ever arrive of
        what this port sent before it). FenceNotDelivered if a receiver never gets the fence."""
        fence = fence_frame(self.mac_bytes, dst if isinstance(dst, bytes) else parse_mac(dst))
        self.send(fence)
        return [_read_to_fence_sync(receiver, fence, timeout) for receiver in receivers]

    def close(self) -> None:
        """Detach: the switch forgets the port when the control connection closes."""
        if hasattr(self, "ctl"):
            self.ctl.close()
        self.data.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _read_to_fence_sync(receiver: SyncPort, fence: bytes, timeout: float) -> list[Ether]:
    before: list[Ether] = []
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            raw = receiver.receive_bytes(remaining)
        except TimeoutError:
            break
        if is_fence(raw, fence):
            return before
        before.append(Ether(raw))
    check_fence_arrived(False, timeout)
    return before


def attach_sync(
    ctl: str,
    *,
    mac: str | bytes | None = None,
    timeout: float = 5.0,
    transport: str = "daemon",
) -> SyncPort:
    """Attach a blocking port to the switch whose control socket is ``ctl``.

    ``transport="stream"``: connect as QEMU's ``-netdev stream`` does instead, to ``ctl`` =
    a ``--stream`` listener (``unix:PATH``, ``tcp:HOST:PORT``, or a socket path).
    """
    if transport == "stream":
        from umlswitch.testing.stream import SyncStreamPort

        return SyncStreamPort(ctl, mac=mac, timeout=timeout)
    _check_transport(transport)
    return SyncPort(ctl, mac=mac, timeout=timeout)


def _check_transport(transport: str) -> None:
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")


class AsyncPort(_PortBase):
    """A trio port. Use ``async with attach(ctl) as port``."""

    def __init__(self, mac: str | bytes | None = None) -> None:
        super().__init__(mac)
        self.data.setblocking(False)
        self._data = trio.socket.from_stdlib_socket(self.data)
        self._ctl: trio.socket.SocketType | None = None

    async def _connect(self, ctl: str, timeout: float) -> None:
        with trio.fail_after(timeout):
            self._ctl = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await self._ctl.connect(ctl)
            await self._ctl.send(control.encode_v3(self.data.getsockname()))
            reply = b""
            while len(reply) < control.SOCKADDR_UN_LEN:
                chunk = await self._ctl.recv(control.SOCKADDR_UN_LEN - len(reply))
                if not chunk:
                    raise ConnectionError(f"switch at {ctl} closed the connection without a reply")
                reply += chunk
            self.switch_address = _reply_address(reply)

    async def send(self, frame: Packet | bytes) -> None:
        """Send one frame (a scapy packet, its Ether src filled in if unset, or raw bytes)."""
        await self._data.sendto(self._bytes(frame), self.switch_address)

    async def receive_bytes(self, timeout: float = 2.0, match: Match = None) -> bytes:
        """The next frame that passes ``match``; TimeoutError if none comes within ``timeout``."""
        with trio.move_on_after(timeout):
            while True:
                raw = await self._data.recv(MAX_FRAME)
                if match is None or matches(Ether(raw), match):
                    return raw
        raise TimeoutError(f"no matching frame within {timeout} s")

    async def receive(self, timeout: float = 2.0, match: Match = None) -> Ether:
        """Like ``receive_bytes``, as a scapy ``Ether``."""
        return Ether(await self.receive_bytes(timeout, match))

    async def collect(self, duration: float, match: Match = None) -> list[Ether]:
        """Every matching frame that arrives within ``duration`` seconds."""
        frames: list[Ether] = []
        with trio.move_on_after(duration):
            while True:
                raw = await self._data.recv(MAX_FRAME)
                packet = Ether(raw)
                if matches(packet, match):
                    frames.append(packet)
        return frames

    async def fence(
        self, *receivers: AsyncPort, dst: str | bytes = BROADCAST, timeout: float = 5.0
    ) -> list[list[Ether]]:
        """Send a fence frame (``umlswitch.testing.fence``) and read each receiver up to it:
        per receiver, the frames that arrived before the fence (all that will ever arrive of
        what this port sent before it). FenceNotDelivered if a receiver never gets the fence."""
        fence = fence_frame(self.mac_bytes, dst if isinstance(dst, bytes) else parse_mac(dst))
        await self.send(fence)
        return [await _read_to_fence(receiver, fence, timeout) for receiver in receivers]

    def close(self) -> None:
        """Detach: the switch forgets the port when the control connection closes."""
        if self._ctl is not None:
            self._ctl.close()
        self._data.close()


async def _read_to_fence(receiver: AsyncPort, fence: bytes, timeout: float) -> list[Ether]:
    before: list[Ether] = []
    with trio.move_on_after(timeout):
        while True:
            raw = await receiver.receive_bytes(timeout + 1)  # the scope ends first
            if is_fence(raw, fence):
                return before
            before.append(Ether(raw))
    check_fence_arrived(False, timeout)
    return before


class attach:
    """``async with attach(ctl, mac=...) as port``: a trio port, detached on exit.

    ``transport="stream"``: connect as QEMU's ``-netdev stream`` does instead, to ``ctl`` = a
    ``--stream`` listener (``unix:PATH``, ``tcp:HOST:PORT``, or a socket path).
    """

    def __init__(
        self,
        ctl: str,
        *,
        mac: str | bytes | None = None,
        timeout: float = 5.0,
        transport: str = "daemon",
    ):
        _check_transport(transport)
        self._ctl = ctl
        self._mac = mac
        self._timeout = timeout
        self._transport = transport
        self._port: AsyncPort | None = None

    async def __aenter__(self) -> AsyncPort:
        port: AsyncPort
        if self._transport == "stream":
            from umlswitch.testing.stream import AsyncStreamPort

            port = AsyncStreamPort(self._mac)
        else:
            port = AsyncPort(self._mac)
        try:
            await port._connect(self._ctl, self._timeout)
        except BaseException:
            port.close()
            raise
        self._port = port
        return port

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._port is not None:
            self._port.close()
