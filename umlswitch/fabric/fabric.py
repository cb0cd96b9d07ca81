"""The Fabric: the set of attached ports, the forwarding decision, and the pipeline composed of
the stages that are on (``docs/architecture.md``, "The pipeline").

Ports are anything with an ``id``, a ``name``, ``stats`` and non-blocking sends; the fabric never
touches a socket. An ingress loop hands each received frame to ``forward`` (or a batch to
``forward_batch``), which accounts it, admits it (size, group source), decides where it goes
(learn its source, look up its destination, or flood) and calls the egress entries' sends
directly: no task switch and no queue per frame. Both return the receivers whose backlog
answered "full", for the ingress loop to hold the sender back.

Admission and decision are ``decide``, written once; ``fabric/pipeline.py`` has the two drivers
that run it (with the flow cache that skips it for frames like the last ones). The optional
features are stages composed in by ``_compose`` only while they are on, and composed again when
they change: VLANs (``fabric/vlan_stage.py``: classification, scope, tag rewrites), the guard
(STP and storm control, ``fabric/guard.py``), capture, and impairment of either direction of a
port (``fabric/stages.py``). With all of them off, ``forward`` is the plain driver alone.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from umlswitch import counters
from umlswitch.counters import PortStats
from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.frame import DEFAULT_MAX_FRAME, ETH_HEADER_LEN, format_mac
from umlswitch.fabric.impair import IngressHook
from umlswitch.fabric.mactable import Learned, MacTable
from umlswitch.fabric.pipeline import (
    NO_RECEIVERS,
    NOWHERE,
    EgressSet,
    FlowKey,
    Flows,
    Forward,
    ForwardBatch,
    Frame,
    Receivers,
    batch_driver,
    key_length,
    single_driver,
)
from umlswitch.fabric.queues import DEFAULT_PORT_QUEUE, QueueBudget
from umlswitch.fabric.stages import SenderNote, capturing, noting_sender, with_ingress_hooks
from umlswitch.fabric.stp import STP_GROUP
from umlswitch.fabric.vlan import (
    DEFAULT_MEMBERSHIP,
    TAGGED_HEADER_LEN,
    UNTAGGED,
    Membership,
    VlanTable,
    format_key,
    split_key,
)
from umlswitch.fabric.vlan_stage import VlanStage
from umlswitch.ratelog import Deferred, RateLimitedLog

__all__ = ["NO_RECEIVERS", "Fabric", "FabricPort", "PortNumberTaken", "Receivers"]

log = logging.getLogger("umlswitch.fabric")

# Destination and source address of a frame as two ``bytes`` (dict keys) in one C call: about
# 3x cheaper than ``bytes(frame[0:6])`` and ``bytes(frame[6:12])`` on a memoryview.
_addresses = struct.Struct("6s6s").unpack_from
# Decisions kept at most (a flood of unknown destinations from a known source makes one each):
# beyond it the cache starts again, so it stays small whatever arrives.
FLOW_LIMIT = 4096


class FabricPort(Protocol):
    """What the fabric needs of a port."""

    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def stats(self) -> PortStats: ...

    def send_nowait(self, frame: bytes | memoryview) -> bool:
        """Queue ``frame`` in the kernel or in the port's backlog, or drop and count it; never
        block, never raise. True: the port's backlog is past half its bound after this send
        (it answers "full": the sender should be held)."""

    def send_batch(self, batch: FrameBatch, indices: list[int]) -> bool:
        """``send_nowait`` for the frames in slots ``indices`` of ``batch``, in that order; True
        as ``send_nowait`` after the last one."""


class FrameGuard(Protocol):
    """What the fabric asks of its guard (``guard.Guard``: spanning tree and storm control)."""

    @property
    def stp(self) -> object | None:
        """The spanning tree; None while it is off."""

    def attached(self, port: FabricPort) -> None: ...

    def detached(self, port_id: int) -> None: ...

    def admit(
        self,
        ingress: FabricPort,
        dst: bytes,
        src: bytes,
        data: bytes | bytearray | memoryview,
        offset: int,
        size: int,
    ) -> bool:
        """Whether the fabric may go on with this frame (False: consumed or dropped, counted)."""


class LoopWatcher(Protocol):
    """Told of a source address that came back on another port a moment after it was learned
    (``guard.LoopWatch``: logs the loop while the spanning tree is off)."""

    def held(self, mac: bytes, learned_on: int | None, ingress: FabricPort) -> None: ...


class CaptureSink(Protocol):
    """Where captured frames go (``umlswitch.capture``: one capture, or several at once)."""

    def offer(self, frame: bytes | memoryview, ingress_id: int, egress: EgressSet) -> None:
        """Queue a copy of ``frame`` (received on ``ingress_id``, sent to ``egress``) if the
        capture watches one of those ports; never block, callable from any thread."""


def no_event(event: str, **fields: object) -> None:
    """``Fabric.publish`` until the daemon connects its event bus (``umlswitch.events``)."""


class PortNumberTaken(Exception):
    """A client asked for a port number that is already in use."""


class Fabric:
    """Attached ports, the forwarding decision (hub or learning switch) and its pipeline.

    ``forward(ingress, frame)`` and ``forward_batch(ingress, batch)`` are the composed
    pipeline's drivers (attributes, set by ``_compose``); both return the receivers that
    answered "full". ``receive(ingress, buffer, size)`` is ``forward`` for the receive rule of
    every port kind: a datagram or read of ``size`` bytes (its real length, ``MSG_TRUNC``) is
    in ``buffer``; forward it, or count a giant (which did not fit the buffer and is never read).
    Look them up at each call: a change of the stages replaces them.
    """

    forward: Forward
    receive: Forward
    forward_batch: ForwardBatch

    def __init__(
        self,
        *,
        hub: bool = False,
        table: MacTable | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        now: float = 0.0,
        port_queue: int = DEFAULT_PORT_QUEUE,
        queue_budget: QueueBudget | None = None,
    ) -> None:
        self.hub = hub
        self.max_frame = max_frame
        self.port_queue = port_queue  # frames a port's egress backlog holds at most
        self.queue_budget = queue_budget if queue_budget is not None else QueueBudget()
        self.now = now  # the coarse clock: set by tick(), read on the hot path
        self.events: Counter[str] = Counter()
        self.learned = 0  # addresses that entered the MAC table (new, not moved: --metrics)
        # Where events go (``umlswitch.events.EventBus.publish``): any thread, never blocks.
        self.publish: Callable[..., None] = no_event
        self._flows: Flows = {}  # kept decisions (fabric/pipeline.py), forgotten on any change
        self.table = table if table is not None else MacTable()
        self.table.on_change = self._flows.clear
        self._ports: dict[int, FabricPort] = {}
        self._flood: dict[int, EgressSet] = {}
        # port id -> (its egress entry,), built on attach; () for a port the spanning tree blocks
        self._unicast: dict[int, EgressSet] = {}
        self._blocked: frozenset[int] = frozenset()  # ports the spanning tree does not forward
        self._guard: FrameGuard | None = None
        self.loop_watch: LoopWatcher | None = None  # logs loops seen while STP is off
        self._ratelog = RateLimitedLog(log)
        self._capture: CaptureSink | None = None
        self._ingress_hooks: dict[int, IngressHook] = {}  # port id -> impairment of its input
        self._egress_stages: dict[int, Any] = {}  # port id -> what stands in for it on egress
        self.sender_note = SenderNote()  # for egress stages: which port's frame is being sent
        self.departed = PortStats()  # the counters of detached ports, for switch-wide totals
        # VLANs (fabric/vlan.py): the configuration, and the same table while VLANs are on (None
        # while off: the VLAN stage is composed in exactly then).
        self.vlans = VlanTable(on_change=self._vlans_changed)
        self.vlan_filter: VlanTable | None = None
        self._vlan: VlanStage | None = None
        self._caching = True  # whether decisions may be kept (no guard, no capture)
        self._compose()

    # --- the pipeline ------------------------------------------------------------------------

    def _compose(self) -> None:
        """Build ``forward`` and ``forward_batch`` from the stages that are on now."""
        self._flows.clear()
        vlans = self.vlan_filter is not None
        self._vlan = None
        if vlans:
            self._vlan = VlanStage(
                self.vlans,
                self._ports,
                lambda: self._blocked,
                self.egress_of,
                self.max_frame,
                self._drop,
                self._vlan_oversize,
            )
        self._caching = self._guard is None and self._capture is None
        decide = self.decide
        if self._capture is not None:
            decide = capturing(decide, self._capture, self.max_frame)
        key_len = key_length(vlans)
        sizes = range(TAGGED_HEADER_LEN if vlans else ETH_HEADER_LEN, self.max_frame + 1)
        forward = single_driver(decide, self._flows, key_len, sizes, self._resolve)
        forward_batch = batch_driver(decide, self._flows, key_len, sizes, self._resolve)
        if self._egress_stages:
            forward, forward_batch = noting_sender(forward, forward_batch, self.sender_note)
        if self._ingress_hooks:
            forward, forward_batch = with_ingress_hooks(
                forward, forward_batch, self._ingress_hooks, self.max_frame
            )
        self.forward = self.receive = forward
        self.forward_batch = forward_batch

    @property
    def stages(self) -> tuple[str, ...]:
        """The optional stages composed into the pipeline now (none: the plain path)."""
        on = {
            "vlan": self._vlan is not None,
            "guard": self._guard is not None,
            "capture": self._capture is not None,
            "impair-in": bool(self._ingress_hooks),
            "impair-out": bool(self._egress_stages),
        }
        return tuple(name for name, present in on.items() if present)

    @property
    def guard(self) -> FrameGuard | None:
        """STP and storm control (``guard.Guard`` installs itself here while it has work)."""
        return self._guard

    @guard.setter
    def guard(self, guard: FrameGuard | None) -> None:
        if guard is not self._guard:
            self._guard = guard
            self._compose()

    @property
    def capture(self) -> CaptureSink | None:
        """The running capture (``umlswitch.capture``); None while off."""
        return self._capture

    @capture.setter
    def capture(self, capture: CaptureSink | None) -> None:
        if capture is not self._capture:
            self._capture = capture
            self._compose()

    def set_ingress_hook(self, port_id: int, hook: IngressHook | None) -> None:
        """Hand the frames port ``port_id`` receives to ``hook`` first (None: no more)."""
        if hook is None:
            self._ingress_hooks.pop(port_id, None)
        else:
            self._ingress_hooks[port_id] = hook
        self._compose()

    def set_egress_stage(self, port_id: int, stage: Any | None) -> None:
        """Send what goes to port ``port_id`` to ``stage`` instead (an ``Egress`` standing in
        for it), or to the port itself again (None)."""
        if stage is None:
            self._egress_stages.pop(port_id, None)
        else:
            self._egress_stages[port_id] = stage
        self._rebuild_unicast()
        self._compose()

    def egress_of(self, port: Any) -> Any:
        """What the fabric sends ``port``'s frames to: the port, or the stage standing in."""
        return self._egress_stages.get(port.id, port)

    def _resolve(self, full: Receivers, entry: Any) -> Receivers:
        """``entry`` answered "full": add the port behind it to ``full``."""
        port = self._ports.get(entry.id)
        if port is None or port in full:
            return full
        return (*full, port)

    def _tables_changed(self) -> None:
        """Ports, the tree or the stages changed: forget what was built from them."""
        self._flood.clear()
        self._flows.clear()
        if self._vlan is not None:
            self._vlan.forget()
        else:
            self.vlans.forget_caches()

    def _rebuild_unicast(self) -> None:
        blocked = self._blocked
        for pid, port in self._ports.items():
            self._unicast[pid] = () if pid in blocked else (self.egress_of(port),)
        self._tables_changed()

    # --- ports -----------------------------------------------------------------------------

    @property
    def ports(self) -> dict[int, FabricPort]:
        return self._ports

    def allocate_id(self, requested: int | None = None) -> int:
        """A free port number: ``requested`` if free, else the lowest free one from 1."""
        if requested is not None:
            if requested in self._ports:
                raise PortNumberTaken(f"port {requested} is already in use")
            return requested
        number = 1
        while number in self._ports:
            number += 1
        return number

    def attach(self, port: FabricPort, vlans: Membership = DEFAULT_MEMBERSHIP) -> None:
        """Attach ``port``, a member of the VLANs ``vlans`` (created if need be)."""
        if port.id in self._ports:
            raise PortNumberTaken(f"port {port.id} is already in use")
        self._ports[port.id] = port
        self._unicast[port.id] = (self.egress_of(port),)
        self._tables_changed()
        self.vlans.join(port.id, vlans)
        if self._guard is not None:
            self._guard.attached(port)

    def detach(self, port_id: int) -> int:
        """Remove a port and forget its MAC entries; return how many entries were forgotten."""
        port = self._ports.pop(port_id, None)
        if port is not None:
            self.departed.add(port.stats)
        self._unicast.pop(port_id, None)
        self._tables_changed()
        hook = self._ingress_hooks.pop(port_id, None)
        if self._egress_stages.pop(port_id, None) is not None or hook is not None:
            self._compose()  # its impairment leaves with it
        self.vlans.leave(port_id)
        if self._guard is not None:
            self._guard.detached(port_id)
        return self.table.forget_port(port_id)

    def set_blocked(self, blocked: frozenset[int]) -> None:
        """The spanning tree forwards nothing to (or from) ``blocked`` ports from now on."""
        self._blocked = blocked
        self._rebuild_unicast()

    def set_hub(self, hub: bool) -> None:
        self.hub = hub
        self._flows.clear()
        if hub:
            self.table.flush()

    # --- time --------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Advance the coarse clock and expire old MAC entries."""
        if now != self.now:
            self._flows.clear()  # kept decisions skip the refresh of their MAC entries
        self.now = now
        for mac, port in self.table.expire(now):
            self.events[counters.MAC_EXPIRED] += 1
            log.debug("port %d: %s expired", port, format_key(mac))

    # --- admission and decision ---------------------------------------------------------------

    def decide(
        self, ingress: Any, data: Frame, offset: int, size: int, key: FlowKey | None
    ) -> EgressSet:
        """Admit the frame of ``size`` bytes at ``offset`` in ``data`` and say where it goes:
        the egress entries, or ``NOWHERE`` with the drop counted on ``ingress``. Keep the
        decision under ``key`` (not None: the drivers give one only for admissible sizes) if
        frames like it may reuse it."""
        if key is None and not ETH_HEADER_LEN <= size <= self.max_frame:
            self._drop(ingress, counters.RUNT if size < ETH_HEADER_LEN else counters.GIANT, size)
            return NOWHERE
        dst, src = _addresses(data, offset)
        if src[0] & 1:
            self._drop(ingress, counters.GROUP_SOURCE, size)
            return NOWHERE
        guard = self._guard
        if guard is not None and dst == STP_GROUP:  # a BPDU is the tree's, before any VLAN
            if not guard.admit(ingress, dst, src, data, offset, size):
                return NOWHERE
            guard = None  # admitted (the tree is off): it is counted already
        kind, vid, dst_key = UNTAGGED, 0, dst
        if self._vlan is not None:
            classified = self._vlan.classify(ingress, data, offset, size)
            if classified is None:
                return NOWHERE
            kind, vid, suffix = classified
            src += suffix
            dst_key += suffix
        # The tree's state and storm control see the addresses as the table holds them now.
        if guard is not None and not guard.admit(ingress, dst_key, src, data, offset, size):
            return NOWHERE
        ingress_id = ingress.id
        keep = self._caching
        if self.hub:
            egress = self._flooded(ingress_id, kind, vid)
        else:
            learned = self.table.learn(src, ingress_id, self.now)
            if learned is not Learned.REFRESHED:
                self._note_learning(learned, src, ingress)
                keep = False  # the table changed: nothing like it may be reused yet
            out = None if dst[0] & 1 else self.table.lookup(dst_key)
            if out is None:
                egress = self._flooded(ingress_id, kind, vid)
            elif out == ingress_id:
                ingress.stats.drops[counters.SAME_PORT] += 1
                return NOWHERE
            else:
                egress = self._unicast.get(out, NOWHERE)
                if self._vlan is not None or not egress:
                    egress = self._unicast_to(out, kind, vid, ingress_id)
        if keep and key is not None:
            if len(self._flows) >= FLOW_LIMIT:
                self._flows.clear()  # start again: the flows in use come back at once
            self._flows[key] = (ingress, egress)
        return egress

    def _flooded(self, ingress_id: int, kind: int, vid: int) -> EgressSet:
        if self._vlan is not None:
            return self._vlan.flood(ingress_id, kind, vid)
        return self.flood_set(ingress_id)

    def _unicast_to(self, out: int, kind: int, vid: int, ingress_id: int) -> EgressSet:
        entry = self._unicast.get(out)
        if entry is None:  # cannot happen while detach() forgets entries; be safe anyway
            return self._flooded(ingress_id, kind, vid)
        if self._vlan is None or not entry:  # () for a port the tree blocks
            return entry
        member = self._vlan.unicast(self._ports[out], kind, vid)
        if member is None:  # cannot happen while membership changes forget entries
            return self._flooded(ingress_id, kind, vid)
        return member

    def flood_set(self, ingress_id: int) -> EgressSet:
        """Every port's entry but the ingress one's and blocked ones' (cached until the ports
        change)."""
        ports = self._flood.get(ingress_id)
        if ports is None:
            blocked = self._blocked
            ports = self._flood[ingress_id] = tuple(
                self.egress_of(p)
                for pid, p in self._ports.items()
                if pid != ingress_id and pid not in blocked
            )
        return ports

    # --- drops -------------------------------------------------------------------------------

    def reject(self, ingress: FabricPort, reason: str, size: int) -> None:
        """Count (and log, rate-limited) a frame from ``ingress`` dropped before forwarding."""
        ingress.stats.rx_frames += 1
        ingress.stats.rx_bytes += size
        self._drop(ingress, reason, size)

    def _drop(self, ingress: FabricPort, reason: str, size: int) -> None:
        ingress.stats.drops[reason] += 1
        self._ratelog.warning(
            f"{reason}:{ingress.id}",
            "port %d (%s): dropped %s frame of %d bytes (max %d)",
            ingress.id,
            ingress.name,
            reason,
            size,
            self.max_frame,
        )

    def _vlan_oversize(self, port_id: int, size: int) -> None:
        """A frame of ``size`` bytes with its tag is too large for port ``port_id``."""
        port = self._ports.get(port_id)
        if port is None:
            return
        port.stats.drops[counters.VLAN_OVERSIZE] += 1
        self._ratelog.warning(
            f"{counters.VLAN_OVERSIZE}:{port_id}",
            "port %d (%s): not sent a frame of %d bytes with its VLAN tag (max %d)",
            port_id,
            port.name,
            size,
            self.max_frame,
        )

    def _note_learning(self, learned: Learned, src: bytes, ingress: FabricPort) -> None:
        mac = Deferred(format_key, src)  # formatted only if logged: a flood is mostly suppressed
        if learned is Learned.NEW or learned is Learned.NEW_EVICTING:
            self.learned += 1
        if learned is Learned.NEW:  # rate-limited: a MAC flood must not flood the log too
            self._ratelog.log(
                logging.INFO,
                f"learn:{ingress.id}",
                "port %d (%s): learned %s",
                ingress.id,
                ingress.name,
                mac,
            )
        elif learned is Learned.NEW_EVICTING:
            self.events[counters.MAC_EVICTED] += 1
            evicted = self.table.last_evicted
            assert evicted is not None
            self._ratelog.warning(
                f"evict:{ingress.id}",
                "port %d (%s): learned %s; MAC table full (%d), evicted %s from port %d",
                ingress.id,
                ingress.name,
                mac,
                len(self.table),
                Deferred(format_key, evicted[0]),
                evicted[1],
            )
        elif learned is Learned.MOVED:
            self.events[counters.MAC_MOVED] += 1
            if self.table.last_move_evicted:
                self.events[counters.MAC_EVICTED] += 1
            log.info(
                "port %d (%s): %s moved here from port %s",
                ingress.id,
                ingress.name,
                mac,
                self.table.last_moved_from,
            )
            address, vid = split_key(src)
            self.publish(
                "mac/move",
                mac=format_mac(address),
                vlan=vid,
                port=ingress.id,
                previous=self.table.last_moved_from,
            )
        elif learned is Learned.HELD:
            self.events[counters.MAC_MOVE_HELD] += 1
            if self.loop_watch is not None:
                self.loop_watch.held(src, self.table.lookup(src), ingress)
            self._ratelog.warning(
                f"held:{ingress.id}",
                "port %d (%s): %s is on port %s and was seen there within %.1f s; not moved",
                ingress.id,
                ingress.name,
                mac,
                self.table.lookup(src),
                self.table.hold_down,
            )

    # --- VLANs (fabric/vlan.py) -------------------------------------------------------------

    def _vlans_changed(self, port_ids: Iterable[int]) -> None:
        """The VLAN configuration changed (for ``port_ids``: their membership)."""
        for port_id in port_ids:
            self.table.forget_port(port_id)
        active = self.vlans.active
        if active == (self.vlan_filter is not None):
            self._tables_changed()
            return
        self.vlan_filter = self.vlans if active else None
        flushed = self.table.flush()  # the table's keys change form (with a VID or without)
        log.info(
            "VLANs %s; forgot %d MAC(s)",
            "on" if active else "off: tags pass through untouched",
            flushed,
        )
        self._tables_changed()
        self._compose()
