"""The pipeline is composed of the stages that are on, and only those: each optional stage is in
it exactly while its feature is on, and turning the last one off gives back the plain path —
the very code a fabric with nothing on runs. Kept decisions (the flow cache) never outlive what
they were made from."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from tests.fakes import FakePort
from umlswitch.capture import watches
from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.fabric import FLOW_LIMIT, NO_RECEIVERS, Fabric
from umlswitch.fabric.guard import Guard
from umlswitch.fabric.mactable import MacTable

BROADCAST = b"\xff" * 6


def mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, n >> 8, n & 0xFF])


def frame(dst: bytes, src: bytes, size: int = 60) -> bytes:
    return (dst + src + b"\x88\xb5").ljust(size, b"\0")


def make(count: int = 3, **kwargs: Any) -> tuple[Fabric, list[FakePort]]:
    fabric = Fabric(**kwargs)
    ports = [FakePort(n) for n in range(1, count + 1)]
    for port in ports:
        fabric.attach(port)
    return fabric, ports


def plain_code(fabric: Fabric) -> tuple[object, object]:
    """The code of the drivers now: the same objects for every fabric composed alike."""
    return fabric.forward.__code__, fabric.forward_batch.__code__


PLAIN = plain_code(Fabric())


class Sink:
    port: int | None = None

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def offer(self, frame: bytes | memoryview, ingress_id: int, egress: tuple) -> None:
        if watches(self.port, ingress_id, egress):
            self.record(frame)

    def record(self, data: bytes | memoryview) -> None:
        self.frames.append(bytes(data))


class Hook:
    """An ingress hook that takes every other frame."""

    def __init__(self) -> None:
        self.seen = 0

    def take(self, data: bytes | memoryview) -> bool:
        self.seen += 1
        return self.seen % 2 == 0

    def take_batch(self, batch: FrameBatch) -> tuple[Any, ...]:
        return NO_RECEIVERS


class Stand:
    """An egress stage standing in for a port: keeps what it is given."""

    def __init__(self, port_id: int) -> None:
        self.id = port_id
        self.sent: list[bytes] = []

    def send_nowait(self, data: bytes | memoryview) -> bool:
        self.sent.append(bytes(data))
        return False

    def send_batch(self, batch: FrameBatch, indices: list[int]) -> bool:
        for index in indices:
            self.send_nowait(batch.frame(index))
        return False


def test_a_fabric_with_nothing_on_runs_the_plain_path() -> None:
    fabric, _ = make()
    assert fabric.stages == ()
    assert plain_code(fabric) == PLAIN


def switches(fabric: Fabric) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    """(stage, what turns its feature on, what turns it off) for each optional stage."""
    guard = Guard(fabric)  # installed, but with nothing to do: no stage
    sink = Sink()

    def capture(on: bool) -> None:
        fabric.capture = sink if on else None

    return [
        ("vlan", lambda: fabric.vlans.create(10), lambda: fabric.vlans.remove(10)),
        ("guard", lambda: guard.set_storm_limit(None, 5), lambda: guard.set_storm_limit(None, 0)),
        ("capture", lambda: capture(True), lambda: capture(False)),
        (
            "impair-in",
            lambda: fabric.set_ingress_hook(1, Hook()),
            lambda: fabric.set_ingress_hook(1, None),
        ),
        (
            "impair-out",
            lambda: fabric.set_egress_stage(2, Stand(2)),
            lambda: fabric.set_egress_stage(2, None),
        ),
    ]


def test_each_stage_is_in_the_pipeline_exactly_while_its_feature_is_on() -> None:
    fabric, _ = make()
    table = switches(fabric)
    assert list(fabric.stages) == [] and plain_code(fabric) == PLAIN
    for name, on, off in table:
        on()
        assert list(fabric.stages) == [name], name
        off()
        assert list(fabric.stages) == [], name
        assert plain_code(fabric) == PLAIN, name
    for _, on, _ in table:  # all of them at once, in the pipeline's order
        on()
    assert list(fabric.stages) == ["vlan", "guard", "capture", "impair-in", "impair-out"]
    for _, _, off in table:
        off()
    assert list(fabric.stages) == [] and plain_code(fabric) == PLAIN


def test_stages_do_their_part_and_leave_no_trace_when_off() -> None:
    fabric, (a, b, c) = make()
    sink, hook, stand = Sink(), Hook(), Stand(2)
    fabric.capture = sink
    fabric.set_ingress_hook(1, hook)
    fabric.set_egress_stage(2, stand)
    for n in range(4):
        fabric.forward(a, frame(BROADCAST, mac(1), 60 + n))
    assert hook.seen == 4 and len(sink.frames) == 2  # the hook took every other frame
    assert len(stand.sent) == 2 and b.take() == [] and len(c.take()) == 2
    fabric.capture = None
    fabric.set_ingress_hook(1, None)
    fabric.set_egress_stage(2, None)
    fabric.forward(a, frame(BROADCAST, mac(1)))
    assert hook.seen == 4 and len(sink.frames) == 2 and len(stand.sent) == 2
    assert len(b.take()) == 1 and len(c.take()) == 1


def test_a_port_that_leaves_takes_its_stages_along() -> None:
    fabric, _ = make()
    fabric.set_ingress_hook(2, Hook())
    fabric.set_egress_stage(2, Stand(2))
    fabric.detach(2)
    assert fabric.stages == () and plain_code(fabric) == PLAIN


def code_run(call: Callable[..., object], *args: object) -> list[str]:
    """The functions Python runs for ``call(*args)``, in order."""
    names: list[str] = []

    def trace(frame: FrameType, event: str, arg: object) -> None:
        names.append(frame.f_code.co_name)

    sys.settrace(trace)
    try:
        call(*args)
    finally:
        sys.settrace(None)
    return names


def test_known_unicast_on_the_plain_path_runs_the_driver_and_the_send_only() -> None:
    fabric, (a, b, c) = make()
    fabric.forward(a, frame(BROADCAST, mac(1)))
    fabric.forward(b, frame(mac(1), mac(2)))
    first = code_run(fabric.forward, a, frame(mac(2), mac(1)))
    assert "decide" in first and "learn" in first  # the first frame of the pair is decided
    assert code_run(fabric.forward, a, frame(mac(2), mac(1))) == ["forward", "send_nowait"]
    assert len(b.take()) == 3 and c.take() == [frame(BROADCAST, mac(1))]


def test_kept_decisions_follow_the_table() -> None:
    fabric, (a, b, c) = make(table=MacTable(hold_down=1.0), now=100.0)
    fabric.forward(b, frame(BROADCAST, mac(2)))
    to_b = frame(mac(2), mac(1))
    fabric.forward(a, to_b)
    fabric.forward(a, to_b)  # kept
    assert len(b.take()) == 2 and c.take() == [frame(BROADCAST, mac(2))]
    fabric.tick(102.0)  # past the hold-down: mac(2) moves to port 3
    fabric.forward(c, frame(BROADCAST, mac(2)))
    fabric.forward(a, to_b)
    assert c.take() == [to_b] and b.take() == [frame(BROADCAST, mac(2))]
    fabric.table.forget_port(3)  # a flush from the console: unknown again, flooded
    fabric.forward(a, to_b)
    assert b.take() == [to_b] and c.take() == [to_b]
    fabric.forward(c, frame(BROADCAST, mac(2)))
    fabric.forward(a, to_b)
    assert b.take() == [frame(BROADCAST, mac(2))] and c.take() == [to_b]
    fabric.set_hub(True)  # known unicast floods in a hub
    fabric.forward(a, to_b)
    assert b.take() == [to_b] and c.take() == [to_b]


def test_kept_decisions_refresh_their_entries_once_per_tick() -> None:
    fabric, (a, b, _c) = make(table=MacTable(aging=10.0), now=0.0)
    fabric.forward(b, frame(BROADCAST, mac(2)))
    for second in range(1, 30):
        fabric.tick(float(second))
        fabric.forward(a, frame(mac(2), mac(1)))
        fabric.forward(a, frame(mac(2), mac(1)))
        if second % 5 == 0:
            fabric.forward(b, frame(mac(1), mac(2)))
    ages = {entry.mac: entry.age for entry in fabric.table.entries(fabric.now)}
    assert ages == {mac(1): 0.0, mac(2): 4.0}


def test_the_flow_cache_stays_bounded() -> None:
    fabric, (a, b, c) = make()
    fabric.forward(a, frame(BROADCAST, mac(1)))
    for n in range(FLOW_LIMIT * 2):  # unknown destinations from a known source: all flooded
        fabric.forward(a, frame(mac(1000 + n), mac(1)))
    assert len(fabric._flows) <= FLOW_LIMIT
    assert len(b.take()) == len(c.take()) == FLOW_LIMIT * 2 + 1


def test_receive_forwards_from_a_read_buffer_and_measures_giants_without_reading_them() -> None:
    fabric, (a, b, c) = make(max_frame=100)
    buffer = bytearray(101)  # a reader's buffer: max_frame + 1
    data = frame(BROADCAST, mac(1), 64)
    buffer[: len(data)] = data
    assert fabric.receive(a, memoryview(buffer), 64) is NO_RECEIVERS
    assert b.take() == [data] and c.take() == [data]
    hook = Hook()
    fabric.set_ingress_hook(1, hook)
    fabric.receive(a, memoryview(buffer), 9000)  # MSG_TRUNC's real length of a giant
    assert hook.seen == 0 and b.take() == [] and c.take() == []
    assert a.stats.drops["giant"] == 1
    assert (a.stats.rx_frames, a.stats.rx_bytes) == (2, 64 + 9000)
    fabric.receive(a, memoryview(buffer), 64)
    assert hook.seen == 1 and b.take() == [data]
