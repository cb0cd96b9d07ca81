"""The MAC table rules of ``umlswitch/fabric/mactable.py``, with time passed in explicitly."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from umlswitch.fabric.mactable import Learned, MacTable


def mac(n: int) -> bytes:
    """A locally administered unicast MAC, 02:00:00:NN:NN:NN."""
    return bytes([0x02, 0, 0]) + n.to_bytes(3, "big")


A, B, C = mac(0xA), mac(0xB), mac(0xC)
BROADCAST = b"\xff" * 6
IPV4_MULTICAST = bytes.fromhex("01005e000001")
IPV6_MULTICAST = bytes.fromhex("333300000001")


def test_learn_then_lookup() -> None:
    table = MacTable()
    assert table.lookup(A) is None
    assert table.learn(A, 1, 0.0) is Learned.NEW
    assert table.learn(B, 2, 0.0) is Learned.NEW
    assert table.lookup(A) == 1
    assert table.lookup(B) == 2
    assert table.lookup(C) is None
    assert len(table) == 2
    assert table.count(1) == table.count(2) == 1


def test_learning_again_on_the_same_port_refreshes() -> None:
    table = MacTable()
    table.learn(A, 1, 0.0)
    assert table.learn(A, 1, 0.0) is Learned.REFRESHED
    assert table.learn(A, 1, 5.0) is Learned.REFRESHED
    assert len(table) == 1
    assert table.lookup(A) == 1


@pytest.mark.parametrize(
    "group",
    [
        pytest.param(BROADCAST, id="broadcast"),
        pytest.param(IPV4_MULTICAST, id="ipv4-multicast"),
        pytest.param(IPV6_MULTICAST, id="ipv6-multicast"),
        pytest.param(bytes.fromhex("0180c2000000"), id="stp"),
        pytest.param(bytes.fromhex("030000000000"), id="local-group"),
    ],
)
def test_group_addresses_are_never_learned(group: bytes) -> None:
    table = MacTable()
    assert table.learn(group, 1, 0.0) is Learned.IGNORED
    assert table.lookup(group) is None
    assert len(table) == 0
    assert table.count(1) == 0


def test_entry_expires_after_aging() -> None:
    table = MacTable(aging=300.0)
    table.learn(A, 1, 100.0)
    table.learn(B, 2, 150.0)
    assert table.expire(399.0) == []
    assert table.lookup(A) == 1
    assert table.expire(400.0) == [(A, 1)]
    assert table.lookup(A) is None
    assert table.lookup(B) == 2
    assert table.count(1) == 0
    assert table.expire(450.0) == [(B, 2)]
    assert len(table) == 0


def test_refresh_keeps_an_entry_alive() -> None:
    table = MacTable(aging=10.0)
    table.learn(A, 1, 0.0)
    table.learn(B, 1, 0.0)
    table.learn(A, 1, 8.0)
    assert table.expire(8.0) == []
    table.learn(A, 1, 16.0)
    assert table.expire(16.0) == [(B, 1)]
    table.learn(A, 1, 24.0)
    assert table.expire(24.0) == []
    # B was never refreshed: gone at 10 s; A was refreshed at 24 s: alive until 34 s.
    assert table.lookup(B) is None
    assert table.lookup(A) == 1
    assert table.expire(33.9) == []
    assert table.expire(34.0) == [(A, 1)]


def test_refresh_reorders_the_port_so_the_oldest_expires_first() -> None:
    table = MacTable(aging=10.0)
    table.learn(A, 1, 0.0)
    table.learn(B, 1, 1.0)
    table.learn(A, 1, 2.0)  # A is now younger than B
    assert table.expire(11.0) == [(B, 1)]
    assert table.lookup(A) == 1
    assert table.expire(12.0) == [(A, 1)]


def test_expire_with_nothing_old_is_a_no_op() -> None:
    table = MacTable(aging=10.0)
    table.learn(A, 1, 5.0)
    assert table.expire(5.0) == []
    assert table.expire(14.99) == []
    assert len(table) == 1


def test_flooder_cannot_push_other_ports_out() -> None:
    """A port flooding 10,000 random sources into a table of 100 ends up evicting only its own."""
    table = MacTable(max_entries=100)
    others: dict[bytes, int] = {}
    for port, count in ((1, 10), (2, 20), (3, 5)):
        for i in range(count):
            address = mac(port << 16 | i)
            table.learn(address, port, 0.0)
            others[address] = port
    rng = random.Random(7)
    flooder = 9
    for i in range(10_000):
        source = bytes([rng.randrange(256) & 0xFE | 0x02]) + rng.randbytes(5)
        table.learn(source, flooder, 1.0 + i / 1000)
        assert len(table) <= 100
    assert len(table) == 100
    assert {address: table.lookup(address) for address in others} == others
    assert table.count(flooder) == 100 - len(others)


def test_eviction_takes_the_largest_port_down_to_the_flooders_size_only() -> None:
    """While another port is larger, it loses its oldest entries, but only until the flooder is
    the largest: from then on the flooder evicts its own."""
    table = MacTable(max_entries=100)
    big = [mac(0x10000 | i) for i in range(60)]
    small = [mac(0x20000 | i) for i in range(10)]
    for i, address in enumerate(big):
        table.learn(address, 1, float(i))
    for address in small:
        table.learn(address, 2, 100.0)
    for i in range(10_000):
        table.learn(mac(0x900000 | i), 9, 200.0 + i)
        assert len(table) <= 100
    assert table.count(2) == 10
    assert all(table.lookup(address) == 2 for address in small)
    # 30 free slots went to the flooder (60/10/30); then port 1 lost its oldest down to a tie at
    # 45/10/45; from then on the flooder only evicts its own.
    assert table.count(1) == 45
    assert table.count(9) == 45
    assert [table.lookup(address) for address in big[:15]] == [None] * 15
    assert all(table.lookup(address) == 1 for address in big[15:])
    assert table.lookup(mac(0x900000 | 9999)) == 9


def test_evicting_learn_reports_the_victim() -> None:
    table = MacTable(max_entries=2)
    table.learn(A, 1, 0.0)
    table.learn(B, 1, 1.0)
    assert table.learn(C, 2, 2.0) is Learned.NEW_EVICTING
    assert table.last_evicted == (A, 1)
    assert table.lookup(A) is None
    assert table.lookup(B) == 1
    assert table.lookup(C) == 2


def test_max_per_port_evicts_the_ports_own_oldest() -> None:
    table = MacTable(max_per_port=3)
    table.learn(C, 2, 0.0)
    for i in range(10):
        table.learn(mac(i), 1, float(i))
        assert table.count(1) <= 3
    assert table.count(1) == 3
    assert [table.lookup(mac(i)) for i in range(10)] == [None] * 7 + [1] * 3
    assert table.lookup(C) == 2
    assert table.last_evicted == (mac(6), 1)


def test_move_is_held_down_then_accepted() -> None:
    table = MacTable(hold_down=1.0)
    table.learn(A, 1, 10.0)
    assert table.learn(A, 2, 10.5) is Learned.HELD
    assert table.lookup(A) == 1
    assert table.learn(A, 2, 10.99) is Learned.HELD
    assert table.lookup(A) == 1
    assert table.learn(A, 2, 11.0) is Learned.MOVED
    assert table.lookup(A) == 2
    assert table.last_moved_from == 1
    assert table.count(1) == 0
    assert table.count(2) == 1
    assert len(table) == 1


def test_held_move_does_not_refresh_the_old_entry() -> None:
    """A frame seen on the wrong port during the hold-down keeps the entry where it is but does not
    make it younger: a guest that really moved is followed once the hold-down has passed."""
    table = MacTable(hold_down=1.0, aging=5.0)
    table.learn(A, 1, 0.0)
    assert table.learn(A, 2, 0.9) is Learned.HELD
    assert table.expire(5.0) == [(A, 1)]


def test_moved_entry_ages_from_the_move() -> None:
    table = MacTable(hold_down=1.0, aging=10.0)
    table.learn(A, 1, 0.0)
    table.learn(A, 2, 5.0)
    assert table.expire(14.0) == []
    assert table.expire(15.0) == [(A, 2)]


def test_move_respects_max_per_port() -> None:
    """The per-port bound holds for addresses that move in, not only for new ones."""
    table = MacTable(max_per_port=2, hold_down=1.0)
    table.learn(A, 2, 0.0)
    table.learn(B, 2, 0.0)
    table.learn(C, 1, 0.0)
    assert table.learn(C, 2, 5.0) is Learned.MOVED
    assert table.last_move_evicted and table.last_evicted == (A, 2)
    assert table.lookup(C) == 2
    assert table.count(2) == 2
    assert table.lookup(A) is None  # port 2's oldest made room, as for a new address
    assert table.lookup(B) == 2


def test_forget_port() -> None:
    table = MacTable()
    table.learn(A, 1, 0.0)
    table.learn(B, 1, 0.0)
    table.learn(C, 2, 0.0)
    assert table.forget_port(1) == 2
    assert table.lookup(A) is None
    assert table.lookup(B) is None
    assert table.lookup(C) == 2
    assert table.count(1) == 0
    assert table.forget_port(1) == 0
    assert table.forget_port(42) == 0
    # The port number may be reused: it starts empty and learns normally.
    assert table.learn(A, 1, 1.0) is Learned.NEW
    assert table.lookup(A) == 1
    assert sorted(table.expire(1000.0)) == sorted([(A, 1), (C, 2)])


def test_flush() -> None:
    table = MacTable()
    table.learn(A, 1, 0.0)
    table.learn(B, 2, 0.0)
    assert table.flush() == 2
    assert len(table) == 0
    assert table.lookup(A) is None
    assert table.count(2) == 0
    assert table.flush() == 0
    assert table.learn(A, 2, 0.0) is Learned.NEW  # not a move, not held down


def test_entries_listing_shows_ages() -> None:
    table = MacTable()
    table.learn(A, 1, 10.0)
    table.learn(B, 2, 12.0)
    listing = {(e.mac, e.port, e.age) for e in table.entries(15.0)}
    assert listing == {(A, 1, 5.0), (B, 2, 3.0)}


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"max_entries": 0}, id="max_entries-0"),
        pytest.param({"max_per_port": 0}, id="max_per_port-0"),
    ],
)
def test_invalid_bounds_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        MacTable(**kwargs)


def test_tied_ports_lose_least_recently_changed_first() -> None:
    """Among equally large ports (the learning one not among them), the one whose number of
    entries changed least recently loses: a refresh is not a change, a learn is."""
    table = MacTable(max_entries=4)
    a1, a2, b1, b2 = mac(0xA1), mac(0xA2), mac(0xB1), mac(0xB2)
    table.learn(a1, 1, 0.0)
    table.learn(b1, 2, 0.0)
    table.learn(b2, 2, 0.0)
    table.learn(a2, 1, 0.0)  # port 1 changed last, although it got its first entry first
    table.learn(b1, 2, 1.0)  # a refresh: not a change (but b1 is now port 2's youngest)
    assert table.learn(mac(0x91), 9, 2.0) is Learned.NEW_EVICTING
    assert table.last_evicted == (b2, 2)
    assert table.learn(mac(0x92), 9, 2.0) is Learned.NEW_EVICTING
    assert table.last_evicted == (a1, 1)  # port 1 was now the largest alone
    # 1, 1, 2 entries: the flooder is the largest and evicts its own from now on
    assert table.learn(mac(0x93), 9, 2.0) is Learned.NEW_EVICTING
    assert table.last_evicted == (mac(0x91), 9)
    assert [table.count(port) for port in (1, 2, 9)] == [1, 1, 2]


def test_equally_large_ports_take_turns() -> None:
    """A flooder smaller than several equally large ports takes one entry from each in turn, not
    all from one of them."""
    table = MacTable(max_entries=30)
    for port in (1, 2, 3):
        for i in range(10):
            table.learn(mac(port << 8 | i), port, 0.0)
    victims = []
    for i in range(7):
        table.learn(mac(0x90000 | i), 9, 1.0)
        assert table.last_evicted is not None
        victims.append(table.last_evicted[1])
    assert victims == [1, 2, 3, 1, 2, 3, 1]
    assert [table.count(port) for port in (1, 2, 3, 9)] == [7, 8, 8, 7]


# --- the rules against a brute-force model --------------------------------------------------------


class ReferenceTable:
    """The module docstring's rules, brute force: each eviction scans every port.

    Ports are lists of addresses, oldest first, kept in a dict from which a port leaves when it
    empties (so ``expire`` visits ports in the order they got their first entry); every address
    added to or removed from a port stamps it with the next serial number.
    """

    def __init__(
        self, *, aging: float, max_entries: int, max_per_port: int | None, hold_down: float
    ) -> None:
        self.aging = aging
        self.max_entries = max_entries
        self.max_per_port = max_per_port
        self.hold_down = hold_down
        self.port_of: dict[bytes, int] = {}
        self.seen: dict[bytes, float] = {}
        self.ports: dict[int, list[bytes]] = {}
        self.changed: dict[int, int] = {}
        self.serial = 0
        self.last_evicted: tuple[bytes, int] | None = None
        self.last_moved_from: int | None = None
        self.last_move_evicted = False

    def learn(self, address: bytes, port: int, now: float) -> Learned:
        known = self.port_of.get(address)
        if known == port:
            if self.seen[address] != now:
                self.seen[address] = now
                self.ports[port].remove(address)
                self.ports[port].append(address)
            return Learned.REFRESHED
        if address[0] & 1:
            return Learned.IGNORED
        if known is not None:
            if now - self.seen[address] < self.hold_down:
                return Learned.HELD
            self._drop(address)
            self.last_move_evicted = self._make_room(port)
            self._add(address, port, now)
            self.last_moved_from = known
            return Learned.MOVED
        evicted = self._make_room(port)
        self._add(address, port, now)
        return Learned.NEW_EVICTING if evicted else Learned.NEW

    def expire(self, now: float) -> list[tuple[bytes, int]]:
        expired = []
        for port, addresses in list(self.ports.items()):
            for address in list(addresses):
                if self.seen[address] > now - self.aging:
                    break
                self._drop(address)
                expired.append((address, port))
        return expired

    def forget_port(self, port: int) -> int:
        addresses = list(self.ports.get(port, ()))
        for address in addresses:
            self._drop(address)
        return len(addresses)

    def flush(self) -> int:
        count = len(self.port_of)
        for address in list(self.port_of):
            self._drop(address)
        return count

    def _make_room(self, port: int) -> bool:
        if self.max_per_port is not None and len(self.ports.get(port, ())) >= self.max_per_port:
            victim = port
        elif len(self.port_of) >= self.max_entries:
            most = max(len(addresses) for addresses in self.ports.values())
            tied = [p for p, addresses in self.ports.items() if len(addresses) == most]
            victim = port if port in tied else min(tied, key=lambda p: self.changed[p])
        else:
            return False
        address = self.ports[victim][0]
        self._drop(address)
        self.last_evicted = (address, victim)
        return True

    def _add(self, address: bytes, port: int, now: float) -> None:
        self.port_of[address] = port
        self.seen[address] = now
        self.ports.setdefault(port, []).append(address)
        self._stamp(port)

    def _drop(self, address: bytes) -> None:
        port = self.port_of.pop(address)
        del self.seen[address]
        self.ports[port].remove(address)
        if not self.ports[port]:
            del self.ports[port]
        self._stamp(port)

    def _stamp(self, port: int) -> None:
        self.serial += 1
        self.changed[port] = self.serial


POOL = [mac(i) for i in range(1, 13)] + [IPV4_MULTICAST]
PORTS = [1, 2, 3, 4]


@dataclass(frozen=True)
class Op:
    kind: str  # learn (an address from POOL), fresh (a never seen one), expire, forget, flush
    address: bytes  # learn only
    port: int  # learn, fresh and forget
    advance: float  # seconds the clock moves on before the operation


# Mostly learning, on few ports, so that tables fill, evict and tie often.
operations = st.builds(
    Op,
    st.sampled_from(["learn"] * 10 + ["fresh"] * 6 + ["expire", "forget", "flush"]),
    st.sampled_from(POOL),
    st.sampled_from(PORTS),
    st.sampled_from([0.0] * 6 + [0.5, 1.0, 3.0]),
)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(operations, min_size=20, max_size=150),
    max_entries=st.integers(1, 8),
    max_per_port=st.sampled_from([None, None, 1, 2, 3, 5]),
    hold_down=st.sampled_from([0.0, 1.0]),
    aging=st.sampled_from([2.0, 6.0]),
)
def test_matches_the_brute_force_model(
    ops: list[Op], max_entries: int, max_per_port: int | None, hold_down: float, aging: float
) -> None:
    """Random learn/move/expire/forget_port/flush sequences in a small table (so evictions and
    ties are frequent): every result, victim, entry and listing order is the brute-force model's.
    """
    bounds = {
        "aging": aging,
        "max_entries": max_entries,
        "max_per_port": max_per_port,
        "hold_down": hold_down,
    }
    table = MacTable(**bounds)  # type: ignore[arg-type]
    model = ReferenceTable(**bounds)  # type: ignore[arg-type]
    fresh = (mac(0x1000 + i) for i in itertools.count())
    now = 0.0
    for op in ops:
        now += op.advance
        if op.kind in ("learn", "fresh"):
            address = op.address if op.kind == "learn" else next(fresh)
            assert table.learn(address, op.port, now) is model.learn(address, op.port, now)
            assert table.last_evicted == model.last_evicted
            assert table.last_moved_from == model.last_moved_from
            assert table.last_move_evicted == model.last_move_evicted
        elif op.kind == "expire":
            assert table.expire(now) == model.expire(now)
        elif op.kind == "forget":
            assert table.forget_port(op.port) == model.forget_port(op.port)
        else:
            assert table.flush() == model.flush()
        assert [(e.mac, e.port, e.age) for e in table.entries(now)] == [
            (a, port, now - model.seen[a]) for a, port in model.port_of.items()
        ]
        assert len(table) == len(model.port_of) <= max_entries
        assert [table.lookup(a) for a in POOL] == [model.port_of.get(a) for a in POOL]
        assert [table.count(p) for p in PORTS] == [len(model.ports.get(p, ())) for p in PORTS]
        # The bookkeeping that makes eviction O(1) (private): ports bucketed by number of entries,
        # least recently changed first, and the largest number.
        buckets: dict[int, list[int]] = {}
        for port in sorted(model.ports, key=model.changed.__getitem__):
            buckets.setdefault(len(model.ports[port]), []).append(port)
        assert {n: list(ports) for n, ports in table._by_count.items()} == buckets
        assert table._most == max(buckets, default=0)
        assert list(table._by_port) == list(model.ports)  # the order expire visits them in
