"""The forwarding decision with fake ports: hub and learning switch, drops, detach, aging.

Frames are built with scapy with explicit MACs; the drop counters are checked by the names users
see (``umlswitch/counters.py``).
"""

from __future__ import annotations

import logging

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from tests.fakes import FakePort
from umlswitch.fabric import fabric as fabric_module
from umlswitch.fabric.fabric import Fabric, PortNumberTaken
from umlswitch.fabric.frame import format_mac
from umlswitch.fabric.mactable import MacTable

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
MAC_C = "02:00:00:00:00:0c"
MAC_D = "02:00:00:00:00:0d"
BROADCAST = "ff:ff:ff:ff:ff:ff"


def raw_mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def frame(src: str, dst: str, size: int | None = None) -> bytes:
    """An ICMP echo over IPv4 from ``src`` to ``dst``, padded with payload to ``size`` bytes."""
    packet = Ether(src=src, dst=dst) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()
    if size is not None:
        packet = packet / Raw(b"\xa5" * (size - len(packet)))
    data = bytes(packet)
    assert size is None or len(data) == size
    return data


def make_fabric(
    n: int = 3, *, hub: bool = False, **kwargs: object
) -> tuple[Fabric, list[FakePort]]:
    fabric = Fabric(hub=hub, **kwargs)  # type: ignore[arg-type]
    ports = [FakePort(i) for i in range(1, n + 1)]
    for port in ports:
        fabric.attach(port)
    return fabric, ports


def received(ports: list[FakePort]) -> dict[int, list[bytes]]:
    return {port.id: port.take() for port in ports}


# --- hub ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dst", [BROADCAST, MAC_B, "01:00:5e:00:00:01"], ids=["bcast", "ucast", "mcast"]
)
def test_hub_floods_everything_to_all_but_ingress(dst: str) -> None:
    fabric, (p1, p2, p3) = make_fabric(hub=True)
    p2_hello = frame(MAC_B, BROADCAST)
    fabric.forward(p2, p2_hello)
    received([p1, p2, p3])
    f = frame(MAC_A, dst)
    fabric.forward(p1, f)
    assert received([p1, p2, p3]) == {1: [], 2: [f], 3: [f]}
    assert len(fabric.table) == 0  # a hub learns nothing


# --- switch ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dst",
    [
        pytest.param(BROADCAST, id="broadcast"),
        pytest.param("01:00:5e:00:00:fb", id="ipv4-multicast"),
        pytest.param("33:33:00:00:00:01", id="ipv6-multicast"),
        pytest.param(MAC_D, id="unknown-unicast"),
    ],
)
def test_switch_floods_group_and_unknown_destinations(dst: str) -> None:
    fabric, ports = make_fabric(4)
    f = frame(MAC_A, dst)
    fabric.forward(ports[0], f)
    assert received(ports) == {1: [], 2: [f], 3: [f], 4: [f]}


def test_known_unicast_goes_to_exactly_one_port() -> None:
    fabric, (p1, p2, p3) = make_fabric()
    fabric.forward(p1, frame(MAC_A, BROADCAST))
    fabric.forward(p2, frame(MAC_B, BROADCAST))
    received([p1, p2, p3])
    to_b = frame(MAC_A, MAC_B)
    fabric.forward(p1, to_b)
    to_a = frame(MAC_B, MAC_A)
    fabric.forward(p2, to_a)
    assert received([p1, p2, p3]) == {1: [to_a], 2: [to_b], 3: []}


def test_source_is_learned_from_unicast_frames_too() -> None:
    fabric, (p1, p2, p3) = make_fabric()
    fabric.forward(p2, frame(MAC_B, MAC_D))  # unknown destination: flooded, source learned
    received([p1, p2, p3])
    to_b = frame(MAC_A, MAC_B)
    fabric.forward(p1, to_b)
    assert received([p1, p2, p3]) == {1: [], 2: [to_b], 3: []}


def test_never_back_to_the_ingress_port() -> None:
    """Two hosts behind one port: a frame between them is not sent anywhere, and is counted."""
    fabric, (p1, p2, p3) = make_fabric()
    fabric.forward(p1, frame(MAC_A, BROADCAST))
    fabric.forward(p1, frame(MAC_C, BROADCAST))
    received([p1, p2, p3])
    fabric.forward(p1, frame(MAC_A, MAC_C))
    assert received([p1, p2, p3]) == {1: [], 2: [], 3: []}
    assert p1.stats.drops == {"same_port": 1}
    assert p1.stats.rx_frames == 3


