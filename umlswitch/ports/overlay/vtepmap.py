"""The VTEP map of an overlay port: behind which remote VTEP each inner source MAC was last seen.

One VXLAN segment is one switch port: the fabric learns every remote MAC on that port, and the
port itself remembers which tunnel endpoint (VTEP) the MAC sits behind, so that a known unicast
frame goes to that VTEP only. Pure: time is a parameter. Built on the fabric's ``MacTable``, so the
same rules hold:

* **Learning.** The inner source address of every frame from the overlay is learned with the VTEP
  it came from, an (IPv4 address, UDP port) pair: for ``--vxlan`` the sender's address and the
  segment's UDP port (the kernel sends from a flow-hash source port but listens on the VXLAN
  port), for ``--vxvde`` the sender's address and port. Group addresses are never learned.
* **Moves.** An address seen behind another VTEP moves there at once, with no hold-down: a guest
  that migrated to another host is followed (the fabric's hold-down already guards local ports).
* **Aging.** An entry not refreshed for ``aging`` seconds goes in ``expire(now)``. The port keeps
  ``aging`` equal to the switch's (``--aging``, management's ``hash/setexpire``).
* **Size bound.** At most ``max_entries`` addresses. When full, the VTEP holding the most
  addresses loses its oldest one (fair eviction), so a VTEP flooding random source addresses
  evicts only its own. The VTEPs themselves are only remembered while they have addresses.
* **Goodbye.** ``forget(vtep)`` drops every address behind a VTEP that leaves (vxvde's
  header-only datagram).
"""

from __future__ import annotations

from umlswitch.fabric.mactable import DEFAULT_AGING, DEFAULT_MAX_ENTRIES, Learned, MacTable

Vtep = tuple[str, int]  # (IPv4 address, UDP port)

_CHANGED = (Learned.NEW, Learned.NEW_EVICTING, Learned.MOVED)


class VtepMap:
    """A bounded, aging map inner source MAC -> remote VTEP. See the module docstring."""

    def __init__(
        self, *, aging: float = DEFAULT_AGING, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        self._table = MacTable(aging=aging, max_entries=max_entries, hold_down=0.0)
        # The table keys its entries by small numbers: one per VTEP that has addresses.
        self._ids: dict[Vtep, int] = {}
        self._vteps: dict[int, Vtep] = {}
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._table)

    @property
    def aging(self) -> float:
        return self._table.aging

    @aging.setter
    def aging(self, seconds: float) -> None:
        self._table.aging = seconds

    @property
    def max_entries(self) -> int:
        return self._table.max_entries

    @max_entries.setter
    def max_entries(self, count: int) -> None:
        if count < 1:
            raise ValueError("max_entries must be at least 1")
        self._table.max_entries = count

    def learn(self, mac: bytes, vtep: Vtep, now: float) -> bool:
        """Record that ``mac`` was seen behind ``vtep`` at ``now``; True if that is news."""
        vid = self._ids.get(vtep)
        if vid is None:
            if mac[0] & 1:
                return False
            vid = self._next_id
            self._next_id += 1
            self._ids[vtep] = vid
            self._vteps[vid] = vtep
        learned = self._table.learn(mac, vid, now)
        if learned is Learned.REFRESHED:
            return False
        if learned is Learned.NEW_EVICTING:
            assert self._table.last_evicted is not None
            self._drop_if_empty(self._table.last_evicted[1])
        elif learned is Learned.MOVED:
            assert self._table.last_moved_from is not None
            self._drop_if_empty(self._table.last_moved_from)
        elif learned not in _CHANGED:  # not learned: a VTEP just made for it has no address
            self._drop_if_empty(vid)
            return False
        return True

    def lookup(self, mac: bytes) -> Vtep | None:
        """The VTEP ``mac`` sits behind, or None (unknown: the frame is flooded)."""
        vid = self._table.lookup(mac)
        return None if vid is None else self._vteps[vid]

    def expire(self, now: float) -> list[tuple[bytes, Vtep]]:
        """Remove the entries older than ``aging``; return them as (mac, vtep) pairs."""
        expired = [(mac, self._vteps[vid]) for mac, vid in self._table.expire(now)]
        for _, vtep in expired:
            vid = self._ids.get(vtep)
            if vid is not None:
                self._drop_if_empty(vid)
        return expired

    def forget(self, vtep: Vtep) -> int:
        """Remove every address behind ``vtep`` (it is leaving); return how many there were."""
        vid = self._ids.get(vtep)
        if vid is None:
            return 0
        count = self._table.forget_port(vid)
        self._drop_if_empty(vid)
        return count

    def remote_macs(self) -> dict[Vtep, list[bytes]]:
        """Every VTEP that has addresses, with its addresses in the order they were learned."""
        behind: dict[Vtep, list[bytes]] = {}
        for entry in self._table.entries(0.0):
            behind.setdefault(self._vteps[entry.port], []).append(entry.mac)
        return behind

    def _drop_if_empty(self, vid: int) -> None:
        if self._table.count(vid) == 0:
            vtep = self._vteps.pop(vid, None)
            if vtep is not None:
                del self._ids[vtep]
