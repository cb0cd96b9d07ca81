#!/usr/bin/env python3
"""What VLANs cost in the fabric's decision, per frame, without sockets: ``python3
benchmarks/bench_vlan.py`` (``--help`` for options).

The closed-loop benchmark (``bench_frames.py --args-a='--rc FILE'``) measures the whole switch
with VLANs on, but its load generator sends untagged frames between two ports of one VLAN, so it
never adds or removes a tag. This one times ``Fabric.forward_batch`` (batches of 32 frames, as
``recvmmsg`` hands them over) and ``Fabric.forward`` (one frame) with ports that do nothing,
for each way a frame can cross: VLANs off, on between two access ports, access to trunk (a tag
added), trunk to access (removed), trunk to trunk (as received). It prints the median CPU time
per frame over ``--rounds`` rounds and each case against "off".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from umlswitch.counters import PortStats
from umlswitch.fabric.batch import FrameBatch
from umlswitch.fabric.fabric import Fabric
from umlswitch.fabric.vlan import DEFAULT_MEMBERSHIP, Membership

MAC_A = bytes.fromhex("02000000000a")
MAC_B = bytes.fromhex("02000000000b")
TAG = b"\x81\x00\x00\x0a"  # VLAN 10
BATCH = 32
SIZE = 64


class NullPort:
    """A port that takes every frame and does nothing with it."""

    def __init__(self, port_id: int) -> None:
        self.id = port_id
        self.name = f"null:{port_id}"
        self.stats = PortStats()

    def send_nowait(self, frame: bytes | memoryview) -> None:
        pass

    def send_batch(self, batch: FrameBatch, indices: list[int]) -> None:
        pass


ACCESS, TRUNK = Membership(10), Membership(1, frozenset({10}))
# case -> (VLANs on, membership of the sender, of the receiver); a trunk's frames are tagged
CASES = {
    "off": (False, DEFAULT_MEMBERSHIP, DEFAULT_MEMBERSHIP),
    "on, access to access": (True, ACCESS, ACCESS),
    "on, access to trunk (tag added)": (True, ACCESS, TRUNK),
    "on, trunk to access (tag removed)": (True, TRUNK, ACCESS),
    "on, trunk to trunk": (True, TRUNK, TRUNK),
}


def frame(src: bytes, dst: bytes, tagged: bool) -> bytes:
    header = dst + src + (TAG if tagged else b"") + b"\x08\x00"
    return header + bytes(SIZE - len(header))


def setup(case: str) -> tuple[Fabric, NullPort, NullPort]:
    on, sender, receiver = CASES[case]
    fabric = Fabric()
    a, b = NullPort(1), NullPort(2)
    fabric.attach(a, sender)
    fabric.attach(b, receiver)
    if on and fabric.vlan_filter is None:
        fabric.vlans.create(10)
    # both addresses learned, so every frame is unicast from a to b
    fabric.forward(b, frame(MAC_B, MAC_A, receiver is TRUNK))
    fabric.forward(a, frame(MAC_A, MAC_B, sender is TRUNK))
    assert not a.stats.drops and not b.stats.drops and len(fabric.table) == 2
    return fabric, a, b


def per_frame_ns(case: str, batched: bool, seconds: float) -> float:
    fabric, a, _ = setup(case)
    data = frame(MAC_A, MAC_B, CASES[case][1] is TRUNK)
    batch = FrameBatch(2048, BATCH)
    for i in range(BATCH):
        batch.data[i * 2048 : i * 2048 + len(data)] = data
    batch.lengths = [len(data)] * BATCH
    batch.count = BATCH
    frames = 0
    start = time.process_time()
    deadline = time.perf_counter() + seconds
    if batched:
        forward_batch = fabric.forward_batch
        while time.perf_counter() < deadline:
            for _ in range(100):
                forward_batch(a, batch)
            frames += 100 * BATCH
    else:
        forward = fabric.forward
        while time.perf_counter() < deadline:
            for _ in range(1000):
                forward(a, data)
            frames += 1000
    return (time.process_time() - start) / frames * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.3, help="per case and round")
    args = parser.parse_args()
    print(f"# 64-byte unicast frames; median CPU ns per frame of {args.rounds} rounds")
    print(f"{'case':<36} {'batch of 32':>12} {'x off':>6} {'one frame':>10} {'x off':>6}")
    base: dict[bool, float] = {}
    for case in CASES:
        row = []
        for batched in (True, False):
            ns = statistics.median(
                per_frame_ns(case, batched, args.seconds) for _ in range(args.rounds)
            )
            base.setdefault(batched, ns)
            row += [f"{ns:>{12 if batched else 10}.0f}", f"{ns / base[batched]:>6.2f}"]
        print(f"{case:<36} {' '.join(row)}")


if __name__ == "__main__":
    main()
