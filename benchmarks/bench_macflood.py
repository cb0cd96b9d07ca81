#!/usr/bin/env python3
"""Microseconds per MAC learn with a full table, old eviction against new, by number of ports.

Run on demand (no root, about 10 s): ``python3 benchmarks/bench_macflood.py``. The new
``MacTable`` is this tree's ``umlswitch/fabric/mactable.py``; the old one is the same file at
``--old-rev`` (default ``d0d7a0e``, the last commit whose ``_make_room`` took ``max()`` over every
port), written by ``git show`` to a temporary directory. Both are loaded from their files, and the
script prints which file each side came from.

For every port count the table (``--max-entries``, default 8192 as the switch) is first filled:
one address on each port but the last, the rest on the last port. Then, in batches, new source
addresses are learned, which evicts one entry each:

* ``one flooder``: the last port sends them all (a MAC flood from one guest; once it is the
  largest port it evicts its own oldest);
* ``every port``: the ports take turns, so the victim is usually another port.

Each figure is the best batch (``--batches``, default 5, of ``--learns`` learns, default 2000)
with the garbage collector off during a batch, in microseconds per learn.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODULE = "umlswitch/fabric/mactable.py"


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def addresses(start: int) -> Iterator[bytes]:
    """Distinct locally administered unicast MACs: 02:xx:xx:xx:xx:xx from ``start`` on."""
    n = start
    while True:
        yield b"\x02" + n.to_bytes(5, "big")
        n += 1


def best_us_per_learn(
    table_class: Callable[..., Any], ports: int, scenario: str, args: argparse.Namespace
) -> float:
    table = table_class(max_entries=args.max_entries)
    fresh = addresses(1)
    for port in range(1, ports):
        table.learn(next(fresh), port, 0.0)
    while len(table) < args.max_entries:
        table.learn(next(fresh), ports, 0.0)
    if scenario == "one flooder":
        learners = [ports] * args.learns
    else:
        learners = [1 + i % ports for i in range(args.learns)]
    best = float("inf")
    now = 1.0
    for _ in range(args.batches + 1):  # the first batch warms up and is not counted
        batch = [next(fresh) for _ in range(args.learns)]
        learn = table.learn
        gc.disable()
        start = time.perf_counter()
        for mac, port in zip(batch, learners, strict=True):
            learn(mac, port, now)
        elapsed = time.perf_counter() - start
        gc.enable()
        assert len(table) == args.max_entries
        if now > 1.0:
            best = min(best, elapsed)
        now += 1.0
    return float(best / args.learns * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-rev", default="d0d7a0e")
    parser.add_argument("--ports", type=int, nargs="+", default=[4, 256, 2048])
    parser.add_argument("--max-entries", type=int, default=8192)
    parser.add_argument("--learns", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_macflood-") as tmp:
        old_path = Path(tmp) / "mactable_old.py"
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{args.old_rev}:{MODULE}"],
            check=True,
            capture_output=True,
        ).stdout
        old_path.write_bytes(source)
        old = load(old_path, "mactable_old")
        new = load(REPO / MODULE, "mactable_new")
        print(f"python {sys.version.split()[0]}")
        print(f"old: {old.__file__} (git show {args.old_rev}:{MODULE})")
        print(f"new: {new.__file__}")
        print(
            f"max_entries {args.max_entries}, best of {args.batches} batches of "
            f"{args.learns} learns, each evicting one entry\n"
        )
        print(
            f"{'ports':>6}  {'scenario':<12}  {'old µs/learn':>12}  {'new µs/learn':>12}  old/new"
        )
        for ports in args.ports:
            for scenario in ("one flooder", "every port"):
                old_us = best_us_per_learn(old.MacTable, ports, scenario, args)
                new_us = best_us_per_learn(new.MacTable, ports, scenario, args)
                print(
                    f"{ports:>6}  {scenario:<12}  {old_us:>12.2f}  {new_us:>12.2f}  "
                    f"{old_us / new_us:>7.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
