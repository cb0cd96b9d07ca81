"""Impairment of live ports: the thin trio part around the pure model in ``fabric/impair.py``.

**Frames a port receives** (``in``): the fabric asks the port's ``impair_in`` before it forwards a
frame (one attribute test, None when off). The hook lets an unchanged frame that goes now pass on
at once; it keeps the frames that must wait, counts the lost ones, and forwards duplicated and
corrupted ones itself. Counters of the port (``rx_frames``...) therefore count what entered the
switch, after the impairment, as if the impairment were a bad cable in front of the port.

**Frames sent to a port** (``out``): while impaired, the port object's class is swapped for a
subclass of its own class whose ``send_nowait`` and ``send_batch`` impair first (no test on the
path of any other port, and none on this port's once the impairment is off: the class goes back).
What the impairment lets through, at once or when its time comes, goes to the port's own
``send_nowait``, so the port's backlog, its bounds and back-pressure apply to it as to any frame
(a frame released late holds back the port that sent it, as it would have then).

Frames that wait are released by one task per direction, started when its queue gets its first
frame and ended when the queue is empty. It sleeps until the first frame is due, on trio's clock,
so in-process tests with ``autojump_clock`` run in no real time. A port that leaves takes its
impairment along: waiting frames are dropped (``impair_full_*``). Switching a direction off sends
its waiting frames at once, in order, then the port takes its normal path again.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from umlswitch import counters
from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.fabric import NO_RECEIVERS, Fabric, FabricPort, Receivers
from umlswitch.fabric.impair import (
    DIRECTIONS,
    EVENTS,
    Impairment,
    ImpairModel,
    PortImpairment,
    full_reason,
    loss_reason,
)
from umlswitch.taskhost import TaskHost

log = logging.getLogger("umlswitch.impair")

Frame = bytes | memoryview
Doc = dict[str, Any]


class _Direction:
    """One impaired direction of one port: its model and the task that releases waiting frames."""

    def __init__(
        self, control: ImpairControl, port: FabricPort, name: str, spec: Impairment, seed: int
    ):
        self.control = control
        self.port = port
        self.model = ImpairModel(spec, seed, name, port.stats.drops, control.fabric.queue_budget)
        self._releasing = False  # a release task runs (or is about to)
        self._wake: trio.CancelScope | None = None  # the release task's sleep, until the next due

    def _scheduled(self) -> None:
        """After a decision: make sure the first waiting frame leaves on time."""
        due = self.model.next_due()
        if due is None:
            return
        if not self._releasing:
            self._releasing = True
            self.control.spawn(self._release)
        elif self._wake is not None and due < self._wake.deadline:
            self._wake.deadline = due

    async def _release(self) -> None:
        model = self.model
        try:
            while (due := model.next_due()) is not None:
                with trio.CancelScope(deadline=due) as self._wake:
                    await trio.sleep_forever()
                self._wake = None
                if not self.control.attached(self.port):
                    model.discard()
                    return
                self.emit(model.due(trio.current_time()))
        finally:
            self._releasing = False
            self._wake = None

    def emit(self, frames: list[tuple[bytes, Any]]) -> None:
        """Send frames whose time has come."""
        raise NotImplementedError

    def flush(self) -> None:
        """Send every waiting frame now (the direction is switched off)."""
        if self.control.attached(self.port):
            self.emit(self.model.flush())
        else:
            self.model.discard()

    def doc(self) -> Doc:
        model = self.model
        return {
            "setting": model.spec.as_doc(),
            "seed": model.seed,
            "text": model.spec.describe(),
            "queued": len(model.queue),
            "dropped": {
                "loss": model.drops[loss_reason(model.direction)],
                "full": model.drops[full_reason(model.direction)],
            },
            "events": {name: model.events[name] for name in EVENTS},
        }


class _Inbound(_Direction):
    """Frames the port receives: the fabric's ``impair_in`` hook."""

    def __init__(self, control: ImpairControl, port: FabricPort, spec: Impairment, seed: int):
        super().__init__(control, port, "in", spec, seed)
        self._passing = False  # forwarding a frame the impairment let through: do not ask again

    def take(self, frame: bytes | memoryview) -> bool:
        """False: forward ``frame`` now, unchanged. True: the impairment took it (dropped,
        delayed, or forwarded altered or twice)."""
        if self._passing:
            return False
        now_frames = self.model.decide(frame, trio.current_time())
        self._scheduled()
        if len(now_frames) == 1 and now_frames[0] is frame:
            return False
        self._forward(now_frames)
        return True

    def take_batch(self, batch: FrameBatch) -> Receivers:
        """Every frame of ``batch``, one by one (giants are dropped as the fabric would); the
        receivers that answered "full"."""
        fabric = self.control.fabric
        max_frame = fabric.max_frame
        lengths = batch.lengths
        full: Receivers = NO_RECEIVERS
        for index in range(batch.count):
            size = lengths[index]
            if size > max_frame:
                fabric.reject(self.port, counters.GIANT, size)
            else:
                full += fabric.forward(self.port, batch.frame(index))
        return full

    def _forward(self, frames: list[Frame]) -> None:
        forward = self.control.fabric.forward
        self._passing = True
        try:
            for frame in frames:
                _hold(self.port, forward(self.port, frame))
        finally:
            self._passing = False

    def emit(self, frames: list[tuple[bytes, Any]]) -> None:
        self._forward([frame for frame, _ in frames])


