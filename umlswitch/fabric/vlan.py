"""802.1Q VLANs: the switch's VLANs, each port's membership, and how a frame's tag changes.

Rules (as a Linux bridge with ``vlan_filtering 1``, with vde_switch's command names):

* **Off until configured.** While the switch has no VLAN but the default one, it is VLAN-unaware,
  as today and as a Linux bridge without ``vlan_filtering``: tags pass through untouched, and
  the fabric's hot path pays one ``is None`` check for this (``Fabric.vlan_filter``). VLANs are
  on exactly while some VLAN other than the default exists (``vlan/create``, a port or control
  socket given ``vlan=``/``trunk=``); removing the last one turns them off again.
* **The default VLAN is 1** (the Linux bridge's ``default_pvid``, and 802.1Q's: VID 0 is not a
  VLAN but a priority tag). vde_switch calls its default VLAN 0; here ``0`` is refused with a
  pointer to 1. VLAN 1 always exists and cannot be removed. VIDs are 1 to 4094 (4095 is reserved).
* **Membership.** Each port has one untagged VLAN (its access VLAN, the PVID; default 1) and
  any number of tagged VLANs (a trunk), never both for the same VLAN.
* **Ingress.** An untagged frame joins the port's untagged VLAN. A frame tagged (TPID 0x8100)
  with VID 0 (priority-tagged) counts as untagged: it joins that VLAN too, its priority kept. A
  frame tagged with another VID is accepted only if the port is a tagged member of that VLAN;
  else it is dropped and counted (``vlan_not_member``). Only the outer tag counts: a second tag
  inside is payload, and an 802.1ad (0x88a8) outer tag is no 802.1Q tag, so such a frame is
  untagged for this switch. A frame too short to hold its tag and EtherType is a runt.
* **Egress.** A port gets the frame untagged if the frame's VLAN is its untagged VLAN, and with
  the VLAN's tag if it is a tagged member; other ports never see it (flooding stays inside the
  VLAN). A frame received with the right tag goes out as received (priority and DEI kept); a tag
  the switch adds has the priority of the priority tag it replaces, else 0. A frame that the tag
  would make longer than ``--max-frame`` is not sent to that port: counted there as
  ``vlan_oversize``.
* **Learning** is per (VLAN, MAC): the MAC table's key is the address followed by the VID in two
  bytes, so one address on two VLANs is two entries. Changing a port's membership forgets the
  addresses learned on it (as vde_switch does), and turning VLANs on or off flushes the table.

This module is pure: no sockets, no clock. ``VlanTable`` holds the configuration and answers the
fabric's questions; the fabric (``Fabric.vlan_*``) makes the per-frame decision.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from umlswitch.digits import is_decimal

TPID = b"\x81\x00"  # 802.1Q
TAGGED_HEADER_LEN = 18  # addresses, the tag, the inner EtherType
DEFAULT_VLAN = 1
MAX_VLAN = 4094  # 4095 is reserved
# Two-byte VIDs, the suffix of a MAC table key while VLANs are on; and each VLAN's 802.1Q tag.
VID_BYTES = tuple(vid.to_bytes(2, "big") for vid in range(4096))
TAGS = tuple(TPID + vid_bytes for vid_bytes in VID_BYTES)
# How a frame arrived: no 802.1Q tag; tagged with VID 0 (priority only); tagged with a VLAN.
UNTAGGED, PRIORITY, TAGGED = 0, 1, 2


class VlanError(ValueError):
    """A VLAN command or option that cannot be done; ``errno`` as vde_switch answers it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code


def parse_vid(text: str, what: str = "VLAN") -> int:
    """A VLAN id from 1 to 4094; ValueError (VlanError) with a readable message otherwise."""
    text = text.strip()
    if not is_decimal(text):
        raise VlanError(
            errno.EINVAL, f"{what} must be a VLAN number from 1 to {MAX_VLAN}: {text!r}"
        )
    vid = int(text)
    if vid == 0:
        raise VlanError(
            errno.EINVAL,
            f"{what} 0 is no VLAN (802.1Q: VID 0 tags a frame's priority only); "
            f"the default VLAN is {DEFAULT_VLAN}",
        )
    if vid > MAX_VLAN:
        raise VlanError(errno.EINVAL, f"{what} must be from 1 to {MAX_VLAN}, not {vid}")
    return vid


@dataclass(frozen=True)
class Membership:
    """One port's VLANs: the untagged one and the tagged ones."""

    untagged: int = DEFAULT_VLAN
    tagged: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.untagged in self.tagged:
            raise VlanError(
                errno.EINVAL, f"VLAN {self.untagged} cannot be both untagged and tagged on a port"
            )

    @property
    def is_default(self) -> bool:
        return self.untagged == DEFAULT_VLAN and not self.tagged

    def vlans(self) -> set[int]:
        return {self.untagged, *self.tagged}

    def words(self) -> list[str]:
        """The port options that give this membership back: ``vlan=10``, ``trunk=20,30``."""
        words = [] if self.untagged == DEFAULT_VLAN else [f"vlan={self.untagged}"]
        if self.tagged:
            words.append("trunk=" + ",".join(map(str, sorted(self.tagged))))
        return words

    def describe(self) -> str:
        """``untagged 10, tagged 20 30``."""
        text = f"untagged {self.untagged}"
        if self.tagged:
            text += ", tagged " + " ".join(map(str, sorted(self.tagged)))
        return text

    def doc(self) -> dict[str, Any]:
        return {"untagged": self.untagged, "tagged": sorted(self.tagged)}