def test_rx_counters_count_every_frame_received() -> None:
    fabric, (p1, _p2, _p3) = make_fabric()
    good = frame(MAC_A, BROADCAST)
    fabric.forward(p1, good)
    fabric.forward(p1, b"\x00" * 5)
    assert p1.stats.rx_frames == 2
    assert p1.stats.rx_bytes == len(good) + 5


def test_memoryview_frames_are_forwarded_as_their_bytes() -> None:
    """The ingress loop hands the fabric slices of a reused buffer."""
    fabric, (p1, p2, _p3) = make_fabric()
    f = frame(MAC_A, BROADCAST)
    buffer = bytearray(2000)
    buffer[: len(f)] = f
    fabric.forward(p1, memoryview(buffer)[: len(f)])
    assert p2.take() == [f]
    assert fabric.table.lookup(raw_mac(MAC_A)) == 1


# --- drops ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 6, 12, 13])
def test_runt_is_dropped_and_counted(size: int) -> None:
    fabric, ports = make_fabric()
    runt = frame(MAC_A, BROADCAST)[:size]
    fabric.forward(ports[0], runt)
    assert received(ports) == {1: [], 2: [], 3: []}
    assert ports[0].stats.drops == {"runt": 1}
    assert len(fabric.table) == 0


def test_header_only_frame_is_not_a_runt() -> None:
    fabric, ports = make_fabric()
    header = frame(MAC_A, BROADCAST)[:14]
    fabric.forward(ports[0], header)
    assert received(ports) == {1: [], 2: [header], 3: [header]}
    assert ports[0].stats.drops == {}


@pytest.mark.parametrize(
    ("max_frame", "size", "dropped"),
    [
        pytest.param(1518, 1514, False, id="1514-standard"),
        pytest.param(1518, 1518, False, id="1518-vlan-tagged-max"),
        pytest.param(1518, 1519, True, id="1519-giant"),
        pytest.param(1518, 9000, True, id="9000-giant"),
        pytest.param(9018, 9018, False, id="jumbo-9018"),
        pytest.param(9018, 9019, True, id="jumbo-9019-giant"),
        pytest.param(65535, 65535, False, id="max-65535"),
    ],
)
def test_giant_is_dropped_never_truncated(max_frame: int, size: int, dropped: bool) -> None:
    fabric, ports = make_fabric(max_frame=max_frame)
    f = frame(MAC_A, BROADCAST, size)
    fabric.forward(ports[0], f)
    if dropped:
        assert received(ports) == {1: [], 2: [], 3: []}
        assert ports[0].stats.drops == {"giant": 1}
        assert fabric.table.lookup(raw_mac(MAC_A)) is None
    else:
        out = received(ports)
        assert out == {1: [], 2: [f], 3: [f]}
        assert len(out[2][0]) == size
        assert ports[0].stats.drops == {}


def test_vlan_tagged_frame_is_forwarded_whole() -> None:
    fabric, ports = make_fabric()
    tagged = bytes(Ether(src=MAC_A, dst=BROADCAST) / Dot1Q(vlan=5) / IP() / ICMP())
    fabric.forward(ports[0], tagged)
    assert received(ports) == {1: [], 2: [tagged], 3: [tagged]}


@pytest.mark.parametrize("src", [BROADCAST, "01:00:5e:00:00:01", "03:00:00:00:00:01"])
def test_group_source_is_dropped(src: str) -> None:
    fabric, ports = make_fabric()
    fabric.forward(ports[0], frame(src, BROADCAST))
    fabric.forward(ports[0], frame(src, MAC_D))
    assert received(ports) == {1: [], 2: [], 3: []}
    assert ports[0].stats.drops == {"group_source": 2}
    assert len(fabric.table) == 0


def test_group_source_is_dropped_in_hub_mode_too() -> None:
    fabric, ports = make_fabric(hub=True)
    fabric.forward(ports[0], frame(BROADCAST, BROADCAST))
    assert received(ports) == {1: [], 2: [], 3: []}
    assert ports[0].stats.drops == {"group_source": 1}


def test_a_drop_does_not_affect_the_next_frame() -> None:
    fabric, ports = make_fabric()
    good = frame(MAC_A, BROADCAST)
    fabric.forward(ports[0], good[:10])
    fabric.forward(ports[0], frame(MAC_A, BROADCAST, 1600))
    fabric.forward(ports[0], good)
    assert received(ports) == {1: [], 2: [good], 3: [good]}
    assert ports[0].stats.drops == {"runt": 1, "giant": 1}


def test_reject_counts_a_frame_dropped_before_forwarding() -> None:
    """The ingress loop measures giants itself (MSG_TRUNC) and hands them to reject()."""
    fabric, ports = make_fabric()
    fabric.reject(ports[0], "giant", 70000)
    assert ports[0].stats.drops == {"giant": 1}
    assert ports[0].stats.rx_frames == 1
    assert ports[0].stats.rx_bytes == 70000
    assert received(ports) == {1: [], 2: [], 3: []}


