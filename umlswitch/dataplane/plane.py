"""The data plane as the control plane sees it. Runs in trio.

``running(fabric)`` starts the data-plane thread (``loop.py``'s rounds, blocking in ``epoll``
with the GIL released) and stops and joins it on the way out; the fabric's state then has one
writer, the thread, and trio changes it only through:

* ``await plane.call(fn, *args)`` — ``fn`` runs in the thread between two rounds; its result is
  returned (or its exception raised) here;
* ``async with plane.barrier():`` — the thread waits between two rounds while the block runs, so
  the block may change anything (the management commands run so; ``call`` inside runs inline);
* ``plane.apply(fn, *args)`` — for synchronous code: inline where that is safe (no thread, the
  thread parked at a barrier or gone), otherwise posted and applied at the next round.

What the loop reports comes back through the events mailbox and is handled by ``_pump`` here: a
port closed (the port's ``run`` ends with ``PortClosed``), a reply to ``call``, a crash. A crash
of the thread is logged with its traceback and raised here as ``DataPlaneCrashed``, which ends
the switch with a non-zero status: never a silent dead thread.

For restart: ``pause()`` / ``resume()`` stop and start reading every socket without closing any,
``descriptors()`` lists each served port's OS descriptors. For events: ``on_event`` is one hook
``(name, **fields)`` called in the thread for a port closed, a stall and what the fabric reports.

Under trio's virtual clock (``trio.testing.MockClock``: in-process tests), the same loop is
driven by a trio task instead of a thread, so that its timers follow the test's clock.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import trio
import trio.testing

from umlswitch.dataplane.loop import EventHook, Loop
from umlswitch.dataplane.timers import TimerHeap
from umlswitch.fabric.fabric import Fabric
from umlswitch.ports.base import Port

log = logging.getLogger("umlswitch.dataplane")

T = TypeVar("T")

JOIN_TIMEOUT = 5.0  # seconds to wait for the thread at shutdown

_planes: weakref.WeakKeyDictionary[Fabric, DataPlane] = weakref.WeakKeyDictionary()


class DataPlaneCrashed(Exception):
    """The data-plane thread raised: a bug. The switch stops (non-zero exit status)."""


def plane_of(fabric: Fabric) -> DataPlane:
    """The data plane serving ``fabric`` (inside ``running(fabric)``)."""
    plane = _planes.get(fabric)
    if plane is None:
        raise RuntimeError("no data plane runs for this fabric: use dataplane.running(fabric)")
    return plane


def current(fabric: Fabric) -> DataPlane | None:
    return _planes.get(fabric)


class _Reply:
    """The answer to one ``call``, set in the thread, awaited in trio."""

    __slots__ = ("error", "event", "result")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def done_in_loop(self, loop: Loop) -> None:
        loop.events.put(("reply", {"reply": self}))


class DataPlane:
    """The data-plane loop of one fabric, and the thread (or test task) that runs it."""

    def __init__(self, fabric: Fabric, *, threaded: bool = True) -> None:
        self.fabric = fabric
        self.threaded = threaded
        self.loop = Loop(fabric) if threaded else Loop(fabric, trio.current_time)
        self.thread: threading.Thread | None = None
        self.crash: BaseException | None = None
        self._parked = False
        self._pending: set[_Reply] = set()
        # The tasks serving the loop (the pump, the test driver) outlive a cancellation of the
        # switch: ports leaving on the way out still need replies. ``stop`` ends them.
        self._service: list[trio.CancelScope] = []

    @property
    def timers(self) -> TimerHeap | None:
        """The loop's timers, for what the fabric schedules (impairment's releases); None when
        a trio task drives the loop (virtual time): trio's own timers serve then."""
        return self.loop.timers if self.threaded else None

    # --- the hook for events ------------------------------------------------------------------

    @property
    def on_event(self) -> EventHook:
        return self.loop.on_event

    @on_event.setter
    def on_event(self, hook: EventHook) -> None:
        self.loop.on_event = hook

    # --- changes from the control plane -------------------------------------------------------

    def _inline(self) -> bool:
        """Whether trio may change the fabric itself now: no thread runs it, or it waits."""
        thread = self.thread
        return thread is None or self.crash is not None or not thread.is_alive() or self._parked

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the data-plane thread between two rounds; its result here."""
        if self._inline():
            return fn(*args)
        reply = _Reply()
        self._pending.add(reply)
        self.loop.commands.put((fn, args, reply))
        try:
            await reply.event.wait()
        finally:
            self._pending.discard(reply)
        if reply.error is not None:
            raise reply.error
        result: T = reply.result
        return result

    def apply(self, fn: Callable[..., object], *args: Any) -> None:
        """``fn(*args)`` inline where that is safe, else at the thread's next round."""
        if self._inline() or threading.get_ident() == self.loop.thread_id:
            fn(*args)
        else:
            self.loop.commands.put((fn, args, None))

    @contextlib.asynccontextmanager
    async def barrier(self) -> AsyncIterator[None]:
        """The thread waits between two rounds while the block runs."""
        if self._inline():
            yield
            return
        gate = threading.Event()
        reply = _Reply()
        self._pending.add(reply)
        self.loop.commands.put((_park, (self.loop, reply, gate), None))
        try:
            with trio.CancelScope(shield=True):
                await reply.event.wait()
            self._parked = reply.error is None
            yield
        finally:
            self._pending.discard(reply)
            self._parked = False
            gate.set()

    async def pause(self) -> None:
        """Stop reading every socket (none is closed; backlogs still drain)."""
        await self.call(self.loop.set_paused, True)

    async def resume(self) -> None:
        await self.call(self.loop.set_paused, False)

    async def descriptors(self) -> dict[int, list[int]]:
        """Each served port's OS descriptors, by port id."""
        return await self.call(self.loop.descriptors)

    async def serve_port(self, port: Port) -> str:
        """Serve ``port`` until its peer goes (returns why) or cancelled; then stop serving it."""
        port.end_reason = None
        port.ended = trio.Event()
        try:
            await self.call(self.loop.add_port, port)  # cancelled while waiting: still removed
            await port.ended.wait()
        finally:
            with trio.CancelScope(shield=True):
                await self.call(self.loop.remove_port, port)
        return port.end_reason or "closed"

    # --- running ------------------------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = self.loop
        loop.thread_id = threading.get_ident()
        try:
            while not loop.stopping:
                loop.run_once(-1)
        except BaseException as exc:  # a bug: say so loudly, and stop the switch
            log.critical("the data-plane thread crashed; stopping the switch", exc_info=True)
            self.crash = exc
            loop.events.put(("crashed", {"error": exc}))
        finally:
            loop.thread_id = None

    async def _drive(self, scope: trio.CancelScope) -> None:
        """Under virtual time: the loop's rounds as a trio task."""
        with scope:
            await self._drive_rounds()

    async def _drive_rounds(self) -> None:
        loop = self.loop
        while True:
            wait = loop.timers.timeout(-1)
            with trio.move_on_after(math.inf if wait < 0 else wait):
                await trio.lowlevel.wait_readable(loop.epoll.fileno())
            loop.run_once(0)
            await trio.lowlevel.checkpoint()

    def _serving(self) -> trio.CancelScope:
        scope = trio.CancelScope(shield=True)
        self._service.append(scope)
        return scope

    async def _pump(self, scope: trio.CancelScope) -> None:
        """Handle what the loop reports, until stopped (or the thread crashed)."""
        with scope:
            await self._pump_events()

    async def _pump_events(self) -> None:
        events = self.loop.events
        while True:
            await trio.lowlevel.wait_readable(events.fd)
            self._handle(events.take())

    def _handle(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        for name, fields in events:
            if name == "reply":
                fields["reply"].event.set()
            elif name == "closed":
                port = fields["port"]
                port.end_reason = fields["reason"]
                if port.ended is not None:
                    port.ended.set()
            elif name == "crashed":
                self._fail_pending()
                raise DataPlaneCrashed(f"the data-plane thread crashed: {fields['error']!r}")

    def _fail_pending(self) -> None:
        for reply in self._pending:
            reply.error = DataPlaneCrashed("the data-plane thread crashed")
            reply.event.set()

    def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._pump, self._serving())
        if self.threaded:
            self.thread = threading.Thread(
                target=self._thread_main, name="umlswitch-dataplane", daemon=True
            )
            self.thread.start()
        else:
            nursery.start_soon(self._drive, self._serving())

    async def stop(self) -> None:
        """Stop the thread and wait for it (at most JOIN_TIMEOUT); then apply here what was
        posted too late for it, so that nobody waits for a reply that would never come."""
        thread = self.thread
        if thread is not None and thread.is_alive():
            self.loop.commands.put((self.loop.stop, (), None))
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(thread.join, JOIN_TIMEOUT)
            if thread.is_alive():
                log.error("the data-plane thread did not stop within %.0f s", JOIN_TIMEOUT)
        if thread is not None and not thread.is_alive() and self.crash is None:
            self.loop.apply_commands()
            self._handle(self.loop.events.take())
        for scope in self._service:
            scope.cancel()


