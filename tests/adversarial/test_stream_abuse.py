"""Stream ports under attack: fuzzed lengths and byte streams, peers that claim gigabytes, that
dribble, that vanish in the middle of a frame, that never read, and too many connections.
Honest clients keep being served throughout; every misdeed is counted."""

from __future__ import annotations

import random
import resource
import socket
import struct

import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from umlswitch import counters
from umlswitch.ports.stream.framing import HEADER, OversizedRecord, RecordReader
from umlswitch.ports.stream.spec import parse_stream
from umlswitch.testing import attach, run_switch, wait_until
from umlswitch.testing.stream import stream_address
from umlswitch.testing.switch import RunningSwitch

A, B = "02:00:00:00:5b:01", "02:00:00:00:5b:02"
C, D = "02:00:00:00:5b:03", "02:00:00:00:5b:04"  # the honest pair
MAX_FRAME = 1518


def reference_records(data: bytes, max_frame: int) -> tuple[list[bytes], bool]:
    """What a correct reader hands out for ``data`` at once, and whether it must give up."""
    out: list[bytes] = []
    offset = 0
    while len(data) - offset >= 4:
        (length,) = struct.unpack_from(">I", data, offset)
        if length > max_frame:
            return out, True
        if offset + 4 + length > len(data):
            break
        out.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return out, False


