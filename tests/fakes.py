"""Test doubles shared by the test layers."""

from __future__ import annotations

from umlswitch.counters import PortStats


class FakePort:
    """A fabric port that records what the fabric sends it."""

    def __init__(self, port_id: int) -> None:
        self.id = port_id
        self.name = f"fake:{port_id}"
        self.stats = PortStats()
        self.sent: list[bytes] = []

    def send_nowait(self, frame: bytes | memoryview) -> None:
        self.sent.append(bytes(frame))

    def take(self) -> list[bytes]:
        """What was sent since the last take()."""
        sent, self.sent = self.sent, []
        return sent
