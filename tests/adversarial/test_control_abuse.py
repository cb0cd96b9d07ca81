"""Malformed control requests by the thousand and idle connections by the hundred: the switch
keeps serving well-behaved clients throughout."""

from __future__ import annotations

import os
import random
import socket
import struct

import trio
from scapy.layers.l2 import ARP

from umlswitch import counters
from umlswitch.ports.unix import control
from umlswitch.testing import RunningSwitch, attach, run_switch, wait_until

MAGIC = control.MAGIC_BYTES
ADDRESS = b"\0nobody-home".ljust(108, b"\0")


def malformed(kind: int, rng: random.Random) -> bytes:
    """One of the ways a control request goes wrong."""
    match kind % 6:
        case 0:  # short, then EOF
            return control.encode_v3(ADDRESS)[: rng.randrange(1, 100)]
        case 1:  # wrong magic and not a v0 request
            return struct.pack("<I", rng.randrange(1, 2**32)) + os.urandom(116)
        case 2:  # version 2
            return MAGIC + struct.pack("<I", 2) + os.urandom(116)
        case 3:  # version 99
            return MAGIC + struct.pack("<I", 99) + os.urandom(116)
        case 4:  # oversize
            return control.encode_v3(ADDRESS) + b"x" * rng.randrange(200, 4000)
        case _:  # garbage of any length
            return os.urandom(rng.randrange(1, 600))


async def send_raw(ctl: str, data: bytes) -> None:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        await sock.connect(ctl)
        try:
            await sock.send(data)
            sock.shutdown(socket.SHUT_WR)
            with trio.move_on_after(2):
                while await sock.recv(4096):
                    pass
        except OSError:
            pass  # the switch hung up on us first: fine


async def exchange(ctl: str) -> None:
    """A well-behaved pair of clients: attach, one broadcast gets through."""
    with trio.fail_after(5):
        async with attach(ctl) as a, attach(ctl) as b:
            await a.send(a.ether() / ARP())
            assert (await b.receive(match=ARP)).src == a.mac


def pending_closed(switch: RunningSwitch) -> int:
    """Pending control connections the switch closed to make room (--max-pending)."""
    closed: int = switch.counters()["control_events"].get(counters.PENDING_LIMIT, 0)
    return closed


async def test_ten_thousand_malformed_requests() -> None:
    rng = random.Random(1234)
    async with run_switch(handshake_timeout=1.0) as switch:
        ctl = switch.control_path

        async def attacker(worker: int) -> None:
            for i in range(500):
                await send_raw(ctl, malformed(worker * 500 + i, rng))

        served_during_attack = 0
        with trio.fail_after(120):
            async with trio.open_nursery() as attack:
                for worker in range(20):
                    attack.start_soon(attacker, worker)
                served = 0
                while served < 10 or attack.child_tasks:  # good clients keep being served
                    await exchange(ctl)
                    served += 1
                    if attack.child_tasks:
                        served_during_attack = served
        assert served_during_attack >= 1, "the attack was over before a good client came"
        await exchange(ctl)
        events = switch.counters()["control_events"]
        refused = sum(events.values())
        assert refused >= 9000, events  # short requests that end in EOF are just closed
        assert events[counters.UNSUPPORTED_VERSION] >= 3000
        assert events[counters.BAD_REQUEST] >= 3000


async def test_a_request_split_slowly_still_attaches_and_a_stalled_one_times_out() -> None:
    async with run_switch(handshake_timeout=0.5) as switch:
        ctl = switch.control_path
        own = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        await own.bind(b"\0slow-but-honest".ljust(108, b"\0"))
        slow = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stalled = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with own, slow, stalled:
            await slow.connect(ctl)
            await stalled.connect(ctl)
            request = control.encode_v3(own.getsockname())
            await stalled.send(request[:50])  # ...and never the rest
            for i in range(0, len(request), 8):  # 16 pieces over ~0.16 s
                await slow.send(request[i : i + 8])
                await trio.sleep(0.01)
            with trio.fail_after(3):
                reply = await slow.recv(200)
                assert len(reply) == control.SOCKADDR_UN_LEN
                assert await stalled.recv(10) == b""  # closed after the handshake timeout
        assert switch.counters()["control_events"][counters.HANDSHAKE_TIMEOUT] == 1


async def test_a_thousand_idle_connections_do_not_lock_out_a_client() -> None:
    async with run_switch(handshake_timeout=30.0, max_pending=128) as switch:
        ctl = switch.control_path
        idle = []
        try:
            for _ in range(1000):
                sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                idle.append(sock)
                await sock.connect(ctl)
            await wait_until(
                lambda: pending_closed(switch) >= 1000 - 128,
                what="the switch accepting every idle connection and closing the oldest",
            )
            await exchange(ctl)  # the oldest idle connections make room for it
            events = switch.counters()["control_events"]
            assert events[counters.PENDING_LIMIT] >= 1000 - 128
        finally:
            for sock in idle:
                sock.close()
