"""FrameBatch: frames received together, in one preallocated area, decided by the fabric at once.

Slot ``i`` of ``data`` (at ``i * slot_size``) holds frame ``i``, whose real length is
``lengths[i]`` (more than ``slot_size`` for a giant that did not fit: such a frame is only
measured, never read). ``address`` is where ``data`` lives in memory, for vector sends that
point into it. A receiver fills the batch again and again; nothing in it outlives a call to the
fabric, so whatever must wait (a port's backlog, a capture) copies the frame out.
"""

from __future__ import annotations

from collections.abc import Sequence


class FrameBatch:
    """Up to ``capacity`` frames of at most ``slot_size`` bytes, in one bytearray."""

    __slots__ = ("address", "count", "data", "lengths", "slot_size", "view")

    def __init__(self, slot_size: int, capacity: int) -> None:
        self.slot_size = slot_size
        self.data = bytearray(slot_size * capacity)
        self.view = memoryview(self.data)
        self.address = 0  # set by a receiver that knows it (vector I/O)
        self.count = 0
        self.lengths: Sequence[int] = ()

    def frame(self, index: int) -> memoryview:
        """Frame ``index`` (which must fit its slot)."""
        offset = index * self.slot_size
        return self.view[offset : offset + self.lengths[index]]
