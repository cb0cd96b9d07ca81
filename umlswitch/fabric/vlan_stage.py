"""The VLAN stage of the pipeline: composed in only while VLANs are on (``fabric/vlan.py`` has
the rules and the configuration; this module applies them to frames).

It does three things for ``Fabric.decide``: **classify** a frame (how it arrived: untagged,
priority-tagged or tagged, and its VLAN; drops counted), give the **scope** of the decision (the
MAC table's key carries the VID; flooding stays inside the VLAN; a unicast target must be a member)
and say **in which form** each port gets the frame. A port that gets it as received is an egress
entry like any other; one that needs a tag added, rewritten or removed gets a ``Retag`` entry
standing in for it, which makes the copy and sends it (or counts ``vlan_oversize`` when the tag
would make it longer than ``--max-frame``). So the pipeline's egress step is the same with VLANs
on or off. The entries are built once per (ingress, VLAN, form) and kept until the next change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from umlswitch import counters
from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.pipeline import EgressSet, Frame, Rewriting
from umlswitch.fabric.vlan import (
    DEFAULT_MEMBERSHIP,
    PRIORITY,
    TAGGED,
    TAGGED_HEADER_LEN,
    UNTAGGED,
    VID_BYTES,
    VlanTable,
    tagged_form,
    untagged_form,
)


class Retag(Rewriting):
    """An egress entry standing in for ``target`` (a port or another entry): it sends the
    frame in the form the port's membership needs (tagged with ``vid``, or untagged)."""

    __slots__ = ("id", "kind", "max_frame", "oversize", "tagged", "target", "vid")

    def __init__(
        self,
        target: Any,
        kind: int,
        vid: int,
        tagged: bool,
        max_frame: int,
        oversize: Callable[[int, int], None],
    ) -> None:
        self.target = target
        self.id = target.id
        self.kind = kind  # how the frame arrived
        self.vid = vid
        self.tagged = tagged  # whether this port gets it tagged
        self.max_frame = max_frame
        self.oversize = oversize  # counts a frame the tag makes too large for this port

    def rewrite(self, frame: Frame) -> Frame | None:
        """The frame as this port gets it, or None if the tag makes it too large (counted)."""
        if not self.tagged:
            return untagged_form(self.kind, frame)
        copy = tagged_form(self.kind, frame, self.vid)
        if len(copy) > self.max_frame:
            self.oversize(self.id, len(copy))
            return None
        return copy

    def send_nowait(self, frame: Frame) -> bool:
        copy = self.rewrite(frame)
        return False if copy is None else bool(self.target.send_nowait(copy))

    def send_batch(self, batch: FrameBatch, indices: list[int]) -> bool:
        answer = False
        for index in indices:
            answer = self.send_nowait(batch.frame(index))
        return answer


class VlanStage:
    """Classification, scope and egress forms of frames while VLANs are on."""

    def __init__(
        self,
        vlans: VlanTable,
        ports: dict[int, Any],
        blocked: Callable[[], frozenset[int]],
        egress_of: Callable[[Any], Any],
        max_frame: int,
        drop: Callable[[Any, str, int], None],
        oversize: Callable[[int, int], None],
    ) -> None:
        self.vlans = vlans
        self.ports = ports
        self.blocked = blocked  # the ports the spanning tree blocks now
        self.egress_of = egress_of  # a port -> its egress entry (itself, or a stage's)
        self.max_frame = max_frame
        self.drop = drop
        self.oversize = oversize
        self._floods: dict[tuple[int, int, int], EgressSet] = {}
        self._entries: dict[tuple[int, int, int, bool], Any] = {}

    def forget(self) -> None:
        """Something the entries depend on changed (ports, membership, tree, stages)."""
        self._floods.clear()
        self._entries.clear()
        self.vlans.forget_caches()

    def classify(
        self, ingress: Any, data: Frame | bytearray, offset: int, size: int
    ) -> tuple[int, int, bytes] | None:
        """(how the frame arrived, its VLAN, the VID's two bytes for the table's keys), or None
        if the port may not send it (counted)."""
        member = self.vlans.members.get(ingress.id, DEFAULT_MEMBERSHIP)
        if data[offset + 12] == 0x81 and data[offset + 13] == 0x00:
            if size < TAGGED_HEADER_LEN:
                self.drop(ingress, counters.RUNT, size)
                return None
            vid = ((data[offset + 14] & 0x0F) << 8) | data[offset + 15]
            if vid == 0:
                kind, vid = PRIORITY, member.untagged
            elif vid in member.tagged:
                kind = TAGGED
            else:
                self.drop(ingress, counters.VLAN_NOT_MEMBER, size)
                return None
        else:
            kind, vid = UNTAGGED, member.untagged
        return kind, vid, VID_BYTES[vid]

    def flood(self, ingress_id: int, kind: int, vid: int) -> EgressSet:
        """The entries of every member of ``vid`` but the ingress port and blocked ones."""
        key = (ingress_id, kind, vid)
        entries = self._floods.get(key)
        if entries is None:
            untagged, tagged = self.vlans.flood(ingress_id, vid, self.ports, self.blocked())
            entries = self._floods[key] = tuple(
                [self._entry(p, kind, vid, False) for p in untagged]
                + [self._entry(p, kind, vid, True) for p in tagged]
            )
        return entries

    def unicast(self, port: Any, kind: int, vid: int) -> EgressSet | None:
        """The entry of ``port`` for a frame of ``vid``; None if it is no member (flood)."""
        target = self.vlans.members.get(port.id)
        if target is None:
            return None
        if target.untagged == vid:
            return (self._entry(port, kind, vid, False),)
        if vid in target.tagged:
            return (self._entry(port, kind, vid, True),)
        return None

    def _entry(self, port: Any, kind: int, vid: int, tagged: bool) -> Any:
        """``port``'s entry for a frame that arrived as ``kind`` and leaves ``tagged`` or not."""
        egress = self.egress_of(port)
        if (kind == UNTAGGED and not tagged) or (kind == TAGGED and tagged):
            return egress  # as received
        key = (port.id, kind, vid, tagged)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = Retag(
                egress, kind, vid, tagged, self.max_frame, self.oversize
            )
        return entry