class _Outbound(_Direction):
    """Frames sent to the port: its ``send_nowait`` and ``send_batch`` while impaired."""

    def __init__(self, control: ImpairControl, port: FabricPort, spec: Impairment, seed: int):
        super().__init__(control, port, "out", spec, seed)
        self.original_class = type(port)
        self._send: Callable[[Frame], bool] = port.send_nowait  # the port's own

    def send_nowait(self, frame: bytes | memoryview) -> bool:
        send = self._send
        full = False
        for copy in self.model.decide(frame, trio.current_time()):
            full = send(copy)
        self._scheduled()
        return full

    def send_batch(self, batch: FrameBatch, indices: list[int]) -> bool:
        frame = batch.frame
        full = False
        for index in indices:
            full = self.send_nowait(frame(index))
        return full

    def emit(self, frames: list[tuple[bytes, Any]]) -> None:
        send = self._send
        for frame, sender in frames:
            if send(frame) and sender is not None:
                _hold(sender, (self.port,))  # a full backlog holds back the port that sent it


def _impaired_class(cls: type, outbound: _Outbound) -> type:
    """A subclass of ``cls`` (same layout) whose sends go through ``outbound``."""

    def send_nowait(self: Any, frame: bytes | memoryview) -> bool:
        return outbound.send_nowait(frame)

    def send_batch(self: Any, batch: FrameBatch, indices: list[int]) -> bool:
        return outbound.send_batch(batch, indices)

    namespace = {
        "__slots__": (),
        "__module__": cls.__module__,
        "send_nowait": send_nowait,
        "send_batch": send_batch,
    }
    return type(f"Impaired{cls.__name__}", (cls,), namespace)


class _Link:
    """The impaired directions of one port."""

    def __init__(self, port: FabricPort) -> None:
        self.port = port
        self.inbound: _Inbound | None = None
        self.outbound: _Outbound | None = None

    def setting(self) -> PortImpairment:
        return PortImpairment(
            None if self.inbound is None else self.inbound.model.spec,
            None if self.outbound is None else self.outbound.model.spec,
        )


