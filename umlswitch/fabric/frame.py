"""Ethernet frame sizes and MAC addresses as people write them (no preamble, no FCS)."""

from __future__ import annotations

ETH_HEADER_LEN = 14
DEFAULT_MAX_FRAME = 1518  # 1500 payload + 14 header + one 802.1Q tag
MAX_MAX_FRAME = 65535


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def parse_mac(text: str) -> bytes:
    """Parse ``aa:bb:cc:dd:ee:ff`` (or with ``-``); raise ValueError with a readable message."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r} (expected aa:bb:cc:dd:ee:ff)")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"not a MAC address: {text!r} (expected aa:bb:cc:dd:ee:ff)") from None
