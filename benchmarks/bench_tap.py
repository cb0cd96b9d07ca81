#!/usr/bin/env python3
"""TCP between a UML guest and the host through the switch's tap, both ways: vs uml_switch.

Run as root: ``python3 benchmarks/bench_tap.py [--rounds 3] [--seconds 5]``. It re-runs itself in a
private network namespace and makes a tap device there (``tap0``, 10.0.0.254/24, up) with an
iperf3 server on it. Then, alternating the switches every round (A B A B ...), it starts a fresh
switch holding the tap (``-unix CTL -tap tap0``, which uml_switch takes too), boots one UML guest
on it with the end-to-end tests' recipe (``tests/e2e/uml.py``: ``eth0=daemon``, 10.0.0.1, the
host's / as a hostfs root) and runs, in the guest, ``iperf3 -c 10.0.0.254 -t SECONDS`` (guest to
host) and the same with ``-R`` (host to guest). It prints Mbit/s per direction: medians, min-max
spreads and ratios to uml_switch. ``--ab OTHER_TREE`` adds umlswitch from another checkout (see
``benchlib.py``); the first run of each umlswitch tree prints the module file it imported.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchlib import (
    REPO,
    Tree,
    add_qlen_option,
    add_tree_options,
    fmt_spread,
    in_private_netns,
    set_dgram_qlen,
    switch_kinds,
    trees,
)

sys.path.insert(0, str(REPO))

from tests.e2e import uml as e2e_uml
from tests.e2e.uml import SWITCH_ENV, GuestPool, Switch, Switches
from tests.umlshim import private_uml_shim

TAP = "tap0"
HOST_IP = "10.0.0.254"  # the tap's address, in the guests' 10.0.0.0/24 (uml.ip_for)
PORT = 5201
SWITCHES = ("umlswitch", "uml_switch")
DIRECTIONS = ("guest->host", "host->guest")


def make_tap() -> None:
    """tap0 with HOST_IP, up, in this (private) namespace."""
    for args in (
        ["link", "set", "lo", "up"],
        ["tuntap", "add", TAP, "mode", "tap"],
        ["addr", "add", f"{HOST_IP}/24", "dev", TAP],
        ["link", "set", TAP, "up"],
    ):
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def iperf3_server() -> Iterator[None]:
    """An iperf3 server on the host side of the tap, for the whole run."""
    proc = subprocess.Popen(
        ["iperf3", "-s", "-p", str(PORT)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not listening():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("iperf3 server did not start")
            time.sleep(0.05)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def listening() -> bool:
    ss = ["ss", "-Hltn", f"sport = :{PORT}"]
    return bool(subprocess.run(ss, capture_output=True, text=True).stdout.strip())


def start_switch(switches: Switches, kind: str, tree: Tree | None) -> Switch:
    """A fresh switch of `kind` holding the tap (uml_switch, or a umlswitch tree's launcher)."""
    os.environ[SWITCH_ENV] = kind if tree is None else str(tree.launcher(switches.workdir))
    switch = switches(False, "-tap", TAP)
    if tree is not None:
        tree.check_import(switch.log_path.read_text(errors="replace"))
    return switch


def one_round(kind: str, tree: Tree | None, seconds: int) -> tuple[float, float]:
    """(guest->host, host->guest) iperf3 Mbit/s with a fresh guest on a fresh switch."""
    iperf3 = f"iperf3 -c {HOST_IP} -p {PORT} -t {seconds} -J"
    commands = [f"ping -n -c 3 -i 0.2 -W 2 {HOST_IP}", iperf3, f"{iperf3} -R"]
    with tempfile.TemporaryDirectory(prefix="umlsw-bench-tap-") as tmp:
        workdir = Path(tmp)
        switches, pool = Switches(workdir), GuestPool(workdir)
        try:
            switch = start_switch(switches, kind, tree)
            [guest] = pool(switch, commands)
            ping, upload, download = guest.results(timeout=seconds + 60)
            switch.check_alive()
        finally:
            try:
                pool.stop_all()
            finally:
                switches.stop_all()
    for result in (ping, upload, download):
        if result.returncode != 0:
            raise SystemExit(f"guest command failed through {kind}:\n{result.describe()}")
    up, down = (
        r.json()["end"]["sum_received"]["bits_per_second"] / 1e6 for r in (upload, download)
    )
    return up, down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 duration per direction")
    add_qlen_option(parser)
    add_tree_options(parser)
    args = parser.parse_args()
    by_label = {tree.label: tree for tree in trees(args.ab)}
    kinds = switch_kinds(SWITCHES, list(by_label.values()))
    in_private_netns("umlsw-bench-tap")

    qlen = set_dgram_qlen(args.qlen)
    print(
        f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
        f"net.unix.max_dgram_qlen={qlen}, iperf3 {args.seconds} s each way, "
        f"{args.rounds} rounds, order {' '.join(kinds)} per round",
        flush=True,
    )
    make_tap()
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="umlsw-bench-tap-") as run_dir, iperf3_server():
        for i in range(args.rounds):
            for kind in kinds:
                up, down = one_round(kind, by_label.get(kind), args.seconds)
                results[kind].append((up, down))
                print(
                    f"round {i + 1} {kind:11s} guest->host {up:.0f} Mbit/s, "
                    f"host->guest {down:.0f} Mbit/s",
                    flush=True,
                )
    report(results)


def report(results: dict[str, list[tuple[float, float]]]) -> None:
    med = {
        k: [statistics.median(r[d] for r in rows) for d in (0, 1)] for k, rows in results.items()
    }
    base = med.get("uml_switch")
    header = "".join(f" {f'{d} Mbit/s (min-max)':>30s} {'x uml':>6s}" for d in DIRECTIONS)
    print(f"\n{'switch':11s}{header}")
    for kind, rows in results.items():
        line = f"{kind:11s}"
        for d in (0, 1):
            ratio = med[kind][d] / base[d] if base else float("nan")
            line += f" {fmt_spread([r[d] for r in rows], '.0f'):>30s} {ratio:6.2f}"
        print(line)
    if "umlswitch-B" in med:
        a, b = med["umlswitch"], med["umlswitch-B"]
        parts = [f"{d} x{b[i] / a[i]:.2f}" for i, d in enumerate(DIRECTIONS)]
        print(f"umlswitch-B / umlswitch: {', '.join(parts)}")


if __name__ == "__main__":
    with private_uml_shim():  # UML 6.1 on AVX-512/AMX hosts (tests/umlshim.py)
        main()
