"""The VXLAN header (RFC 7348), shared by ``--vxlan`` and ``--vxvde``: pack and check. Pure.

Every datagram is this 8-byte header followed by one raw ethernet frame (no FCS)::

    offset 0: flags, 0x08 (I: the VNI is valid)   1..3: reserved, 0
    offset 4: VNI, 24 bits big-endian             7:    reserved, 0

The check is as strict as the peers we interoperate with: the Linux kernel drops a datagram whose
I flag is clear or that has any reserved bit set (``vxlan_rcv``), and vdeplug4's vxvde compares
all eight bytes with its own header. A datagram of exactly 8 bytes is vxvde's "goodbye" (the
sender is leaving); that is the port's business, not this module's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from umlswitch import counters

HEADER_LEN = 8
FLAG_VNI = 0x08  # the I flag
MAX_VNI = (1 << 24) - 1

_WORDS = struct.Struct("!II")
_FLAGS_WORD = FLAG_VNI << 24  # the first 32-bit word of every valid header


@dataclass(frozen=True)
class BadHeader:
    """Why a datagram's header is not a valid VXLAN header."""

    reason: str  # the drop counter: counters.VXLAN_SHORT or counters.VXLAN_BAD_FLAGS
    detail: str  # for the log line


def pack_header(vni: int) -> bytes:
    """The 8-byte header of VNI ``vni``."""
    if not 0 <= vni <= MAX_VNI:
        raise ValueError(f"a VNI is a number from 0 to {MAX_VNI}, not {vni}")
    return _WORDS.pack(_FLAGS_WORD, vni << 8)


def parse_header(data: bytes | bytearray | memoryview, size: int) -> int | BadHeader:
    """The VNI of the datagram ``data[:size]``, or why its header is bad.

    ``size`` is the datagram's real length (``data`` may be a larger, reused buffer).
    """
    if size < HEADER_LEN:
        return BadHeader(counters.VXLAN_SHORT, "shorter than the 8-byte VXLAN header")
    flags, word = _WORDS.unpack_from(data)
    if flags != _FLAGS_WORD or word & 0xFF:
        shown = bytes(data[:HEADER_LEN]).hex(" ")
        return BadHeader(
            counters.VXLAN_BAD_FLAGS,
            f"header {shown}: expected flags 08 and every reserved bit clear",
        )
    vni: int = word >> 8
    return vni
