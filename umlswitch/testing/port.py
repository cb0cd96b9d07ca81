"""Attach to a switch exactly as a UML guest does, and exchange scapy packets or raw bytes.

The port binds its data socket to a 108-byte abstract name (so its address length is the full 110
bytes, as UML's, and bytes after the name are garbage, as UML leaves them), sends the 124-byte v3
request on the control socket, reads the 110-byte reply, and sends frames to the address in it.
Detaching closes the control connection.

The other clients of a switch are a keyword away (``attach``, ``attach_sync``):

* ``dialect="v1"``: the request of older UML kernels;
* ``dialect="v0"``: the oldest UML's, which gets no reply: the port sends its frames to the
  switch's shared data socket, ``data_path=`` (DATA of ``-unix CTL DATA``), and may not be
  attached yet when ``attach`` returns (the switch attaches it when it reads the request);
* ``dialect="vde"``: libvdeplug's v3, with a ``description=`` and a ``requested_port=`` (as
  ``vde:///DIR[N]``); 0 lets the switch choose;
* ``address=``: the port's own data address instead of a new guest-like one: bytes for an
  abstract name (padded to 108 bytes), or a path, as libvdeplug binds.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
import time
from dataclasses import dataclass
from itertools import count
from types import TracebackType
from typing import Self

import trio
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from umlswitch.fabric.frame import format_mac, parse_mac
from umlswitch.ports.unix import control
from umlswitch.testing.fence import (
    BROADCAST,
    fence_frame,
    frames_before_fence,
    frames_before_fence_sync,
)
from umlswitch.testing.match import Match, matches

_tags = count(1)
MAX_FRAME = 65536
# How a harness port reaches the switch: a UML guest's control handshake and datagram socket, or
# one stream connection with QEMU's length framing (to a --stream listener).
TRANSPORTS = ("daemon", "stream")
# The control requests a port can attach with (see the module docstring).
DIALECTS = ("v3", "v1", "v0", "vde")
VDE_DESCRIPTION = "umlswitch.testing"  # a vde port's description unless one is given


def guest_address() -> bytes:
    """A new abstract address as a UML guest's: a NUL, a unique name, a NUL and garbage, 108
    bytes in all (a switch must use all of them: trimmed, it is another address)."""
    name = f"\0umlswitch-testing-{os.getpid()}-{next(_tags)}\0".encode() + os.urandom(8)
    return name.ljust(control.SUN_PATH_LEN, b"\0")


def _reply_address(reply: bytes) -> bytes | str:
    (family,) = struct.unpack_from("<H", reply)
    if family != socket.AF_UNIX or len(reply) != control.SOCKADDR_UN_LEN:
        raise ConnectionError(f"bad reply from the switch: {reply[:16].hex()}…")
    path = reply[2:]
    return path if path[:1] == b"\0" else path.split(b"\0", 1)[0].decode()


def _random_mac() -> bytes:
    return bytes([0x02]) + os.urandom(5)


@dataclass(frozen=True)
class Handshake:
    """How a port attaches on the control socket: the request's dialect and what it carries
    (see the module docstring); ValueError for options that do not go together."""

    dialect: str = "v3"
    description: str | None = None  # vde only
    requested_port: int = 0  # vde only
    data_path: str | None = None  # v0 only, which needs it: the switch's shared data socket
    address: bytes | str | None = None  # the port's own data address; None: a fresh abstract one

    def __post_init__(self) -> None:
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, not {self.dialect!r}")
        if self.dialect != "vde" and (self.description is not None or self.requested_port):
            raise ValueError("description= and requested_port= go with dialect='vde'")
        if (self.dialect == "v0") != (self.data_path is not None):
            raise ValueError(
                "data_path= (the switch's shared data socket, DATA of -unix CTL DATA) goes with "
                "dialect='v0', which needs it"
            )

    def request(self, address: bytes | str, mac: bytes) -> bytes:
        """The control request naming ``address`` as the port's data socket."""
        sun_path = os.fsencode(address) if isinstance(address, str) else address
        if self.dialect == "v0":
            return control.encode_v0(sun_path, mac)
        if self.dialect == "v1":
            return control.encode_v1(sun_path, mac)
        if self.dialect == "vde":
            text = VDE_DESCRIPTION if self.description is None else self.description
            return control.encode_v3(sun_path, port=self.requested_port, description=text)
        return control.encode_v3(sun_path)


