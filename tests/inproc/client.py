"""A trio client that attaches to a switch exactly as a UML guest (``eth0=daemon``) does.

The sequence is UML's (PROTOCOLS.md §1a): connect a SOCK_STREAM socket to the control path; bind a
SOCK_DGRAM socket to an abstract name of the full 108 bytes (so the kernel sees addrlen 110, as
from UML); write the request; read the 110-byte ``struct sockaddr_un`` reply; then exchange raw
ethernet frames, one per datagram. Requests are packed here with ``struct`` from the documented
layouts, independently of ``umlswitch.ports.unix.control``, so a client doubles as a check of the
wire format.

Every wait is bounded: ``recv`` and ``attach`` raise ``trio.TooSlowError`` instead of hanging.

Usage::

    async with await SwitchClient.attach(ctl_path) as client:
        await client.send(frame)
        frame = await client.recv()
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import socket
import struct
from types import TracebackType

import trio

MAGIC = 0xFEEDFACE
AF_UNIX = 1
SUN_PATH_LEN = 108
SOCKADDR_UN_LEN = 2 + SUN_PATH_LEN
REQ_NEW_CONTROL = 0
DEFAULT_TIMEOUT = 5.0
MAX_DATAGRAM = 65536

_tags = itertools.count(1)


def abstract_name(tag: str | None = None, *, garbage: bytes = b"") -> bytes:
    """A unique abstract name zero-padded to exactly 108 bytes.

    ``garbage`` is written from byte 12 on, as UML leaves uninitialised bytes there; two names
    that differ only in those bytes are different addresses.
    """
    if tag is None:
        tag = f"umlswitch-test-{os.getpid()}-{next(_tags)}"
    name = b"\0" + tag.encode()
    if garbage:
        if len(name) > 12:
            raise ValueError("with garbage, the tag must fit in bytes 1..11")
        name = name.ljust(12, b"\0") + garbage
    if len(name) > SUN_PATH_LEN:
        raise ValueError("abstract name longer than 108 bytes")
    return name.ljust(SUN_PATH_LEN, b"\0")


def sockaddr_un(path: bytes) -> bytes:
    """``struct sockaddr_un``: family AF_UNIX (u16, host order), then the 108-byte sun_path."""
    return struct.pack("=H108s", AF_UNIX, path)


def request_v3(address: bytes, *, version: int = 3, req_type: int = REQ_NEW_CONTROL) -> bytes:
    """``struct request_v3`` as UML writes it: magic, version, type, sockaddr, 2 padding bytes."""
    return struct.pack("=III", MAGIC, version, req_type) + sockaddr_un(address) + b"\0\0"


def request_v1(address: bytes, mac: bytes = b"\0" * 6) -> bytes:
    """uml_switch v1: magic, type, mac[6], sockaddr (124 bytes)."""
    return struct.pack("=II6s", MAGIC, REQ_NEW_CONTROL, mac) + sockaddr_un(address)


def request_v0(address: bytes, mac: bytes = b"\0" * 6) -> bytes:
    """uml_switch v0: type, mac[6], sockaddr (120 bytes, no magic, no reply)."""
    return struct.pack("=I6s", REQ_NEW_CONTROL, mac) + sockaddr_un(address)


def request_vde(address: bytes | str, *, port: int = 0, description: str = "test") -> bytes:
    """libvdeplug's packed v3 request with a requested port number and a description."""
    path = address.encode() if isinstance(address, str) else address
    head = struct.pack("=III", MAGIC, 3, (port << 8) | REQ_NEW_CONTROL)
    return head + sockaddr_un(path) + description.encode()


def parse_reply(reply: bytes) -> bytes | str:
    """The switch's data address from a 110-byte reply: all 108 bytes if abstract, else a path."""
    if len(reply) != SOCKADDR_UN_LEN:
        raise ValueError(f"reply of {len(reply)} bytes, expected {SOCKADDR_UN_LEN}")
    (family,) = struct.unpack_from("=H", reply)
    if family != AF_UNIX:
        raise ValueError(f"reply address family {family}, expected AF_UNIX")
    path = reply[2:]
    if path[:1] == b"\0":
        return path
    return path.split(b"\0", 1)[0].decode()


class AttachRefused(ConnectionError):
    """The switch closed the control connection instead of replying."""


