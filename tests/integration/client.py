"""A blocking test client that attaches to a switch exactly as a UML guest (or a vde client) does.

It binds its data socket to a 108-byte abstract name (so the address length is the full 110 bytes,
as UML's), sends a control request in the chosen dialect, and exchanges raw frames. Used by the
integration tests against the real daemon running as a subprocess.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from itertools import count

from umlswitch.ports.unix import control

_tags = count(1)


def abstract_address(tag: str | None = None) -> bytes:
    """A unique 108-byte abstract address with UML-like garbage after the name."""
    tag = tag or f"umlswitch-test-{os.getpid()}-{next(_tags)}"
    name = b"\0" + tag.encode() + b"\0" + os.urandom(8)
    return name.ljust(control.SUN_PATH_LEN, b"\0")


class Client:
    """One attached port: a control connection plus a datagram socket."""

    def __init__(
        self,
        ctl_path: str,
        *,
        dialect: str = "v3",
        data_path: str | None = None,
        description: str | None = None,
        requested_port: int = 0,
        timeout: float = 5.0,
    ) -> None:
        self.address = abstract_address()
        self.data = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.data.bind(self.address)
        self.data.settimeout(timeout)
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl.settimeout(timeout)
        self.ctl.connect(ctl_path)
        self.switch_address: bytes | str
        if dialect == "v0":
            if data_path is None:
                raise ValueError("a v0 client needs the switch's shared data socket path")
            self.ctl.sendall(control.encode_v0(self.address))
            self.switch_address = data_path
            return
        if dialect == "v1":
            request = control.encode_v1(self.address)
        elif dialect == "v3":
            request = control.encode_v3(self.address)
        elif dialect == "vde":
            request = control.encode_v3(
                self.address, port=requested_port, description=description or "test"
            )
        else:
            raise ValueError(f"unknown dialect {dialect}")
        self.ctl.sendall(request)
        reply = b""
        while len(reply) < control.SOCKADDR_UN_LEN:
            chunk = self.ctl.recv(control.SOCKADDR_UN_LEN - len(reply))
            if not chunk:
                raise ConnectionError("switch closed the control connection without a reply")
            reply += chunk
        (family,) = struct.unpack_from("<H", reply)
        assert family == socket.AF_UNIX
        path = reply[2:]
        self.switch_address = path if path[:1] == b"\0" else path.split(b"\0")[0].decode()

    def send(self, frame: bytes) -> None:
        self.data.sendto(frame, self.switch_address)

    def recv(self, timeout: float = 2.0) -> bytes:
        self.data.settimeout(timeout)
        return self.data.recv(65536)

    def recv_all(self, quiet: float = 0.3) -> list[bytes]:
        """Every frame that arrives until nothing has come for ``quiet`` seconds."""
        frames = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                frames.append(self.recv(quiet))
            except TimeoutError:
                break
        return frames

    def close(self) -> None:
        self.ctl.close()
        self.data.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def frame(dst: bytes, src: bytes, payload: bytes = b"x" * 46, ethertype: int = 0x88B5) -> bytes:
    """A raw ethernet frame (local experimental ethertype by default)."""
    return dst + src + struct.pack("!H", ethertype) + payload


def mac(n: int) -> bytes:
    """A locally administered unicast MAC: 02:00:00:00:00:NN."""
    return bytes([2, 0, 0, 0, n >> 8 & 0xFF, n & 0xFF])
