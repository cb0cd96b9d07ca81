"""Pure helpers for the tun/tap ioctls: ``struct ifreq`` packing, flags and name validation.

``struct ifreq`` (``<linux/if.h>``) is 40 bytes on x86_64: the interface name (``IFNAMSIZ`` = 16
bytes, NUL-terminated, so at most 15 bytes of name) followed by a 24-byte union whose first member,
for these ioctls, is the ``short`` ``ifr_flags`` in host byte order. TUNSETIFF attaches the file
descriptor of ``/dev/net/tun`` to the named device (creating it if it does not exist and the caller
has CAP_NET_ADMIN); SIOCGIFFLAGS reads the interface flags (IFF_UP) through any socket.
"""

from __future__ import annotations

import os
import struct

IFNAMSIZ = 16  # bytes, including the terminating NUL
MAX_NAME_LEN = IFNAMSIZ - 1
IFREQ_SIZE = 40
_IFREQ = struct.Struct(f"={IFNAMSIZ}sH{IFREQ_SIZE - IFNAMSIZ - 2}x")

# ioctl request numbers, as the kernel's _IOW/_IOR macros build them (asm-generic/ioctl.h).
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, kind: str, number: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | number


TUNSETIFF = _ioc(_IOC_WRITE, "T", 202, 4)  # _IOW('T', 202, int) = 0x400454ca
TUNGETIFF = _ioc(_IOC_READ, "T", 210, 4)  # _IOR('T', 210, unsigned int) = 0x800454d2
SIOCGIFFLAGS = 0x8913  # <linux/sockios.h>

# ifr_flags for TUNSETIFF (<linux/if_tun.h>)
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000  # no 4-byte packet-information header: each read/write is one raw frame
IFF_PERSIST = 0x0800  # reported by TUNGETIFF; a persistent tap outlives the file descriptor
# ifr_flags for SIOCGIFFLAGS (<linux/if.h>)
IFF_UP = 0x0001

TAP_FLAGS = IFF_TAP | IFF_NO_PI


class InvalidName(ValueError):
    """Not a name the kernel accepts for a network interface; the message says why."""


def validate_name(name: str) -> bytes:
    """The interface name as bytes, or InvalidName (the kernel's ``dev_valid_name`` rules).

    A name is 1 to 15 bytes, not ``.`` or ``..``, without ``/``, ``:``, NUL or whitespace. ``%``
    is refused too: the kernel would take ``tap%d`` as a template and pick a new name.
    """
    raw = os.fsencode(name)
    if not raw:
        raise InvalidName("the name is empty")
    if len(raw) > MAX_NAME_LEN:
        raise InvalidName(f"the name is {len(raw)} bytes long; at most {MAX_NAME_LEN} are allowed")
    if raw in (b".", b".."):
        raise InvalidName(f"'{name}' is not allowed")
    for char in "/:%\0":
        if char.encode() in raw:
            shown = "NUL" if char == "\0" else f"'{char}'"
            raise InvalidName(f"the name may not contain {shown}")
    if any(chr(byte).isspace() for byte in raw if byte < 0x80):
        raise InvalidName("the name may not contain whitespace")
    return raw


def pack_ifreq(name: bytes, flags: int = 0) -> bytes:
    """A 40-byte ``struct ifreq`` with ``ifr_name`` = ``name`` and ``ifr_flags`` = ``flags``."""
    if len(name) > MAX_NAME_LEN:
        raise InvalidName(f"the name is {len(name)} bytes long; at most {MAX_NAME_LEN} are allowed")
    return _IFREQ.pack(name, flags)


def unpack_ifreq(data: bytes) -> tuple[bytes, int]:
    """``(ifr_name, ifr_flags)`` of a ``struct ifreq`` returned by the kernel."""
    raw_name, flags = _IFREQ.unpack_from(data)
    return raw_name.split(b"\0", 1)[0], flags
