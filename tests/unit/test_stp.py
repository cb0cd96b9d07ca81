"""The spanning tree's pure state machine, driven by BPDUs over fake links and a fake clock.

``Net`` joins bridges port to port (or several ports on one hub segment) and delivers every
BPDU a bridge sends, at once, until nothing more is sent; ``Net.run(seconds)`` advances the
clock in ticks. The case tables give the topology and what each port must end up as.
"""

from __future__ import annotations

from collections import deque

import pytest

from umlswitch.fabric.stp import (
    BPDU_ROLE_DESIGNATED,
    FLAG_AGREEMENT,
    FLAG_PROPOSAL,
    FLAG_TC,
    FLAG_TCA,
    ROLE_SHIFT,
    TYPE_CONFIG,
    TYPE_RST,
    TYPE_TCN,
    VERSION_RSTP,
    Bpdu,
    Bridge,
    Role,
    State,
    bridge_id,
    decode_bpdu,
    encode_bpdu,
)

Endpoint = tuple[str, int]


def mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, n])


class Net:
    """Bridges by name and the segments between their ports."""

    def __init__(self) -> None:
        self.now = 0.0
        self.bridges: dict[str, Bridge] = {}
        self.segments: list[list[Endpoint]] = []
        self.down: set[int] = set()  # segment indices that carry nothing
        self.sent = 0

    def bridge(self, name: str, n: int, priority: int = 32768, **kw: object) -> Bridge:
        b = Bridge(mac(n), priority=priority, **kw)  # type: ignore[arg-type]
        self.bridges[name] = b
        return b

    def link(self, *ends: Endpoint, edge: bool = False) -> None:
        self.segments.append(list(ends))
        for name, port in ends:
            self.bridges[name].add_port(port, f"{name}.{port}", edge=edge, now=self.now)

    def peers(self, end: Endpoint) -> list[Endpoint]:
        for i, seg in enumerate(self.segments):
            if end in seg:
                return [] if i in self.down else [e for e in seg if e != end]
        return []

    def settle(self, limit: int = 10_000) -> None:
        queue: deque[tuple[Endpoint, bytes]] = deque()
        for _ in range(limit):
            for name, b in self.bridges.items():
                for port, frame in b.take().sends:
                    self.sent += 1
                    for peer in self.peers((name, port)):
                        queue.append((peer, frame))
            if not queue:
                return
            (name, port), frame = queue.popleft()
            self.bridges[name].receive(port, frame, self.now)
        raise AssertionError("BPDUs never stop")

    def run(self, seconds: float, step: float = 0.05) -> None:
        end = self.now + seconds
        self.settle()
        while self.now < end - 1e-9:
            self.now += step
            for b in self.bridges.values():
                b.tick(self.now)
            self.settle()

    def port(self, end: Endpoint) -> tuple[Role, State]:
        p = self.bridges[end[0]].ports[end[1]]
        return p.role, p.state


R, D, A, B = Role.ROOT, Role.DESIGNATED, Role.ALTERNATE, Role.BACKUP
F, L, X = State.FORWARDING, State.LEARNING, State.DISCARDING

# --- the codec ------------------------------------------------------------------------------

RST = Bpdu(
    TYPE_RST,
    VERSION_RSTP,
    FLAG_PROPOSAL | FLAG_TC | (BPDU_ROLE_DESIGNATED << ROLE_SHIFT),
    bridge_id(4096, mac(1)),
    200,
    bridge_id(32768, mac(2)),
    0x8003,
    1.0,
    20.0,
    2.0,
    15.0,
)


def test_rst_bpdu_bytes_follow_802_1w() -> None:
    frame = encode_bpdu(RST, mac(2))
    assert frame[:6] == bytes.fromhex("0180c2000000") and frame[6:12] == mac(2)
    assert int.from_bytes(frame[12:14], "big") == 3 + 36  # 802.3 length: LLC + RST BPDU
    body = frame[14:]
    assert body[:3] == b"\x42\x42\x03"
    bpdu = body[3:]
    assert bpdu[0:2] == b"\x00\x00" and bpdu[2] == 2 and bpdu[3] == 0x02
    assert bpdu[4] == 0x0F  # TC, proposal, role designated (11)
    assert bpdu[5:13] == b"\x10\x00" + mac(1)
    assert bpdu[13:17] == (200).to_bytes(4, "big")
    assert bpdu[17:25] == b"\x80\x00" + mac(2)
    assert bpdu[25:27] == b"\x80\x03"
    assert bpdu[27:35] == bytes.fromhex("0100 1400 0200 0f00".replace(" ", ""))
    assert bpdu[35] == 0  # version 1 length
    assert len(frame) == 60
    assert decode_bpdu(frame) == RST


