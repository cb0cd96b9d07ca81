#!/usr/bin/env python3
"""CPU time per frame of a MAC flood, with 4 ports attached and with 2048: it must not grow.

Run on demand (no root, about 20 s): ``python3 benchmarks/bench_flood_ports.py``. It uses the
in-process switches and frames of ``tests/adversarial/test_flood_many_ports.py`` (the real
``Fabric`` and ``MacTable``, a full table, ports that only count): the same flood frames, each
followed by an honest unicast frame, run on both switches in interleaved rounds, and the best
round of each is printed in this thread's CPU time (``time.thread_time``, the garbage collector
off), with the ratio 2048/4. The test beside it counts the Python lines executed per frame, which
no load can blur; this catches a loop over the ports in C as well (a ``max()`` over a dict without
a key function cost ~20 µs per frame at 2048 ports). Before issue 13's fix the ratio was ~100.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.adversarial.test_flood_many_ports import FEW, MANY, Switch, flood_frames, host


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds (default 20)")
    parser.add_argument("--pairs", type=int, default=1000, help="flood+honest pairs per round")
    args = parser.parse_args()
    logging.getLogger("umlswitch").setLevel(logging.ERROR)  # the flood's eviction log lines
    switches = {n: Switch.build(n) for n in (FEW, MANY)}
    befores = {n: switch.sent() for n, switch in switches.items()}
    best = dict.fromkeys(switches, float("inf"))
    for round_ in range(args.rounds):
        flood = flood_frames(round_ * args.pairs, args.pairs, host(1))
        for n, switch in switches.items():
            gc.disable()
            try:
                start = time.thread_time()
                switch.run(flood)
                elapsed = time.thread_time() - start
            finally:
                gc.enable()
            best[n] = min(best[n], elapsed)
    for n, switch in switches.items():
        switch.check_contained(befores[n], args.rounds * args.pairs)
    per_pair = {n: best[n] / args.pairs * 1e6 for n in switches}
    for n in switches:
        print(f"{n:5d} ports: {per_pair[n]:7.2f} µs CPU per flood+honest frame pair (best round)")
    print(f"ratio {MANY}/{FEW}: {per_pair[MANY] / per_pair[FEW]:.2f}x (flat: about 1)")


if __name__ == "__main__":
    main()
