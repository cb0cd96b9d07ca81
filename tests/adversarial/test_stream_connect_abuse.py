"""``--stream-connect`` against hostile peers: a listener that sends a hostile length, one that
never reads, one that hangs up at once again and again. Each costs only the link's port
(counted, logged); the link reconnects with back-off, never in a busy loop, and the other
ports keep forwarding."""

from __future__ import annotations

import logging
import socket

import pytest
import trio
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from umlswitch import counters
from umlswitch.ports.stream.framing import HEADER
from umlswitch.ports.stream.spec import parse_stream_connect
from umlswitch.testing import attach, run_switch, wait_until
from umlswitch.testing.switch import RunningSwitch

A, B = "02:00:00:00:5c:a1", "02:00:00:00:5c:b2"


async def listening(path: str) -> trio.socket.SocketType:
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen()
    return listener


def drops(switch: RunningSwitch) -> dict[str, int]:
    fabric = switch.switch.fabric
    total = dict(fabric.departed.drops)
    for port in fabric.ports.values():
        for reason, count in port.stats.drops.items():
            total[reason] = total.get(reason, 0) + count
    return total


async def honest_exchange(switch: RunningSwitch, tag: bytes) -> None:
    async with attach(switch.control_path, mac=A) as a, attach(switch.control_path, mac=B) as b:
        await a.send(a.ether(dst=B) / IP() / ICMP() / Raw(tag))
        assert (await b.receive(match=lambda p: bytes(p).endswith(tag), timeout=5)).src == A


async def test_a_hostile_length_costs_only_the_link_which_reconnects(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    path = str(tmp_path / "hostile.sock")
    listener = await listening(path)
    async with run_switch(tmp_path, stream_connects=(parse_stream_connect(f"unix:{path}"),)) as sw:
        (link,) = sw.switch.links
        with trio.fail_after(5):
            conn, _ = await listener.accept()
        with conn:
            await conn.send(HEADER.pack(0xFFFFFFFF) + b"\0" * 64)
            with trio.fail_after(5):
                assert await conn.recv(10) == b""  # the switch hung up
        # The data plane hangs up at once; the control plane says why a moment later.
        await wait_until(
            lambda: "link lost (oversized frame length 4294967295" in caplog.text,
            what="the link's log line",
        )
        assert drops(sw)[counters.STREAM_OVERSIZE] == 1
        await wait_until(  # the number is kept: the link holds it while it reconnects
            lambda: link.port_id in sw.switch.fabric.ports, what="the link's port back"
        )
        await honest_exchange(sw, b"beside a hostile link")
        with trio.fail_after(10):
            conn, _ = await listener.accept()  # and it comes back
        with conn:
            await wait_until(lambda: link.state == "connected", what="reconnected")
            assert link.reconnections == 1
            assert "oversized frame length 4294967295" in link.last_error
    listener.close()


async def test_a_link_that_never_reads_costs_only_its_own_frames(tmp_path) -> None:
    path = str(tmp_path / "deaf.sock")
    listener = await listening(path)
    async with (
        run_switch(
            tmp_path,
            stream_connects=(parse_stream_connect(f"unix:{path}"),),
            port_queue=64,
            queue_memory=1 << 20,
        ) as sw,
        attach(sw.control_path, mac=A) as a,
        attach(sw.control_path, mac=B) as b,
    ):
        (link,) = sw.switch.links
        with trio.fail_after(5):
            deaf, _ = await listener.accept()
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with deaf:
            await wait_until(lambda: link.state == "connected", what="connected")
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
            assert received == count  # the reading port lost nothing
            port = sw.switch.fabric.ports[link.port_id]
            assert port.stats.drops[counters.EGRESS_FULL] > 0
            assert port.stats.stalls >= 1
            assert sw.switch.fabric.queue_budget.used <= 1 << 20
    listener.close()


async def test_a_peer_that_hangs_up_at_once_is_retried_with_back_off(tmp_path) -> None:
    path = str(tmp_path / "rude.sock")
    listener = await listening(path)
    accepted = 0
    async with run_switch(tmp_path, stream_connects=(parse_stream_connect(f"unix:{path}"),)) as sw:
        with trio.move_on_after(4.5):
            while True:
                conn, _ = await listener.accept()
                conn.close()
                accepted += 1
        # at once, then after 1 s and 2 s (and 4 s more: beyond the window)
        assert 2 <= accepted <= 3, accepted
        (link,) = sw.switch.links
        assert link.reconnections == accepted - 1
        await honest_exchange(sw, b"beside a rude peer")
    listener.close()