GUEST = Handshake()  # a UML guest's: v3, a fresh abstract address


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

    def _fence(self, dst: str | bytes) -> bytes:
        return fence_frame(self.mac_bytes, dst if isinstance(dst, bytes) else parse_mac(dst))


class _PortBase(_Identity):
    """A port with a datagram data socket, as a UML guest's."""

    def __init__(self, mac: str | bytes | None, handshake: Handshake = GUEST) -> None:
        super().__init__(mac)
        address = handshake.address
        if address is None:
            address = guest_address()
        elif isinstance(address, bytes) and address[:1] == b"\0":
            address = address.ljust(control.SUN_PATH_LEN, b"\0")
        self.address: bytes | str = address
        """This port's own data address: an abstract name (bytes) or a path."""
        self.dialect = handshake.dialect
        self._request = handshake.request(address, self.mac_bytes)
        data_path = handshake.data_path
        self.switch_address: bytes | str = data_path if data_path is not None else b""
        self.data = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.data.bind(address)
        except BaseException:
            self.data.close()
            raise


class SyncPort(_PortBase):
    """A blocking port, for scripts and non-trio suites. Use ``attach_sync``."""

    def __init__(
        self,
        ctl: str,
        *,
        mac: str | bytes | None = None,
        timeout: float = 5.0,
        handshake: Handshake = GUEST,
    ) -> None:
        super().__init__(mac, handshake)
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.ctl.settimeout(timeout)
            self.ctl.connect(ctl)
            self.ctl.sendall(self._request)
            if self.dialect == "v0":
                return  # no reply: frames go to the shared data socket
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

    def send_fence(self, dst: str | bytes = BROADCAST) -> bytes:
        """Send a fence frame and return it, to read receivers that are not harness ports up to
        it (``frames_before_fence_sync``); ``fence`` does both for harness ports."""
        fence = self._fence(dst)
        self.send(fence)
        return fence

    def fence(
        self, *receivers: SyncPort, dst: str | bytes = BROADCAST, timeout: float = 5.0
    ) -> list[list[Ether]]:
        """Send a fence frame (``umlswitch.testing.fence``) and read each receiver up to it:
        per receiver, the frames that arrived before the fence (all that will ever arrive of
        what this port sent before it). FenceNotDelivered if a receiver never gets the fence."""
        fence = self.send_fence(dst)
        return [
            [Ether(raw) for raw in frames_before_fence_sync(receiver.receive_bytes, fence, timeout)]
            for receiver in receivers
        ]

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


class AsyncPort(_PortBase):
    """A trio port. Use ``async with attach(ctl) as port``."""

    def __init__(self, mac: str | bytes | None = None, handshake: Handshake = GUEST) -> None:
        super().__init__(mac, handshake)
        self.data.setblocking(False)
        self._data = trio.socket.from_stdlib_socket(self.data)
        self._ctl: trio.socket.SocketType | None = None

    async def _connect(self, ctl: str, timeout: float) -> None:
        with trio.fail_after(timeout):
            self._ctl = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await self._ctl.connect(ctl)
            await self._ctl.send(self._request)
            if self.dialect == "v0":
                return  # no reply: frames go to the shared data socket
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

    async def send_fence(self, dst: str | bytes = BROADCAST) -> bytes:
        """Send a fence frame and return it, to read receivers that are not harness ports up to
        it (``frames_before_fence``); ``fence`` does both for harness ports."""
        fence = self._fence(dst)
        await self.send(fence)
        return fence

    async def fence(
        self, *receivers: AsyncPort, dst: str | bytes = BROADCAST, timeout: float = 5.0
    ) -> list[list[Ether]]:
        """Send a fence frame (``umlswitch.testing.fence``) and read each receiver up to it:
        per receiver, the frames that arrived before the fence (all that will ever arrive of
        what this port sent before it). FenceNotDelivered if a receiver never gets the fence."""
        fence = await self.send_fence(dst)
        found = []
        for receiver in receivers:
            # receive_bytes' own timeout is longer: frames_before_fence's deadline ends it first
            receive = functools.partial(receiver.receive_bytes, timeout + 1)
            found.append([Ether(raw) for raw in await frames_before_fence(receive, fence, timeout)])
        return found

    def close(self) -> None:
        """Detach: the switch forgets the port when the control connection closes."""
        if self._ctl is not None:
            self._ctl.close()
        self._data.close()
