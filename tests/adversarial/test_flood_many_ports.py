"""A MAC flood from one port with many ports attached and the table full: the work per frame, for
the flood and for the honest ports' traffic alongside it, does not grow with the number of ports.

Issue 13: fair eviction took ``max()`` over every port for each new source address, so a flood
cost 1.5 µs per frame with 4 ports and ~150 µs with 2048, and starved everybody else's frames.

In process, with the real ``Fabric`` and ``MacTable`` and ports that only count what they are
sent: attaching 2048 clients to a daemon would cost seconds and 4096 descriptors, and the per-frame
work at stake is the fabric's. The same fixed workload (flood frames interleaved with honest
unicast frames) runs on a switch with 4 ports and on one with 2048, in the same test, and the
lines of umlswitch's Python executed are compared (``sys.settrace``): deterministic, so a loop
over the ports written in Python shows up exactly (the old code ran its ``max()`` key once per
port). The CPU time per frame, which also catches a loop over the ports in C (a ``max()`` over a
dict without a key function), is a timing: ``benchmarks/bench_flood_ports.py`` measures it with
this file's switches and frames.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import umlswitch
from umlswitch.counters import PortStats
from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.fabric import Fabric
from umlswitch.fabric.mactable import MacTable

MAX_MACS = 8192  # the switch's default --max-macs
FEW, MANY = 4, 2048
TRACED_PAIRS = 200
UMLSWITCH = str(Path(umlswitch.__file__).parent)
PAYLOAD = b"\x08\x00" + bytes(46)


class CountingPort:
    """A fabric port that only counts the frames it is sent."""

    def __init__(self, port_id: int) -> None:
        self.id = port_id
        self.name = f"counting:{port_id}"
        self.stats = PortStats()
        self.sent = 0

    def send_nowait(self, frame: bytes | memoryview) -> bool:
        self.sent += 1
        return False

    def send_batch(self, batch: FrameBatch, indices: list[int]) -> bool:
        self.sent += len(indices)
        return False


def host(port_id: int) -> bytes:
    """The one address of an honest port."""
    return bytes([0x02, 0, 0, 0xAA]) + port_id.to_bytes(2, "big")


def flood_frames(start: int, count: int, dst: bytes) -> list[bytes]:
    """Frames to ``dst`` from ``count`` distinct source addresses never seen before."""
    return [dst + b"\x02\x01" + n.to_bytes(4, "big") + PAYLOAD for n in range(start, start + count)]


@dataclass
class Switch:
    """A full switch: ports 1..n-1 honest with one address each, port n flooding."""

    fabric: Fabric
    ports: list[CountingPort]
    sink: CountingPort  # port 1: receives the flood and half the honest frames
    talker: CountingPort  # port 2: talks with the sink
    flooder: CountingPort  # port n
    to_sink: bytes  # an honest frame from the talker to the sink
    to_talker: bytes  # and back

    @classmethod
    def build(cls, n: int) -> Switch:
        fabric = Fabric(table=MacTable(max_entries=MAX_MACS))
        ports = [CountingPort(i) for i in range(1, n + 1)]
        for port in ports:
            fabric.attach(port)
        sink, talker, flooder = ports[0], ports[1], ports[-1]
        fabric.forward(sink, b"\xff" * 6 + host(sink.id) + PAYLOAD)
        for port in ports[1:-1]:
            fabric.forward(port, host(sink.id) + host(port.id) + PAYLOAD)
        fill = MAX_MACS - len(fabric.table)
        for frame in flood_frames(1 << 30, fill, host(sink.id)):
            fabric.forward(flooder, frame)
        assert len(fabric.table) == MAX_MACS
        return cls(
            fabric,
            ports,
            sink,
            talker,
            flooder,
            to_sink=host(sink.id) + host(talker.id) + PAYLOAD,
            to_talker=host(talker.id) + host(sink.id) + PAYLOAD,
        )

    def run(self, flood: list[bytes]) -> None:
        """Each flood frame followed by an honest one, alternately to the sink and back."""
        forward = self.fabric.forward
        flooder, sink, talker = self.flooder, self.sink, self.talker
        honest = ((talker, self.to_sink), (sink, self.to_talker))
        for i, frame in enumerate(flood):
            forward(flooder, frame)
            ingress, reply = honest[i & 1]
            forward(ingress, reply)

    def sent(self) -> list[int]:
        return [port.sent for port in self.ports]

    def check_contained(self, before: list[int], flood: int) -> None:
        """The flood evicted only its own entries, and every frame went to its one port."""
        table = self.fabric.table
        assert len(table) == MAX_MACS
        for port in self.ports[:-1]:
            assert table.lookup(host(port.id)) == port.id
        assert table.count(self.flooder.id) == MAX_MACS - (len(self.ports) - 1)
        after = self.sent()
        expected = [0] * len(self.ports)
        expected[0] = flood + flood // 2  # the flood and half the honest frames
        expected[1] = flood // 2
        assert [a - b for a, b in zip(after, before, strict=True)] == expected


def lines_executed(switch: Switch, flood: list[bytes]) -> int:
    """How many lines of umlswitch's Python ``switch.run(flood)`` executes."""
    count = 0

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename.startswith(UMLSWITCH):
            return local
        return None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        switch.run(flood)
    finally:
        sys.settrace(previous)
    return count


def test_flood_runs_the_same_code_per_frame_with_2048_ports_as_with_4() -> None:
    lines: dict[int, int] = {}
    for n in (FEW, MANY):
        switch = Switch.build(n)
        before = switch.sent()
        lines[n] = lines_executed(switch, flood_frames(0, TRACED_PAIRS, host(switch.sink.id)))
        switch.check_contained(before, TRACED_PAIRS)
    # Identical but for the rate limiter (the 2048 ports' first lines overflow its key table),
    # against thousands of lines per frame for a loop over 2048 ports.
    assert lines[MANY] <= lines[FEW] * 1.05, (
        f"per flood+honest frame pair: {lines[FEW] / TRACED_PAIRS:.1f} lines with {FEW} ports, "
        f"{lines[MANY] / TRACED_PAIRS:.1f} with {MANY}"
    )
