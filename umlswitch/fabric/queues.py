"""Bounds of the ports' egress backlogs: frames per port and bytes for the whole switch.

A port keeps what the kernel cannot take now in a backlog (``ports/base.py``). Two bounds keep
that memory finite whatever the receivers do: ``--port-queue`` frames per port (like a NIC's
transmit ring; Linux's ``txqueuelen`` is 1000, a guest's unix socket queue 10) and
``--queue-memory`` bytes for all backlogs together, so that a thousand stuck receivers cannot
make the switch hold a thousand full queues of jumbo frames.
"""

from __future__ import annotations

DEFAULT_PORT_QUEUE = 256  # frames waiting per port, at most
DEFAULT_QUEUE_MEMORY = 64 << 20  # bytes waiting in all backlogs together, at most


class QueueBudget:
    """The bytes all backlogs of one switch may hold together, and how many they hold now."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int = DEFAULT_QUEUE_MEMORY) -> None:
        self.limit = limit
        self.used = 0