# --- moves ----------------------------------------------------------------------------------------


def test_move_held_down_still_forwards_then_moves() -> None:
    fabric, (p1, p2, p3) = make_fabric(table=MacTable(hold_down=1.0), now=100.0)
    fabric.forward(p1, frame(MAC_A, BROADCAST))
    fabric.forward(p3, frame(MAC_C, BROADCAST))
    received([p1, p2, p3])
    f = frame(MAC_A, MAC_C)
    fabric.forward(p2, f)  # MAC_A shows up on port 2 within the hold-down
    assert received([p1, p2, p3]) == {1: [], 2: [], 3: [f]}
    assert fabric.table.lookup(raw_mac(MAC_A)) == 1
    assert fabric.events["mac_move_held"] == 1
    fabric.tick(101.5)
    fabric.forward(p2, f)
    assert fabric.table.lookup(raw_mac(MAC_A)) == 2
    assert fabric.events["mac_moved"] == 1
    to_a = frame(MAC_C, MAC_A)
    fabric.forward(p3, to_a)
    assert received([p1, p2, p3]) == {1: [], 2: [to_a], 3: [f]}


def test_table_full_eviction_is_counted() -> None:
    fabric, (p1, p2, _p3) = make_fabric(table=MacTable(max_entries=2))
    fabric.forward(p1, frame(MAC_A, BROADCAST))
    fabric.forward(p1, frame(MAC_B, BROADCAST))
    fabric.forward(p2, frame(MAC_C, BROADCAST))
    assert fabric.events["mac_evicted"] == 1
    assert len(fabric.table) == 2
    assert fabric.table.lookup(raw_mac(MAC_A)) is None


# --- ports ----------------------------------------------------------------------------------------


def test_detach_forgets_the_ports_macs_so_frames_to_them_flood_again() -> None:
    fabric, (p1, p2, p3) = make_fabric()
    fabric.forward(p1, frame(MAC_A, BROADCAST))
    fabric.forward(p2, frame(MAC_B, BROADCAST))
    fabric.forward(p2, frame(MAC_D, BROADCAST))
    received([p1, p2, p3])
    assert fabric.detach(2) == 2
    assert 2 not in fabric.ports
    assert fabric.table.lookup(raw_mac(MAC_B)) is None
    assert fabric.table.lookup(raw_mac(MAC_D)) is None
    to_b = frame(MAC_A, MAC_B)
    fabric.forward(p1, to_b)
    assert received([p1, p2, p3]) == {1: [], 2: [], 3: [to_b]}
    bcast = frame(MAC_C, BROADCAST)
    fabric.forward(p3, bcast)
    assert received([p1, p2, p3]) == {1: [bcast], 2: [], 3: []}


def test_detach_of_an_unknown_port_is_harmless() -> None:
    fabric, _ports = make_fabric()
    assert fabric.detach(42) == 0
    assert sorted(fabric.ports) == [1, 2, 3]


def test_new_port_is_flooded_to_after_attach() -> None:
    fabric, (p1, p2) = make_fabric(2)
    fabric.forward(p1, frame(MAC_A, BROADCAST))  # fills the flood cache for port 1
    p2.take()
    p3 = FakePort(3)
    fabric.attach(p3)
    bcast = frame(MAC_A, BROADCAST)
    fabric.forward(p1, bcast)
    assert received([p1, p2, p3]) == {1: [], 2: [bcast], 3: [bcast]}


def test_set_hub_floods_known_unicast_and_flushes_the_table() -> None:
    fabric, (p1, p2, p3) = make_fabric()
    fabric.forward(p2, frame(MAC_B, BROADCAST))
    received([p1, p2, p3])
    fabric.set_hub(True)
    assert len(fabric.table) == 0
    to_b = frame(MAC_A, MAC_B)
    fabric.forward(p1, to_b)
    assert received([p1, p2, p3]) == {1: [], 2: [to_b], 3: [to_b]}
    fabric.set_hub(False)
    fabric.forward(p2, frame(MAC_B, BROADCAST))
    received([p1, p2, p3])
    fabric.forward(p1, to_b)
    assert received([p1, p2, p3]) == {1: [], 2: [to_b], 3: []}


def test_allocate_id_lowest_free_from_1() -> None:
    fabric = Fabric()
    assert fabric.allocate_id() == 1
    for port_id in (1, 2, 4):
        fabric.attach(FakePort(port_id))
    assert fabric.allocate_id() == 3
    fabric.attach(FakePort(3))
    assert fabric.allocate_id() == 5
    fabric.detach(2)
    assert fabric.allocate_id() == 2