DEFAULT_MEMBERSHIP = Membership()


def split_vlan_options(text: str) -> tuple[str, Membership | None]:
    """Take the VLAN options out of a port's option value.

    ``tap0,vlan=10`` -> (``tap0``, untagged on 10); ``tap0,trunk=10,20`` -> (``tap0``, tagged on
    10 and 20: the plain numbers after ``trunk=`` continue its list). Other items stay, in order;
    text without VLAN options comes back unchanged, with None.
    """
    items = text.split(",")
    rest: list[str] = []
    untagged: int | None = None
    tagged: list[int] = []
    in_trunk = False
    found = False
    for item in items:
        key, sep, value = item.partition("=")
        if sep and key == "vlan":
            if untagged is not None:
                raise VlanError(errno.EINVAL, f"{text!r}: vlan= given twice")
            untagged = parse_vid(value, "vlan=")
            found, in_trunk = True, False
        elif sep and key == "trunk":
            tagged.append(parse_vid(value, "trunk="))
            found, in_trunk = True, True
        elif in_trunk and not sep and is_decimal(item.strip()):
            tagged.append(parse_vid(item, "trunk="))
        else:
            in_trunk = False
            rest.append(item)
    if not found:
        return text, None
    if len(set(tagged)) != len(tagged):
        raise VlanError(errno.EINVAL, f"{text!r}: a VLAN is listed twice in trunk=")
    try:
        membership = Membership(DEFAULT_VLAN if untagged is None else untagged, frozenset(tagged))
    except VlanError as exc:
        raise VlanError(exc.errno, f"{text!r}: {exc}") from None
    return ",".join(rest), membership


Ports = tuple[Any, ...]  # FabricPorts (fabric.py imports this module, not the other way round)


