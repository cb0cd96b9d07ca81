"""Bad frames are dropped whole and counted by reason; correct traffic is unaffected."""

from __future__ import annotations

import socket

import trio
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether

from umlswitch import counters
from umlswitch.testing import attach, run_switch
from umlswitch.testing import guest_address as abstract_address
from umlswitch.testing.fence import wait_until

A, B = "02:00:00:00:0b:01", "02:00:00:00:0b:02"


async def test_runts_giants_and_group_sources_are_dropped_and_counted() -> None:
    async with run_switch(max_frame=1518) as switch:
        ctl = switch.control_path
        async with attach(ctl, mac=A) as a, attach(ctl, mac=B) as b:
            good = a.ether(dst=B) / IP() / ICMP()
            bad = [
                b"",
                b"\x01" * 13,
                bytes(a.ether(dst=B)) + b"j" * 8986,  # 9000 bytes
                bytes(a.ether(dst=B)) + b"j" * 64986,  # 65000 bytes
                bytes(Ether(src="01:00:5e:00:00:01", dst=B) / IP() / ICMP()),
            ]
            for frame in bad:
                await a.send(frame)
            await a.send(good)
            (got,) = await a.fence(b)
            assert [(packet.src, packet.dst, ICMP in packet) for packet in got] == [(A, B, True)]
            drops = switch.counters()["ports"][1]["drops"]
            assert drops == {counters.RUNT: 2, counters.GIANT: 2, counters.GROUP_SOURCE: 1}


async def test_unregistered_senders_on_the_shared_socket(tmp_path) -> None:
    data = str(tmp_path / "data")
    async with run_switch(data_path=data) as switch:
        intruder = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        async with attach(switch.control_path, mac=A) as a, attach(switch.control_path) as b:
            with intruder:
                await intruder.bind(abstract_address())
                for _ in range(50):
                    await intruder.sendto(bytes(Ether(src=A, dst=B) / IP()), data)
            shared = switch.switch.shared
            assert shared is not None
            await wait_until(lambda: shared.unknown_senders == 50, what="50 unknown senders")
            # All 50 were handled (and counted) before this frame and its fence were sent.
            await a.send(a.ether(dst="ff:ff:ff:ff:ff:ff") / IP() / ICMP())
            (got,) = await a.fence(b)
            assert [(packet.src, ICMP in packet) for packet in got] == [(A, True)]
            assert shared.unknown_senders == 50
