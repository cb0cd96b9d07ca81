"""The Fabric: the set of attached ports and the hub/switch decision for every frame.

Ports are anything with an ``id``, a ``name``, ``stats`` and a non-blocking ``send_nowait``; the
fabric never touches a socket. An ingress loop hands each received frame to ``forward``, which
checks its size, learns its source (switch mode), picks the egress ports and calls their
``send_nowait`` directly: no task switch and no queue per frame. While VLANs are configured
(``fabric/vlan.py``), the decision also says which ports get the frame tagged and which untagged.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

from umlswitch import counters
from umlswitch.counters import PortStats
from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.frame import DEFAULT_MAX_FRAME, ETH_HEADER_LEN, format_mac
from umlswitch.fabric.impair import IngressHook
from umlswitch.fabric.mactable import Learned, MacTable
from umlswitch.fabric.queues import DEFAULT_PORT_QUEUE, QueueBudget
from umlswitch.fabric.stp import STP_GROUP
from umlswitch.fabric.vlan import (
    DEFAULT_MEMBERSHIP,
    PRIORITY,
    TAGGED,
    TAGGED_HEADER_LEN,
    UNTAGGED,
    VID_BYTES,
    Membership,
    Ports,
    VlanTable,
    format_key,
    split_key,
    tagged_form,
    untagged_form,
)
from umlswitch.ratelog import Deferred, RateLimitedLog

log = logging.getLogger("umlswitch.fabric")

# Destination and source address of a frame as two ``bytes`` (dict keys) in one C call: about
# 3x cheaper than ``bytes(frame[0:6])`` and ``bytes(frame[6:12])`` on a memoryview.
_addresses = struct.Struct("6s6s").unpack_from


class FabricPort(Protocol):
    """What the fabric needs of a port."""

    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def stats(self) -> PortStats: ...

    def send_nowait(self, frame: bytes | memoryview) -> None:
        """Queue ``frame`` in the kernel or in the port's backlog, or drop and count it; never
        block, never raise."""

    def send_batch(self, batch: FrameBatch, indices: list[int]) -> None:
        """``send_nowait`` for the frames in slots ``indices`` of ``batch``, in that order."""

    # Impairment of the frames the port receives (``umlswitch/impair.py``); None when off.
    impair_in: IngressHook | None


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

    def offer(
        self, frame: bytes | memoryview, ingress_id: int, egress: tuple[FabricPort, ...]
    ) -> None:
        """Queue a copy of ``frame`` (received on ``ingress_id``, sent to ``egress``) if the
        capture watches one of those ports; never block (any thread)."""


def no_event(event: str, **fields: object) -> None:
    """``Fabric.publish`` until the daemon connects its event bus (``umlswitch.events``)."""


class PortNumberTaken(Exception):
    """A client asked for a port number that is already in use."""


class Fabric:
    """Attached ports plus the forwarding decision (hub or learning switch)."""

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
        self.table = table if table is not None else MacTable()
        self.max_frame = max_frame
        self.port_queue = port_queue  # frames a port's egress backlog holds at most
        self.queue_budget = queue_budget if queue_budget is not None else QueueBudget()
        self.now = now  # the coarse clock: set by tick(), read on the hot path
        self.events: Counter[str] = Counter()
        self.learned = 0  # addresses that entered the MAC table (new, not moved: --metrics)
        self._ports: dict[int, FabricPort] = {}
        self._flood: dict[int, tuple[FabricPort, ...]] = {}
        # port id -> (port,), built on attach; () for a port the spanning tree blocks
        self._unicast: dict[int, tuple[FabricPort, ...]] = {}
        self._blocked: frozenset[int] = frozenset()  # ports the spanning tree does not forward
        self.guard: FrameGuard | None = None  # STP and storm control; None while both are off
        self.loop_watch: LoopWatcher | None = None  # logs loops seen while STP is off
        self._ratelog = RateLimitedLog(log)
        self.capture: CaptureSink | None = None  # packet capture, off unless set
        self.departed = PortStats()  # the counters of detached ports, for switch-wide totals
        # VLANs (fabric/vlan.py): the configuration, and the same table while VLANs are on (None
        # while off: the hot path's only VLAN cost is checking that).
        self.vlans = VlanTable(on_change=self._vlans_changed)
        self.vlan_filter: VlanTable | None = None
        # Where events go (``umlswitch.events.EventBus.publish``): any thread, never blocks.
        self.publish: Callable[..., None] = no_event

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
        self._unicast[port.id] = (port,)
        self._flood.clear()
        self.vlans.join(port.id, vlans)
        if self.guard is not None:
            self.guard.attached(port)

    def detach(self, port_id: int) -> int:
        """Remove a port and forget its MAC entries; return how many entries were forgotten."""
        port = self._ports.pop(port_id, None)
        if port is not None:
            self.departed.add(port.stats)
        self._unicast.pop(port_id, None)
        self._flood.clear()
        self.vlans.leave(port_id)
        if self.guard is not None:
            self.guard.detached(port_id)
        return self.table.forget_port(port_id)

    def set_blocked(self, blocked: frozenset[int]) -> None:
        """The spanning tree forwards nothing to (or from) ``blocked`` ports from now on."""
        self._blocked = blocked
        for pid, port in self._ports.items():
            self._unicast[pid] = () if pid in blocked else (port,)
        self._flood.clear()
        self.vlans.forget_caches()

    def set_hub(self, hub: bool) -> None:
        self.hub = hub
        if hub:
            self.table.flush()

    # --- time --------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Advance the coarse clock and expire old MAC entries."""
        self.now = now
        for mac, port in self.table.expire(now):
            self.events[counters.MAC_EXPIRED] += 1
            log.debug("port %d: %s expired", port, format_key(mac))

    # --- forwarding --------------------------------------------------------------------------

    def flood_set(self, ingress_id: int) -> tuple[FabricPort, ...]:
        """Every port but the ingress one and blocked ones (cached until the ports change)."""
        ports = self._flood.get(ingress_id)
        if ports is None:
            blocked = self._blocked
            ports = self._flood[ingress_id] = tuple(
                p for pid, p in self._ports.items() if pid != ingress_id and pid not in blocked
            )
        return ports

    def egress_at(
        self, ingress: FabricPort, data: bytes | bytearray | memoryview, offset: int, size: int
    ) -> tuple[FabricPort, ...]:
        """The ports the frame of ``size`` bytes at ``offset`` in ``data`` goes to, or () with
        the drop counted on ``ingress``."""
        if size < ETH_HEADER_LEN:
            self._drop(ingress, counters.RUNT, size)
            return ()
        if size > self.max_frame:
            self._drop(ingress, counters.GIANT, size)
            return ()
        dst, src = _addresses(data, offset)
        if src[0] & 1:
            self._drop(ingress, counters.GROUP_SOURCE, size)
            return ()
        if self.guard is not None and not self.guard.admit(ingress, dst, src, data, offset, size):
            return ()
        ingress_id = ingress.id
        if self.hub:
            return self.flood_set(ingress_id)
        learned = self.table.learn(src, ingress_id, self.now)
        if learned is not Learned.REFRESHED:
            self._note_learning(learned, src, ingress)
        if dst[0] & 1:
            return self.flood_set(ingress_id)
        out = self.table.lookup(dst)
        if out is None:
            return self.flood_set(ingress_id)
        if out == ingress_id:
            ingress.stats.drops[counters.SAME_PORT] += 1
            return ()
        port = self._unicast.get(out)
        if port is None:  # cannot happen while detach() forgets entries; be safe anyway
            return self.flood_set(ingress_id)
        return port

    def receive(self, ingress: FabricPort, buffer: memoryview, size: int) -> None:
        """The receive rule of every port kind: a datagram or read of ``size`` bytes (its real
        length, ``MSG_TRUNC``) is in ``buffer``; forward it, or count a giant (which did not fit
        the buffer and is never read)."""
        if size > self.max_frame:
            self.reject(ingress, counters.GIANT, size)
        else:
            self.forward(ingress, buffer[:size])

    def forward(self, ingress: FabricPort, frame: bytes | memoryview) -> None:
        """Account ``frame`` on ``ingress`` and send it to its egress ports."""
        if ingress.impair_in is not None and ingress.impair_in.take(frame):
            return  # lost or waiting; or sent altered or twice by the impairment itself
        stats = ingress.stats
        stats.rx_frames += 1
        stats.rx_bytes += len(frame)
        self.queue_budget.sender = ingress  # a backlog this fills up holds ``ingress`` back
        if self.vlan_filter is not None:
            self._vlan_forward(ingress, frame)
            return
        if self.capture is not None:
            self._forward_captured(self.capture, ingress, frame)
            return
        for port in self.egress_at(ingress, frame, 0, len(frame)):
            port.send_nowait(frame)

    def forward_batch(self, ingress: FabricPort, batch: FrameBatch) -> None:
        """``forward`` for every frame of ``batch``, with the same rules and counters; each
        egress port gets its frames of the batch in one ``send_batch``, in order.

        Frames of one batch mostly share their addresses (a guest's stream to one peer): a frame
        with the same destination and source as the frame before, whose decision left the
        source learned on this port, gets the same egress ports without asking the table again
        (the learning would only refresh what the first frame refreshed at this same time).
        """
        if ingress.impair_in is not None:
            ingress.impair_in.take_batch(batch)  # frame by frame, through forward
            return
        stats = ingress.stats
        lengths = batch.lengths
        slot_size = batch.slot_size
        data = batch.data
        egress_at = self.egress_at
        capture = self.capture
        max_frame = self.max_frame
        lookup = self.table.lookup
        ingress_id = ingress.id
        self.queue_budget.sender = ingress  # a backlog this fills up holds ``ingress`` back
        if self.vlan_filter is not None:
            self._vlan_forward_batch(ingress, batch)
            return
        outputs: dict[FabricPort, list[int]] = {}
        known: tuple[bytes, bytes] | None = None  # the addresses of the last decision kept
        known_egress: tuple[FabricPort, ...] = ()
        for index in range(batch.count):
            size = lengths[index]
            stats.rx_frames += 1
            stats.rx_bytes += size
            offset = index * slot_size
            if ETH_HEADER_LEN <= size <= max_frame:
                pair = _addresses(data, offset)
                if pair == known:
                    egress = known_egress
                else:
                    egress = egress_at(ingress, data, offset, size)
                    if (
                        egress
                        and self.guard is None  # the guard sees every frame (storm counts)
                        and (self.hub or lookup(pair[1]) == ingress_id)
                    ):
                        known, known_egress = pair, egress
                    else:
                        known = None
            else:
                egress = egress_at(ingress, data, offset, size)  # counts the runt or giant
            if capture is not None and size <= max_frame:  # giants are not captured
                self._record(capture, ingress, egress, batch.frame(index))
            for port in egress:
                indices = outputs.get(port)
                if indices is None:
                    outputs[port] = [index]
                else:
                    indices.append(index)
        for port, indices in outputs.items():
            port.send_batch(batch, indices)

    def _forward_captured(
        self, capture: CaptureSink, ingress: FabricPort, frame: bytes | memoryview
    ) -> None:
        """``forward`` while capturing: the frames from the ingress port and to the watched one."""
        egress = self.egress_at(ingress, frame, 0, len(frame))
        self._record(capture, ingress, egress, frame)
        for port in egress:
            port.send_nowait(frame)

    @staticmethod
    def _record(
        capture: CaptureSink,
        ingress: FabricPort,
        egress: tuple[FabricPort, ...],
        frame: bytes | memoryview,
    ) -> None:
        """Capture ``frame`` if it comes from or goes to the watched port (or every port)."""
        capture.offer(frame, ingress.id, egress)

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
        self._flood.clear()
        for port_id in port_ids:
            self.table.forget_port(port_id)
        active = self.vlans.active
        if active != (self.vlan_filter is not None):
            self.vlan_filter = self.vlans if active else None
            flushed = self.table.flush()  # the table's keys change form (with a VID or without)
            log.info(
                "VLANs %s; forgot %d MAC(s)",
                "on" if active else "off: tags pass through untouched",
                flushed,
            )

    def vlan_egress(
        self, ingress: FabricPort, data: bytes | bytearray | memoryview, offset: int, size: int
    ) -> tuple[int, int, Ports, Ports] | None:
        """``egress_at`` while VLANs are on: (how the frame arrived, its VLAN, the ports that get
        it untagged, those that get it tagged), or None if it goes nowhere (counted)."""
        if size < ETH_HEADER_LEN:
            self._drop(ingress, counters.RUNT, size)
            return None
        if size > self.max_frame:
            self._drop(ingress, counters.GIANT, size)
            return None
        dst, src = _addresses(data, offset)
        if src[0] & 1:
            self._drop(ingress, counters.GROUP_SOURCE, size)
            return None
        guard = self.guard
        if guard is not None and dst == STP_GROUP:  # a BPDU is the tree's, before any VLAN
            if not guard.admit(ingress, dst, src, data, offset, size):
                return None
            guard = None  # admitted (the tree is off): it is counted already
        ingress_id = ingress.id
        vlans = self.vlans
        member = vlans.members.get(ingress_id, DEFAULT_MEMBERSHIP)
        if data[offset + 12] == 0x81 and data[offset + 13] == 0x00:
            if size < TAGGED_HEADER_LEN:
                self._drop(ingress, counters.RUNT, size)
                return None
            vid = ((data[offset + 14] & 0x0F) << 8) | data[offset + 15]
            if vid == 0:
                kind, vid = PRIORITY, member.untagged
            elif vid in member.tagged:
                kind = TAGGED
            else:
                self._drop(ingress, counters.VLAN_NOT_MEMBER, size)
                return None
        else:
            kind, vid = UNTAGGED, member.untagged
        suffix = VID_BYTES[vid]
        key = src + suffix
        dst_key = dst + suffix
        # The tree's state and storm control see the addresses as the table holds them now.
        if guard is not None and not guard.admit(ingress, dst_key, key, data, offset, size):
            return None
        if self.hub:
            return (kind, vid, *vlans.flood(ingress_id, vid, self._ports, self._blocked))
        learned = self.table.learn(key, ingress_id, self.now)
        if learned is not Learned.REFRESHED:
            self._note_learning(learned, key, ingress)
        if dst[0] & 1:
            return (kind, vid, *vlans.flood(ingress_id, vid, self._ports, self._blocked))
        out = self.table.lookup(dst_key)
        if out is None:
            return (kind, vid, *vlans.flood(ingress_id, vid, self._ports, self._blocked))
        if out == ingress_id:
            ingress.stats.drops[counters.SAME_PORT] += 1
            return None
        port = self._unicast.get(out)
        target = vlans.members.get(out)
        if port is not None and target is not None:
            if target.untagged == vid:
                return (kind, vid, port, ())
            if vid in target.tagged:
                return (kind, vid, (), port)
        # cannot happen while membership changes and detach() forget entries; be safe anyway
        return (kind, vid, *vlans.flood(ingress_id, vid, self._ports, self._blocked))

    def _vlan_forward(self, ingress: FabricPort, frame: bytes | memoryview) -> None:
        """``forward`` while VLANs are on (accounted already)."""
        decided = self.vlan_egress(ingress, frame, 0, len(frame))
        if self.capture is not None:
            egress = () if decided is None else decided[2] + decided[3]
            self._record(self.capture, ingress, egress, frame)
        if decided is None:
            return
        kind, vid, untagged, tagged = decided
        if untagged:
            out = untagged_form(kind, frame)
            for port in untagged:
                port.send_nowait(out)
        if tagged:
            out = tagged_form(kind, frame, vid)
            if len(out) > self.max_frame:
                self._vlan_oversize(tagged, len(out))
                return
            for port in tagged:
                port.send_nowait(out)

    def _vlan_forward_batch(self, ingress: FabricPort, batch: FrameBatch) -> None:
        """``forward_batch`` while VLANs are on: the frames a port gets as received go in one
        ``send_batch``; those with a tag added or removed are sent one by one, in order. As
        there, a frame whose addresses and tag (its first 16 bytes) are those of the frame before,
        whose decision left the source learned on this port, reuses that decision."""
        stats = ingress.stats
        lengths = batch.lengths
        slot_size = batch.slot_size
        data = batch.data
        capture = self.capture
        max_frame = self.max_frame
        lookup = self.table.lookup
        ingress_id = ingress.id
        outputs: dict[FabricPort, list[int | bytes | memoryview]] = {}
        mixed: set[FabricPort] = set()  # ports with a frame that is not as received
        known: bytearray | None = None  # the first 16 bytes of the last decision kept
        known_decided: tuple[int, int, Ports, Ports] | None = None
        for index in range(batch.count):
            size = lengths[index]
            stats.rx_frames += 1
            stats.rx_bytes += size
            offset = index * slot_size
            if TAGGED_HEADER_LEN <= size <= max_frame:
                head = data[offset : offset + 16]
                if head == known:
                    decided = known_decided
                else:
                    decided = self.vlan_egress(ingress, data, offset, size)
                    if (
                        decided is not None
                        and self.guard is None  # the guard sees every frame (storm counts)
                        and (
                            self.hub
                            or lookup(bytes(head[6:12]) + VID_BYTES[decided[1]]) == ingress_id
                        )
                    ):
                        known, known_decided = head, decided
                    else:
                        known = None
            else:
                decided = self.vlan_egress(ingress, data, offset, size)  # a runt or giant
            if capture is not None and size <= max_frame:  # giants are not captured
                egress = () if decided is None else decided[2] + decided[3]
                self._record(capture, ingress, egress, batch.frame(index))
            if decided is None:
                continue
            kind, vid, untagged, tagged = decided
            item: int | bytes | memoryview
            if untagged:
                if kind == UNTAGGED:
                    item = index
                else:
                    item = untagged_form(kind, batch.frame(index))
                    mixed.update(untagged)
                for port in untagged:
                    items = outputs.get(port)
                    if items is None:
                        outputs[port] = [item]
                    else:
                        items.append(item)
            if tagged:
                if kind == TAGGED:
                    item = index
                else:
                    item = tagged_form(kind, batch.frame(index), vid)
                    if len(item) > max_frame:
                        self._vlan_oversize(tagged, len(item))
                        continue
                    mixed.update(tagged)
                for port in tagged:
                    items = outputs.get(port)
                    if items is None:
                        outputs[port] = [item]
                    else:
                        items.append(item)
        for port, items in outputs.items():
            if port not in mixed:
                port.send_batch(batch, items)  # type: ignore[arg-type] # indices only
                continue
            run: list[int] = []
            for item in items:
                if isinstance(item, int):
                    run.append(item)
                    continue
                if run:
                    port.send_batch(batch, run)
                    run = []
                port.send_nowait(item)
            if run:
                port.send_batch(batch, run)

    def _vlan_oversize(self, ports: Ports, size: int) -> None:
        """A frame of ``size`` bytes with its tag is too large for ``ports``: count it there."""
        for port in ports:
            port.stats.drops[counters.VLAN_OVERSIZE] += 1
            self._ratelog.warning(
                f"{counters.VLAN_OVERSIZE}:{port.id}",
                "port %d (%s): not sent a frame of %d bytes with its VLAN tag (max %d)",
                port.id,
                port.name,
                size,
                self.max_frame,
            )