def test_config_and_tcn_bpdus_round_trip_and_match_scapy() -> None:
    scapy_l2 = pytest.importorskip("scapy.layers.l2")
    config = Bpdu(
        TYPE_CONFIG, 0, FLAG_TC | FLAG_TCA, bridge_id(0, mac(9)), 4, bridge_id(1, mac(8)), 0x8001
    )
    frame = encode_bpdu(config, mac(8))
    parsed = scapy_l2.Ether(frame)
    stp = parsed[scapy_l2.STP]
    assert (stp.proto, stp.version, stp.bpdutype, stp.bpduflags) == (0, 0, 0, 0x81)
    assert (stp.rootid, stp.rootmac, stp.pathcost) == (0, "02:00:00:00:00:09", 4)
    assert (stp.bridgeid, stp.bridgemac, stp.portid) == (1, "02:00:00:00:00:08", 0x8001)
    assert (stp.age, stp.maxage, stp.hellotime, stp.fwddelay) == (0, 20, 2, 15)
    assert decode_bpdu(frame) == config
    built = bytes(
        scapy_l2.Dot3(dst="01:80:c2:00:00:00", src="02:00:00:00:00:07")
        / scapy_l2.LLC()
        / scapy_l2.STP(rootid=4096, rootmac="02:00:00:00:00:01", pathcost=19, age=1)
    )
    got = decode_bpdu(built)
    assert (got.type, got.root, got.root_cost, got.message_age) == (
        TYPE_CONFIG,
        bridge_id(4096, mac(1)),
        19,
        1.0,
    )
    tcn = encode_bpdu(Bpdu(TYPE_TCN), mac(3))
    assert tcn[14:21] == b"\x42\x42\x03\x00\x00\x00\x80"
    assert decode_bpdu(tcn).type == TYPE_TCN


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"\x01\x80\xc2\x00\x00\x00" + mac(1) + b"\x00\x03\x42\x42\x03", "too short"),
        (bytes(12) + b"\x08\x00" + bytes(46), "ethertype"),
        (bytes(12) + b"\x00\x26\xaa\xaa\x03" + bytes(43), "LLC"),
        (bytes(12) + b"\x00\x26\x42\x42\x03\x00\x01\x00\x00" + bytes(40), "protocol"),
        (bytes(12) + b"\x00\x10\x42\x42\x03\x00\x00\x00\x00" + bytes(40), "35 needed"),
        (bytes(12) + b"\x00\x26\x42\x42\x03\x00\x00\x02\x02" + bytes(40), "RST"),
        (bytes(12) + b"\x00\x26\x42\x42\x03\x00\x00\x00\x07" + bytes(40), "type"),
    ],
)
def test_what_is_no_bpdu_is_refused(frame: bytes, why: str) -> None:
    from umlswitch.fabric.stp import BpduError

    with pytest.raises(BpduError, match=why):
        decode_bpdu(frame)


# --- the tree -------------------------------------------------------------------------------


def test_two_rstp_bridges_agree_at_once() -> None:
    net = Net()
    net.bridge("a", 1)
    net.bridge("b", 2)
    net.link(("a", 1), ("b", 1))
    net.run(0.05)
    assert net.port(("a", 1)) == (D, F)
    assert net.port(("b", 1)) == (R, F)
    assert net.bridges["b"].root == net.bridges["a"].id


RING_CASES = [
    # name, bridges (name, mac, priority), links, expected (end -> role, state)
    (
        "triangle, a root",
        [("a", 1, 32768), ("b", 2, 32768), ("c", 3, 32768)],
        [(("a", 1), ("b", 1)), (("b", 2), ("c", 1)), (("c", 2), ("a", 2))],
        {
            ("a", 1): (D, F),
            ("a", 2): (D, F),
            ("b", 1): (R, F),
            ("b", 2): (D, F),
            ("c", 1): (A, X),
            ("c", 2): (R, F),
        },
    ),
    (
        "triangle, c root by priority",
        [("a", 1, 32768), ("b", 2, 32768), ("c", 3, 4096)],
        [(("a", 1), ("b", 1)), (("b", 2), ("c", 1)), (("c", 2), ("a", 2))],
        {
            ("c", 1): (D, F),
            ("c", 2): (D, F),
            ("a", 2): (R, F),
            ("b", 2): (R, F),
            ("a", 1): (D, F),
            ("b", 1): (A, X),
        },
    ),
    (
        "two links between two bridges",
        [("a", 1, 32768), ("b", 2, 32768)],
        [(("a", 1), ("b", 1)), (("a", 2), ("b", 2))],
        {("a", 1): (D, F), ("a", 2): (D, F), ("b", 1): (R, F), ("b", 2): (A, X)},
    ),
    (
        "own BPDUs back through a hub: backup port",
        [("a", 1, 32768)],
        [(("a", 1), ("a", 2))],
        {("a", 1): (D, F), ("a", 2): (B, X)},
    ),
]


