"""The event bus (``umlswitch.events``) and what publishes to it: ports attaching and leaving,
MACs moving, storms, spanning-tree states; the live capture's bounded queue."""

from __future__ import annotations

import itertools
import json
import threading

import trio
import trio.testing
from scapy.layers.l2 import Ether

from tests.unit.fake_switch import FakeSwitch
from umlswitch import guard_control
from umlswitch.events import EventBus
from umlswitch.livecapture import LiveCapture
from umlswitch.mgmt.observe import stream_events

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
BROADCAST = "ff:ff:ff:ff:ff:ff"


def frame(src: str, dst: str) -> bytes:
    return bytes(Ether(src=src, dst=dst) / (b"x" * 46))


async def test_a_subscriber_gets_events_stamped_in_order() -> None:
    bus = EventBus(clock=lambda: 1234.5)
    bus.publish("nobody/listens")  # no subscriber: nothing kept
    with bus.subscribe() as sub:
        bus.publish("port/attach", port=3, kind="unix")
        bus.publish("port/detach", port=3)
        with trio.fail_after(1):
            events = await sub.get()
    assert events == [
        {"event": "port/attach", "ts": 1234.5, "port": 3, "kind": "unix"},
        {"event": "port/detach", "ts": 1234.5, "port": 3},
    ]
    assert bus.subscribers == ()
    assert bus.published["nobody/listens"] == 1


async def test_a_waiting_subscriber_is_woken_by_a_publish_from_another_thread() -> None:
    bus = EventBus()
    with bus.subscribe() as sub:
        got: list[dict[str, object]] = []

        async def reader() -> None:
            got.extend(await sub.get())

        with trio.fail_after(5):  # the reader must be woken, not left waiting
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                thread = threading.Thread(
                    target=bus.publish, args=("port/stall",), kwargs={"port": 1}
                )
                thread.start()
                await trio.to_thread.run_sync(thread.join)
    assert [e["event"] for e in got] == ["port/stall"]


async def test_a_slow_subscriber_loses_events_counted_and_the_others_get_them_all() -> None:
    bus = EventBus()
    with bus.subscribe(max_queued=4) as slow, bus.subscribe() as fast:
        for n in range(10):
            bus.publish("mac/move", n=n)  # never blocks, whoever does not read
        assert [e["n"] for e in slow.take()] == [0, 1, 2, 3]
        assert slow.lost == 6
        assert [e["n"] for e in fast.take()] == list(range(10))
        assert fast.lost == 0


async def test_ports_attaching_and_leaving_are_published() -> None:
    switch = FakeSwitch()
    with switch.bus.subscribe() as sub:
        port = switch.attach(1)
        await switch.attachments.detach(port, "the peer left")
        events = sub.take()
    assert [(e["event"], e["port"], e["kind"]) for e in events] == [
        ("port/attach", 1, "memory"),
        ("port/detach", 1, "memory"),
    ]
    assert events[1]["reason"] == "the peer left"


async def test_a_mac_seen_on_another_port_is_published_as_a_move() -> None:
    switch = FakeSwitch()
    a, b = switch.attach(1), switch.attach(2)
    switch.fabric.forward(a, frame(MAC_A, BROADCAST))
    with switch.bus.subscribe() as sub:
        switch.fabric.tick(100.0)  # past the move hold-down
        switch.fabric.forward(b, frame(MAC_A, BROADCAST))
        events = sub.take()
    assert events == [
        {
            "event": "mac/move",
            "ts": events[0]["ts"],
            "mac": MAC_A,
            "vlan": None,
            "port": 2,
            "previous": 1,
        }
    ]


async def test_a_storm_starts_once_and_stops_after_a_quiet_second() -> None:
    switch = FakeSwitch()
    a, _ = switch.attach(1), switch.attach(2)
    switch.guard.set_storm_limit(1, 5)
    with switch.bus.subscribe() as sub:
        for _ in range(20):
            switch.fabric.forward(a, frame(MAC_A, BROADCAST))
        switch.guard.tick(switch.fabric.now + 0.5)
        assert [(e["event"], e["port"]) for e in sub.take()] == [("storm/start", 1)]
        switch.guard.tick(switch.fabric.now + 1.5)
        switch.guard.tick(switch.fabric.now + 2.5)
        assert [(e["event"], e["port"]) for e in sub.take()] == [("storm/stop", 1)]


async def test_spanning_tree_port_states_are_published_as_they_change() -> None:
    switch = FakeSwitch()
    with switch.bus.subscribe() as sub:
        switch.attach(1)
        switch.guard.enable_stp(guard_control.new_bridge(switch.config))
        for second in range(1, 40):
            switch.fabric.tick(float(second))
            switch.guard.tick(float(second))
        states = [
            (e["port"], e["previous"], e["state"]) for e in sub.take() if e["event"] == "stp/state"
        ]
    assert states[0][:2] == (1, None)  # the port's first state
    assert states[-1][0::2] == (1, "forwarding")
    for earlier, later in itertools.pairwise(states):
        assert later[1] == earlier[2]  # each change starts where the one before ended


def test_a_live_capture_queue_is_bounded_and_counts_what_it_drops() -> None:
    live = LiveCapture(port=None, max_frames=3, clock=lambda: 1.0)
    for n in range(5):
        live.record(bytes([n]) * 60)
    assert (live.captured, live.dropped, live.queued) == (3, 2, 3)
    records = live.take()
    assert len(records) == 3 * (16 + 60) and live.sent == 3 and live.queued == 0
    live.record(b"y" * 60)  # room again once the reader took the queue
    assert live.captured == 4


async def test_the_stream_of_a_slow_reader_says_how_many_events_it_lost() -> None:
    bus = EventBus()
    sent: list[bytes] = []
    reader_back = trio.Event()

    async def send(data: bytes) -> None:
        sent.append(data)
        if len(sent) == 2:  # the reader stops reading after its first event
            await reader_back.wait()

    with bus.subscribe(max_queued=3) as subscription:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_events, subscription, send, [1])
            await trio.testing.wait_all_tasks_blocked()
            bus.publish("port/attach", n=0)
            await trio.testing.wait_all_tasks_blocked()
            for n in range(1, 10):
                bus.publish("port/attach", n=n)  # 3 queued, 6 lost
            reader_back.set()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    lines = [json.loads(line) for chunk in sent for line in chunk.splitlines()]
    assert [(line["event"], line.get("n")) for line in lines] == [
        ("events/subscribed", None),
        *[("port/attach", n) for n in range(4)],
        ("events/lost", None),
    ]
    assert lines[0]["ports"] == [1] and lines[-1]["count"] == 6