class VlanTable:
    """The switch's VLANs and the membership of every attached port. Every change calls
    ``on_change(port_ids)`` with the ports whose membership changed (the fabric forgets their
    MAC entries and its flood sets)."""

    def __init__(self, on_change: Callable[[Iterable[int]], None] | None = None) -> None:
        self.vlans: set[int] = {DEFAULT_VLAN}
        self.members: dict[int, Membership] = {}  # attached port id -> membership
        self.bound: dict[str, Membership] = {}  # control socket -> what its clients get
        self._flood: dict[tuple[int, int], tuple[Ports, Ports]] = {}
        self.on_change = on_change

    @property
    def active(self) -> bool:
        """Whether VLANs are on: some VLAN other than the default exists."""
        return len(self.vlans) > 1

    # --- ports of the fabric ------------------------------------------------------------------

    def join(self, port_id: int, membership: Membership = DEFAULT_MEMBERSHIP) -> None:
        """A port attaches with ``membership``; its VLANs are created if they do not exist."""
        self.vlans |= membership.vlans()
        self.members[port_id] = membership
        self._changed((port_id,))

    def leave(self, port_id: int) -> None:
        self.members.pop(port_id, None)
        self._flood.clear()

    def membership(self, port_id: int) -> Membership:
        return self.members.get(port_id, DEFAULT_MEMBERSHIP)

    def bind(self, owner: str, membership: Membership) -> None:
        """A control socket (``owner``) whose clients join with ``membership``: its VLANs
        exist, and cannot be removed while it does."""
        self.vlans |= membership.vlans()
        self.bound[owner] = membership
        self._changed(())

    # --- the management commands (vde_switch's names and argument order) -------------------------

    def create(self, vid: int) -> None:
        """``vlan/create VLAN``."""
        if vid in self.vlans:
            raise VlanError(errno.EEXIST, f"VLAN {vid} exists")
        self.vlans.add(vid)
        self._changed(())

    def remove(self, vid: int) -> None:
        """``vlan/remove VLAN``: only an unused VLAN, never the default one."""
        self._existing(vid)
        if vid == DEFAULT_VLAN:
            raise VlanError(errno.EINVAL, f"VLAN {DEFAULT_VLAN} is the default VLAN: it stays")
        users = [f"port {p}" for p, m in sorted(self.members.items()) if vid in m.vlans()]
        users += [f"control socket {o}" for o, m in self.bound.items() if vid in m.vlans()]
        if users:
            raise VlanError(errno.EADDRINUSE, f"VLAN {vid} is in use by {', '.join(users)}")
        self.vlans.discard(vid)
        self._changed(())

    def add_tagged(self, vid: int, port_id: int) -> None:
        """``vlan/addport VLAN PORT``: the port carries VLAN tagged."""
        self._existing(vid)
        current = self._member(port_id)
        if vid == current.untagged:
            raise VlanError(errno.EEXIST, f"port {port_id} is in VLAN {vid} untagged already")
        if vid in current.tagged:
            raise VlanError(errno.EEXIST, f"port {port_id} is in VLAN {vid} tagged already")
        self._set(port_id, Membership(current.untagged, current.tagged | {vid}))

    def remove_tagged(self, vid: int, port_id: int) -> None:
        """``vlan/delport VLAN PORT``: the port no longer carries VLAN tagged."""
        self._existing(vid)
        current = self._member(port_id)
        if vid == current.untagged:
            raise VlanError(
                errno.EADDRINUSE,
                f"VLAN {vid} is port {port_id}'s untagged VLAN; move it with port/setvlan",
            )
        if vid not in current.tagged:
            raise VlanError(errno.ENXIO, f"port {port_id} is not in VLAN {vid}")
        self._set(port_id, Membership(current.untagged, current.tagged - {vid}))

    def set_untagged(self, port_id: int, vid: int) -> None:
        """``port/setvlan PORT VLAN``: the port's untagged VLAN (if it carried VLAN tagged, it
        now carries it untagged, as vde_switch does)."""
        self._existing(vid)
        current = self._member(port_id)
        self._set(port_id, Membership(vid, current.tagged - {vid}))

    # --- questions of the fabric ----------------------------------------------------------------

    def flood(
        self, ingress_id: int, vid: int, ports: dict[int, Any], blocked: frozenset[int]
    ) -> tuple[Ports, Ports]:
        """The ports but ``blocked`` ones (by the spanning tree) that get a flooded frame of VLAN
        ``vid`` from ``ingress_id``: (untagged, tagged), in port order (cached until the next
        change, attach, detach or change of the tree: ``forget_caches``)."""
        key = (ingress_id, vid)
        sets = self._flood.get(key)
        if sets is None:
            members = self.members
            untagged = []
            tagged = []
            for pid, port in ports.items():
                if pid == ingress_id or pid in blocked:
                    continue
                member = members.get(pid, DEFAULT_MEMBERSHIP)
                if member.untagged == vid:
                    untagged.append(port)
                elif vid in member.tagged:
                    tagged.append(port)
            sets = self._flood[key] = (tuple(untagged), tuple(tagged))
        return sets

    def ports_in(self, vid: int) -> tuple[list[int], list[int]]:
        """The attached ports in VLAN ``vid``: (untagged, tagged), each sorted."""
        untagged = sorted(p for p, m in self.members.items() if m.untagged == vid)
        tagged = sorted(p for p, m in self.members.items() if vid in m.tagged)
        return untagged, tagged

    def forget_caches(self) -> None:
        self._flood.clear()

    # --- inside ---------------------------------------------------------------------------------

    def _existing(self, vid: int) -> None:
        if vid not in self.vlans:
            raise VlanError(errno.ENXIO, f"no VLAN {vid} (create it with vlan/create {vid})")

    def _member(self, port_id: int) -> Membership:
        if port_id not in self.members:
            raise VlanError(errno.ENXIO, f"no port {port_id}")
        return self.members[port_id]

    def _set(self, port_id: int, membership: Membership) -> None:
        if membership != self.members[port_id]:
            self.members[port_id] = membership
            self._changed((port_id,))

    def _changed(self, port_ids: Sequence[int]) -> None:
        self._flood.clear()
        if self.on_change is not None:
            self.on_change(port_ids)


# --- frames -----------------------------------------------------------------------------------


def untagged_form(kind: int, frame: bytes | memoryview) -> bytes | memoryview:
    """``frame`` (of ``kind``) without its 802.1Q tag: as received if it had none."""
    if kind == UNTAGGED:
        return frame
    return b"".join((frame[:12], frame[16:]))  # one copy (bytes + bytes would make three)


def tagged_form(kind: int, frame: bytes | memoryview, vid: int) -> bytes | memoryview:
    """``frame`` (of ``kind``) with VLAN ``vid``'s tag: as received if it had that tag; a
    priority tag keeps its priority and DEI bits."""
    if kind == TAGGED:
        return frame
    if kind == PRIORITY:
        tci = ((frame[14] & 0xF0) << 8) | vid
        return b"".join((frame[:14], tci.to_bytes(2, "big"), frame[16:]))
    return b"".join((frame[:12], TAGS[vid], frame[12:]))


def split_key(key: bytes) -> tuple[bytes, int | None]:
    """A MAC table key -> (MAC, VLAN), VLAN None for a key learned while VLANs were off."""
    if len(key) == 8:
        return key[:6], int.from_bytes(key[6:], "big")
    return key, None


def format_key(key: bytes) -> str:
    """``02:00:00:00:00:0a``, or ``02:00:00:00:00:0a vlan 10`` for a key with a VLAN."""
    mac, vid = split_key(key)
    text = ":".join(f"{b:02x}" for b in mac)
    return text if vid is None else f"{text} vlan {vid}"