def test_allocate_id_requested() -> None:
    fabric, _ports = make_fabric()
    assert fabric.allocate_id(7) == 7
    assert fabric.allocate_id(300) == 300
    with pytest.raises(PortNumberTaken, match="port 2"):
        fabric.allocate_id(2)


def test_attach_of_a_taken_id_is_refused() -> None:
    fabric, (p1, _p2, _p3) = make_fabric()
    intruder = FakePort(1)
    with pytest.raises(PortNumberTaken):
        fabric.attach(intruder)
    assert fabric.ports[1] is p1


# --- time -----------------------------------------------------------------------------------------


def test_tick_expires_entries_so_frames_flood_again() -> None:
    fabric, (p1, p2, p3) = make_fabric(table=MacTable(aging=10.0), now=1000.0)
    fabric.forward(p2, frame(MAC_B, BROADCAST))
    fabric.tick(1005.0)
    fabric.forward(p1, frame(MAC_A, BROADCAST))  # MAC_A seen at 1005
    received([p1, p2, p3])
    fabric.tick(1009.9)
    assert fabric.table.lookup(raw_mac(MAC_B)) == 2
    fabric.tick(1010.0)
    assert fabric.table.lookup(raw_mac(MAC_B)) is None
    assert fabric.table.lookup(raw_mac(MAC_A)) == 1
    assert fabric.events["mac_expired"] == 1
    assert fabric.now == 1010.0
    to_b = frame(MAC_A, MAC_B)
    fabric.forward(p1, to_b)
    assert received([p1, p2, p3]) == {1: [], 2: [to_b], 3: [to_b]}
    fabric.tick(1015.0)
    assert len(fabric.table) == 1  # MAC_A was refreshed by to_b at 1010
    fabric.tick(1020.0)
    assert len(fabric.table) == 0
    assert fabric.events["mac_expired"] == 2


def test_a_move_into_a_full_port_counts_the_eviction() -> None:
    table = MacTable(max_per_port=1, hold_down=0.0)
    fabric, (p1, p2, _p3) = make_fabric(table=table)
    fabric.forward(p2, frame(MAC_B, BROADCAST))
    fabric.forward(p1, frame(MAC_A, BROADCAST))
    fabric.tick(5.0)
    fabric.forward(p2, frame(MAC_A, BROADCAST))  # MAC_A moves into port 2, which is full
    assert table.lookup(raw_mac(MAC_A)) == 2 and table.lookup(raw_mac(MAC_B)) is None
    assert fabric.events["mac_moved"] == 1
    assert fabric.events["mac_evicted"] == 1


# --- log lines ------------------------------------------------------------------------------------


def test_learning_log_lines_format_macs_only_when_written(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of new sources logs a few rate-limited lines, and only their MACs get formatted:
    the frames whose lines are suppressed cost no formatting."""
    formatted: list[bytes] = []

    def counting_format_mac(mac: bytes) -> str:
        formatted.append(mac)
        return format_mac(mac)

    monkeypatch.setattr(fabric_module, "format_mac", counting_format_mac)
    caplog.set_level(logging.INFO, logger="umlswitch.fabric")
    fabric, (p1, p2, _p3) = make_fabric(table=MacTable(max_entries=4, hold_down=1.0), now=10.0)
    for i in range(100):
        fabric.forward(p1, frame(f"02:00:00:00:01:{i:02x}", BROADCAST))
    fabric.forward(p2, frame("02:00:00:00:01:63", BROADCAST))  # within the hold-down
    fabric.tick(12.0)
    fabric.forward(p2, frame("02:00:00:00:01:63", BROADCAST))
    learned = [f"port 1 (fake:1): learned 02:00:00:00:01:{i:02x}" for i in range(4)]
    evicted = [
        f"port 1 (fake:1): learned 02:00:00:00:01:{i:02x}; MAC table full (4), "
        f"evicted 02:00:00:00:01:{i - 4:02x} from port 1"
        for i in range(4, 9)
    ]
    assert [r.getMessage() for r in caplog.records if r.name == "umlswitch.fabric"] == [
        *learned,
        *evicted,
        "port 2 (fake:2): 02:00:00:00:01:63 is on port 1 and was seen there within 1.0 s; "
        "not moved",
        "port 2 (fake:2): 02:00:00:00:01:63 moved here from port 1",
    ]
    # Each written line may be formatted by several handlers; the suppressed ones never are.
    assert {format_mac(mac) for mac in formatted} == {
        f"02:00:00:00:01:{i:02x}" for i in [*range(9), 0x63]
    }
    assert fabric.events["mac_evicted"] == 96
