"""802.1Q VLANs in the fabric (``fabric/vlan.py``): the tagging rules as case tables, learning
per (VLAN, MAC), the VLAN commands' rules, and the port options that set a membership.

The switch in the tables has six fake ports:

====  ===========================  =========================================
port  membership                   what it stands for
====  ===========================  =========================================
1     untagged 10                  an access guest on VLAN 10
2     untagged 10                  another one
3     untagged 20                  an access guest on VLAN 20
4     tagged 10 20 (untagged 1)    a trunk, e.g. a guest with eth0.10 and eth0.20
5     tagged 10 (untagged 1)       another trunk, e.g. a tap to the host
6     (default: untagged 1)        a port nobody configured
====  ===========================  =========================================

Frames are built with scapy, with explicit MACs and tags; the same inner packet is built for
what goes in and what is expected out, so a case compares whole frames byte for byte.
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

from tests.fakes import FakePort
from umlswitch import counters
from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.fabric import Fabric
from umlswitch.fabric.mactable import MacTable
from umlswitch.fabric.vlan import (
    Membership,
    VlanError,
    VlanTable,
    format_key,
    parse_vid,
    split_key,
    split_vlan_options,
)

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
MAC_T = "02:00:00:00:00:74"
BROADCAST = "ff:ff:ff:ff:ff:ff"
MAX_FRAME = 1518

MEMBERSHIPS = {
    1: Membership(10),
    2: Membership(10),
    3: Membership(20),
    4: Membership(1, frozenset({10, 20})),
    5: Membership(1, frozenset({10})),
    6: Membership(),
}


def raw_mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def frame(*tags: Packet, src: str = MAC_A, dst: str = BROADCAST, size: int | None = None) -> bytes:
    """An ICMP echo from ``src`` to ``dst`` behind the given tag layers (Dot1Q, Dot1AD); ``size``
    pads the *untagged* frame to that many bytes, so that tagged forms are 4 bytes longer."""
    inner = IP(src="10.0.0.1", dst="10.0.0.2") / ICMP() / Raw(b"vlan")
    if size is not None:
        inner = inner / Raw(b"\xa5" * (size - 14 - len(inner)))
    packet = Ether(src=src, dst=dst)
    for tag in tags:
        packet = packet / tag
    return bytes(packet / inner)


def q(vid: int, prio: int = 0) -> Dot1Q:
    return Dot1Q(vlan=vid, prio=prio)


def make(hub: bool = False) -> tuple[Fabric, dict[int, FakePort]]:
    fabric = Fabric(hub=hub, max_frame=MAX_FRAME)
    ports = {pid: FakePort(pid) for pid in MEMBERSHIPS}
    for pid, port in ports.items():
        fabric.attach(port, MEMBERSHIPS[pid])
    assert fabric.vlan_filter is not None
    return fabric, ports


def sent(ports: dict[int, FakePort]) -> dict[int, list[bytes]]:
    """What each port was sent since the last call (ports that got nothing left out)."""
    return {pid: frames for pid, port in ports.items() if (frames := port.take())}


# --- the tagging rules ---------------------------------------------------------------------------

# (case, ingress port, frame in, {port: frame out}, the drop counted on the ingress port)
FLOODS = [
    ("access to access and trunks", 1, frame(), {2: frame(), 4: frame(q(10)), 5: frame(q(10))}),
    ("access VLAN 20 reaches one trunk only", 3, frame(), {4: frame(q(20))}),
    (
        "trunk to access: the tag comes off",
        4,
        frame(q(10)),
        {1: frame(), 2: frame(), 5: frame(q(10))},
    ),
    ("trunk VLAN 20 to its one access port", 4, frame(q(20)), {3: frame()}),
    ("trunk untagged: its untagged VLAN 1", 4, frame(), {5: frame(), 6: frame()}),
    ("default port: VLAN 1, untouched", 6, frame(), {4: frame(), 5: frame()}),
    (
        "trunk to trunk: passed as received, priority kept",
        5,
        frame(q(10, prio=5)),
        {1: frame(), 2: frame(), 4: frame(q(10, prio=5))},
    ),
    (
        "priority tag (VID 0) on an access port counts as untagged",
        1,
        frame(q(0, prio=6)),
        {2: frame(), 4: frame(q(10, prio=6)), 5: frame(q(10, prio=6))},
    ),
    (
        "priority tag on a trunk: its untagged VLAN",
        4,
        frame(q(0, prio=3)),
        {5: frame(), 6: frame()},
    ),
    (
        "double tag on a trunk: the outer one decides, the inner one is payload",
        4,
        frame(q(10), q(99)),
        {1: frame(q(99)), 2: frame(q(99)), 5: frame(q(10), q(99))},
    ),
    (
        "802.1ad outer tag: untagged for an 802.1Q switch",
        1,
        frame(Dot1AD(vlan=300)),
        {
            2: frame(Dot1AD(vlan=300)),
            4: frame(q(10), Dot1AD(vlan=300)),
            5: frame(q(10), Dot1AD(vlan=300)),
        },
    ),
]

DROPS = [
    ("trunk: tagged for a VLAN it is not in", 5, frame(q(20)), counters.VLAN_NOT_MEMBER),
    ("access: tagged with its own untagged VLAN", 1, frame(q(10)), counters.VLAN_NOT_MEMBER),
    ("access: tagged for another VLAN", 1, frame(q(20)), counters.VLAN_NOT_MEMBER),
    ("VID 4095 is reserved", 4, frame(q(4095)), counters.VLAN_NOT_MEMBER),
    ("a tag with no EtherType after it", 4, frame(q(10))[:17], counters.RUNT),
    ("shorter than a header", 4, frame()[:13], counters.RUNT),
    ("longer than --max-frame", 4, frame(q(10), size=MAX_FRAME + 1), counters.GIANT),
    ("a group source address", 4, frame(q(10), src="01:00:5e:00:00:01"), counters.GROUP_SOURCE),
]


@pytest.mark.parametrize("hub", [False, True], ids=["switch", "hub"])
@pytest.mark.parametrize(
    ("ingress", "data", "expected"), [c[1:] for c in FLOODS], ids=[c[0] for c in FLOODS]
)
def test_flooding_stays_in_the_vlan_and_tags_follow_membership(
    hub: bool, ingress: int, data: bytes, expected: dict[int, bytes]
) -> None:
    fabric, ports = make(hub)
    fabric.forward(ports[ingress], data)
    assert sent(ports) == {pid: [out] for pid, out in expected.items()}
    assert not any(port.stats.drops for port in ports.values())


@pytest.mark.parametrize(
    ("ingress", "data", "reason"), [c[1:] for c in DROPS], ids=[c[0] for c in DROPS]
)
def test_frames_that_go_nowhere_are_counted(ingress: int, data: bytes, reason: str) -> None:
    fabric, ports = make()
    fabric.forward(ports[ingress], data)
    assert sent(ports) == {}
    assert dict(ports[ingress].stats.drops) == {reason: 1}
    assert len(fabric.table) == 0


# (case, ingress, untagged size in, {port: size out}, ports that count vlan_oversize)
SIZES = [
    ("a full untagged frame fits access ports only", 1, MAX_FRAME, {2: MAX_FRAME}, [4, 5]),
    (
        "4 bytes less fits the trunks too",
        1,
        MAX_FRAME - 4,
        {2: 1514, 4: MAX_FRAME, 5: MAX_FRAME},
        [],
    ),
]


@pytest.mark.parametrize(
    ("ingress", "size", "expected", "oversize"), [c[1:] for c in SIZES], ids=[c[0] for c in SIZES]
)
def test_a_frame_the_tag_makes_too_large_is_dropped_at_that_port(
    ingress: int, size: int, expected: dict[int, int], oversize: list[int]
) -> None:
    fabric, ports = make()
    data = frame(size=size)
    fabric.forward(ports[ingress], data)
    assert {pid: [len(f) for f in frames] for pid, frames in sent(ports).items()} == {
        pid: [n] for pid, n in expected.items()
    }
    for pid, port in ports.items():
        assert port.stats.drops[counters.VLAN_OVERSIZE] == (1 if pid in oversize else 0)


def test_a_priority_tagged_full_frame_keeps_its_size_on_a_trunk() -> None:
    fabric, ports = make()
    data = frame(q(0, prio=2), size=MAX_FRAME - 4)  # 1518 bytes with the priority tag
    assert len(data) == MAX_FRAME
    fabric.forward(ports[1], data)
    out = sent(ports)
    assert out[4] == [frame(q(10, prio=2), size=MAX_FRAME - 4)]
    assert out[2] == [frame(size=MAX_FRAME - 4)]


# --- learning per (VLAN, MAC) -------------------------------------------------------------------


def test_unicast_goes_to_the_port_learned_in_that_vlan_with_its_tagging() -> None:
    fabric, ports = make()
    fabric.forward(ports[4], frame(q(10), src=MAC_T))  # the trunk guest on VLAN 10
    fabric.forward(ports[4], frame(q(20), src=MAC_T))  # the same MAC on VLAN 20
    sent(ports)
    assert fabric.table.lookup(raw_mac(MAC_T) + b"\x00\x0a") == 4
    assert fabric.table.lookup(raw_mac(MAC_T) + b"\x00\x14") == 4
    assert len(fabric.table) == 2  # one MAC, two VLANs: two entries

    fabric.forward(ports[1], frame(src=MAC_A, dst=MAC_T))
    fabric.forward(ports[3], frame(src=MAC_B, dst=MAC_T))
    assert sent(ports) == {
        4: [frame(q(10), src=MAC_A, dst=MAC_T), frame(q(20), src=MAC_B, dst=MAC_T)]
    }
    fabric.forward(ports[4], frame(q(20), src=MAC_T, dst=MAC_B))  # the reply, to port 3 untagged
    assert sent(ports) == {3: [frame(src=MAC_T, dst=MAC_B)]}


def test_an_address_known_in_one_vlan_is_unknown_in_another() -> None:
    fabric, ports = make()
    fabric.forward(ports[1], frame(src=MAC_A))
    sent(ports)
    fabric.forward(ports[3], frame(src=MAC_B, dst=MAC_A))  # VLAN 20 never saw MAC_A: flooded
    assert sent(ports) == {4: [frame(q(20), src=MAC_B, dst=MAC_A)]}
    assert [format_key(key) for key, *_ in _keys(fabric)] == [
        f"{MAC_A} vlan 10",
        f"{MAC_B} vlan 20",
    ]


def _keys(fabric: Fabric) -> list[tuple[bytes, int]]:
    return sorted((e.mac, e.port) for e in fabric.table.entries(fabric.now))


def test_changing_a_ports_membership_forgets_its_addresses() -> None:
    fabric, ports = make()
    fabric.forward(ports[1], frame(src=MAC_A))
    fabric.forward(ports[2], frame(src=MAC_B))
    fabric.vlans.set_untagged(1, 20)
    assert [port for _, port in _keys(fabric)] == [2]
    assert fabric.vlans.membership(1) == Membership(20)
    sent(ports)
    fabric.forward(ports[2], frame(src=MAC_B))  # VLAN 10 broadcast: port 1 left it
    assert sent(ports) == {4: [frame(q(10), src=MAC_B)], 5: [frame(q(10), src=MAC_B)]}


def test_a_port_attached_on_a_new_vlan_creates_it_and_turns_vlans_on() -> None:
    fabric = Fabric()
    plain = FakePort(1)
    fabric.attach(plain)
    assert fabric.vlan_filter is None and fabric.vlans.vlans == {1}
    fabric.forward(plain, frame(src=MAC_A))
    assert len(fabric.table) == 1
    fabric.attach(FakePort(2), Membership(1, frozenset({7})))
    assert fabric.vlan_filter is fabric.vlans and fabric.vlans.vlans == {1, 7}
    assert len(fabric.table) == 0  # the keys change form: the table starts again


def test_removing_the_last_vlan_turns_them_off_and_tags_pass_again() -> None:
    fabric = Fabric()
    ports = {pid: FakePort(pid) for pid in (1, 2)}
    for port in ports.values():
        fabric.attach(port)
    fabric.vlans.create(10)
    fabric.forward(ports[1], frame(q(10)))
    assert sent(ports) == {} and ports[1].stats.drops[counters.VLAN_NOT_MEMBER] == 1
    fabric.vlans.remove(10)
    assert fabric.vlan_filter is None
    fabric.forward(ports[1], frame(q(10)))
    assert sent(ports) == {2: [frame(q(10))]}


def test_batches_keep_each_ports_order_when_tags_change_between_frames() -> None:
    """A port that gets some frames as received and some re-tagged gets them all in order."""
    fabric, ports = make()
    received = [frame(q(10), src=MAC_T), frame(q(0), src=MAC_T), frame(q(10, 4), src=MAC_T)]
    slot = 128
    batch = FrameBatch(slot, len(received))
    for i, data in enumerate(received):
        batch.data[i * slot : i * slot + len(data)] = data
    batch.lengths = [len(data) for data in received]
    batch.count = len(received)
    fabric.forward_batch(ports[4], batch)
    # to port 5 (trunk 10): the two VLAN-10 frames as received; the priority-tagged one is VLAN 1
    assert sent(ports) == {
        1: [frame(src=MAC_T), frame(src=MAC_T)],
        2: [frame(src=MAC_T), frame(src=MAC_T)],
        5: [received[0], frame(src=MAC_T), received[2]],
        6: [frame(src=MAC_T)],
    }


# --- the configuration --------------------------------------------------------------------------


def test_vlan_commands_as_vde_switch_answers_them() -> None:
    table = VlanTable()
    table.join(1)
    table.join(2, Membership(1, frozenset()))

    def fails(code: int, call: object, *args: int) -> None:
        with pytest.raises(VlanError) as info:
            call(*args)  # type: ignore[operator]
        assert info.value.errno == code, info.value

    fails(errno.EEXIST, table.create, 1)
    fails(errno.ENXIO, table.add_tagged, 10, 1)  # no VLAN 10 yet
    fails(errno.ENXIO, table.remove, 10)
    fails(errno.EINVAL, table.remove, 1)  # the default VLAN stays
    table.create(10)
    assert table.active
    fails(errno.EEXIST, table.create, 10)
    fails(errno.ENXIO, table.add_tagged, 10, 9)  # no port 9
    table.add_tagged(10, 1)
    fails(errno.EEXIST, table.add_tagged, 10, 1)
    fails(errno.EADDRINUSE, table.remove, 10)
    table.set_untagged(2, 10)
    fails(errno.EEXIST, table.add_tagged, 10, 2)  # untagged there already
    fails(errno.EADDRINUSE, table.remove_tagged, 10, 2)  # its untagged VLAN
    fails(errno.ENXIO, table.remove_tagged, 1, 2)  # not tagged there
    table.set_untagged(1, 10)  # tagged on 10 becomes untagged on 10, as vde_switch
    assert table.membership(1) == Membership(10)
    assert table.ports_in(10) == ([1, 2], [])
    table.set_untagged(1, 1)
    table.set_untagged(2, 1)
    table.bind("/tmp/vlan10.ctl", Membership(10))
    fails(errno.EADDRINUSE, table.remove, 10)
    del table.bound["/tmp/vlan10.ctl"]
    table.remove(10)
    assert not table.active


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10", 10), ("1", 1), ("4094", 4094), (" 7", 7)],
)
def test_vlan_numbers(text: str, expected: int) -> None:
    assert parse_vid(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "VID 0 tags a frame's priority only"),
        ("4095", "from 1 to 4094"),
        ("ten", "must be a VLAN number"),
        ("-1", "must be a VLAN number"),
    ],
)
def test_bad_vlan_numbers_say_why(text: str, message: str) -> None:
    with pytest.raises(VlanError, match=message):
        parse_vid(text)


@pytest.mark.parametrize(
    ("text", "rest", "membership"),
    [
        ("tap0", "tap0", None),
        ("tap0,vlan=10", "tap0", Membership(10)),
        ("tap0,trunk=10,20", "tap0", Membership(1, frozenset({10, 20}))),
        ("tap0,trunk=10,20,vlan=30", "tap0", Membership(30, frozenset({10, 20}))),
        ("tap0,vlan=30,trunk=10", "tap0", Membership(30, frozenset({10}))),
        (
            "239.0.0.1:1102,ttl=2,trunk=5,6,if=10.0.0.1",
            "239.0.0.1:1102,ttl=2,if=10.0.0.1",
            Membership(1, frozenset({5, 6})),
        ),
        ("1102:127.0.0.1:1103,vlan=4", "1102:127.0.0.1:1103", Membership(4)),
        ("/tmp/v10.ctl,vlan=10", "/tmp/v10.ctl", Membership(10)),
        ("/tmp/a,b.ctl", "/tmp/a,b.ctl", None),
    ],
)
def test_port_options_carry_a_membership(
    text: str, rest: str, membership: Membership | None
) -> None:
    assert split_vlan_options(text) == (rest, membership)
    if membership is not None:
        assert split_vlan_options(",".join([rest, *membership.words()])) == (rest, membership)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tap0,vlan=10,vlan=20", "vlan= given twice"),
        ("tap0,trunk=10,10", "listed twice"),
        ("tap0,vlan=10,trunk=10", "both untagged and tagged"),
        ("tap0,vlan=0", "VID 0"),
        ("tap0,trunk=", "must be a VLAN number"),
    ],
)
def test_bad_port_options_say_why(text: str, message: str) -> None:
    with pytest.raises(VlanError, match=message):
        split_vlan_options(text)


def test_keys_split_into_mac_and_vlan() -> None:
    assert split_key(raw_mac(MAC_A)) == (raw_mac(MAC_A), None)
    assert split_key(raw_mac(MAC_A) + b"\x0f\xfe") == (raw_mac(MAC_A), 4094)
    assert format_key(raw_mac(MAC_A)) == MAC_A


# --- no VLAN configured: frames pass exactly as before -------------------------------------------

NO_VLAN_MACS = [bytes([2, 0, 0, 0, 0, n]) for n in range(1, 5)] + [b"\xff" * 6]
any_frames = st.builds(
    lambda dst, src, tags, rest: dst + src + tags + rest,
    st.sampled_from(NO_VLAN_MACS),
    st.sampled_from(NO_VLAN_MACS),
    # none, a tag of any TCI (VID 0, 4095, PCP...), two tags, an 802.1ad tag, any EtherType
    st.one_of(
        st.just(b""),
        st.binary(min_size=2, max_size=2).map(lambda tci: b"\x81\x00" + tci),
        st.binary(min_size=2, max_size=2).map(lambda tci: b"\x81\x00" + tci + b"\x81\x00\x00\x0a"),
        st.binary(min_size=2, max_size=2).map(lambda tci: b"\x88\xa8" + tci),
    ),
    st.binary(min_size=0, max_size=120),
)


def reference_switch(
    plan: list[tuple[int, bytes]], port_ids: list[int], max_frame: int
) -> list[dict[int, list[bytes]]]:
    """What a VLAN-unaware learning switch (uml_switch, umlswitch before VLANs) sends where,
    frame by frame: the frame itself, unchanged, by its addresses alone."""
    table: dict[bytes, int] = {}
    out = []
    for ingress, data in plan:
        sends: dict[int, list[bytes]] = {}
        if ETH_HEADER <= len(data) <= max_frame and not data[6] & 1:
            dst, src = data[:6], data[6:12]
            table[src] = ingress
            if dst[0] & 1 or dst not in table:
                sends = {pid: [data] for pid in port_ids if pid != ingress}
            elif table[dst] != ingress:
                sends = {table[dst]: [data]}
        out.append(sends)
    return out


ETH_HEADER = 14


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 4), any_frames), min_size=1, max_size=30),
    st.sampled_from(["never configured", "VLANs on, then off again"]),
    st.booleans(),
)
def test_without_vlans_frames_pass_byte_for_byte_as_before(
    plan: list[tuple[int, bytes]], history: str, batched: bool
) -> None:
    max_frame = 100
    fabric = Fabric(table=MacTable(hold_down=0.0), max_frame=max_frame)
    ports = {pid: FakePort(pid) for pid in range(1, 5)}
    for port in ports.values():
        fabric.attach(port)
    if history != "never configured":
        fabric.vlans.create(10)
        fabric.vlans.add_tagged(10, 1)
        fabric.forward(ports[1], b"\x02" * 12 + b"\x81\x00\x00\x0a")
        fabric.vlans.remove_tagged(10, 1)
        fabric.vlans.remove(10)
        sent(ports)
    assert fabric.vlan_filter is None
    batch = FrameBatch(max_frame + 1, 1)
    got = []
    for ingress, data in plan:
        if len(data) > max_frame:  # as the receive loops do
            fabric.reject(ports[ingress], counters.GIANT, len(data))
        elif batched:
            batch.data[: len(data)] = data
            batch.lengths = [len(data)]
            batch.count = 1
            fabric.forward_batch(ports[ingress], batch)
        else:
            fabric.forward(ports[ingress], data)
        got.append(sent(ports))
    assert got == reference_switch(plan, list(ports), max_frame)


def test_ports_the_spanning_tree_blocks_get_no_vlan_frames() -> None:
    fabric, ports = make()
    fabric.set_blocked(frozenset({2, 5}))
    fabric.forward(ports[1], frame())
    assert sent(ports) == {4: [frame(q(10))]}
    fabric.set_blocked(frozenset())
    fabric.forward(ports[1], frame())
    assert sent(ports) == {2: [frame()], 4: [frame(q(10))], 5: [frame(q(10))]}
