"""The fabric with loop and storm protection: storm control's rate, the spanning tree's gate on
ingress and egress, BPDUs consumed or forwarded, fuzzed BPDUs, and the loop warning.

Fake ports and a fake clock (``Fabric.tick``); the bridge's own decisions are tested in
``tests/unit/test_stp.py``.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import FakePort
from umlswitch import counters
from umlswitch.fabric.fabric import Fabric
from umlswitch.fabric.guard import Guard, LoopWatch
from umlswitch.fabric.stp import (
    STP_GROUP,
    TYPE_RST,
    Bpdu,
    Bridge,
    State,
    bridge_id,
    encode_bpdu,
)

BROADCAST = b"\xff" * 6


def mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, 1, n])


def frame(dst: bytes, src: bytes, tag: int = 0) -> bytes:
    return dst + src + b"\x08\x00" + tag.to_bytes(4, "big") + bytes(42)


def fabric_with(
    n: int, *, storm: int = 0, stp: Bridge | None = None
) -> tuple[Fabric, Guard, list[FakePort]]:
    fabric = Fabric()
    guard = Guard(fabric, storm_limit=storm)
    ports = [FakePort(i) for i in range(1, n + 1)]
    for port in ports:
        fabric.attach(port)
    if stp is not None:
        guard.enable_stp(stp)
    return fabric, guard, ports


@pytest.mark.parametrize("batched", [False, True])
def test_a_port_flooding_at_ten_times_its_limit_delivers_the_limit(batched: bool) -> None:
    from umlswitch.fabric.batch import FrameBatch

    limit, seconds, tick = 200, 5, 0.25
    fabric, guard, ports = fabric_with(3)
    guard.set_storm_limit(1, limit)
    assert fabric.guard is guard
    flooder, quiet, receiver = ports
    per_tick = int(limit * 10 * tick)
    batch = FrameBatch(128, per_tick)
    now = 0.0
    for step in range(int(seconds / tick)):
        now = step * tick
        fabric.tick(now)
        frames = [frame(BROADCAST, mac(1), i) for i in range(per_tick)]
        if batched:
            for i, data in enumerate(frames):
                batch.data[i * 128 : i * 128 + len(data)] = data
            batch.lengths = [len(d) for d in frames]
            batch.count = len(frames)
            fabric.forward_batch(flooder, batch)
        else:
            for data in frames:
                fabric.forward(flooder, data)
        for i in range(int(50 * tick)):  # the quiet port: 50 broadcasts/s, no limit
            fabric.forward(quiet, frame(BROADCAST, mac(2), i))
    from_flooder = [f for f in receiver.take() if f[6:12] == mac(1)]
    expected = limit * seconds
    assert abs(len(from_flooder) - expected) <= expected * 0.1, len(from_flooder)
    assert flooder.stats.drops[counters.STORM] == per_tick * 20 - len(from_flooder)
    assert quiet.stats.drops[counters.STORM] == 0
    assert len([f for f in flooder.take() if f[6:12] == mac(2)]) == int(50 * tick) * 20


def test_storm_control_spares_known_unicast_and_can_be_lifted() -> None:
    fabric, guard, (a, b, c) = fabric_with(3, storm=2)
    assert fabric.guard is guard
    fabric.forward(b, frame(BROADCAST, mac(2)))  # b is learned
    for i in range(10):
        fabric.forward(a, frame(mac(2), mac(1), i))  # known unicast: never limited
    assert len(b.take()) == 10
    for i in range(10):
        fabric.forward(a, frame(mac(9), mac(1), i))  # unknown unicast: flooded, limited
    assert len(c.take()) == 2 + 1  # b's broadcast and two of a's
    assert a.stats.drops[counters.STORM] == 8
    guard.set_storm_limit(None, 0)
    assert fabric.guard is None  # nothing left to guard: the hot path is back to one test


def test_without_stp_bpdus_are_flooded_and_with_it_consumed() -> None:
    other = bridge_id(4096, mac(7))
    bpdu = encode_bpdu(Bpdu(TYPE_RST, 2, 3 << 2, other, 0, other, 0x8001), mac(7))
    fabric, guard, (a, b) = fabric_with(2)
    fabric.forward(a, bpdu)
    assert b.take() == [bpdu]
    bridge = Bridge(mac(99))
    guard.enable_stp(bridge)
    a.take(), b.take()
    fabric.forward(a, bpdu)
    assert [f for f in b.take() if f[:6] == STP_GROUP and f[6:12] == mac(7)] == []
    assert bridge.ports[1].heard == 1
    guard.disable_stp()
    assert fabric.guard is None
    fabric.forward(a, bpdu)
    assert b.take() == [bpdu]


def test_a_blocked_port_neither_sends_nor_receives() -> None:
    bridge = Bridge(mac(99))
    fabric, guard, (guest, tap1, tap2) = fabric_with(3)
    guest.stp_edge = True  # type: ignore[attr-defined]
    guard.enable_stp(bridge)
    # our own BPDUs come back from tap1 to tap2 (a hub): tap2 becomes a backup port
    for frame_ in tap1.take():
        if frame_[:6] == STP_GROUP:
            fabric.forward(tap2, frame_)
    for frame_ in tap2.take():
        if frame_[:6] == STP_GROUP:
            fabric.forward(tap1, frame_)
    assert bridge.ports[1].state is State.FORWARDING  # the guest: an edge port
    assert bridge.ports[3].state is State.DISCARDING
    fabric.forward(guest, frame(BROADCAST, mac(1)))

    def data(port: FakePort) -> list[bytes]:
        return [f for f in port.take() if f[:6] != STP_GROUP]

    assert len(data(tap1)) == 1 and data(tap2) == []
    fabric.forward(tap2, frame(BROADCAST, mac(5)))
    assert data(guest) == [] and tap2.stats.drops[counters.STP_DISCARD] == 1
    assert fabric.table.lookup(mac(5)) is None  # not learned on a discarding port


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.integers(0, 60), st.integers(0, 255))
def test_fuzzed_bpdus_never_crash_the_switch(noise: bytes, where: int, value: int) -> None:
    fabric, guard, ports = fabric_with(2, stp=Bridge(mac(99)))
    other = bridge_id(0, mac(7))
    valid = bytearray(encode_bpdu(Bpdu(TYPE_RST, 2, 0x7E, other, 5, other, 0x8001), mac(7)))
    valid[where % len(valid)] = value
    for data in (
        bytes(valid),
        STP_GROUP + mac(7) + noise,
        STP_GROUP + mac(7) + bytes(valid[12:]) + noise,
    ):
        fabric.forward(ports[0], data)
        guard.tick(fabric.now + 1)
    assert ports[0].stats.rx_frames == 3


def test_own_flooded_frames_coming_back_are_called_a_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fabric, _, (guest, tap1, tap2) = fabric_with(3)
    clock = [0.0]
    fabric.loop_watch = LoopWatch(fabric, clock=lambda: clock[0])
    caplog.set_level(logging.WARNING, "umlswitch.stp")
    fabric.forward(guest, frame(BROADCAST, mac(1)))
    for _ in range(100):  # the copies come back, again and again
        fabric.forward(tap1, frame(BROADCAST, mac(1)))
        fabric.forward(tap2, frame(BROADCAST, mac(1)))
    loops = [r.getMessage() for r in caplog.records if "LOOP?" in r.getMessage()]
    assert len(loops) == 2  # once per pair of ports and interval
    assert "port 1 (fake:1)" in loops[0] and "port 2 (fake:2)" in loops[0]
    assert fabric.events[counters.LOOP_SUSPECTED] == 200
