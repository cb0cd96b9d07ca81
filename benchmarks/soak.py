"""Soak test (run on demand, not in CI): mixed traffic, port churn and attacks against umlswitch.

    python benchmarks/soak.py [--minutes 10] [--storm-limit N [--compare]]

Starts a umlswitch subprocess and, for the given time, keeps four ports exchanging frames,
attaches and detaches ports, sends malformed control requests, runts, giants and unregistered
datagrams, and floods random source MACs. Prints the switch's RSS every minute and, at the end,
what was sent and received and whether the switch still serves. Exit status 1 if the switch died,
stopped serving, or its RSS kept growing.

The flooder sends about 4.5 k broadcasts/s, which fill every receiver's queue: the well-behaved
pairs' frames are lost behind them. ``--storm-limit N`` runs the switch with storm control (each
port floods at most N frames/s; the pairs' unicast is never limited), and ``--compare`` runs the
soak twice, without and with the limit, and reports the delivery of both.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import sys
import tempfile
import time

import trio
from scapy.layers.l2 import ARP

from umlswitch.ports.unix import control
from umlswitch.testing import SwitchProcess, attach


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Tally:
    def __init__(self) -> None:
        self.sent = self.received = self.churned = self.malformed = 0
        self.flooded = self.bad_frames = self.unregistered = 0


async def traffic(ctl: str, tally: Tally, stop: trio.Event) -> None:
    async with attach(ctl) as a, attach(ctl) as b, attach(ctl) as c, attach(ctl) as d:
        ports = [a, b, c, d]
        macs = {p.mac for p in ports}

        def from_traffic(frame: object) -> bool:  # not the flooder's broadcasts
            return getattr(frame, "src", None) in macs

        for p in ports:
            await p.send(p.ether() / ARP())
        while not stop.is_set():
            src, dst = random.sample(ports, 2)
            for _ in range(50):
                await src.send(src.ether(dst=dst.mac) / ARP())
                tally.sent += 1
            for p in ports:
                tally.received += len(await p.collect(0.01, match=from_traffic))


async def churn(ctl: str, tally: Tally, stop: trio.Event) -> None:
    while not stop.is_set():
        async with attach(ctl) as p:
            await p.send(p.ether() / ARP())
            tally.churned += 1
        await trio.sleep(0.05)


async def attacks(ctl: str, data: str, tally: Tally, stop: trio.Event) -> None:
    intruder = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await intruder.bind(b"\0soak-intruder".ljust(108, b"\0"))
    async with attach(ctl) as flooder:
        while not stop.is_set():
            for _ in range(20):
                conn = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                with conn:
                    await conn.connect(ctl)
                    junk = random.choice(
                        [os.urandom(random.randrange(1, 300)), control.MAGIC_BYTES + b"\2\0\0\0"]
                    )
                    with contextlib.suppress(OSError):  # the switch may hang up first
                        await conn.send(junk)
                tally.malformed += 1
            for _ in range(500):
                source = bytes([random.randrange(256) & 0xFE | 2]) + os.urandom(5)
                try:
                    flooder.data.sendto(
                        b"\xff" * 6 + source + b"\x08\x06" + bytes(28), flooder.switch_address
                    )
                    tally.flooded += 1
                except BlockingIOError:
                    await trio.sleep(0.001)
            for frame in (b"x" * 5, b"\xff" * 6 + b"\x02" * 6 + b"\0" * 9000):
                await flooder.send(frame)
                tally.bad_frames += 1
            try:
                await intruder.sendto(b"\xff" * 14 + bytes(50), data)
                tally.unregistered += 1
            except OSError:
                pass
            await trio.sleep(0.1)
    intruder.close()


async def soak(minutes: float, storm_limit: int = 0) -> tuple[int, float]:
    """Run the soak; (exit status, the share of the pairs' frames delivered)."""
    workdir = tempfile.mkdtemp(prefix="umlswitch-soak-")
    data = os.path.join(workdir, "data")
    tally = Tally()
    limit_args = ["--storm-limit", str(storm_limit)] if storm_limit else []
    with SwitchProcess(data, *limit_args, directory=workdir) as switch:
        pid = switch.process.pid
        start_rss = rss_kib(pid)
        samples = [start_rss]
        limited = f"--storm-limit {storm_limit}" if storm_limit else "no storm limit"
        print(
            f"soak: {minutes:g} min against umlswitch pid {pid} ({limited}); "
            f"RSS at start {start_rss} KiB"
        )
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(traffic, switch.control_path, tally, stop)
            nursery.start_soon(churn, switch.control_path, tally, stop)
            nursery.start_soon(attacks, switch.control_path, data, tally, stop)
            started = time.monotonic()
            for minute in range(1, int(minutes) + 1):
                await trio.sleep_until(trio.current_time() + 60)
                samples.append(rss_kib(pid))
                print(f"soak: minute {minute}: RSS {samples[-1]} KiB, frames sent {tally.sent}")
            rest = minutes * 60 - (time.monotonic() - started)
            if rest > 0:
                await trio.sleep(rest)
            stop.set()
        alive = switch.process.poll() is None
        async with attach(switch.control_path) as a, attach(switch.control_path) as b:
            await a.send(a.ether() / ARP())
            serving = bool(await b.collect(1.0))
        final = rss_kib(pid)
        log = switch.log
    print(
        f"soak: sent {tally.sent} frames, received {tally.received} (more than once when a "
        f"flood evicted the destination and the frame was flooded); {tally.churned} ports "
        f"churned; {tally.malformed} malformed requests, {tally.flooded} flood frames, "
        f"{tally.bad_frames} runts/giants, {tally.unregistered} unregistered datagrams"
    )
    print(f"soak: RSS start {start_rss} KiB, end {final} KiB, max {max([*samples, final])} KiB")
    print(f"soak: log lines {log.count(chr(10))}; switch alive: {alive}; still serving: {serving}")
    delivered = min(tally.received / tally.sent, 1.0) if tally.sent else 0.0
    print(
        f"soak: delivery ({limited}): {tally.received} of {tally.sent} well-behaved frames, "
        f"{delivered:.1%}"
    )
    growing = len(samples) >= 3 and samples[-1] > samples[1] * 1.5
    return (0 if alive and serving and not growing else 1), delivered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--storm-limit", type=int, default=0, metavar="N")
    parser.add_argument(
        "--compare", action="store_true", help="run without the limit, then with it"
    )
    args = parser.parse_args()
    limits = [0, args.storm_limit] if args.compare and args.storm_limit else [args.storm_limit]
    status = 0
    results = []
    for limit in limits:
        code, delivered = trio.run(soak, args.minutes, limit)
        status |= code
        results.append((limit, delivered))
    for limit, delivered in results:
        what = f"--storm-limit {limit}" if limit else "no storm limit"
        verdict = " (>= 95 %: ok)" if limit and delivered >= 0.95 else ""
        print(
            f"soak: summary: {what}: {delivered:.1%} of the well-behaved frames delivered{verdict}"
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
