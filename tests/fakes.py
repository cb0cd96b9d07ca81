"""Test doubles shared by the test layers."""

from __future__ import annotations

from umlswitch.counters import PortStats
from umlswitch.fabric.batch import FrameBatch


class FakePort:
    """A fabric port that records what the fabric sends it."""

    def __init__(self, port_id: int) -> None:
        self.id = port_id
        self.name = f"fake:{port_id}"
        self.stats = PortStats()
        self.sent: list[bytes] = []

    def send_nowait(self, frame: bytes | memoryview) -> bool:
        self.sent.append(bytes(frame))
        return False  # never "full": nothing to hold back

    def send_batch(self, batch: FrameBatch, indices: list[int]) -> bool:
        for index in indices:
            self.send_nowait(batch.frame(index))
        return False

    def take(self) -> list[bytes]:
        """What was sent since the last take()."""
        sent, self.sent = self.sent, []
        return sent
