"""A port sending from 100,000 random source MACs: the table stays bounded, other ports keep
their entries, known unicast is still delivered to one port only, memory stays bounded."""

from __future__ import annotations

import os

import trio
from scapy.layers.inet import ICMP, IP

from umlswitch.testing import attach, run_switch, wait_until

A, B, C, SINK = (f"02:00:00:00:0c:0{i}" for i in range(1, 5))
FLOOD = 100_000
MAX_MACS = 4096


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_mac_flood_is_contained() -> None:
    async with run_switch(max_macs=MAX_MACS) as switch:
        ctl = switch.control_path
        async with (
            attach(ctl, mac=A) as a,
            attach(ctl, mac=B) as b,
            attach(ctl, mac=C) as c,
            attach(ctl, mac=SINK) as sink,
            attach(ctl) as flooder,
        ):
            ports = (a, b, c, sink, flooder)
            for port in (a, b, c, sink):  # each announces itself; the others get it, once
                await port.send(port.ether() / IP())
                others = [other for other in ports if other is not port]
                for got in await port.fence(*others):
                    assert [packet.src for packet in got] == [port.mac]
            before = rss_kib()
            sink_mac = bytes.fromhex(SINK.replace(":", ""))
            payload = b"\x08\x00" + bytes(46)
            data = flooder.data
            for _ in range(FLOOD):
                source = bytes([os.urandom(1)[0] & 0xFE | 0x02]) + os.urandom(5)
                frame = sink_mac + source + payload
                while True:
                    try:
                        data.sendto(frame, flooder.switch_address)
                        break
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(data)
            flooder_port = switch.port_number(flooder)
            await wait_until(
                lambda: switch.counters()["ports"][flooder_port]["rx_frames"] == FLOOD,
                timeout=30,
                what="the switch reading the whole flood",
            )
            table = switch.mac_table()
            assert len(table) <= MAX_MACS
            for mac, number in ((A, 1), (B, 2), (C, 3), (SINK, 4)):
                assert table.get(mac) == number, f"{mac} was pushed out of the table by the flood"
            # Known unicast between the others still goes to one port only.
            await a.send(a.ether(dst=B) / IP() / ICMP(seq=42))
            to_b, to_c = await a.fence(b, c)
            assert [(packet.src, packet[ICMP].seq) for packet in to_b] == [(A, 42)]
            assert to_c == []
            growth_mib = (rss_kib() - before) / 1024
            assert growth_mib < 40, f"RSS grew by {growth_mib:.1f} MiB during the flood"
            events = switch.counters()["fabric_events"]
            assert events["mac_evicted"] >= FLOOD - MAX_MACS
