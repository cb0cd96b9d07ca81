"""Pure codec of the uml_switch / vde_switch control protocol: bytes in, a request or an error out.

Dialects, all host byte order (little-endian on x86_64), as in PROTOCOLS.md §1a and §1c:

=========  ==========================================================  =======================
dialect    layout                                                      size
=========  ==========================================================  =======================
v0         type:u32 · mac[6] · sockaddr_un (no magic)                   120, no reply
v1         magic · type:u32 · mac[6] · sockaddr_un                      124 (+ vde description)
v3 (UML)   magic · version=3 · type:u32 · sockaddr_un · 2 pad bytes     124
v3 (vde)   magic · version=3 · type:u32 · sockaddr_un · description     122 + up to 128, packed
=========  ==========================================================  =======================

A v3 ``type`` carries the request in its low byte (0 = new control port, 1 = vde's management
port 0) and a requested port number in bits 8 and up. Version 2 and versions above 3 are refused.

The decoder is incremental (requests may arrive split across reads). A v3 request of 124 bytes
ending in two NUL bytes is UML's and complete at once; anything longer is a vde request whose
description ends when no more bytes arrive: the I/O layer calls ``finish()`` after a short quiet
period (vde clients send the request in one write).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = 0xFEEDFACE
MAGIC_BYTES = struct.pack("<I", MAGIC)
AF_UNIX = 1
SUN_PATH_LEN = 108
SOCKADDR_UN_LEN = 2 + SUN_PATH_LEN  # 110
MAX_DESCRIPTION = 128

REQ_NEW_CONTROL = 0
REQ_NEW_PORT0 = 1

V0_SIZE = 4 + 6 + SOCKADDR_UN_LEN  # 120
V1_SIZE = 4 + 4 + 6 + SOCKADDR_UN_LEN  # 124
V3_FIXED = 4 + 4 + 4 + SOCKADDR_UN_LEN  # 122
V3_UML_SIZE = V3_FIXED + 2  # 124: sizeof(struct request_v3) with its tail padding
MAX_REQUEST = V3_FIXED + MAX_DESCRIPTION  # 250


@dataclass(frozen=True)
class Request:
    """A decoded request for a new port."""

    dialect: str  # "v0", "v1", "v3-uml" or "v3-vde"
    address: bytes  # the client's raw 108-byte sun_path: the whole of it is the identity
    mac: bytes | None = None  # v0/v1 carry one; uml_switch ignores it and so do we
    requested_port: int | None = None  # vde: vde:///DIR[N]
    management: bool = False  # vde REQ_NEW_PORT0
    description: str = ""

    @property
    def is_abstract(self) -> bool:
        return self.address[:1] == b"\0"

    @property
    def peer_address(self) -> bytes | str:
        """The address to connect to, as Python takes it: all 108 bytes if abstract, else a path."""
        if self.is_abstract:
            return self.address
        return self.address.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class RequestError:
    """A request that cannot be served: ``counter`` names the reason, ``message`` explains it."""

    counter: str
    message: str


class NeedMore:
    """The request is incomplete; feed more bytes (or ``finish()`` once the client went quiet)."""

    def __init__(self, can_finish: bool) -> None:
        self.can_finish = can_finish

    def __repr__(self) -> str:
        return f"NeedMore(can_finish={self.can_finish})"


Decoded = Request | RequestError | NeedMore


def encode_sockaddr(sun_path: bytes) -> bytes:
    """A 110-byte ``struct sockaddr_un`` (family AF_UNIX, path zero-padded to 108 bytes)."""
    if len(sun_path) > SUN_PATH_LEN:
        raise ValueError("sun_path is longer than 108 bytes")
    return struct.pack("<H", AF_UNIX) + sun_path.ljust(SUN_PATH_LEN, b"\0")


def encode_v3(sun_path: bytes, *, port: int = 0, description: str | None = None) -> bytes:
    """A v3 request as UML sends it (124 bytes), or as libvdeplug does with a description."""
    head = MAGIC_BYTES + struct.pack("<II", 3, (port << 8) | REQ_NEW_CONTROL)
    body = head + encode_sockaddr(sun_path)
    if description is None:
        return body + b"\0\0"
    return body + description.encode()[:MAX_DESCRIPTION]


def encode_v1(sun_path: bytes, mac: bytes = b"\0" * 6) -> bytes:
    return MAGIC_BYTES + struct.pack("<I", REQ_NEW_CONTROL) + mac + encode_sockaddr(sun_path)


def encode_v0(sun_path: bytes, mac: bytes = b"\0" * 6) -> bytes:
    return struct.pack("<I", REQ_NEW_CONTROL) + mac + encode_sockaddr(sun_path)


def _error(counter: str, message: str) -> RequestError:
    return RequestError(counter, message)


def _sockaddr(raw: bytes) -> bytes | RequestError:
    (family,) = struct.unpack_from("<H", raw)
    if family != AF_UNIX:
        return _error("bad_request", f"client address family is {family}, not AF_UNIX (1)")
    path = raw[2:SOCKADDR_UN_LEN]
    if path == b"\0" * SUN_PATH_LEN:
        return _error("bad_request", "client address is empty")
    return path


class RequestDecoder:
    """Incremental decoder of one control request (see the module docstring)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> Decoded:
        self._buf += data
        return self._decode(final=False)

    def finish(self) -> Decoded:
        """Decode what has arrived, treating the client's silence as the end of the request."""
        return self._decode(final=True)

    def _decode(self, *, final: bool) -> Decoded:
        buf = bytes(self._buf)
        if len(buf) < 4:
            return self._short(final, "v0")
        if buf[:4] != MAGIC_BYTES:
            return self._v0(buf, final)
        if len(buf) < 8:
            return self._short(final, "v1/v3")
        (version,) = struct.unpack_from("<I", buf, 4)
        if version == 3:
            return self._v3(buf, final)
        if version == 2:
            return _error(
                "unsupported_version", "version 2 request refused: no client speaks it (use v3)"
            )
        if version > 3:
            return _error(
                "unsupported_version",
                f"request for a version {version} port, which this switch does not support",
            )
        return self._v1(buf, final)

    def _short(self, final: bool, what: str) -> Decoded:
        if final:
            return _error("bad_request", f"truncated {what} request ({len(self._buf)} bytes)")
        return NeedMore(can_finish=False)

    def _v0(self, buf: bytes, final: bool) -> Decoded:
        if len(buf) < V0_SIZE:
            return self._short(final, "v0")
        if len(buf) > V0_SIZE:
            return _error("bad_request", f"v0 request of {len(buf)} bytes (expected {V0_SIZE})")
        (req_type,) = struct.unpack_from("<I", buf, 0)
        if req_type != REQ_NEW_CONTROL:
            return _error("bad_request", f"bad magic and not a v0 request (type {req_type:#x})")
        address = _sockaddr(buf[10:])
        if isinstance(address, RequestError):
            return address
        return Request("v0", address, mac=buf[4:10])

    def _v1(self, buf: bytes, final: bool) -> Decoded:
        if len(buf) < V1_SIZE:
            return self._short(final, "v1")
        (req_type,) = struct.unpack_from("<I", buf, 4)
        if req_type != REQ_NEW_CONTROL:
            return _error("bad_request", f"v1 request of unknown type {req_type}")
        description = self._description(buf[V1_SIZE:], final)
        if not isinstance(description, str):
            return description
        address = _sockaddr(buf[14:])
        if isinstance(address, RequestError):
            return address
        return Request("v1", address, mac=buf[8:14], description=description)

    def _v3(self, buf: bytes, final: bool) -> Decoded:
        if len(buf) < V3_FIXED:
            return self._short(final, "v3")
        (req_type,) = struct.unpack_from("<I", buf, 8)
        kind, port = req_type & 0xFF, req_type >> 8
        if kind not in (REQ_NEW_CONTROL, REQ_NEW_PORT0):
            return _error("bad_request", f"v3 request of unknown type {kind}")
        tail = buf[V3_FIXED:]
        uml = len(buf) == V3_UML_SIZE and tail == b"\0\0"
        if uml:
            description = ""
        else:
            decoded = self._description(tail, final)
            if not isinstance(decoded, str):
                return decoded
            description = decoded
        address = _sockaddr(buf[12:])
        if isinstance(address, RequestError):
            return address
        return Request(
            "v3-uml" if uml else "v3-vde",
            address,
            requested_port=port or None,
            management=kind == REQ_NEW_PORT0,
            description=description,
        )

    def _description(self, tail: bytes, final: bool) -> str | Decoded:
        if len(tail) > MAX_DESCRIPTION:
            return _error(
                "bad_request", f"request too long ({len(self._buf)} bytes, max {MAX_REQUEST})"
            )
        if not final and len(tail) < MAX_DESCRIPTION:
            return NeedMore(can_finish=True)
        text = tail.split(b"\0", 1)[0].decode("utf-8", "replace")
        return "".join(ch if ch.isprintable() else "?" for ch in text)
