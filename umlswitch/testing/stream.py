"""Harness ports that attach as QEMU's ``-netdev stream`` does: one stream connection to a
``--stream`` listener, every frame preceded by its 4-byte big-endian length.

They have the API of the daemon-transport ports (``send``, ``receive``, ``receive_bytes``,
``collect``, ``ether``, ``mac``, ``close``), so a test can run the same checks over either link:
``attach(address, transport="stream")`` and ``attach_sync(address, transport="stream")`` make
them, with ``address`` a listener as the switch names it (``unix:PATH``, ``tcp:HOST:PORT``; a
bare path means ``unix:``), e.g. ``RunningSwitch.stream_addresses[0]``.
"""

from __future__ import annotations

import socket
import time

import trio
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from umlswitch.ports.stream.framing import HEADER, HEADER_LEN
from umlswitch.testing.match import Match, matches
from umlswitch.testing.port import AsyncPort, SyncPort, _Identity

READ_SIZE = 65536


def stream_address(address: str) -> tuple[socket.AddressFamily, str | tuple[str, int]]:
    """``unix:PATH`` / a path -> (AF_UNIX, PATH); ``tcp:HOST:PORT`` -> (AF_INET, (HOST, PORT))."""
    kind, sep, rest = address.partition(":")
    if sep and kind == "tcp":
        host, _, port = rest.rpartition(":")
        return socket.AF_INET, (host or "127.0.0.1", int(port))
    if sep and kind == "unix":
        return socket.AF_UNIX, rest
    return socket.AF_UNIX, address


def _take_record(buffer: bytearray) -> bytes | None:
    """The first complete record's frame, removed from ``buffer``; None if none is complete."""
    if len(buffer) < HEADER_LEN:
        return None
    (length,) = HEADER.unpack_from(buffer)
    end = HEADER_LEN + length
    if len(buffer) < end:
        return None
    frame = bytes(buffer[HEADER_LEN:end])
    del buffer[:end]
    return frame


class SyncStreamPort(SyncPort):
    """A blocking stream port. Use ``attach_sync(address, transport="stream")``."""

    def __init__(
        self, address: str, *, mac: str | bytes | None = None, timeout: float = 5.0
    ) -> None:
        _Identity.__init__(self, mac)
        family, target = stream_address(address)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self._buffer = bytearray()
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(target)
            if family == socket.AF_INET:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            self.sock.close()
            raise

    def send(self, frame: Packet | bytes) -> None:
        data = self._bytes(frame)
        self.sock.sendall(HEADER.pack(len(data)) + data)

    def receive_bytes(self, timeout: float = 2.0, match: Match = None) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            frame = _take_record(self._buffer)
            if frame is not None:
                if match is None or matches(Ether(frame), match):
                    return frame
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching frame within {timeout} s")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(READ_SIZE)
            except TimeoutError:
                raise TimeoutError(f"no matching frame within {timeout} s") from None
            if not chunk:
                raise ConnectionError("the switch closed the stream connection")
            self._buffer += chunk

    def close(self) -> None:
        """Detach: the switch forgets the port when the connection closes."""
        self.sock.close()


class AsyncStreamPort(AsyncPort):
    """A trio stream port. Use ``async with attach(address, transport="stream")``."""

    def __init__(self, mac: str | bytes | None = None) -> None:
        _Identity.__init__(self, mac)
        self._sock: trio.socket.SocketType | None = None
        self._buffer = bytearray()

    async def _connect(self, ctl: str, timeout: float) -> None:
        family, target = stream_address(ctl)
        with trio.fail_after(timeout):
            self._sock = trio.socket.socket(family, socket.SOCK_STREAM)
            await self._sock.connect(target)
            if family == socket.AF_INET:
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _stream(self) -> trio.socket.SocketType:
        if self._sock is None:
            raise ConnectionError("not connected")
        return self._sock

    async def send(self, frame: Packet | bytes) -> None:
        data = self._bytes(frame)
        record = memoryview(HEADER.pack(len(data)) + data)
        sock = self._stream()
        while record:
            sent = await sock.send(record)
            record = record[sent:]

    async def _record(self) -> bytes:
        while True:
            frame = _take_record(self._buffer)
            if frame is not None:
                return frame
            chunk = await self._stream().recv(READ_SIZE)
            if not chunk:
                raise ConnectionError("the switch closed the stream connection")
            self._buffer += chunk

    async def receive_bytes(self, timeout: float = 2.0, match: Match = None) -> bytes:
        with trio.move_on_after(timeout):
            while True:
                raw = await self._record()
                if match is None or matches(Ether(raw), match):
                    return raw
        raise TimeoutError(f"no matching frame within {timeout} s")

    async def collect(self, duration: float, match: Match = None) -> list[Ether]:
        frames: list[Ether] = []
        with trio.move_on_after(duration):
            while True:
                packet = Ether(await self._record())
                if matches(packet, match):
                    frames.append(packet)
        return frames

    def close(self) -> None:
        """Detach: the switch forgets the port when the connection closes."""
        if self._sock is not None:
            self._sock.close()
