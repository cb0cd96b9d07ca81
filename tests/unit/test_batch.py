"""The batch path (``Fabric.forward_batch``) decides exactly as the per-frame path (``forward``).

Two fabrics with the same fake ports get the same frames, one frame at a time and in batches;
everything a user can see must agree: what each port was sent and in which order, the counters,
the MAC table and the events. Frames come from a small set of addresses (so that learning,
moves, hold-down and unicast all happen), with runts, giants and group-bit sources mixed in; with
VLANs on, also with 802.1Q tags (members, not members, VID 0, double tags) and sizes a tag pushes
over the limit.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import FakePort
from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.fabric import Fabric
from umlswitch.fabric.guard import Guard
from umlswitch.fabric.mactable import MacTable
from umlswitch.fabric.vlan import Membership

MAX_FRAME = 200
SLOT = MAX_FRAME + 1
MACS = [bytes([2, 0, 0, 0, 0, n]) for n in range(1, 6)] + [b"\xff" * 6, b"\x01\x00\x5e\0\0\1"]

frames = st.builds(
    lambda dst, src, size, tag: (dst + src + tag.to_bytes(2, "big") + bytes(size))[
        : max(size, 0) if size < 14 else None
    ],
    st.sampled_from(MACS),
    st.sampled_from(MACS),
    st.one_of(st.integers(0, 13), st.integers(14, 100), st.integers(MAX_FRAME - 14, 260)),
    st.integers(0, 0xFFFF),
)
# 802.1Q-tagged frames: VIDs the test ports are in or not, VID 0, a PCP, sometimes a second tag
tagged_frames = st.builds(
    lambda dst, src, pcp, vid, inner, size: (
        dst + src + b"\x81\x00" + ((pcp << 13) | vid).to_bytes(2, "big") + inner + bytes(size)
    )[: max(size, 0) if size < 18 else None],
    st.sampled_from(MACS),
    st.sampled_from(MACS),
    st.integers(0, 7),
    st.sampled_from([0, 10, 20, 30, 4095]),
    st.sampled_from([b"\x08\x00", b"\x81\x00\x00\x63\x08\x00", b"\x88\xa8"]),
    st.one_of(st.integers(0, 17), st.integers(18, 100), st.integers(MAX_FRAME - 24, 260)),
)
# (ingress port index, frames it receives in one batch), and the clock between batches
batches = st.lists(
    st.tuples(st.integers(0, 3), st.lists(frames, min_size=1, max_size=12), st.floats(0, 2)),
    min_size=1,
    max_size=12,
)
vlan_batches = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.lists(st.one_of(frames, tagged_frames), min_size=1, max_size=12),
        st.floats(0, 2),
    ),
    min_size=1,
    max_size=12,
)
# access 10, access 10, access 20, trunk 10 20: every tagging rule has a port pair
MEMBERSHIPS = [Membership(10), Membership(10), Membership(20), Membership(1, frozenset({10, 20}))]


def make(hub: bool, vlans: bool = False, storm: bool = False) -> tuple[Fabric, list[FakePort]]:
    fabric = Fabric(hub=hub, table=MacTable(max_entries=4), max_frame=MAX_FRAME)
    if storm:  # storm control on: every flooded frame is counted, none may skip the guard
        Guard(fabric, storm_limit=5)
    ports = [FakePort(n) for n in range(1, 5)]
    for port, membership in zip(ports, MEMBERSHIPS, strict=True):
        fabric.attach(port, membership if vlans else Membership())
    assert (fabric.vlan_filter is not None) == vlans
    return fabric, ports


def fill(batch: FrameBatch, received: list[bytes]) -> None:
    """Lay ``received`` into ``batch`` as a receiver does: real lengths, giants cut at the slot."""
    for index, data in enumerate(received):
        chunk = data[:SLOT]
        batch.data[index * SLOT : index * SLOT + len(chunk)] = chunk
    batch.lengths = [len(data) for data in received]
    batch.count = len(received)


def observed(fabric: Fabric, ports: list[FakePort]) -> object:
    return (
        [port.take() for port in ports],
        [(p.stats.rx_frames, p.stats.rx_bytes, dict(p.stats.drops)) for p in ports],
        sorted((entry.mac, entry.port) for entry in fabric.table.entries(fabric.now)),
        len(fabric.table),
        dict(fabric.events),
    )


@settings(max_examples=300, deadline=None)
@given(batches, st.booleans(), st.booleans())
def test_batches_and_single_frames_agree(
    plan: list[tuple[int, list[bytes], float]], hub: bool, storm: bool
):
    run_both(plan, hub, vlans=False, storm=storm)


@settings(max_examples=300, deadline=None)
@given(vlan_batches, st.booleans(), st.booleans())
def test_batches_and_single_frames_agree_with_vlans(
    plan: list[tuple[int, list[bytes], float]], hub: bool, storm: bool
) -> None:
    run_both(plan, hub, vlans=True, storm=storm)


def run_both(
    plan: list[tuple[int, list[bytes], float]], hub: bool, vlans: bool, storm: bool
) -> None:
    single, single_ports = make(hub, vlans, storm)
    batched, batched_ports = make(hub, vlans, storm)
    batch = FrameBatch(SLOT, 16)
    now = 0.0
    for ingress, received, step in plan:
        now += step
        single.tick(now)
        batched.tick(now)
        for data in received:
            if len(data) > MAX_FRAME:  # as the receive loops do: measured, never read
                single.reject(single_ports[ingress], "giant", len(data))
            else:
                single.forward(single_ports[ingress], data)
        fill(batch, received)
        batched.forward_batch(batched_ports[ingress], batch)
        assert observed(batched, batched_ports) == observed(single, single_ports)