def record(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


streams = st.lists(
    st.one_of(
        st.binary(min_size=0, max_size=1600).map(record),  # a well-formed record
        st.integers(min_value=0, max_value=0xFFFFFFFF).map(HEADER.pack),  # any length at all
        st.binary(max_size=40),  # garbage
    ),
    max_size=30,
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(data=streams, cuts=st.lists(st.integers(min_value=1, max_value=3000), max_size=40))
def test_any_bytes_cut_anywhere_give_exactly_the_records_of_a_reference_reader(
    data: bytes, cuts: list[int]
) -> None:
    expected, gives_up = reference_records(data, MAX_FRAME)
    reader = RecordReader(MAX_FRAME)
    got: list[bytes] = []
    offset, refused = 0, False
    pieces = [*cuts, len(data)]
    for size in pieces:
        piece = data[offset : offset + min(size, len(reader.space()))]
        if not piece:
            break
        reader.space()[: len(piece)] = piece
        reader.filled(len(piece))
        offset += len(piece)
        try:
            reader.parse(lambda frame: got.append(bytes(frame)))
        except OversizedRecord:
            refused = True
            break
    while not refused and offset < len(data):  # the rest, in whatever fits
        piece = data[offset : offset + len(reader.space())]
        reader.space()[: len(piece)] = piece
        reader.filled(len(piece))
        offset += len(piece)
        try:
            reader.parse(lambda frame: got.append(bytes(frame)))
        except OversizedRecord:
            refused = True
    assert got == expected
    assert refused == gives_up


# --- against the running switch -------------------------------------------------------------


async def connect(address: str) -> trio.socket.SocketType:
    family, target = stream_address(address)
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    await sock.connect(target)
    return sock


async def honest_exchange(switch: RunningSwitch, tag: bytes) -> None:
    """A stream client and a daemon client still reach each other."""
    async with (
        attach(switch.stream_addresses[0], mac=C, transport="stream") as c,
        attach(switch.control_path, mac=D) as d,
    ):
        await c.send(c.ether() / IP() / ICMP() / Raw(tag))
        got = await d.receive(match=lambda p: bytes(p).endswith(tag), timeout=5)
        assert got.src == C
        await d.send(d.ether(dst=C) / IP() / ICMP() / Raw(tag))
        assert (await c.receive(match=lambda p: bytes(p).endswith(tag), timeout=5)).src == D


def stream_drops(switch: RunningSwitch) -> dict[str, int]:
    """Drops of every port, the departed included (switch-wide totals)."""
    fabric = switch.switch.fabric
    total = dict(fabric.departed.drops)
    for port in fabric.ports.values():
        for reason, count in port.stats.drops.items():
            total[reason] = total.get(reason, 0) + count
    return total


async def test_random_byte_streams_never_hurt_the_switch(tmp_path) -> None:
    rng = random.Random(14)
    async with run_switch(tmp_path, streams=(parse_stream("tcp:0"),)) as switch:
        address = switch.stream_addresses[0]
        for _ in range(60):
            parts = []
            for _ in range(rng.randrange(1, 8)):
                kind = rng.randrange(3)
                if kind == 0:
                    parts.append(record(rng.randbytes(rng.randrange(0, 1600))))
                elif kind == 1:
                    parts.append(HEADER.pack(rng.choice([0, 13, 1518, 1519, 65535, 2**32 - 1])))
                else:
                    parts.append(rng.randbytes(rng.randrange(1, 50)))
            data = b"".join(parts)
            with await connect(address) as sock:
                offset = 0
                try:
                    while offset < len(data):
                        step = rng.randrange(1, 700)
                        offset += await sock.send(data[offset : offset + step])
                except OSError:
                    pass  # the switch dropped us: a bad length
        await wait_until(lambda: not switch.switch.fabric.ports, what="every port detached")
        await honest_exchange(switch, b"after the fuzz")
        drops = stream_drops(switch)
        assert drops.get(counters.STREAM_OVERSIZE, 0) > 0
        assert drops.get(counters.STREAM_TRUNCATED, 0) > 0


async def test_a_peer_claiming_4_gib_is_dropped_at_once_and_costs_nothing(tmp_path) -> None:
    async with run_switch(tmp_path, streams=(parse_stream("tcp:0"),)) as switch:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(20):
            with await connect(switch.stream_addresses[0]) as sock:
                await sock.send(HEADER.pack(0xFFFFFFFF) + b"\0" * 100)
                with trio.fail_after(5):
                    assert await sock.recv(10) == b""  # closed by the switch
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert grown_kib < 20 * 1024
        assert stream_drops(switch)[counters.STREAM_OVERSIZE] == 20
        await honest_exchange(switch, b"after 4 GiB claims")


async def test_a_peer_vanishing_mid_frame_is_detached_and_its_macs_forgotten(tmp_path) -> None:
    async with run_switch(tmp_path, streams=(parse_stream("tcp:0"),)) as switch:
        frame = bytes(Ether(src="02:00:00:00:5b:99", dst="ff:ff:ff:ff:ff:ff") / IP() / ICMP())
        with await connect(switch.stream_addresses[0]) as sock:
            await sock.send(record(frame) + record(frame)[:30])
            await wait_until(
                lambda: "02:00:00:00:5b:99" in switch.mac_table(), what="the MAC learned"
            )
        await wait_until(lambda: not switch.switch.fabric.ports, what="every port detached")
        assert switch.mac_table() == {}
        assert stream_drops(switch)[counters.STREAM_TRUNCATED] == 1
        await honest_exchange(switch, b"after a vanished peer")


async def test_a_frame_dribbled_one_byte_at_a_time_arrives_whole(tmp_path) -> None:
    async with (
        run_switch(tmp_path, streams=(parse_stream("tcp:0"),)) as switch,
        attach(switch.control_path, mac=B) as b,
    ):
        frame = bytes(Ether(src=A, dst=B) / IP() / ICMP() / Raw(b"dribbled"))
        with await connect(switch.stream_addresses[0]) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for byte in record(frame):
                await sock.send(bytes([byte]))
                await trio.sleep(0.001)
            assert await b.receive_bytes(match=ICMP, timeout=5) == frame


async def test_a_stream_peer_that_never_reads_costs_only_its_own_frames(tmp_path) -> None:
    async with (
        run_switch(
            tmp_path, streams=(parse_stream("tcp:0"),), port_queue=64, queue_memory=1 << 20
        ) as switch,
        attach(switch.control_path, mac=A) as a,
        attach(switch.control_path, mac=B) as b,
    ):
        deaf = await connect(switch.stream_addresses[0])
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with deaf:
            await wait_until(lambda: len(switch.switch.fabric.ports) == 3, what="three ports")
            flood = bytes(Ether(src=A, type=0x88B5) / Raw(b"\xee" * 1400))  # broadcast
            count = 3000
            received = 0

            async def read_b() -> None:
                nonlocal received
                while received < count:
                    await b.receive_bytes(timeout=5)
                    received += 1

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_b)
                    for _ in range(count):
                        await a.send(flood)
            assert received == count  # the reading peer lost nothing
            (deaf_port,) = (
                p for p in switch.switch.fabric.ports.values() if p.name.startswith("stream")
            )
            assert deaf_port.stats.drops[counters.EGRESS_FULL] > 0
            assert deaf_port.stats.stalls >= 1
            assert switch.switch.fabric.queue_budget.used <= 1 << 20
            await honest_exchange(switch, b"beside a deaf peer")


async def test_connections_beyond_max_ports_are_refused_and_counted(tmp_path) -> None:
    async with run_switch(tmp_path, streams=(parse_stream("tcp:0"),), max_ports=3) as switch:
        socks = [await connect(switch.stream_addresses[0]) for _ in range(3)]
        await wait_until(lambda: len(switch.switch.fabric.ports) == 3, what="three ports")
        extra = await connect(switch.stream_addresses[0])
        with extra, trio.fail_after(5):
            assert await extra.recv(10) == b""
        assert switch.switch.streams[0].events[counters.PORT_LIMIT] == 1
        for sock in socks:
            sock.close()
        await wait_until(lambda: not switch.switch.fabric.ports, what="every port detached")
        await honest_exchange(switch, b"after the limit")