@pytest.mark.parametrize(
    ("bridges", "links", "expected"), [c[1:] for c in RING_CASES], ids=[c[0] for c in RING_CASES]
)
def test_loops_converge_fast_with_one_port_discarding(
    bridges: list[tuple[str, int, int]],
    links: list[tuple[Endpoint, Endpoint]],
    expected: dict[Endpoint, tuple[Role, State]],
) -> None:
    net = Net()
    for name, n, prio in bridges:
        net.bridge(name, n, prio)
    for ends in links:
        net.link(*ends)
    net.run(0.5)
    got = {end: net.port(end) for end in expected}
    assert got == expected
    net.run(30)  # and it stays so: no timer undoes it
    assert {end: net.port(end) for end in expected} == expected


def test_edge_ports_forward_at_once_and_a_bpdu_makes_them_normal() -> None:
    net = Net()
    a = net.bridge("a", 1)
    net.bridge("b", 2)
    a.add_port(7, "guest", edge=True, now=0.0)
    assert a.ports[7].state is F and 7 in a.forwarding
    a.take()
    net.segments.append([("a", 7), ("b", 7)])
    net.bridges["b"].add_port(7, "b.7", edge=False, now=0.0)
    net.run(0.2)
    assert not a.ports[7].edge
    assert net.port(("a", 7)) == (D, F)
    assert net.port(("b", 7)) == (R, F)


def test_a_silent_port_becomes_an_edge_port_after_three_seconds() -> None:
    net = Net()
    a = net.bridge("a", 1)
    a.add_port(1, "tap", edge=False, now=0.0)
    net.run(2.9)
    assert net.port(("a", 1)) == (D, X)
    net.run(0.2)
    assert net.port(("a", 1)) == (D, F) and a.ports[1].edge


def stp_bridge(net: Net, name: str, n: int, priority: int) -> Bridge:
    """An 802.1D-only neighbour (a Linux bridge): a Bridge whose ports are told the other side
    spoke 802.1D, so that they never propose."""
    b = net.bridge(name, n, priority, forward_delay=2.0, max_age=6.0, hello=1.0)
    return b


def test_an_802_1d_neighbour_makes_the_port_fall_back_to_its_timers() -> None:
    net = Net()
    linux = stp_bridge(net, "linux", 1, 4096)
    me = net.bridge("me", 2)
    net.link(("linux", 1), ("me", 1))
    net.link(("linux", 2), ("me", 2))
    # the Linux bridge speaks 802.1D: tell its ports so with one configuration BPDU each
    linux.take()
    for port in (1, 2):
        linux.receive(
            port, encode_bpdu(Bpdu(TYPE_CONFIG, 0, 0, me.id, 0, me.id, 0x8000), mac(2)), 0.0
        )
    net.run(0.5)
    assert not me.ports[1].rstp and not me.ports[2].rstp
    assert net.port(("me", 1)) == (R, X)  # listening
    assert net.port(("me", 2)) == (A, X)
    net.run(2.0)
    assert net.port(("me", 1)) == (R, L)
    net.run(2.0)
    assert net.port(("me", 1)) == (R, F)
    assert net.port(("me", 2)) == (A, X)
    # the forwarding link goes down: its information ages out (max age 6 s), then the
    # alternate port listens and learns (2 x 2 s)
    net.down.add(0)
    net.run(6.5)
    assert net.port(("me", 2))[0] is R
    net.run(4.5)
    assert net.port(("me", 2)) == (R, F)


def test_tc_flushes_the_other_non_edge_ports() -> None:
    net = Net()
    a = net.bridge("a", 1)
    net.bridge("b", 2)
    a.add_port(9, "guest", edge=True, now=0.0)
    net.link(("a", 1), ("b", 1))
    net.link(("a", 2), ("b", 2))
    net.run(1)
    a.take()
    a.receive(
        1,
        encode_bpdu(
            Bpdu(TYPE_RST, 2, FLAG_TC | (3 << ROLE_SHIFT), a.id, 0, net.bridges["b"].id, 0x8001),
            mac(2),
        ),
        net.now + 10,
    )
    effects = a.take()
    assert effects.flush == {2}  # not the port it came in on, not the edge port
    assert a.topology_changes >= 1


def test_agreement_flag_only_counts_for_our_root() -> None:
    net = Net()
    a = net.bridge("a", 1)
    a.add_port(1, "x", edge=False, now=0.0)
    a.ports[1].heard = 1  # not auto-edge
    a.take()
    other = bridge_id(0, mac(5))
    a.receive(
        1,
        encode_bpdu(
            Bpdu(TYPE_RST, 2, FLAG_AGREEMENT | (2 << ROLE_SHIFT), other, 0, other, 1), mac(5)
        ),
        0.1,
    )
    assert a.ports[1].state is X
    a.receive(
        1,
        encode_bpdu(
            Bpdu(TYPE_RST, 2, FLAG_AGREEMENT | (2 << ROLE_SHIFT), a.id, 100, other, 1), mac(5)
        ),
        0.2,
    )
    assert a.ports[1].state is F
