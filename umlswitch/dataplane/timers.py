"""The data-plane loop's timers: a heap of (when, callback); runs in the data-plane thread.

The loop blocks in ``epoll`` until the next timer is due (``timeout``) and then runs what is due
(``run_due``). Cancelling marks an entry dead; it is skipped when it comes up. ``clock`` is the
time source: ``time.monotonic`` in the thread, trio's clock when a test drives the loop from a
trio task under virtual time. The same three calls (``now``, ``call_at``, ``cancel``) are what
the fabric's timer protocol asks for.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class TimerHandle:
    """One scheduled callback; ``cancel`` it through the heap that made it."""

    __slots__ = ("callback", "when")

    def __init__(self, when: float, callback: Callable[[], object] | None) -> None:
        self.when = when
        self.callback = callback


class TimerHeap:
    """Callbacks due at given times, earliest first."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.now = clock
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._order = itertools.count()

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        handle = TimerHandle(when, callback)
        heapq.heappush(self._heap, (when, next(self._order), handle))
        return handle

    def cancel(self, handle: object) -> None:
        assert isinstance(handle, TimerHandle)
        handle.callback = None

    def timeout(self, limit: float = -1.0) -> float:
        """Seconds until the next live timer (0 if one is due), or ``limit`` if none."""
        heap = self._heap
        while heap and heap[0][2].callback is None:
            heapq.heappop(heap)
        if not heap:
            return limit
        wait = heap[0][0] - self.now()
        return wait if wait > 0 else 0.0

    def run_due(self) -> None:
        """Run every callback due by now, earliest first."""
        heap = self._heap
        now = self.now()
        while heap and heap[0][0] <= now:
            handle = heapq.heappop(heap)[2]
            callback, handle.callback = handle.callback, None
            if callback is not None:
                callback()

    def __len__(self) -> int:
        return sum(1 for entry in self._heap if entry[2].callback is not None)
