"""The learning switch's MAC table: which port each source address was last seen on.

Rules (after OVS ``lib/mac-learning.h``):

* **Learning.** A frame's source address is learned on its ingress port. Group addresses
  (broadcast, multicast: bit 0 of the first octet) are never learned.
* **Aging.** An entry not refreshed for ``aging`` seconds is expired by ``expire(now)``, which the
  daemon calls from a ticker. Refreshing costs a dict lookup and, at most once per clock tick, a
  move to the end of its port's LRU list, so each port's list is ordered oldest first.
* **Size bound.** The table never holds more than ``max_entries`` addresses, and never more than
  ``max_per_port`` on one port. When a new address would exceed a bound, the *oldest entry of
  the port holding the most entries* is evicted (for the per-port bound: the learning port's own
  oldest). An address moving in counts as new on its new port.
  A single port flooding random source addresses therefore ends up evicting only its own entries
  once it is the largest, and cannot push everybody else's out.
* **Ties.** When several ports hold the most entries, the learning port loses its own oldest if it
  is one of them; otherwise the one whose number of entries changed least recently does. Every
  address added to or removed from a port (learned, moved in or out, evicted, expired) is a
  change, even when an eviction and a learn on the same port leave its number where it was;
  ``expire`` visits the ports in the order they got their first entry since they were last
  empty (a port with one entry that evicts it for a new one was empty for a moment). So equally
  large ports take turns rather than one of them being emptied.
* **Move hold-down.** An address seen on one port within the last ``hold_down`` seconds is not
  moved to another port: the frame is still forwarded, the move is refused and counted. After the
  hold-down a move is learned at once, so a guest that really moved is followed.
* **Detach.** ``forget_port`` drops every entry of a port, so no frame is sent after a detach to
  a port that no longer exists (or to the next client given the same port number).
* **Cost.** Learning, eviction included, takes constant time however many ports there are: the
  ports are kept in buckets by number of entries (as in an LFU cache), each bucket ordered by last
  change, with the largest number at hand. ``forget_port`` costs what it removes; ``expire``
  also looks at each port's oldest entry.

Time is always a parameter (seconds, any monotonic origin); this module never reads a clock.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

DEFAULT_AGING = 300.0  # seconds, as the Linux bridge and OVS
DEFAULT_MAX_ENTRIES = 8192
DEFAULT_HOLD_DOWN = 1.0  # seconds


class Learned(enum.Enum):
    """What ``MacTable.learn`` did with a source address."""

    REFRESHED = "refreshed"  # already known on this port
    NEW = "new"  # first seen
    NEW_EVICTING = "new_evicting"  # first seen; another entry was evicted for it (see last_evicted)
    MOVED = "moved"  # moved from another port (see last_moved_from)
    HELD = "held"  # seen on another port within the hold-down: not moved
    IGNORED = "ignored"  # a group address: never learned


class _Entry:
    __slots__ = ("port", "seen")

    def __init__(self, port: int, seen: float) -> None:
        self.port = port
        self.seen = seen


@dataclass(frozen=True)
class MacEntryView:
    """A read-only snapshot of one table entry, for listings."""

    mac: bytes
    port: int
    age: float


class MacTable:
    """A bounded, aging MAC table with fair eviction. See the module docstring for the rules."""

    def __init__(
        self,
        *,
        aging: float = DEFAULT_AGING,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_per_port: int | None = None,
        hold_down: float = DEFAULT_HOLD_DOWN,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if max_per_port is not None and max_per_port < 1:
            raise ValueError("max_per_port must be at least 1")
        self.aging = aging
        self.max_entries = max_entries
        self.max_per_port = max_per_port
        self.hold_down = hold_down
        self._entries: dict[bytes, _Entry] = {}
        # port -> its entries, oldest first; a port with no entries has no list
        self._by_port: dict[int, OrderedDict[bytes, _Entry]] = {}
        # number of entries -> the ports holding that many, least recently changed first
        self._by_count: dict[int, OrderedDict[int, None]] = {}
        self._most = 0  # the most entries any port holds (0: the table is empty)
        self.last_evicted: tuple[bytes, int] | None = None
        self.last_moved_from: int | None = None
        self.last_move_evicted = False  # whether that move evicted an entry (see last_evicted)
        # Called whenever an entry is added, moved or removed (not when one is refreshed): the
        # fabric forgets the decisions it keeps (its flow cache).
        self.on_change: Callable[[], None] | None = None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, mac: bytes) -> int | None:
        """The port ``mac`` was learned on, or None."""
        entry = self._entries.get(mac)
        return None if entry is None else entry.port

    def count(self, port: int) -> int:
        lru = self._by_port.get(port)
        return 0 if lru is None else len(lru)

    def learn(self, mac: bytes, port: int, now: float) -> Learned:
        """Record that ``mac`` was seen as a source on ``port`` at time ``now``."""
        entry = self._entries.get(mac)
        if entry is not None and entry.port == port:
            if entry.seen != now:
                entry.seen = now
                self._by_port[port].move_to_end(mac)
            return Learned.REFRESHED
        if mac[0] & 1:
            return Learned.IGNORED
        if entry is not None:
            if now - entry.seen < self.hold_down:
                return Learned.HELD
            old_port = entry.port
            self._remove(mac, old_port)
            # the per-port bound holds for moves too
            self.last_move_evicted = self._add(mac, port, now)
            self.last_moved_from = old_port
            return Learned.MOVED
        return Learned.NEW_EVICTING if self._add(mac, port, now) else Learned.NEW

    def expire(self, now: float) -> list[tuple[bytes, int]]:
        """Remove the entries older than ``aging``; return them as (mac, port) pairs."""
        expired: list[tuple[bytes, int]] = []
        limit = now - self.aging
        for port, lru in list(self._by_port.items()):
            count = len(lru)
            while lru:
                mac, entry = next(iter(lru.items()))
                if entry.seen > limit:
                    break
                del lru[mac]
                del self._entries[mac]
                expired.append((mac, port))
            if len(lru) != count:
                self._changed()
                if not lru:
                    del self._by_port[port]
                self._recount(port, count, len(lru))
        return expired

    def forget_port(self, port: int) -> int:
        """Remove every entry learned on ``port``; return how many there were."""
        lru = self._by_port.pop(port, None)
        if lru is None:
            return 0
        self._changed()
        for mac in lru:
            del self._entries[mac]
        self._recount(port, len(lru), 0)
        return len(lru)

    def flush(self) -> int:
        count = len(self._entries)
        self._changed()
        self._entries.clear()
        self._by_port.clear()
        self._by_count.clear()
        self._most = 0
        return count

    def entries(self, now: float) -> Iterator[MacEntryView]:
        for mac, entry in self._entries.items():
            yield MacEntryView(mac, entry.port, now - entry.seen)

    def _add(self, mac: bytes, port: int, now: float) -> bool:
        """Learn ``mac`` (not in the table) on ``port``, first evicting an entry if a bound
        requires it; return whether one was evicted (see ``last_evicted``)."""
        self._changed()
        lru = self._by_port.get(port)
        count = 0 if lru is None else len(lru)
        victim: int | None = None
        if self.max_per_port is not None and count >= self.max_per_port:
            victim = port
        elif len(self._entries) >= self.max_entries:
            # The largest port; on a tie the learning port itself, else the least recently changed.
            victim = port if count == self._most else next(iter(self._by_count[self._most]))
        entry = _Entry(port, now)
        if victim == port:
            # The port's own oldest makes room: its number stays, but it counts as a change.
            assert lru is not None
            oldest, _ = lru.popitem(last=False)
            del self._entries[oldest]
            if not lru:  # emptied for a moment: it goes to the end of the order of ports
                del self._by_port[port]
                self._by_port[port] = lru
            self._entries[mac] = lru[mac] = entry
            self._by_count[count].move_to_end(port)
            self.last_evicted = (oldest, port)
            return True
        if victim is not None:
            victim_lru = self._by_port[victim]
            oldest, _ = victim_lru.popitem(last=False)
            self._remove_from(oldest, victim, victim_lru)
            self.last_evicted = (oldest, victim)
        if lru is None:
            lru = self._by_port[port] = OrderedDict()
        self._entries[mac] = lru[mac] = entry
        self._recount(port, count, count + 1)
        return victim is not None

    def _remove(self, mac: bytes, port: int) -> None:
        self._changed()
        lru = self._by_port[port]
        del lru[mac]
        self._remove_from(mac, port, lru)

    def _remove_from(self, mac: bytes, port: int, lru: OrderedDict[bytes, _Entry]) -> None:
        """The rest of removing ``mac``, already taken out of ``port``'s ``lru``."""
        del self._entries[mac]
        count = len(lru)
        if not count:
            del self._by_port[port]
        self._recount(port, count + 1, count)

    def _recount(self, port: int, old: int, new: int) -> None:
        """Move ``port`` from the bucket of ``old`` entries to the end of that of ``new``."""
        by_count = self._by_count
        if old:
            leaving = by_count[old]
            del leaving[port]
            if not leaving:
                del by_count[old]
        if new:
            joining = by_count.get(new)
            if joining is None:
                joining = by_count[new] = OrderedDict()
            joining[port] = None
            if new > self._most:
                self._most = new
                return
        if old == self._most and old not in by_count:
            # Down to the next bucket in use: at most ``old - new`` steps (the bucket of ``new``
            # is in use), or ``old`` when the port emptied, so never more than was removed.
            most = old - 1
            while most and most not in by_count:
                most -= 1
            self._most = most