def _park(loop: Loop, reply: _Reply, gate: threading.Event) -> None:
    """Applied in the thread for ``barrier``: say so, then wait until the block is done."""
    reply.done_in_loop(loop)
    gate.wait()


def _virtual_time() -> bool:
    return isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)


@contextlib.asynccontextmanager
async def running(fabric: Fabric, *, threaded: bool | None = None) -> AsyncIterator[DataPlane]:
    """Serve ``fabric``'s frame sockets for the duration of the block.

    ``threaded`` None: a thread, unless trio runs on virtual time (a test's MockClock).
    """
    if threaded is None:
        threaded = not _virtual_time()
    plane = DataPlane(fabric, threaded=threaded)
    _planes[fabric] = plane
    try:
        async with trio.open_nursery() as nursery:
            plane.start(nursery)
            try:
                yield plane
            finally:
                await plane.stop()
                nursery.cancel_scope.cancel()
    finally:
        if _planes.get(fabric) is plane:
            del _planes[fabric]
        plane.loop.close()


@contextlib.asynccontextmanager
async def parked(fabric: Fabric) -> AsyncIterator[None]:
    """The block may change ``fabric`` directly: the data plane serving it (if one runs) waits
    between two rounds meanwhile (``DataPlane.barrier``; inside one already, nothing more)."""
    plane = current(fabric)
    if plane is None:
        yield
        return
    async with plane.barrier():
        yield