class SwitchClient:
    """One attached client: its control connection and its datagram socket."""

    def __init__(
        self,
        ctl: trio.socket.SocketType,
        data: socket.socket,
        address: bytes | str,
        switch_address: bytes | str | None,
    ) -> None:
        self.ctl = ctl
        self.data = data
        self.address = address
        self.switch_address = switch_address
        self.shared = False  # v0: frames go to the switch's shared data socket with sendto
        # UML does not connect its data socket: it sends with sendto, and so the kernel bounds
        # its receive queue by net.unix.max_dgram_qlen. A connected socket has no such bound.
        self.connected = False
        self.closed = False

    # --- attaching ---------------------------------------------------------------------------

    @staticmethod
    async def open(control_path: str, address: bytes | str | None = None) -> SwitchClient:
        """Connect to the control socket and bind the data socket; send no request yet.

        ``address`` is a 108-byte abstract name (the default: a fresh one) or, as libvdeplug
        uses, a pathname.
        """
        address = abstract_name() if address is None else address
        if isinstance(address, bytes) and len(address) != SUN_PATH_LEN:
            raise ValueError("bind to the full 108-byte name, as UML does")
        ctl = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        data = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            await ctl.connect(control_path)
            data.setblocking(False)
            data.bind(address)
        except BaseException:
            ctl.close()
            data.close()
            raise
        return SwitchClient(ctl, data, address, None)

    @classmethod
    async def attach(
        cls,
        control_path: str,
        *,
        address: bytes | str | None = None,
        request: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect: bool = True,
    ) -> SwitchClient:
        """Attach as UML does (v3 by default; ``request`` may be any dialect with a reply).

        ``connect=False`` leaves the data socket unconnected, as UML's is, so that its receive
        queue holds only ``net.unix.max_dgram_qlen`` frames. Raises ``AttachRefused`` if the
        switch closes the connection without a reply.
        """
        client = await cls.open(control_path, address)
        try:
            with trio.fail_after(timeout):
                if request is None:
                    if not isinstance(client.address, bytes):
                        raise ValueError("UML binds an abstract name; pass a request for a path")
                    request = request_v3(client.address)
                await client.send_control(request)
                reply = await client.read_reply()
            client.switch_address = parse_reply(reply)
            if connect:
                client.data.connect(client.switch_address)
                client.connected = True
        except BaseException:
            client.close()
            raise
        return client

    @classmethod
    async def attach_v0(
        cls, control_path: str, data_path: str, *, address: bytes | None = None
    ) -> SwitchClient:
        """Attach as a v0 client: send the 120-byte request and expect no reply; frames then go
        to the shared data socket ``data_path`` with sendto. The switch registers the client
        asynchronously: frames sent before it has done so are dropped as from an unknown sender.
        """
        address = abstract_name() if address is None else address
        client = await cls.open(control_path, address)
        try:
            await client.send_control(request_v0(address))
        except BaseException:
            client.close()
            raise
        client.switch_address = data_path
        client.shared = True
        return client

    async def read_reply(self) -> bytes:
        reply = b""
        while len(reply) < SOCKADDR_UN_LEN:
            chunk = await self.ctl.recv(SOCKADDR_UN_LEN - len(reply))
            if not chunk:
                raise AttachRefused(
                    f"switch closed the control connection after {len(reply)} reply bytes"
                )
            reply += chunk
        return reply

    # --- control connection ------------------------------------------------------------------

    async def send_control(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = await self.ctl.send(view)
            view = view[sent:]

    async def recv_control(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """The next bytes on the control connection; ``b""`` when the switch closed it."""
        with trio.fail_after(timeout):
            return await self.ctl.recv(4096)

    def control_readable(self) -> bool:
        """Whether bytes or an EOF wait on the control connection right now (no waiting)."""
        readable, _, _ = select.select([self.ctl], [], [], 0)
        return bool(readable)

    # --- frames ------------------------------------------------------------------------------

    async def send(self, frame: bytes) -> None:
        """Send one frame, waiting while the switch's queue for us is full (never dropping)."""
        while True:
            try:
                if not self.connected:
                    assert self.switch_address is not None
                    self.data.sendto(frame, self.switch_address)
                else:
                    self.data.send(frame)
                return
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.data)

    async def recv(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """The next frame; raises ``trio.TooSlowError`` if none arrives within ``timeout``."""
        with trio.fail_after(timeout):
            while True:
                frame = self.recv_nowait()
                if frame is not None:
                    await trio.lowlevel.checkpoint()
                    return frame
                await trio.lowlevel.wait_readable(self.data)

    def recv_nowait(self) -> bytes | None:
        """The next frame already queued for us, or None."""
        try:
            return self.data.recv(MAX_DATAGRAM)
        except BlockingIOError:
            return None

    def pending(self) -> list[bytes]:
        """Every frame queued for us right now (drains the socket)."""
        frames = []
        while (frame := self.recv_nowait()) is not None:
            frames.append(frame)
        return frames

    # --- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close both sockets: the switch sees EOF on the control connection and detaches us."""
        if self.closed:
            return
        self.closed = True
        self.ctl.close()
        with contextlib.suppress(RuntimeError):  # outside trio nobody can be waiting on it
            trio.lowlevel.notify_closing(self.data)
        self.data.close()
        if isinstance(self.address, str):
            with contextlib.suppress(OSError):
                os.unlink(self.address)

    async def __aenter__(self) -> SwitchClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
