"""The switch's event bus: what happened (a port came or went, a MAC moved, a storm began...)
for whoever listens (``umlswitch events``, the management command ``events/stream``).

Rules, as for everything beside the data plane:

* ``publish(event, **fields)`` may be called from any thread (the trio control plane or the
  data-plane thread), never blocks and never raises: it stamps the event with the time
  (``ts``, seconds since the epoch) and appends it to each subscriber's bounded queue.
* A subscriber that does not keep up loses events: its queue holds at most ``max_queued`` and
  each event that finds it full is counted in ``lost`` (the stream reports the count). A slow
  reader never slows the switch.
* Subscribers are trio tasks. A publish from the trio thread wakes them directly; one from
  another thread asks trio to wake them (``TrioToken.run_sync_soon``, idempotent: one wake-up
  however many events arrive before it runs).

Event names (stable, shown to users): ``port/attach``, ``port/detach``, ``port/stall``,
``mac/move``, ``stp/state``, ``storm/start``, ``storm/stop``, ``restart``, and
``events/lost`` (made by a subscriber's stream, never published).

Who publishes: ``ports/attachments.py`` (attach, detach), ``ports/base.py`` (stall),
``fabric/fabric.py`` (mac/move), ``fabric/guard.py`` (stp/state, storm/start, storm/stop), each
through ``Fabric.publish`` (a no-op until the daemon sets it to ``EventBus.publish``). The hook
for the seamless restart: the code that hands the switch over publishes
``switch.bus.publish(RESTART, phase="begin", ...)`` before it does (and the new switch
``phase="done"``); subscribers' streams end with the old process. A data-plane thread's own
event hook (``on_event(name, **fields)``) connects to ``EventBus.publish`` as it is.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import trio

PORT_ATTACH = "port/attach"
PORT_DETACH = "port/detach"
PORT_STALL = "port/stall"
MAC_MOVE = "mac/move"
STP_STATE = "stp/state"
STORM_START = "storm/start"
STORM_STOP = "storm/stop"
RESTART = "restart"
EVENTS_LOST = "events/lost"

DEFAULT_MAX_QUEUED = 1024  # events a subscriber's queue holds

Event = dict[str, Any]


class Subscription:
    """One reader's bounded queue of events."""

    def __init__(self, bus: EventBus, max_queued: int = DEFAULT_MAX_QUEUED) -> None:
        self.bus = bus
        self.max_queued = max_queued
        self.queue: collections.deque[Event] = collections.deque()
        self.lost = 0  # events that found the queue full
        self.delivered = 0  # events taken by the reader
        self._wakeup = trio.Event()

    def offer(self, event: Event) -> None:
        """Any thread: queue ``event`` or count it lost (a racy length check at worst lets the
        queue exceed its bound by the number of publishing threads)."""
        if len(self.queue) >= self.max_queued:
            self.lost += 1
        else:
            self.queue.append(event)

    def wake(self) -> None:
        """Trio thread only: the reader's ``get`` looks at the queue again."""
        self._wakeup.set()

    def take(self) -> list[Event]:
        """Every queued event, oldest first (possibly none)."""
        taken: list[Event] = []
        queue = self.queue
        while queue:
            taken.append(queue.popleft())
        self.delivered += len(taken)
        return taken

    async def get(self) -> list[Event]:
        """Wait until events are queued; take them all."""
        while not self.queue:
            self._wakeup = trio.Event()
            if self.queue:  # published between the test and the new event
                break
            await self._wakeup.wait()
        return self.take()


class EventBus:
    """Publish from anywhere; subscribe from trio."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._subscribers: tuple[Subscription, ...] = ()  # replaced, never changed in place
        self._trio_thread: int | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self.published: collections.Counter[str] = collections.Counter()

    @property
    def subscribers(self) -> tuple[Subscription, ...]:
        return self._subscribers

    def publish(self, event: str, **fields: object) -> None:
        """Stamp ``event`` with the time and queue it for every subscriber. Any thread; never
        blocks, never raises for a subscriber's sake."""
        self.published[event] += 1
        subscribers = self._subscribers
        if not subscribers:
            return
        record: Event = {"event": event, "ts": round(self._clock(), 6), **fields}
        for subscriber in subscribers:
            subscriber.offer(record)
        if threading.get_ident() == self._trio_thread:
            self._wake_all()
        elif self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._wake_all, idempotent=True)

    def _wake_all(self) -> None:
        for subscriber in self._subscribers:
            subscriber.wake()

    @contextlib.contextmanager
    def subscribe(self, max_queued: int = DEFAULT_MAX_QUEUED) -> Iterator[Subscription]:
        """A subscription for the ``with`` block (trio thread)."""
        self._trio_thread = threading.get_ident()
        self._token = trio.lowlevel.current_trio_token()
        subscription = Subscription(self, max_queued)
        self._subscribers = (*self._subscribers, subscription)
        try:
            yield subscription
        finally:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscription)
