"""Impairment of live ports: the control part around the pure model in ``fabric/impair.py``.

**Frames a port receives** (``in``): the fabric hands the frames of an impaired port to its
hook first (``Fabric.set_ingress_hook``: a stage composed into the pipeline only while some
port has one). The hook lets an unchanged frame that goes now pass on at once; it keeps the
frames that must wait, counts the lost ones, and forwards duplicated and corrupted ones itself.
Counters of the port (``rx_frames``...) therefore count what entered the switch, after the
impairment, as if the impairment were a bad cable in front of the port.

**Frames sent to a port** (``out``): while impaired, the port's sender (``_Outbound``) stands in
for it in the fabric's egress tables (``Fabric.set_egress_stage``): nothing changes on the path of
any other port, and once the impairment is off the tables hold the port itself again. What the
impairment lets through, at once or when its time comes, goes to the port's own ``send_nowait``,
so the port's backlog, its bounds and back-pressure apply to it as to any frame (a frame
released late that fills the backlog holds back the port that sent it, as it would have then:
the pipeline notes the sender while an egress stage is on).

Frames that wait are released by a timer per direction (``fabric.timers.Timers``: trio's clock
here, ``umlswitch/trio_timers.py``; the data-plane thread's own loop there), set for the first
frame due and set again after each release. In-process tests with ``autojump_clock`` run in no
real time. A port that leaves takes its impairment along: waiting frames are dropped
(``impair_full_*``). Switching a direction off sends its waiting frames at once, in order, then
the port takes its normal path again.
"""

from __future__ import annotations

import logging
import random
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
from umlswitch.fabric.timers import Timers
from umlswitch.trio_timers import TrioTimers

log = logging.getLogger("umlswitch.impair")

Frame = bytes | memoryview
Doc = dict[str, Any]


class _Direction:
    """One impaired direction of one port: its model and the timer that releases waiting
    frames."""

    def __init__(
        self, control: ImpairControl, port: FabricPort, name: str, spec: Impairment, seed: int
    ):
        self.control = control
        self.port = port
        self.timers = control.timers
        self.model = ImpairModel(spec, seed, name, port.stats.drops, control.fabric.queue_budget)
        self._timer: object | None = None  # the release call pending, due at _timer_due
        self._timer_due = 0.0

    def _scheduled(self) -> None:
        """After a decision: make sure the first waiting frame leaves on time."""
        due = self.model.next_due()
        if due is None or (self._timer is not None and self._timer_due <= due):
            return
        if self._timer is not None:
            self.timers.cancel(self._timer)
        self._timer_due = due
        self._timer = self.timers.call_at(due, self._release)

    def _release(self) -> None:
        self._timer = None
        if not self.control.attached(self.port):
            self.model.discard()
            return
        self.emit(self.model.due(self.timers.now()))
        self._scheduled()

    def stop(self) -> None:
        """No more releases (the direction is switched off or replaced)."""
        if self._timer is not None:
            self.timers.cancel(self._timer)
            self._timer = None

    def emit(self, frames: list[tuple[bytes, Any]]) -> None:
        """Send frames whose time has come."""
        raise NotImplementedError

    def flush(self) -> None:
        """Send every waiting frame now (the direction is switched off)."""
        self.stop()
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
    """Frames the port receives: the fabric's ingress hook for it."""

    def __init__(self, control: ImpairControl, port: FabricPort, spec: Impairment, seed: int):
        super().__init__(control, port, "in", spec, seed)
        self._passing = False  # forwarding a frame the impairment let through: do not ask again

    def take(self, frame: bytes | memoryview) -> bool:
        """False: forward ``frame`` now, unchanged. True: the impairment took it (dropped,
        delayed, or forwarded altered or twice)."""
        if self._passing:
            return False
        now_frames = self.model.decide(frame, self.timers.now())
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
    """Frames sent to the port: the egress entry standing in for it while it is impaired."""

    def __init__(self, control: ImpairControl, port: FabricPort, spec: Impairment, seed: int):
        super().__init__(control, port, "out", spec, seed)
        self.id = port.id
        self._note = control.fabric.sender_note

    def send_nowait(self, frame: bytes | memoryview) -> bool:
        send = self.port.send_nowait
        full = False
        for copy in self.model.decide(frame, self.timers.now(), self._note.sender):
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
        send = self.port.send_nowait
        for frame, sender in frames:
            if send(frame) and sender is not None:
                _hold(sender, (self.port,))  # a full backlog holds back the port that sent it


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


class ImpairControl:
    """Sets and clears the impairment of ports; releases waiting frames with ``timers``
    (trio's by default: then ``run`` hosts them, in the daemon's nursery)."""

    def __init__(self, fabric: Fabric, timers: Timers | None = None) -> None:
        self.fabric = fabric
        self._trio_timers: TrioTimers | None = None
        if timers is None:
            timers = self._trio_timers = TrioTimers()
        self.timers = timers
        self._links: dict[int, _Link] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host trio's timers until cancelled (nothing to host with timers of another loop)."""
        if self._trio_timers is not None:
            await self._trio_timers.run(task_status=task_status)
        else:
            task_status.started()
            await trio.sleep_forever()

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
        if self._trio_timers is not None:
            self._trio_timers.check_running()  # the releases need it
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
                self.fabric.set_ingress_hook(port.id, None)
                current.flush()
            return None
        if current is not None and _same_stream(current, spec):
            current.model.configure(spec)
            return current
        inbound = _Inbound(self, port, spec, seed)
        if current is not None:
            current.stop()
            inbound.model.take_over(current.model)
            inbound._scheduled()
        self.fabric.set_ingress_hook(port.id, inbound)
        return inbound

    def _set_outbound(
        self, port: FabricPort, current: _Outbound | None, spec: Impairment | None, seed: int
    ) -> _Outbound | None:
        if current is not None and spec is not None and _same_stream(current, spec):
            current.model.configure(spec)
            return current
        outbound = None if spec is None else _Outbound(self, port, spec, seed)
        self.fabric.set_egress_stage(port.id, outbound)  # None: the port's own sends again
        if current is not None:
            if outbound is None:
                current.flush()
            else:
                current.stop()
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