class ImpairControl(TaskHost):
    """Sets and clears the impairment of ports; runs the release tasks in its own nursery."""

    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric
        super().__init__()
        self._links: dict[int, _Link] = {}

    def spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        self._running_nursery().start_soon(task)

    def attached(self, port: FabricPort) -> bool:
        return self.fabric.ports.get(port.id) is port

    def _link(self, port: FabricPort) -> _Link | None:
        """The port's impairment, if it has one; forget those of ports that have left."""
        for port_id, other in list(self._links.items()):
            if not self.attached(other.port):
                del self._links[port_id]
        link = self._links.get(port.id)
        return link if link is not None and link.port is port else None

    def setting(self, port: FabricPort) -> PortImpairment:
        """The port's impairment now (None in a direction without one)."""
        link = self._link(port)
        return PortImpairment() if link is None else link.setting()

    def set(self, port: FabricPort, direction: str, spec: Impairment | None) -> None:
        """Impair ``direction`` (``in``, ``out`` or ``both``) of ``port`` as ``spec`` says; None
        switches it off. A direction already impaired keeps its waiting frames, and its random
        stream unless ``spec`` gives a seed (which starts the stream anew: a replay)."""
        self._running_nursery()  # the release tasks need it
        if direction not in (*DIRECTIONS, "both"):
            raise ValueError(f"direction must be in, out or both, not {direction!r}")
        self._set(port, direction, spec, _random_seed())

    def _set(self, port: FabricPort, direction: str, spec: Impairment | None, seed: int) -> None:
        """``set``, with ``seed`` where ``spec`` gives none."""
        link = self._link(port)
        if link is None:
            if spec is None:
                return
            link = _Link(port)
            self._links[port.id] = link
        if spec is not None and spec.seed is not None:
            seed = spec.seed
        for name in DIRECTIONS if direction == "both" else (direction,):
            if name == "in":
                link.inbound = self._set_inbound(port, link.inbound, spec, seed)
            else:
                link.outbound = self._set_outbound(port, link.outbound, spec, seed)
        if link.inbound is None and link.outbound is None:
            del self._links[port.id]
        log.info(
            "port %d (%s): impairment in: %s; out: %s",
            port.id,
            port.name,
            _describe(link.inbound),
            _describe(link.outbound),
        )

    def apply(self, port: FabricPort, setting: PortImpairment) -> None:
        """Impair both directions of ``port`` as ``setting`` says (None: that one is off)."""
        seed = _random_seed()  # one for both directions, unless they give theirs
        self._set(port, "in", setting.inbound, seed)
        self._set(port, "out", setting.outbound, seed)

    def _set_inbound(
        self, port: FabricPort, current: _Inbound | None, spec: Impairment | None, seed: int
    ) -> _Inbound | None:
        if spec is None:
            if current is not None:
                port.impair_in = None
                current.flush()
            return None
        if current is not None and _same_stream(current, spec):
            current.model.configure(spec)
            return current
        inbound = _Inbound(self, port, spec, seed)
        if current is not None:
            inbound.model.take_over(current.model)
            inbound._scheduled()
        port.impair_in = inbound
        return inbound

    def _set_outbound(
        self, port: FabricPort, current: _Outbound | None, spec: Impairment | None, seed: int
    ) -> _Outbound | None:
        if current is not None:
            if spec is not None and _same_stream(current, spec):
                current.model.configure(spec)
                return current
            port.__class__ = current.original_class  # the port's own sends again
        outbound = None
        if spec is not None:
            outbound = _Outbound(self, port, spec, seed)
            port.__class__ = _impaired_class(outbound.original_class, outbound)
        if current is not None:
            if outbound is None:
                current.flush()
            else:
                outbound.model.take_over(current.model)
                outbound._scheduled()
        return outbound

    def doc(self, port: FabricPort) -> Doc | None:
        """The port's impairment as JSON (setting, seed, queue, counters per direction), or
        None if it has none."""
        link = self._link(port)
        if link is None:
            return None
        return {
            "in": None if link.inbound is None else link.inbound.doc(),
            "out": None if link.outbound is None else link.outbound.doc(),
        }


def _hold(sender: FabricPort, receivers: Receivers) -> None:
    """``receivers`` answered "full" to a frame of ``sender``: they hold it back (a port of
    the switch; a test's fake port has no ingress to hold)."""
    held_by = getattr(sender, "held_by", None)
    if receivers and held_by is not None:
        held_by(receivers)


def _random_seed() -> int:
    """A seed for an impairment given none: the same for both directions, so that ``seed=N``
    with the one shown replays both."""
    return random.SystemRandom().randrange(2**32)


def _same_stream(current: _Direction, spec: Impairment) -> bool:
    """Whether a new setting keeps the direction's random stream: it gives no seed."""
    return spec.seed is None


def _describe(direction: _Direction | None) -> str:
    if direction is None:
        return "none"
    return f"{direction.model.spec.describe()} (seed {direction.model.seed})"
