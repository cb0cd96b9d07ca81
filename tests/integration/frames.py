"""Raw ethernet frames and MACs for tests that compare frames byte for byte."""

from __future__ import annotations

import struct

BROADCAST = b"\xff" * 6


def frame(dst: bytes, src: bytes, payload: bytes = b"x" * 46, ethertype: int = 0x88B5) -> bytes:
    """A raw ethernet frame (local experimental ethertype by default)."""
    return dst + src + struct.pack("!H", ethertype) + payload


def mac(n: int) -> bytes:
    """A locally administered unicast MAC: 02:00:00:00:00:NN."""
    return bytes([2, 0, 0, 0, n >> 8 & 0xFF, n & 0xFF])
