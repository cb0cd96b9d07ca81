"""A queue between the two planes with an eventfd that says "look": one per direction.

``put`` may be called from either side (a deque's ``append`` is thread-safe); the eventfd is
written only when the queue was empty, so a burst of posts costs one wake-up. The reader
``drain``s the eventfd and then takes everything queued. The control plane waits on the
eventfd with trio; the data-plane loop has it in its epoll set.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

_ONE = (1).to_bytes(8, "little")


class Mailbox(Generic[T]):
    """Items posted by one plane for the other, and the eventfd that wakes the other."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._items: deque[T] = deque()

    def put(self, item: T) -> None:
        self._items.append(item)
        try:
            os.write(self.fd, _ONE)
        except BlockingIOError:  # the counter is saturated: the reader is woken anyway
            pass
        except OSError:  # closed: the other side is gone, nobody will read it
            pass

    def take(self) -> list[T]:
        """Everything posted so far (after clearing the eventfd, so nothing is missed)."""
        with contextlib.suppress(OSError):  # nothing to clear, or closed
            os.read(self.fd, 8)
        items = self._items
        taken = []
        while items:
            taken.append(items.popleft())
        return taken

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
